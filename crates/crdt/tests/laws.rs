//! Property tests of every replicated type: the merge laws, and convergence of
//! 2 to 7 replicas that receive the same ops in random causal orders with
//! duplicates. Case count: `PROPTEST_CASES` (proptest's default, 256).
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use meridian_crdt::codec;
use meridian_crdt::*;
use proptest::prelude::*;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// Delivery orders drawn from a seed that proptest picks (fastrand's seeded
/// generator), so a shrunk failure replays.
struct Rng(fastrand::Rng);
impl Rng {
    fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n)
    }
}

fn replica(i: usize) -> ReplicaId {
    let names = [
        "ap-south",
        "eu-west",
        "us-east",
        "us-west",
        "sa-east",
        "af-south",
        "me-central",
    ];
    ReplicaId::new(
        RegionId::new(names[i]).unwrap(),
        Uuid::from_u128(0x1000 + i as u128),
    )
}

/// A type under test: how a replica builds a random op from its own state.
trait Model: Crdt + Serialize + Debug {
    fn make_op(&self, me: &ReplicaId, choice: u8, val: u8) -> Option<Self::Op>;
}

struct Shipped<O> {
    dot: Dot,
    hlc: Hlc,
    deps: VersionVector,
    op: O,
}

struct Node<T> {
    id: ReplicaId,
    state: T,
    vv: VersionVector,
    clock: Clock,
    applied: BTreeSet<usize>,
    /// (loser, winner) of every conflict reported on first application.
    conflicts: Vec<(Dot, Dot)>,
}

struct Sim<T: Model> {
    nodes: Vec<Node<T>>,
    ops: Vec<Shipped<T::Op>>,
    snapshots: Vec<T>,
    rng: Rng,
    now: u64,
}

impl<T: Model> Sim<T> {
    fn new(n: usize, seed: u64) -> Self {
        Self {
            nodes: (0..n)
                .map(|i| Node {
                    id: replica(i),
                    state: T::default(),
                    vv: VersionVector::new(),
                    clock: Clock::new(u64::MAX / 4),
                    applied: BTreeSet::new(),
                    conflicts: Vec::new(),
                })
                .collect(),
            ops: Vec::new(),
            snapshots: Vec::new(),
            rng: Rng::new(seed),
            now: 1_000,
        }
    }

    fn generate(&mut self, at: usize, choice: u8, val: u8) {
        let node = &mut self.nodes[at];
        let Some(op) = node.state.make_op(&node.id, choice, val) else {
            return;
        };
        // Each replica's wall clock is skewed differently; HLC keeps order.
        let hlc = node.clock.tick(self.now + (at as u64 * 7) % 5).unwrap();
        let dot = Dot::new(node.id.clone(), node.vv.get(&node.id).next().unwrap());
        let shipped = Shipped {
            dot,
            hlc,
            deps: node.vv.clone(),
            op,
        };
        self.ops.push(shipped);
        let idx = self.ops.len() - 1;
        self.deliver_op(at, idx);
    }

    fn deliverable(&self, at: usize) -> Vec<usize> {
        let node = &self.nodes[at];
        (0..self.ops.len())
            .filter(|i| {
                let s = &self.ops[*i];
                node.applied.contains(i)
                    || (node.vv.covers_all(&s.deps)
                        && node.vv.get(&s.dot.replica).next() == Some(s.dot.seq))
            })
            .collect()
    }

    fn deliver_op(&mut self, at: usize, idx: usize) {
        let s = &self.ops[idx];
        let node = &mut self.nodes[at];
        node.clock.observe(s.hlc, self.now).unwrap();
        let meta = OpMeta {
            dot: &s.dot,
            hlc: s.hlc,
            deps: &s.deps,
        };
        // Duplicates go straight to apply: it must be idempotent.
        let conflicts = node.state.apply(&s.op, &meta);
        if !node.applied.contains(&idx) {
            node.conflicts
                .extend(conflicts.into_iter().map(|c| (c.loser.dot, c.winner.dot)));
        }
        node.vv.add(&s.dot);
        node.applied.insert(idx);
    }

