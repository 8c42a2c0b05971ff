//! Checkers: what a run's [`History`] demands of the cluster's final state.
//!
//! Each checker returns a [`Report`] a person can read: how many things it
//! checked, how many acknowledged writes are missing (`lost`), how many
//! things are there that must not be (`wrong`), a few counts that describe
//! the run (stale reads, ...), and the first problems in full.
//!
//! The rules, each tolerant of exactly what the history leaves open:
//! - set-full: an acknowledged add that no acknowledged remove followed is
//!   in every region's final read; an acknowledged remove (made by the
//!   session that saw the add) holds everywhere; nothing appears that nobody
//!   tried to add. `stale` counts reads during the run that began after an
//!   add was acknowledged and missed it (allowed: reads are local);
//!   `never read` counts acknowledged adds no read during the run saw.
//! - counters: each region's final value is the sum of acknowledged deltas
//!   plus some subset of the deltas of unknown outcome.
//! - convergence: every region reports the same version vector and digests
//!   within the bound after heal, and full dumps of every keyspace are equal.
//! - read-your-writes: no read carrying a token returned an older value.
//! - lww: every region holds the same winner; a session's acknowledged write
//!   never loses to an earlier acknowledged write of the same session (the
//!   later one causally followed it); acknowledged unique puts read back.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

mod finals;
mod report;

pub use finals::Finals;
pub use report::{Report, Verdict};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::workload::{Deltas, History, Member};

/// Waits for convergence (at most `within`), then compares full dumps of
/// every region. Returns the report and the final state (when it could be
/// read).
pub async fn convergence(c: &Cluster, within: Duration) -> (Report, Option<Finals>) {
    let mut rep = Report::new("convergence");
    match c.wait_converged(within).await {
        Ok(took) => rep.notes.push(format!(
            "equal version vectors and digests {:.2} s after the load stopped and every fault healed (bound {} s)",
            took.as_secs_f64(),
            within.as_secs()
        )),
        Err(e) => rep.wrong(format!("{e}")),
    }
    let finals = match Finals::read(c).await {
        Ok(f) => f,
        Err(e) => {
            rep.wrong(format!("cannot read the final state: {e}"));
            return (rep, None);
        }
    };
    let mut regions = finals.regions.iter();
    if let Some((first, base)) = regions.next() {
        let keys: usize = base.values().map(BTreeMap::len).sum();
        rep.checked += keys as u64;
        for (r, other) in regions {
            rep.checked += keys as u64;
            if base.keys().ne(other.keys()) {
                rep.wrong(format!(
                    "{r} has keyspaces {:?}, {first} {:?}",
                    other.keys().collect::<Vec<_>>(),
                    base.keys().collect::<Vec<_>>()
                ));
            }
            for (ks, items) in base {
                let theirs = other.get(ks);
                for (k, body) in items {
                    match theirs.and_then(|t| t.get(k)) {
                        Some(b) if b == body => {}
                        Some(b) => rep.wrong(format!("{ks}/{k}: {first} holds {body}, {r} {b}")),
                        None => rep.wrong(format!("{ks}/{k}: in {first}, not in {r}")),
                    }
                }
                for k in theirs.into_iter().flat_map(BTreeMap::keys) {
                    if !items.contains_key(k) {
                        rep.wrong(format!("{ks}/{k}: in {r}, not in {first}"));
                    }
                }
            }
        }
        rep.count("keys", keys as u64);
    }
    (rep, Some(finals))
}

