//! Peer authentication: every peer request and answer carries an
//! HMAC-SHA256 over what it says, keyed with the cluster secret.
//!
//! A request carries a signed head in its `meridian-peer-auth` header: the
//! path, the sending region, the sender's wall time, a random nonce and the
//! body's length, under one HMAC. The receiver checks it before reading
//! any of the body (a caller without the secret cannot make it buffer
//! anything), refuses a time outside the replay window and a nonce it has
//! taken already (a captured request cannot be sent again). The body is
//! `tag || payload`, its tag over the endpoint's label, the head's tag and
//! the payload. An answer is `tag || payload`, its tag over the answering
//! region's name, the request's nonce and the payload: it cannot be passed
//! off as another region's, or as the answer to another request. Tags are
//! compared in constant time.
//!
//! Why past ~400 lines: one signing scheme in its two forms (full and
//! short), the replay window's nonces, and their unit tests beside them;
//! the forms share every MAC.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a tag in the full form.
pub const TAG_LEN: usize = 32;
/// Length of a tag in the short form ([`Form::Short`]).
pub const SHORT_TAG_LEN: usize = 16;
/// Shortest cluster secret accepted, in bytes.
pub const MIN_SECRET: usize = 16;

/// The cluster secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret was refused.
#[derive(Debug, thiserror::Error)]
#[error("the cluster secret is {0} bytes; it must be at least {MIN_SECRET}")]
pub struct ShortSecret(pub usize);

impl Secret {
    /// A secret from its bytes (surrounding whitespace, e.g. a trailing
    /// newline in a file, is not part of it).
    pub fn new(bytes: &[u8]) -> Result<Secret, ShortSecret> {
        let text = bytes.trim_ascii();
        if text.len() < MIN_SECRET {
            return Err(ShortSecret(text.len()));
        }
        Ok(Secret(text.to_vec()))
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    #[allow(clippy::too_many_arguments)]
    fn head_tag(
        &self,
        form: Form,
        path: &str,
        from: &str,
        to: &str,
        ts_ms: u64,
        nonce: &[u8; 16],
        len: u64,
    ) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(form.domain());
        m.update(b"\0head\0");
        for part in [path.as_bytes(), from.as_bytes(), to.as_bytes()] {
            m.update(part);
            m.update(b"\0");
        }
        m.update(&ts_ms.to_be_bytes());
        m.update(nonce);
        m.update(&len.to_be_bytes());
        let mut tag: [u8; 32] = m.finalize().into_bytes().into();
        tag[form.tag_len()..].fill(0);
        tag
    }

    fn body_mac(&self, form: Form, label: &str, head: &[u8], body: &[u8]) -> HmacSha256 {
        let mut m = self.hmac();
        m.update(form.domain());
        m.update(b"\0body\0");
        m.update(label.as_bytes());
        m.update(b"\0");
        m.update(head);
        m.update(body);
        m
    }

    fn answer_mac(&self, form: Form, responder: &str, nonce: &[u8; 16], body: &[u8]) -> HmacSha256 {
        let mut m = self.hmac();
        m.update(form.domain());
        m.update(b"\0answer\0");
        m.update(responder.as_bytes());
        m.update(b"\0");
        m.update(nonce);
        m.update(body);
        m
    }

    /// `tag || payload`, the tag `mac`'s, cut to `form`'s length.
    fn tagged(form: Form, mac: HmacSha256, payload: &[u8]) -> Vec<u8> {
        let tag = mac.finalize().into_bytes();
        let mut out = Vec::with_capacity(form.tag_len() + payload.len());
        out.extend_from_slice(&tag[..form.tag_len()]);
        out.extend_from_slice(payload);
        out
    }

    /// Whether `tag` is `mac`'s (cut to its length), in constant time.
    fn verifies(form: Form, mac: HmacSha256, tag: &[u8]) -> bool {
        tag.len() == form.tag_len() && mac.verify_truncated_left(tag).is_ok()
    }

    /// Signs a request to `path` from region `from` to region `to` at wall
    /// time `now_ms` in the full form (what every build reads): the
    /// `meridian-peer-auth` header value, the head it states, and the body
    /// (`tag || payload`).
    pub fn sign_request(
        &self,
        path: &str,
        label: &str,
        from: &str,
        to: &str,
        now_ms: u64,
        payload: &[u8],
    ) -> (String, Head, Vec<u8>) {
        self.sign_request_as(Form::Full, path, label, from, to, now_ms, payload)
    }