    /// Delivers one random op (new or duplicate) to `at`, if any can go.
    fn deliver_random(&mut self, at: usize) {
        let options = self.deliverable(at);
        let fresh: Vec<usize> = options
            .iter()
            .copied()
            .filter(|i| !self.nodes[at].applied.contains(i))
            .collect();
        let pick = if !fresh.is_empty() && self.rng.below(4) != 0 {
            fresh[self.rng.below(fresh.len())]
        } else if !options.is_empty() {
            options[self.rng.below(options.len())]
        } else {
            return;
        };
        self.deliver_op(at, pick);
    }

    fn run(&mut self, events: &[Event]) {
        let n = self.nodes.len();
        for &(kind, r, choice, val) in events {
            self.now += u64::from(val % 3);
            let at = r as usize % n;
            if kind % 3 == 0 {
                self.generate(at, choice, val);
            } else {
                self.deliver_random(at);
            }
            if kind % 5 == 0 {
                self.snapshots.push(self.nodes[at].state.clone());
            }
        }
        // Quiescence: everyone gets everything, in random causal order, with
        // some duplicates thrown in.
        for at in 0..n {
            while self.nodes[at].applied.len() < self.ops.len() {
                self.deliver_random(at);
            }
            for _ in 0..3 {
                self.deliver_random(at);
            }
        }
    }

    fn assert_converged(&self) {
        let first = &self.nodes[0].state;
        let bytes = codec::encode(first).unwrap();
        for node in &self.nodes[1..] {
            assert_eq!(&node.state, first, "replica {} diverged", node.id);
            assert_eq!(codec::encode(&node.state).unwrap(), bytes);
        }
    }

    /// Merge laws on states that occurred in this history, and agreement of
    /// merge with op application.
    fn assert_merge_laws(&self) {
        let mut states: Vec<&T> = self.snapshots.iter().collect();
        states.extend(self.nodes.iter().map(|n| &n.state));
        let join = |a: &T, b: &T| {
            let mut x = a.clone();
            x.merge(b);
            x
        };
        for (i, a) in states.iter().enumerate().take(6) {
            assert_eq!(join(a, a), (*a).clone(), "idempotent");
            for b in states.iter().skip(i).take(4) {
                assert_eq!(join(a, b), join(b, a), "commutative");
                for c in states.iter().take(3) {
                    assert_eq!(join(&join(a, b), c), join(a, &join(b, c)), "associative");
                }
            }
        }
        // Every snapshot is in the final state's past: merging it changes nothing.
        let last = &self.nodes[0].state;
        for s in &self.snapshots {
            assert_eq!(
                &join(last, s),
                last,
                "a past state merged into the final one"
            );
        }
        // States shipped instead of ops converge to the same place.
        let mut fresh = T::default();
        for s in self.snapshots.iter().rev() {
            fresh.merge(s);
        }
        for n in &self.nodes {
            fresh.merge(&n.state);
        }
        assert_eq!(&fresh, last, "state transfer agrees with op delivery");
    }
}

/// One step: (kind, replica, choice, value).
type Event = (u8, u8, u8, u8);

fn events() -> impl Strategy<Value = (usize, Vec<Event>, u64)> {
    (
        2usize..=7,
        prop::collection::vec(any::<(u8, u8, u8, u8)>(), 1..80),
        any::<u64>(),
    )
}

// ---------------------------------------------------------------- LWW

impl Model for LwwRegister<u8> {
    fn make_op(&self, _me: &ReplicaId, choice: u8, val: u8) -> Option<LwwOp<u8>> {
        Some(if choice.is_multiple_of(4) {
            self.delete_op()
        } else {
            self.set_op(val)
        })
    }
}