fn members(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// An add that was acknowledged or may have happened.
fn tried(fate: &Member) -> bool {
    fate.added.is_some() || fate.add_unknown
}

/// set-full over the `tags` sets and the `tags` field of the `docs`.
pub fn set_full(h: &History, f: &Finals) -> Report {
    let mut rep = Report::new("set-full");
    let (mut stale, mut never_read, mut removed) = (0u64, 0u64, 0u64);
    for (key, fates) in &h.sets {
        let reads: Vec<_> = h.set_reads.iter().filter(|r| &r.key == key).collect();
        for region in f.regions.keys() {
            let got = members(f.value(region, "tags", key));
            for (m, fate) in fates {
                let settled = !fate.remove_unknown;
                if fate.added.is_some() && !fate.removed && settled {
                    rep.checked += 1;
                    if !got.contains(m) {
                        rep.lost(format!(
                            "{region}: tags/{key} lacks acknowledged member {m}"
                        ));
                    }
                } else if fate.removed && !fate.add_unknown {
                    rep.checked += 1;
                    if got.contains(m) {
                        rep.wrong(format!(
                            "{region}: tags/{key} holds {m}, whose acknowledged remove followed its add"
                        ));
                    }
                }
            }
            for m in &got {
                if !fates.get(m).is_some_and(tried) {
                    rep.wrong(format!(
                        "{region}: tags/{key} holds {m}, which nobody added (or whose add was refused)"
                    ));
                }
            }
        }
        for (m, fate) in fates {
            let Some(at) = fate.added else { continue };
            if fate.removed {
                removed += 1;
                continue;
            }
            if fate.remove_unknown {
                continue;
            }
            let after: Vec<_> = reads.iter().filter(|r| r.at > at).collect();
            stale += after.iter().filter(|r| !r.members.contains(m)).count() as u64;
            if !reads.iter().any(|r| r.members.contains(m)) {
                never_read += 1;
            }
        }
        for r in &reads {
            for m in &r.members {
                if !fates.get(m).is_some_and(tried) {
                    rep.wrong(format!(
                        "a read of tags/{key} returned {m}, which nobody added"
                    ));
                }
            }
        }
    }
    for (key, (_, acked, maybe)) in &h.docs {
        for region in f.regions.keys() {
            let got = members(f.value(region, "docs", key).and_then(|d| d.get("tags")));
            for m in acked {
                rep.checked += 1;
                if !got.contains(m) {
                    rep.lost(format!(
                        "{region}: docs/{key}.tags lacks acknowledged member {m}"
                    ));
                }
            }
            for m in &got {
                if !acked.contains(m) && !maybe.contains(m) {
                    rep.wrong(format!(
                        "{region}: docs/{key}.tags holds {m}, which nobody added"
                    ));
                }
            }
        }
    }
    rep.count("reads", h.set_reads.len() as u64);
    rep.count("stale", stale);
    rep.count("never read", never_read);
    rep.count("removed", removed);
    rep
}

/// The sums `acked` plus a subset of `unknown` can reach.
fn reachable(d: &Deltas) -> BTreeSet<i64> {
    let mut sums = BTreeSet::from([d.acked]);
    for u in &d.unknown {
        let shifted: Vec<i64> = sums.iter().map(|s| s + u).collect();
        sums.extend(shifted);
    }
    sums
}

/// Counters: the `hits` counters and the `visits` field of the `docs`.
pub fn counters(h: &History, f: &Finals) -> Report {
    let mut rep = Report::new("counters");
    let mut with_unknown = 0u64;
    let cases = h.counters.iter().map(|(k, d)| ("hits", k, d, None)).chain(
        h.docs
            .iter()
            .map(|(k, (d, _, _))| ("docs", k, d, Some("visits"))),
    );
    for (ks, key, d, field) in cases {
        if !d.unknown.is_empty() {
            with_unknown += 1;
        }
        let ok = reachable(d);
        for region in f.regions.keys() {
            rep.checked += 1;
            let v = f.value(region, ks, key);
            let v = match field {
                Some(name) => v.and_then(|d| d.get(name)),
                None => v,
            };
            let got = v.and_then(Value::as_i64).unwrap_or(0);
            if !ok.contains(&got) {
                let what = format!(
                    "{region}: {ks}/{key}{} = {got}; acknowledged deltas sum to {}, {} more of unknown outcome ({:?})",
                    field.map(|n| format!(".{n}")).unwrap_or_default(),
                    d.acked,
                    d.unknown.len(),
                    d.unknown
                );
                if ok.first().is_some_and(|least| got < *least) {
                    rep.lost(what);
                } else {
                    rep.wrong(what);
                }
            }
        }
    }
    rep.count("counters", (h.counters.len() + h.docs.len()) as u64);
    rep.count("with unknown deltas", with_unknown);
    rep
}

/// Read-your-writes: reads carrying the token of the session's last write.
pub fn read_your_writes(h: &History) -> Report {
    let mut rep = Report::new("read-your-writes");
    rep.checked = h.token_reads;
    for s in &h.token_stale {
        rep.wrong(format!("stale read: {s}"));
    }
    rep.count("answered 503 (region behind)", h.token_unavailable);
    rep
}

/// LWW registers and unique puts.
pub fn lww(h: &History, f: &Finals) -> Report {
    let mut rep = Report::new("lww");
    // Unique keys, each written once.
    for region in f.regions.keys() {
        for (k, v) in &h.puts {
            rep.checked += 1;
            match f.value(region, "default", k) {
                Some(got) if got == v => {}
                got => rep.lost(format!(
                    "{region}: acknowledged put default/{k} reads {got:?}"
                )),
            }
        }
        for (k, body) in f.regions[region].get("default").into_iter().flatten() {
            let val = body.get("value");
            if !h.puts.contains_key(k) && h.maybe_puts.get(k).map(Some) != Some(val) {
                rep.wrong(format!(
                    "{region}: default/{k} = {val:?}, which nobody wrote"
                ));
            }
        }
    }
    // Registers of one session: its last acknowledged value, or a value of
    // unknown outcome that landed late, never an earlier acknowledged one.
    for (key, acked) in &h.registers {
        let Some(last) = acked.last() else { continue };
        let maybe = h.maybe_registers.get(key);
        for region in f.regions.keys() {
            rep.checked += 1;
            let got = f.value(region, "regs", key).and_then(Value::as_i64);
            match got {
                Some(g) if g == *last || maybe.is_some_and(|m| m.contains(&g)) => {}
                Some(g) if acked.contains(&g) => rep.lost(format!(
                    "{region}: regs/{key} = {g}, an earlier acknowledged write of the session, beat its later {last}"
                )),
                other => rep.wrong(format!("{region}: regs/{key} = {other:?}; the session's last acknowledged write was {last}")),
            }
        }
    }
    // Shared registers: one winner everywhere, and never a session's write
    // that the same session's later acknowledged write followed.
    let mut winners = 0u64;
    for (key, by) in &h.shared {
        let mut seen: Option<&Value> = None;
        for region in f.regions.keys() {
            rep.checked += 1;
            let got = f.value(region, "regs", key);
            match (seen, got) {
                (None, _) => seen = got,
                (Some(s), g) if Some(s) != g => rep.wrong(format!(
                    "regs/{key}: regions disagree on the winner ({s} vs {g:?})"
                )),
                _ => {}
            }
            let Some(g) = got else {
                if by.values().any(|(a, _)| !a.is_empty()) {
                    rep.lost(format!(
                        "{region}: regs/{key} is empty after acknowledged writes"
                    ));
                }
                continue;
            };
            let writer = g.get("by").and_then(Value::as_str).unwrap_or_default();
            let seq = g.get("seq").and_then(Value::as_i64).unwrap_or(-1);
            match by.get(writer) {
                Some((acked, _)) if acked.contains(&seq) => {
                    if let Some(later) = acked.iter().find(|s| **s > seq) {
                        rep.lost(format!(
                            "{region}: regs/{key} = {writer}#{seq}, which the same session's later acknowledged #{later} followed and should have beaten"
                        ));
                    }
                }
                Some((_, maybe)) if maybe.contains(&seq) => {}
                _ => rep.wrong(format!("{region}: regs/{key} = {g}, which nobody wrote")),
            }
        }
        if seen.is_some() {
            winners += 1;
        }
    }
    rep.count("shared registers", winners);
    rep.count("session registers", h.registers.len() as u64);
    rep
}

/// Every checker, on a cluster whose faults have been healed.
pub async fn check_all(c: &Cluster, h: &History, within: Duration) -> Verdict {
    let (conv, finals) = convergence(c, within).await;
    let mut v = Verdict {
        reports: vec![conv],
    };
    if let Some(f) = finals {
        v.reports.push(set_full(h, &f));
        v.reports.push(counters(h, &f));
        v.reports.push(lww(h, &f));
    }
    v.reports.push(read_your_writes(h));
    v
}

/// One line on the operations behind a verdict.
pub fn summary(h: &History) -> String {
    let errors: Vec<String> = h.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    format!(
        "{} acknowledged, {} failed, {} indeterminate{}",
        h.ok,
        h.failed,
        h.indeterminate,
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finals(regions: &[(&str, &str, &str, Value)]) -> Finals {
        let mut f = Finals::default();
        for (r, ks, k, v) in regions {
            f.regions
                .entry(r.to_string())
                .or_default()
                .entry(ks.to_string())
                .or_default()
                .insert(k.to_string(), serde_json::json!({"key": k, "value": v}));
        }
        f
    }

    #[test]
    fn a_counter_may_include_any_subset_of_the_unknown_deltas() {
        let mut h = History::default();
        h.counters.insert(
            "n0".into(),
            Deltas {
                acked: 10,
                unknown: vec![3, -2],
            },
        );
        for (got, ok) in [
            (10, true),
            (13, true),
            (8, true),
            (11, true),
            (12, false),
            (9, false),
        ] {
            let f = finals(&[("a", "hits", "n0", serde_json::json!(got))]);
            assert_eq!(counters(&h, &f).ok(), ok, "final value {got}");
        }
        let f = finals(&[("a", "hits", "n0", serde_json::json!(7))]);
        assert_eq!(counters(&h, &f).lost, 1, "below every reachable sum");
    }

    #[test]
    fn set_full_demands_acknowledged_adds_and_honours_removes() {
        let mut h = History::default();
        let s = h.sets.entry("s0".into()).or_default();
        s.insert(
            "kept".into(),
            Member {
                added: Some(Duration::from_millis(1)),
                ..Member::default()
            },
        );
        s.insert(
            "gone".into(),
            Member {
                added: Some(Duration::from_millis(1)),
                removed: true,
                ..Member::default()
            },
        );
        let ok = finals(&[("a", "tags", "s0", serde_json::json!(["kept"]))]);
        assert!(set_full(&h, &ok).ok());
        let lost = finals(&[("a", "tags", "s0", serde_json::json!([]))]);
        assert_eq!(set_full(&h, &lost).lost, 1);
        let back = finals(&[(
            "a",
            "tags",
            "s0",
            serde_json::json!(["kept", "gone", "ghost"]),
        )]);
        assert_eq!(
            set_full(&h, &back).wrong,
            2,
            "a removed member and one nobody added"
        );
        h.sets
            .get_mut("s0")
            .unwrap()
            .insert("refused".into(), Member::default());
        let refused = finals(&[("a", "tags", "s0", serde_json::json!(["kept", "refused"]))]);
        assert_eq!(
            set_full(&h, &refused).wrong,
            1,
            "an add answered 4xx appeared"
        );
    }

    #[test]
    fn a_session_write_must_not_lose_to_its_own_earlier_write() {
        let mut h = History::default();
        h.shared
            .entry("shared-0".into())
            .or_default()
            .insert("s1".into(), (vec![1, 4], vec![6]));
        let v = |seq: i64| serde_json::json!({"by": "s1", "seq": seq});
        assert!(lww(&h, &finals(&[("a", "regs", "shared-0", v(4))])).ok());
        assert!(
            lww(&h, &finals(&[("a", "regs", "shared-0", v(6))])).ok(),
            "a late unknown write may win"
        );
        assert_eq!(lww(&h, &finals(&[("a", "regs", "shared-0", v(1))])).lost, 1);
        assert_eq!(
            lww(&h, &finals(&[("a", "regs", "shared-0", v(2))])).wrong,
            1
        );
        let split = finals(&[
            ("a", "regs", "shared-0", v(4)),
            ("b", "regs", "shared-0", v(6)),
        ]);
        assert_eq!(lww(&h, &split).wrong, 1, "regions disagree");
    }
}