    /// As [`Secret::sign_request`], in `form`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_request_as(
        &self,
        form: Form,
        path: &str,
        label: &str,
        from: &str,
        to: &str,
        now_ms: u64,
        payload: &[u8],
    ) -> (String, Head, Vec<u8>) {
        let nonce = *uuid::Uuid::new_v4().as_bytes();
        let len = payload.len() as u64;
        let tag = self.head_tag(form, path, from, to, now_ms, &nonce, len);
        let head = Head {
            ts_ms: now_ms,
            nonce,
            len,
            tag,
            form,
        };
        let out = Self::tagged(
            form,
            self.body_mac(form, label, head.tag(), payload),
            payload,
        );
        (head.header(), head, out)
    }

    /// Checks a request's `meridian-peer-auth` header (either form) against
    /// its path, sender and recipient (`to`: this region), before any of
    /// its body is read: the head it states.
    pub fn check_head(
        &self,
        path: &str,
        from: &str,
        to: &str,
        header: &str,
    ) -> Result<Head, HeadError> {
        let head = Head::parse(header).ok_or(HeadError::Malformed)?;
        let want = self.head_tag(head.form, path, from, to, head.ts_ms, &head.nonce, head.len);
        let mut m = self.hmac();
        m.update(&want);
        // Constant time: compare the two tags through one more MAC.
        let a = m.finalize().into_bytes();
        let mut m = self.hmac();
        m.update(&head.tag);
        if a != m.finalize().into_bytes() {
            return Err(HeadError::Signature);
        }
        Ok(head)
    }

    /// Checks a body (`tag || payload`) against the checked `head`; the
    /// payload.
    pub fn open_body<'a>(&self, label: &str, head: &Head, signed: &'a [u8]) -> Option<&'a [u8]> {
        let form = head.form;
        if signed.len() < form.tag_len() {
            return None;
        }
        let (tag, body) = signed.split_at(form.tag_len());
        if body.len() as u64 != head.len {
            return None;
        }
        Self::verifies(form, self.body_mac(form, label, head.tag(), body), tag).then_some(body)
    }

    /// Signs an answer from region `responder` to the request whose nonce
    /// is `nonce`, in the full form: `tag || payload`.
    pub fn sign_answer(&self, responder: &str, nonce: &[u8; 16], payload: &[u8]) -> Vec<u8> {
        self.sign_answer_as(Form::Full, responder, nonce, payload)
    }

    /// As [`Secret::sign_answer`], in `form` (the request's).
    pub fn sign_answer_as(
        &self,
        form: Form,
        responder: &str,
        nonce: &[u8; 16],
        payload: &[u8],
    ) -> Vec<u8> {
        Self::tagged(
            form,
            self.answer_mac(form, responder, nonce, payload),
            payload,
        )
    }

    /// Checks a full-form answer that must come from region `responder`
    /// and answer the request whose nonce is `nonce`; the payload.
    pub fn open_answer<'a>(
        &self,
        responder: &str,
        nonce: &[u8; 16],
        signed: &'a [u8],
    ) -> Option<&'a [u8]> {
        self.open_answer_as(Form::Full, responder, nonce, signed)
    }

    /// As [`Secret::open_answer`], for an answer in `form` (the request's).
    pub fn open_answer_as<'a>(
        &self,
        form: Form,
        responder: &str,
        nonce: &[u8; 16],
        signed: &'a [u8],
    ) -> Option<&'a [u8]> {
        if signed.len() < form.tag_len() {
            return None;
        }
        let (tag, body) = signed.split_at(form.tag_len());
        Self::verifies(form, self.answer_mac(form, responder, nonce, body), tag).then_some(body)
    }
}

/// How a request and its answer are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `v2`: the head in hex, 32-byte tags. Every build reads it.
    Full,
    /// `v3`: the head in base64url, tags of HMAC-SHA256 cut to its first
    /// 16 bytes (as RFC 4868 does for IPsec). 84 bytes less per request
    /// and its answer than the full form (52 in the head, 16 in each tag). Sent only within a wire-version-2
    /// session: a peer that answered the hello in version 2 reads it.
    Short,
}

impl Form {
    /// Its tags' length, bytes.
    pub fn tag_len(self) -> usize {
        match self {
            Form::Full => TAG_LEN,
            Form::Short => SHORT_TAG_LEN,
        }
    }

    /// What its MACs start with: a tag of one form is no tag of the other.
    fn domain(self) -> &'static [u8] {
        match self {
            Form::Full => b"meridian-peer-v2",
            Form::Short => b"meridian-peer-v3",
        }
    }
}

