//! Content negotiation: which answer format the `Accept` header asks for.

use axum::http::HeaderMap;

/// JSON, the default answer format.
pub const JSON: &str = "application/json";
/// MessagePack, and the names clients also send for it.
pub const MSGPACK: [&str; 3] = [
    "application/msgpack",
    "application/x-msgpack",
    "application/vnd.msgpack",
];
/// Raw bytes (an lww or mv value written as bytes).
pub const OCTETS: &str = "application/octet-stream";

/// Which of `offers` the request's `Accept` header prefers (RFC 9110
/// §12.5.1): the highest `q`, taken from the most specific range that
/// matches each offer; on a tie, the offer a more specific range names,
/// then the one the client listed first, then the earlier offer. No header
/// takes the first offer; `None` when the header rules every offer out
/// (`q=0`, or no range matches). Ranges that do not parse are skipped.
pub fn negotiate<'a>(h: &HeaderMap, offers: &[&'a str]) -> Option<&'a str> {
    let values: Vec<&str> = h
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return offers.first().copied();
    }
    // (type, subtype, q in thousandths, position)
    let ranges: Vec<(String, String, u16, usize)> = values
        .iter()
        .flat_map(|v| v.split(','))
        .enumerate()
        .filter_map(|(pos, range)| {
            let mut parts = range.split(';');
            let (ty, sub) = parts.next()?.trim().split_once('/')?;
            let (ty, sub) = (
                ty.trim().to_ascii_lowercase(),
                sub.trim().to_ascii_lowercase(),
            );
            if ty.is_empty() || sub.is_empty() || (ty == "*" && sub != "*") {
                return None;
            }
            let mut q = 1000;
            for p in parts {
                if let Some((k, v)) = p.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = qvalue(v.trim())?;
                }
            }
            Some((ty, sub, q, pos))
        })
        .collect();
    let mut best: Option<(Rank, &'a str)> = None;
    for &offer in offers {
        let Some((oty, osub)) = offer.split_once('/') else {
            continue;
        };
        // The most specific range matching this offer sets its q.
        let matched = ranges
            .iter()
            .filter_map(|(ty, sub, q, pos)| {
                let specificity = match (ty.as_str(), sub.as_str()) {
                    (t, s) if t == oty && s == osub => 2,
                    (t, "*") if t == oty => 1,
                    ("*", "*") => 0,
                    _ => return None,
                };
                Some((specificity, *q, *pos))
            })
            .max_by_key(|(specificity, _, pos)| (*specificity, std::cmp::Reverse(*pos)));
        let Some((specificity, q, pos)) = matched else {
            continue;
        };
        if q == 0 {
            continue;
        }
        let key = (q, specificity, std::cmp::Reverse(pos));
        if best.as_ref().is_none_or(|(b, _)| key > *b) {
            best = Some((key, offer));
        }
    }
    best.map(|(_, offer)| offer)
}

/// How an offer ranks: its `q`, the specificity of the range that gave it,
/// and that range's place in the header (earlier ranks higher).
type Rank = (u16, u8, std::cmp::Reverse<usize>);

/// A `q` value (`0`, `0.5`, `1.000`) in thousandths; `None` if it is not one.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = match int {
        "0" => format!("{frac:0<3}").parse::<u16>().ok()?,
        "1" if frac.bytes().all(|b| b == b'0') => 1000,
        _ => return None,
    };
    Some(thousandths)
}

/// Whether the answer should be MessagePack: the `Accept` header prefers it
/// to JSON. A header that rules out both still gets JSON (the API answers
/// rather than refusing with 406).
pub fn wants_msgpack(h: &HeaderMap) -> bool {
    let offers = [JSON, MSGPACK[0], MSGPACK[1], MSGPACK[2]];
    negotiate(h, &offers).is_some_and(|f| f != JSON)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                axum::http::header::ACCEPT,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const KV: [&str; 3] = [JSON, "application/msgpack", OCTETS];

    #[test]
    fn accept_picks_by_q_then_specificity_then_the_clients_order() {
        let pick = |v: &[&str]| negotiate(&accept(v), &KV);
        assert_eq!(pick(&[]), Some(JSON));
        assert_eq!(pick(&["*/*"]), Some(JSON));
        assert_eq!(pick(&["application/msgpack"]), Some("application/msgpack"));
        assert_eq!(pick(&["application/octet-stream"]), Some(OCTETS));
        // Substring matching took the first of these as msgpack.
        assert_eq!(
            pick(&["application/json;q=1, application/msgpack;q=0"]),
            Some(JSON)
        );
        assert_eq!(
            pick(&["application/msgpack;q=0.5, application/json;q=0.9"]),
            Some(JSON)
        );
        assert_eq!(
            pick(&["application/msgpack, */*"]),
            Some("application/msgpack")
        );
        assert_eq!(
            pick(&["*/*;q=0.1, application/msgpack"]),
            Some("application/msgpack")
        );
        assert_eq!(pick(&["application/*"]), Some(JSON));
        assert_eq!(
            pick(&["application/octet-stream, application/json"]),
            Some(OCTETS)
        );
        assert_eq!(
            pick(&["application/json", "application/msgpack"]),
            Some(JSON)
        );
        assert_eq!(
            pick(&["APPLICATION/MSGPACK ; Q=1"]),
            Some("application/msgpack")
        );
        assert_eq!(
            pick(&["*/*;q=0.5, application/json;q=0"]),
            Some("application/msgpack")
        );
    }

    #[test]
    fn accept_that_rules_everything_out_or_does_not_parse() {
        let pick = |v: &[&str]| negotiate(&accept(v), &KV);
        assert_eq!(pick(&["text/html"]), None);
        assert_eq!(pick(&["*/*;q=0"]), None);
        assert_eq!(pick(&["garbage"]), None);
        assert_eq!(pick(&["application/json;q=2, */*;q=0.2"]), Some(JSON));
        assert_eq!(
            pick(&["application/json;q=x, application/msgpack"]),
            Some("application/msgpack")
        );
        assert_eq!(pick(&["*/json"]), None);
        assert!(!wants_msgpack(&accept(&["text/html"])));
        assert!(wants_msgpack(&accept(&["application/x-msgpack"])));
        assert!(!wants_msgpack(&accept(&["*/*"])));
    }

    #[test]
    fn qvalues_parse_as_the_rfc_writes_them() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        for bad in ["1.5", "2", "0.1234", "-0", "", ".5", "0.x"] {
            assert_eq!(qvalue(bad), None, "{bad}");
        }
    }
}