proptest! {
    #[test]
    fn lww_converges_to_the_highest_stamp((n, ev, seed) in events()) {
        let mut sim = Sim::<LwwRegister<u8>>::new(n, seed);
        sim.run(&ev);
        sim.assert_converged();
        sim.assert_merge_laws();
        if let Some(top) = sim.ops.iter().max_by(|a, b| (a.hlc, &a.dot.replica).cmp(&(b.hlc, &b.dot.replica))) {
            let expect = match &top.op { LwwOp::Set(v) => Some(v), LwwOp::Delete => None };
            prop_assert_eq!(sim.nodes[0].state.value(), expect);
        }
    }

    #[test]
    fn lww_reports_exactly_the_concurrent_losers((n, ev, seed) in events()) {
        let mut sim = Sim::<LwwRegister<u8>>::new(n, seed);
        sim.run(&ev);
        let by_dot: BTreeMap<&Dot, &Shipped<LwwOp<u8>>> = sim.ops.iter().map(|s| (&s.dot, s)).collect();
        let stamp = |s: &Shipped<LwwOp<u8>>| (s.hlc, s.dot.replica.clone());
        let Some(winner) = sim.ops.iter().max_by_key(|s| stamp(s)) else { return Ok(()) };
        // Ops no other op had seen: each but the winner lost a real conflict.
        let maximal: BTreeSet<&Dot> = sim.ops.iter()
            .filter(|s| !sim.ops.iter().any(|o| o.deps.covers(&s.dot)))
            .map(|s| &s.dot)
            .filter(|d| **d != winner.dot)
            .collect();
        for node in &sim.nodes {
            for (loser, won) in &node.conflicts {
                let (l, w) = (by_dot[loser], by_dot[won]);
                prop_assert!(!l.deps.covers(&w.dot) && !w.deps.covers(&l.dot), "reported a causal overwrite as a conflict");
                prop_assert!(stamp(w) > stamp(l));
            }
            let reported: BTreeSet<&Dot> = node.conflicts.iter().map(|(l, _)| l).collect();
            for d in &maximal {
                prop_assert!(reported.contains(d), "{} never reported losing at {}", d, node.id);
            }
        }
    }
}

// ---------------------------------------------------------------- MV

impl Model for MvRegister<u8> {
    fn make_op(&self, _me: &ReplicaId, choice: u8, val: u8) -> Option<MvOp<u8>> {
        Some(match choice % 4 {
            0 => self.delete_op(None),
            1 => self.put_op(Some(self.context()), val, 3).op,
            _ => self.put_op(None, val, 3).op,
        })
    }
}

proptest! {
    #[test]
    fn mv_keeps_exactly_the_unreplaced_writes((n, ev, seed) in events()) {
        let mut sim = Sim::<MvRegister<u8>>::new(n, seed);
        sim.run(&ev);
        sim.assert_converged();
        sim.assert_merge_laws();
        // Reference: a put survives unless some op's context covers it.
        let ctx_of = |o: &MvOp<u8>| match o { MvOp::Put { ctx, .. } | MvOp::Delete { ctx } | MvOp::Merge { ctx, .. } => ctx.clone() };
        let expect: BTreeSet<Dot> = sim.ops.iter()
            .filter(|s| matches!(s.op, MvOp::Put { .. }))
            .filter(|s| !sim.ops.iter().any(|o| o.dot != s.dot && ctx_of(&o.op).covers(&s.dot)))
            .map(|s| s.dot.clone())
            .collect();
        let got: BTreeSet<Dot> = sim.nodes[0].state.siblings().into_iter().map(|(v, _)| v.dot).collect();
        prop_assert_eq!(got, expect);
    }
}

// ---------------------------------------------------------------- counter

impl Model for PnCounter {
    fn make_op(&self, me: &ReplicaId, choice: u8, val: u8) -> Option<CounterOp> {
        let by = i64::from(val) - 128;
        if choice.is_multiple_of(9) {
            return Some(self.delete_op());
        }
        self.incr_op(me, by).ok()
    }
}