/// What a signed request states about itself (its `meridian-peer-auth`
/// header: `v2 TS NONCE LEN TAG`, hex where binary, or in the short form
/// `v3 TS NONCE LEN TAG`, base64url without padding where binary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The sender's wall time, Unix ms.
    pub ts_ms: u64,
    /// 16 random bytes, never reused.
    pub nonce: [u8; 16],
    /// Payload length, bytes.
    pub len: u64,
    /// HMAC over path, sender, time, nonce and length (in the short form
    /// its first 16 bytes, the rest zero).
    pub tag: [u8; 32],
    /// The form it was signed in (its answer is signed in the same).
    pub form: Form,
}

/// Why a request's head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Missing or not `v2 TS NONCE LEN TAG`.
    #[error("missing or malformed meridian-peer-auth header")]
    Malformed,
    /// The tag does not verify.
    #[error("signature does not verify")]
    Signature,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64<const N: usize>(s: &str) -> Option<[u8; N]> {
    use base64::Engine as _;
    // The engine refuses padding and non-canonical trailing bits.
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    bytes.try_into().ok()
}

impl Head {
    /// The tag as sent (cut to the form's length).
    pub fn tag(&self) -> &[u8] {
        &self.tag[..self.form.tag_len()]
    }

    /// Bytes of the body it states: its tag and the payload.
    pub fn body_len(&self) -> u64 {
        self.len.saturating_add(self.form.tag_len() as u64)
    }

    fn header(&self) -> String {
        match self.form {
            Form::Full => format!(
                "v2 {} {} {} {}",
                self.ts_ms,
                hex(&self.nonce),
                self.len,
                hex(&self.tag)
            ),
            Form::Short => format!(
                "v3 {} {} {} {}",
                self.ts_ms,
                b64(&self.nonce),
                self.len,
                b64(self.tag())
            ),
        }
    }

    fn parse(s: &str) -> Option<Head> {
        let mut it = s.split(' ');
        let form = match it.next()? {
            "v2" => Form::Full,
            "v3" => Form::Short,
            _ => return None,
        };
        let ts_ms = it.next()?.parse().ok()?;
        let (nonce, len, tag) = match form {
            Form::Full => (
                unhex(it.next()?)?,
                it.next()?.parse().ok()?,
                unhex(it.next()?)?,
            ),
            Form::Short => {
                let nonce = unb64::<16>(it.next()?)?;
                let len = it.next()?.parse().ok()?;
                let mut tag = [0u8; 32];
                tag[..SHORT_TAG_LEN].copy_from_slice(&unb64::<SHORT_TAG_LEN>(it.next()?)?);
                (nonce, len, tag)
            }
        };
        let head = Head {
            ts_ms,
            nonce,
            len,
            tag,
            form,
        };
        it.next().is_none().then_some(head)
    }
}

/// How far a request's timestamp may be from this region's clock, ms:
/// older ones are refused, so the nonces to remember are those of this
/// window only.
pub const REPLAY_WINDOW_MS: u64 = 30_000;
/// Most nonces remembered; more within one window and requests are
/// refused (503) until older ones age out.
pub const MAX_NONCES: usize = 1_000_000;

/// Why a request was refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Its timestamp is outside the window.
    Stale,
    /// Signed before this process started (within the window).
    BeforeStart,
    /// Its nonce was seen already.
    Seen,
    /// Too many nonces in the window.
    Full,
}

/// The nonces of the requests taken within the replay window, since this
/// process started: a request signed before that is refused (its nonce
/// could have been taken by the process before, whose memory is gone).
#[derive(Debug)]
pub struct Nonces {
    seen: std::collections::HashMap<[u8; 16], u64>,
    by_time: std::collections::BTreeSet<(u64, [u8; 16])>,
    since_ms: u64,
}

impl Nonces {
    /// When this process started taking nonces (a sender whose request was
    /// refused as signed before it signs again from there).
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// Nonces taken from `since_ms` on (when the region started).
    pub fn since(since_ms: u64) -> Self {
        Self {
            seen: Default::default(),
            by_time: Default::default(),
            since_ms,
        }
    }

    /// Takes `head` at wall time `now_ms`, or says why not.
    pub fn take(&mut self, head: &Head, now_ms: u64) -> Result<(), Replay> {
        if head.ts_ms.abs_diff(now_ms) > REPLAY_WINDOW_MS {
            return Err(Replay::Stale);
        }
        if head.ts_ms < self.since_ms {
            return Err(Replay::BeforeStart);
        }
        // Forget what has aged out of the window (it would be stale now).
        let horizon = now_ms.saturating_sub(REPLAY_WINDOW_MS);
        while let Some(&(ts, n)) = self.by_time.first() {
            if ts >= horizon {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&n);
        }
        if self.seen.contains_key(&head.nonce) {
            return Err(Replay::Seen);
        }
        if self.seen.len() >= MAX_NONCES {
            return Err(Replay::Full);
        }
        self.seen.insert(head.nonce, head.ts_ms);
        self.by_time.insert((head.ts_ms, head.nonce));
        Ok(())
    }
}

/// Wall time for request stamps, Unix ms (the real clock: a region's
/// configured test skew moves its HLC, not its peer sessions).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef\n").unwrap()
    }

    #[test]
    fn requests_bind_path_sender_time_nonce_and_body() {
        let s = secret();
        let (header, head, body) =
            s.sign_request("/peer/v1/ops", "ops", "us-east", "eu-west", 1_000, b"batch");
        let checked = s
            .check_head("/peer/v1/ops", "us-east", "eu-west", &header)
            .unwrap();
        assert_eq!(checked, head);
        assert_eq!(s.open_body("ops", &checked, &body), Some(&b"batch"[..]));
        // Another path, sender or secret: refused before the body.
        assert_eq!(
            s.check_head("/peer/v1/state", "us-east", "eu-west", &header),
            Err(HeadError::Signature)
        );
        assert_eq!(
            s.check_head("/peer/v1/ops", "eu-west", "eu-west", &header),
            Err(HeadError::Signature)
        );
        // Meant for another region: refused there.
        assert_eq!(
            s.check_head("/peer/v1/ops", "us-east", "ap-south", &header),
            Err(HeadError::Signature)
        );
        let other = Secret::new(b"fedcba9876543210").unwrap();
        assert_eq!(
            other.check_head("/peer/v1/ops", "us-east", "eu-west", &header),
            Err(HeadError::Signature)
        );
        // A head with its time moved: refused.
        let moved = header.replacen("v2 1000 ", "v2 1001 ", 1);
        assert_eq!(
            s.check_head("/peer/v1/ops", "us-east", "eu-west", &moved),
            Err(HeadError::Signature)
        );
        for bad in ["", "v1 1 2 3 4", "v2 1", &format!("{header} extra")] {
            assert_eq!(
                s.check_head("/peer/v1/ops", "us-east", "eu-west", bad),
                Err(HeadError::Malformed),
                "{bad}"
            );
        }
        // A body that is not the one the head was signed with.
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(s.open_body("ops", &checked, &tampered), None);
        assert_eq!(s.open_body("state", &checked, &body), None);
        let (_, _, longer) = s.sign_request(
            "/peer/v1/ops",
            "ops",
            "us-east",
            "eu-west",
            1_000,
            b"batch!",
        );
        assert_eq!(s.open_body("ops", &checked, &longer), None);
        assert!(Secret::new(b"short").is_err());
    }

    #[test]
    fn answers_bind_the_responder_and_the_request() {
        let s = secret();
        let (_, head, _) = s.sign_request("/peer/v1/ops", "ops", "us-east", "eu-west", 1, b"x");
        let (_, other, _) = s.sign_request("/peer/v1/ops", "ops", "us-east", "eu-west", 1, b"x");
        let ack = s.sign_answer("eu-west", &head.nonce, b"ack");
        assert_eq!(
            s.open_answer("eu-west", &head.nonce, &ack),
            Some(&b"ack"[..])
        );
        assert_eq!(s.open_answer("ap-south", &head.nonce, &ack), None);
        assert_eq!(s.open_answer("eu-west", &other.nonce, &ack), None);
    }

    #[test]
    fn the_short_form_binds_the_same_and_is_no_tag_of_the_full_one() {
        let s = secret();
        let (header, head, body) = s.sign_request_as(
            Form::Short,
            "/peer/v1/ops",
            "ops",
            "us-east",
            "eu-west",
            1_000,
            b"batch",
        );
        let (full_header, _, full_body) =
            s.sign_request("/peer/v1/ops", "ops", "us-east", "eu-west", 1_000, b"batch");
        assert!(header.starts_with("v3 1000 "), "{header}");
        // 22 + 22 characters of nonce and tag, against 32 + 64.
        assert_eq!(
            full_header.len() - header.len(),
            52,
            "{header} / {full_header}"
        );
        assert_eq!(full_body.len() - body.len(), 16);
        let checked = s
            .check_head("/peer/v1/ops", "us-east", "eu-west", &header)
            .unwrap();
        assert_eq!(checked, head);
        assert_eq!(checked.form, Form::Short);
        assert_eq!(checked.body_len(), 5 + 16);
        assert_eq!(s.open_body("ops", &checked, &body), Some(&b"batch"[..]));
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(s.open_body("ops", &checked, &tampered), None);
        assert_eq!(
            s.check_head("/peer/v1/ops", "us-east", "ap-south", &header),
            Err(HeadError::Signature)
        );
        // The full form's tags, cut short, are not the short form's.
        let full = s
            .check_head("/peer/v1/ops", "us-east", "eu-west", &full_header)
            .unwrap();
        let mut cut = full.clone();
        cut.form = Form::Short;
        cut.tag[SHORT_TAG_LEN..].fill(0);
        assert_eq!(
            s.check_head("/peer/v1/ops", "us-east", "eu-west", &cut.header()),
            Err(HeadError::Signature)
        );
        assert_eq!(s.open_body("ops", &checked, &full_body[16..]), None);
        // Base64 with padding, of the wrong length, or not base64: malformed.
        let nonce = b64(&head.nonce);
        for bad in [
            header.replacen(&nonce, &format!("{nonce}=="), 1),
            header.replacen(&nonce, &nonce[1..], 1),
            header.replacen(&nonce, &format!("{}!", &nonce[1..]), 1),
            header.replacen("v3", "v4", 1),
        ] {
            assert_eq!(
                s.check_head("/peer/v1/ops", "us-east", "eu-west", &bad),
                Err(HeadError::Malformed),
                "{bad}"
            );
        }
        // Answers: a short one opens only as short, from its responder.
        let ack = s.sign_answer_as(Form::Short, "eu-west", &head.nonce, b"ack");
        assert_eq!(ack.len(), 16 + 3);
        assert_eq!(
            s.open_answer_as(Form::Short, "eu-west", &head.nonce, &ack),
            Some(&b"ack"[..])
        );
        assert_eq!(s.open_answer("eu-west", &head.nonce, &ack), None);
        assert_eq!(
            s.open_answer_as(Form::Short, "ap-south", &head.nonce, &ack),
            None
        );
        let full_ack = s.sign_answer("eu-west", &head.nonce, b"ack");
        assert_eq!(
            s.open_answer_as(Form::Short, "eu-west", &head.nonce, &full_ack),
            None
        );
    }

    #[test]
    fn nonces_are_taken_once_within_the_window() {
        let s = secret();
        let mut n = Nonces::since(0);
        let (_, h, _) = s.sign_request("/p", "p", "r", "q", 100_000, b"");
        assert_eq!(n.take(&h, 100_000), Ok(()));
        assert_eq!(n.take(&h, 100_001), Err(Replay::Seen));
        // At the window's edge and just past it.
        let (_, edge, _) = s.sign_request("/p", "p", "r", "q", 100_000, b"");
        assert_eq!(n.take(&edge, 100_000 + REPLAY_WINDOW_MS), Ok(()));
        let (_, late, _) = s.sign_request("/p", "p", "r", "q", 100_000, b"");
        assert_eq!(
            n.take(&late, 100_001 + REPLAY_WINDOW_MS),
            Err(Replay::Stale)
        );
        let (_, early, _) = s.sign_request("/p", "p", "r", "q", 200_000, b"");
        assert_eq!(
            n.take(&early, 199_999 - REPLAY_WINDOW_MS),
            Err(Replay::Stale)
        );
        // Signed before this process started: refused (its nonce may have
        // been taken by the process before).
        let mut restarted = Nonces::since(100_000);
        let (_, before, _) = s.sign_request("/p", "p", "r", "q", 99_999, b"");
        assert_eq!(restarted.take(&before, 100_000), Err(Replay::BeforeStart));
        let (_, after, _) = s.sign_request("/p", "p", "r", "q", 100_000, b"");
        assert_eq!(restarted.take(&after, 100_001), Ok(()));
        // Aged-out nonces are forgotten (their requests are stale anyway).
        let (_, fresh, _) = s.sign_request("/p", "p", "r", "q", 500_000, b"");
        assert_eq!(n.take(&fresh, 500_000), Ok(()));
        assert_eq!(n.seen.len(), 1);
    }
}