/// Counters without deletes: the value is exactly the sum of the deltas.
#[derive(Clone, Default, PartialEq, Debug, Serialize)]
struct NoDeleteCounter(PnCounter);
impl Crdt for NoDeleteCounter {
    type Op = (CounterOp, i64);
    type Value = std::convert::Infallible;
    fn apply(&mut self, op: &Self::Op, meta: &OpMeta<'_>) -> Vec<Conflict<Self::Value>> {
        self.0.apply(&op.0, meta)
    }
    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0)
    }
    fn is_live(&self) -> bool {
        self.0.is_live()
    }
}
impl Model for NoDeleteCounter {
    fn make_op(&self, me: &ReplicaId, _choice: u8, val: u8) -> Option<Self::Op> {
        let by = i64::from(val) - 100;
        Some((self.0.incr_op(me, by).ok()?, by))
    }
}

proptest! {
    #[test]
    fn counters_equal_the_sum_of_their_deltas((n, ev, seed) in events()) {
        let mut sim = Sim::<NoDeleteCounter>::new(n, seed);
        sim.run(&ev);
        sim.assert_converged();
        sim.assert_merge_laws();
        let sum: i128 = sim.ops.iter().map(|s| i128::from(s.op.1)).sum();
        prop_assert_eq!(sim.nodes[0].state.0.value(), sum);
    }

    #[test]
    fn counters_with_deletes_converge((n, ev, seed) in events()) {
        let mut sim = Sim::<PnCounter>::new(n, seed);
        sim.run(&ev);
        sim.assert_converged();
        sim.assert_merge_laws();
    }
}

// ---------------------------------------------------------------- OR-set

impl Model for OrSet<u8> {
    fn make_op(&self, _me: &ReplicaId, choice: u8, val: u8) -> Option<OrSetOp<u8>> {
        let v = val % 6;
        Some(match choice % 7 {
            0 => self.clear_op(),
            1..=3 => self.add_op(vec![v]),
            _ => self.remove_op(vec![v, (v + 1) % 6]),
        })
    }
}

proptest! {
    #[test]
    fn or_set_add_wins_over_concurrent_removes((n, ev, seed) in events()) {
        let mut sim = Sim::<OrSet<u8>>::new(n, seed);
        sim.run(&ev);
        sim.assert_converged();
        sim.assert_merge_laws();
        // Reference: v is present iff some add of v was not observed by any
        // remove of v (or clear).
        let mut expect = BTreeSet::new();
        for add in &sim.ops {
            let OrSetOp::Update { add: added, .. } = &add.op else { continue };
            for v in added {
                let removed = sim.ops.iter().any(|r| match &r.op {
                    OrSetOp::Clear => r.deps.covers(&add.dot),
                    OrSetOp::Update { remove, .. } => remove.contains(v) && r.deps.covers(&add.dot),
                });
                if !removed {
                    expect.insert(*v);
                }
            }
        }
        let got: BTreeSet<u8> = sim.nodes[0].state.iter().copied().collect();
        prop_assert_eq!(got, expect);
    }
}

// ---------------------------------------------------------------- doc

fn doc_schema() -> DocSchema {
    serde_json::from_value(json!({
        "n": "counter", "tags": "set", "hi": "max", "lo": "min",
        "sub": {"doc": {"k": "counter"}}
    }))
    .unwrap()
}

impl Model for Doc {
    fn make_op(&self, me: &ReplicaId, choice: u8, val: u8) -> Option<DocOp> {
        let v = i64::from(val % 10);
        let patch = match choice % 9 {
            0 => return Some(self.delete_op()),
            1 => json!({"name": v}),
            2 => json!({"n": v - 4}),
            3 => json!({"tags": [v % 4]}),
            4 => json!({"tags": {"remove": [v % 4]}}),
            5 => json!({"hi": v, "lo": v}),
            6 => json!({"sub": {"k": 1, "z": v}}),
            7 => json!({"name": null}),
            _ => json!({"sub": null, "other": v}),
        };
        self.patch_op(me, patch.as_object().unwrap(), &doc_schema())
            .ok()
    }
}

proptest! {
    #[test]
    fn docs_converge_field_by_field((n, ev, seed) in events()) {
        let mut sim = Sim::<Doc>::new(n, seed);
        sim.run(&ev);
        sim.assert_converged();
        sim.assert_merge_laws();
    }
}

// ---------------------------------------------------------------- any policy

impl Model for Object {
    fn make_op(&self, me: &ReplicaId, choice: u8, val: u8) -> Option<ObjectOp> {
        // Mostly one policy, sometimes another: mixed policies must still converge.
        Some(match (self, choice % 11) {
            (_, 0) => {
                let c = PnCounter::default();
                ObjectOp::Counter(c.incr_op(me, 1).ok()?)
            }
            (Object::Lww(r), _) => {
                ObjectOp::Lww(r.set_op(Value::Json(Json::parse(&val.to_string()).ok()?)))
            }
            (Object::Counter(c), _) => ObjectOp::Counter(c.incr_op(me, i64::from(val)).ok()?),
            _ => return None,
        })
    }
}

proptest! {
    #[test]
    fn mixed_policies_still_converge((n, ev, seed) in events()) {
        let mut sim = Sim::<Object>::new(n, seed);
        sim.run(&ev);
        sim.assert_converged();
        sim.assert_merge_laws();
    }
}

// ---------------------------------------------------------------- HLC

proptest! {
    #[test]
    fn hlc_never_goes_backwards_and_orders_causal_events(
        steps in prop::collection::vec((any::<bool>(), 0u64..5_000, 0u64..5_000), 1..200)
    ) {
        let mut a = Clock::new(1_000);
        let mut b = Clock::new(1_000);
        let mut last_a = Hlc::ZERO;
        let mut sent = Hlc::ZERO;
        for (send, now_a, now_b) in steps {
            let t = a.tick(now_a).unwrap();
            prop_assert!(t > last_a, "tick went backwards");
            last_a = t;
            if send {
                sent = t;
            }
            // b receives a's message; its next events follow it causally.
            if let Ok(r) = b.observe(sent, now_b) {
                prop_assert!(r > sent, "receive not after send");
                let later = b.tick(now_b).unwrap();
                prop_assert!(later > r);
            } else {
                prop_assert!(sent.wall_ms() > now_b + 1_000, "refused a timestamp within the bound");
            }
        }
    }
}

#[test]
fn version_vector_compare_matches_the_pointwise_order() {
    let mut rng = Rng::new(42);
    for _ in 0..2_000 {
        let mk = |rng: &mut Rng| -> VersionVector {
            (0..3)
                .map(|i| (replica(i), Seq(rng.below(3) as u64)))
                .collect()
        };
        let (a, b) = (mk(&mut rng), mk(&mut rng));
        let le = (0..3).all(|i| a.get(&replica(i)) <= b.get(&replica(i)));
        let ge = (0..3).all(|i| a.get(&replica(i)) >= b.get(&replica(i)));
        let want = match (le, ge) {
            (true, true) => CausalOrder::Equal,
            (true, false) => CausalOrder::Before,
            (false, true) => CausalOrder::After,
            _ => CausalOrder::Concurrent,
        };
        assert_eq!(a.compare(&b), want);
        let mut m = a.clone();
        m.merge(&b);
        assert!(m.covers_all(&a) && m.covers_all(&b));
    }
}

#[test]
fn counters_across_seven_replicas_add_up_exactly() {
    // A fixed, larger workload on top of the random ones.
    let mut sim = Sim::<NoDeleteCounter>::new(7, 7);
    let ev: Vec<Event> = (0..2_000u32)
        .map(|i| ((i % 3) as u8, (i * 7 % 11) as u8, 0, (i * 31 % 200) as u8))
        .collect();
    sim.run(&ev);
    sim.assert_converged();
    let sum: i128 = sim.ops.iter().map(|s| i128::from(s.op.1)).sum();
    assert_eq!(sim.nodes[3].state.0.value(), sum);
    let by_origin: BTreeMap<String, usize> = sim.ops.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.dot.replica.to_string()).or_default() += 1;
        m
    });
    assert_eq!(by_origin.len(), 7);
}
