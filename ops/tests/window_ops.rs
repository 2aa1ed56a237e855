//! The window operator end to end: assignment per kind, lateness, emission, and restores.

use std::collections::BTreeMap;

use apache_avro::types::Value;
use sluice_ops::window::{
    Added, AggSpec, Aggregates, Input, ResultKind, WindowOp, WindowResult, WindowSpec,
};
use sluice_state::{KvStore, MemStore, WriteBatch};

fn op(window: &str, aggs: &str) -> WindowOp {
    let spec: WindowSpec = serde_yaml::from_str(window).unwrap();
    let aggs: Aggregates = serde_yaml::from_str(aggs).unwrap();
    WindowOp::new(&spec, &aggs.0).unwrap()
}

/// count(*), sum(v): the workhorse of these tests.
fn count_sum(window: &str) -> WindowOp {
    op(window, "n: count\ntotal: sum(v)\n")
}

fn add(op: &mut WindowOp, key: &str, ts: i64, v: f64, out: &mut Vec<WindowResult>) -> Added {
    let n = op.aggs().len();
    let inputs = vec![Input::Num(v); n];
    op.add(key.as_bytes(), ts, &inputs, out).unwrap()
}

/// (key, start, end, n, total) of results of one kind.
fn rows(out: &[WindowResult], kind: ResultKind) -> Vec<(String, i64, i64, i64, f64)> {
    out.iter()
        .filter(|r| r.kind == kind)
        .map(|r| {
            let n = match r.values[0] {
                Value::Long(n) => n,
                ref v => panic!("{v:?}"),
            };
            let total = match r.values[1] {
                Value::Double(t) => t,
                Value::Null => f64::NAN,
                ref v => panic!("{v:?}"),
            };
            (
                String::from_utf8(r.key.clone()).unwrap(),
                r.start,
                r.end,
                n,
                total,
            )
        })
        .collect()
}

fn finals(out: &[WindowResult]) -> Vec<(String, i64, i64, i64, f64)> {
    rows(out, ResultKind::Final)
}

#[test]
fn tumbling_closes_in_end_start_key_order_at_exact_boundaries() {
    let mut w = count_sum("kind: tumbling\nsize: 10ms\n");
    let mut out = Vec::new();
    for (k, ts, v) in [("b", 0, 1.0), ("a", 9, 2.0)] {
        assert!(matches!(add(&mut w, k, ts, v, &mut out), Added::Counted(1)));
    }
    // Stream time 9: [-10, 0) closed at 0 (grace 0), so -1 is late.
    assert!(matches!(
        add(&mut w, "a", -1, 4.0, &mut out),
        Added::Late(_)
    ));
    assert!(out.is_empty());
    // 10 is the end of [0, 10): it opens [10, 20) and closes [0, 10), in (end, start, key)
    // order.
    assert!(matches!(
        add(&mut w, "b", 10, 8.0, &mut out),
        Added::Counted(1)
    ));
    assert_eq!(
        finals(&out),
        [("a".into(), 0, 10, 1, 2.0), ("b".into(), 0, 10, 1, 1.0)]
    );
    out.clear();
    w.advance_to(i64::MAX, &mut out).unwrap();
    assert_eq!(finals(&out), [("b".into(), 10, 20, 1, 8.0)]);
}

#[test]
fn negative_times_and_the_exact_end() {
    let mut w = count_sum("kind: tumbling\nsize: 10ms\ngrace: 1h\n");
    let mut out = Vec::new();
    for ts in [-11, -10, -1, 0, 9, 10] {
        add(&mut w, "k", ts, 1.0, &mut out);
    }
    w.advance_to(i64::MAX, &mut out).unwrap();
    let got: Vec<_> = finals(&out).into_iter().map(|r| (r.1, r.2, r.3)).collect();
    assert_eq!(got, [(-20, -10, 1), (-10, 0, 2), (0, 10, 2), (10, 20, 1)]);
}

#[test]
fn late_within_grace_counts_past_grace_is_late() {
    let mut w = count_sum("kind: tumbling\nsize: 1m\ngrace: 30s\n");
    let mut out = Vec::new();
    add(&mut w, "k", 10_000, 1.0, &mut out);
    add(&mut w, "k", 80_000, 1.0, &mut out); // stream time 80s: [0, 60s) open until 90s
    assert!(out.is_empty());
    // 20 s behind, window [0, 60s) still within grace.
    assert_eq!(add(&mut w, "k", 59_999, 1.0, &mut out), Added::Counted(1));
    add(&mut w, "k", 90_000, 1.0, &mut out); // closes [0, 60s)
    assert_eq!(finals(&out), [("k".into(), 0, 60_000, 2, 2.0)]);
    match add(&mut w, "k", 30_000, 1.0, &mut out) {
        Added::Late(l) => {
            assert_eq!(
                (l.ts, l.stream_time, l.grace, l.closed_at),
                (30_000, 90_000, 30_000, 60_000)
            );
            let msg = l.to_string();
            assert!(msg.contains("1m behind"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn several_tumbling_sizes_count_each_record_once_per_length() {
    let mut w = count_sum("kind: tumbling\nsizes: [10ms, 30ms]\ngrace: 5ms\n");
    let mut out = Vec::new();
    // One record, one window of each length.
    assert_eq!(add(&mut w, "k", 3, 1.0, &mut out), Added::Counted(2));
    add(&mut w, "k", 12, 2.0, &mut out);
    add(&mut w, "k", 29, 4.0, &mut out);
    // Stream time 29: [0, 10) closed at 15; [0, 30) is open until 35. A record at 8 is
    // still counted in the long window, so it is not late.
    assert_eq!(add(&mut w, "k", 8, 8.0, &mut out), Added::Counted(1));
    add(&mut w, "k", 40, 16.0, &mut out); // closes every window ending by 35
    let got: Vec<_> = finals(&out)
        .into_iter()
        .map(|r| (r.1, r.2, r.3, r.4))
        .collect();
    assert_eq!(
        got,
        [
            (0, 10, 1, 1.0),
            (10, 20, 1, 2.0),
            (0, 30, 4, 15.0),
            (20, 30, 1, 4.0)
        ],
        "closing order: by end, then start"
    );
    // Late for both lengths: [0, 10) and [0, 30) are closed.
    assert!(matches!(add(&mut w, "k", 5, 1.0, &mut out), Added::Late(_)));
    out.clear();
    w.advance_to(i64::MAX, &mut out).unwrap();
    let got: Vec<_> = finals(&out).into_iter().map(|r| (r.1, r.2, r.3)).collect();
    assert_eq!(got, [(40, 50, 1), (30, 60, 1)]);
}

#[test]
fn sizes_are_checked() {
    let problems = |y: &str| {
        let spec: WindowSpec = serde_yaml::from_str(y).unwrap();
        spec.check()
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect::<Vec<_>>()
    };
    let p = problems("kind: tumbling\nsize: 1m\nsizes: [1m, 5m]\n");
    assert!(
        p.iter().any(|(k, m)| k == "sizes" && m.contains("both")),
        "{p:?}"
    );
    let p = problems("kind: tumbling\nsizes: [1m, 5m, 1m]\n");
    assert!(
        p.iter()
            .any(|(k, m)| k == "sizes[2]" && m.contains("twice")),
        "{p:?}"
    );
    let p = problems("kind: tumbling\nsizes: [0s]\n");
    assert!(p.iter().any(|(k, _)| k == "sizes[0]"), "{p:?}");
    let p = problems("kind: tumbling\nsizes: []\n");
    assert!(
        p.iter().any(|(k, m)| k == "sizes" && m.contains("empty")),
        "{p:?}"
    );
    let p = problems("kind: hopping\nsize: 5m\nadvance: 1m\nsizes: [1m]\n");
    assert!(
        p.iter().any(|(k, m)| k == "sizes" && m.contains("hopping")),
        "{p:?}"
    );
    assert!(problems("kind: tumbling\nsizes: [1m, 5m]\n").is_empty());
}

#[test]
fn out_of_order_records_land_in_their_windows() {
    let mut w = count_sum("kind: tumbling\nsize: 10ms\ngrace: 100ms\n");
    let mut out = Vec::new();
    for (ts, v) in [
        (25, 1.0),
        (3, 2.0),
        (17, 4.0),
        (5, 8.0),
        (29, 16.0),
        (11, 32.0),
    ] {
        add(&mut w, "k", ts, v, &mut out);
    }
    w.advance_to(i64::MAX, &mut out).unwrap();
    let got: Vec<_> = finals(&out).into_iter().map(|r| (r.1, r.3, r.4)).collect();
    assert_eq!(got, [(0, 2, 10.0), (10, 2, 36.0), (20, 2, 17.0)]);
}

#[test]
fn hopping_puts_a_record_in_size_over_advance_windows() {
    let mut w = count_sum("kind: hopping\nsize: 50ms\nadvance: 10ms\ngrace: 1s\n");
    let mut out = Vec::new();
    assert_eq!(add(&mut w, "k", 47, 1.0, &mut out), Added::Counted(5));
    w.advance_to(i64::MAX, &mut out).unwrap();
    let got: Vec<_> = finals(&out).into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(got, [(0, 50), (10, 60), (20, 70), (30, 80), (40, 90)]);

    // Some windows closed, some open: the record counts in the open ones.
    let mut w = count_sum("kind: hopping\nsize: 50ms\nadvance: 10ms\n");
    let mut out = Vec::new();
    add(&mut w, "k", 65, 1.0, &mut out); // stream time 65: windows ending <= 65 closed
    assert_eq!(add(&mut w, "k", 47, 1.0, &mut out), Added::Counted(3));
}

#[test]
fn a_bridging_record_merges_two_sessions() {
    let mut w = op(
        "kind: session\ngap: 50ms\ngrace: 1s\nemit: update\n",
        "n: count\ntotal: sum(v)\nfirst_v: first(v)\nlast_v: last(v)\n",
    );
    let mut out = Vec::new();
    add(&mut w, "k", 0, 1.0, &mut out);
    add(&mut w, "k", 100, 2.0, &mut out);
    add(&mut w, "j", 50, 64.0, &mut out); // another key: untouched by the merge
    assert_eq!(w.open_windows(), 3);
    out.clear();
    add(&mut w, "k", 50, 4.0, &mut out);
    assert_eq!(w.open_windows(), 2);
    let kinds: Vec<_> = out.iter().map(|r| (r.kind, r.start, r.end)).collect();
    assert_eq!(
        kinds,
        [
            (ResultKind::Retract, 0, 1),
            (ResultKind::Retract, 100, 101),
            (ResultKind::Update, 0, 101),
        ]
    );
    assert_eq!(
        out[2].values,
        [
            Value::Long(3),
            Value::Double(7.0),
            Value::Double(1.0),
            Value::Double(2.0)
        ]
    );
    // Growing a session retracts its old extent; a record inside it does not.
    out.clear();
    add(&mut w, "k", 120, 8.0, &mut out);
    assert_eq!(
        out.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [ResultKind::Retract, ResultKind::Update]
    );
    out.clear();
    add(&mut w, "k", 60, 16.0, &mut out);
    assert_eq!(
        out.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [ResultKind::Update]
    );
    out.clear();
    w.advance_to(i64::MAX, &mut out).unwrap();
    assert_eq!(
        finals(&out),
        [("j".into(), 50, 51, 1, 64.0), ("k".into(), 0, 121, 5, 31.0)]
    );
}

#[test]
fn sessions_close_after_gap_plus_grace_and_reject_bridges_to_closed_ones() {
    let mut w = count_sum("kind: session\ngap: 10ms\ngrace: 5ms\n");
    let mut out = Vec::new();
    add(&mut w, "k", 0, 1.0, &mut out);
    add(&mut w, "k", 15, 1.0, &mut out); // 15 > 0 + 10: new session
    add(&mut w, "x", 15, 1.0, &mut out);
    assert!(out.is_empty(), "[0,0] closes at 0 + 10 + 1 + 5 = 16");
    add(&mut w, "x", 16, 1.0, &mut out);
    assert_eq!(finals(&out), [("k".into(), 0, 1, 1, 1.0)]);
    // 9 is within gap of the emitted [0, 0] and of [15, 15]: it would bridge into a
    // session already emitted, so it is late; 15 - grace = 11 > 9.
    assert!(matches!(add(&mut w, "k", 9, 1.0, &mut out), Added::Late(_)));
    // Older than stream time - grace but inside an open session: fine.
    add(&mut w, "k", 30, 1.0, &mut out); // stream time 30, [15,15] open until 31
    assert!(matches!(
        add(&mut w, "k", 20, 1.0, &mut out),
        Added::Counted(1)
    ));
}

/// Kafka Streams' sliding windows computed the slow way: for every record its left window
/// [t - d, t], and its right window [t + 1, t + 1 + d] when that holds records.
fn sliding_expected(recs: &[(String, i64, f64)], d: i64) -> Vec<(String, i64, i64, i64, f64)> {
    let mut by_key: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for (k, t, v) in recs {
        by_key.entry(k).or_default().push((*t, *v));
    }
    let mut out = Vec::new();
    for (k, rs) in by_key {
        let mut starts = std::collections::BTreeSet::new();
        for (t, _) in &rs {
            starts.insert(t - d);
            if rs.iter().any(|(u, _)| u > t && *u <= t + 1 + d) {
                starts.insert(t + 1);
            }
        }
        for s in starts {
            let inside: Vec<f64> = rs
                .iter()
                .filter(|(t, _)| *t >= s && *t <= s + d)
                .map(|r| r.1)
                .collect();
            out.push((
                k.to_string(),
                s,
                s + d + 1,
                inside.len() as i64,
                inside.iter().sum(),
            ));
        }
    }
    out.sort_by(|a, b| (a.2, a.1, &a.0).cmp(&(b.2, b.1, &b.0)));
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_records(seed: u64, n: usize, span: u64) -> Vec<(String, i64, f64)> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let k = format!("k{}", rng.below(3));
            let t = rng.below(span) as i64 - 50;
            (k, t, rng.below(100) as f64)
        })
        .collect()
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = Rng(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

#[test]
fn sliding_windows_match_kafka_semantics_in_any_arrival_order() {
    for seed in 0..20 {
        let mut recs = random_records(seed, 60, 400);
        let expected = sliding_expected(&recs, 30);
        for order in 0..3 {
            if order == 1 {
                recs.sort_by_key(|r| r.1);
            } else if order == 2 {
                shuffle(&mut recs, seed + 100);
            }
            let mut w = count_sum("kind: sliding\nsize: 30ms\ngrace: 10s\n");
            let mut out = Vec::new();
            for (k, t, v) in &recs {
                assert!(matches!(
                    add(&mut w, k, *t, *v, &mut out),
                    Added::Counted(_)
                ));
            }
            w.advance_to(i64::MAX, &mut out).unwrap();
            assert_eq!(finals(&out), expected, "seed {seed} order {order}");
            assert_eq!(w.open_windows(), 0);
            assert_eq!(w.buffered_records(), 0);
        }
    }
}

#[test]
fn sliding_windows_close_as_stream_time_passes() {
    let mut w = count_sum("kind: sliding\nsize: 10ms\n");
    let mut out = Vec::new();
    add(&mut w, "k", 100, 1.0, &mut out);
    add(&mut w, "k", 105, 2.0, &mut out);
    add(&mut w, "k", 130, 4.0, &mut out);
    // [90,100] closed at 101, [95,105] at 106, [101,111] (right of 100, holds 105) at 112.
    assert_eq!(
        finals(&out),
        [
            ("k".into(), 90, 101, 1, 1.0),
            ("k".into(), 95, 106, 2, 3.0),
            ("k".into(), 101, 112, 1, 2.0),
        ]
    );
    assert_eq!(w.buffered_records(), 1, "100 and 105 expired");
    assert!(matches!(
        add(&mut w, "k", 118, 1.0, &mut out),
        Added::Late(_)
    ));
    assert!(matches!(
        add(&mut w, "k", 125, 1.0, &mut out),
        Added::Counted(1)
    ));
}

fn sessions_expected(recs: &[(String, i64, f64)], gap: i64) -> Vec<(String, i64, i64, i64, f64)> {
    let mut by_key: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for (k, t, v) in recs {
        by_key.entry(k).or_default().push((*t, *v));
    }
    let mut out = Vec::new();
    for (k, mut rs) in by_key {
        rs.sort_by_key(|r| r.0);
        let mut cur: Option<(i64, i64, i64, f64)> = None;
        for (t, v) in rs {
            cur = match cur {
                Some((s, l, n, sum)) if t - l <= gap => Some((s, t, n + 1, sum + v)),
                Some((s, l, n, sum)) => {
                    out.push((k.to_string(), s, l + 1, n, sum));
                    Some((t, t, 1, v))
                }
                None => Some((t, t, 1, v)),
            };
        }
        if let Some((s, l, n, sum)) = cur {
            out.push((k.to_string(), s, l + 1, n, sum));
        }
    }
    out.sort_by(|a, b| (a.2, a.1, &a.0).cmp(&(b.2, b.1, &b.0)));
    out
}

#[test]
fn sessions_match_a_batch_computation_in_any_arrival_order() {
    for seed in 0..20 {
        let mut recs = random_records(seed, 80, 2000);
        let expected = sessions_expected(&recs, 25);
        for order in 0..2 {
            if order == 1 {
                shuffle(&mut recs, seed);
            }
            let mut w = count_sum("kind: session\ngap: 25ms\ngrace: 1h\n");
            let mut out = Vec::new();
            for (k, t, v) in &recs {
                add(&mut w, k, *t, *v, &mut out);
            }
            w.advance_to(i64::MAX, &mut out).unwrap();
            assert_eq!(finals(&out), expected, "seed {seed} order {order}");
        }
    }
}

#[test]
fn update_mode_emits_every_change_then_a_final() {
    let mut w = count_sum("kind: tumbling\nsize: 10ms\nemit: update\n");
    let mut out = Vec::new();
    add(&mut w, "k", 1, 1.0, &mut out);
    add(&mut w, "k", 2, 2.0, &mut out);
    add(&mut w, "k", 12, 4.0, &mut out);
    let got: Vec<_> = out
        .iter()
        .map(|r| (r.kind, r.start, r.values[0].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (ResultKind::Update, 0, Value::Long(1)),
            (ResultKind::Update, 0, Value::Long(2)),
            (ResultKind::Final, 0, Value::Long(2)),
            (ResultKind::Update, 10, Value::Long(1)),
        ]
    );
}

#[test]
fn a_tick_takes_effect_only_after_the_commit_that_carries_it() {
    let mut w = count_sum("kind: tumbling\nsize: 1m\nidle_timeout: 2m\n");
    let mut out = Vec::new();
    add(&mut w, "k", 10_000, 1.0, &mut out);
    assert_eq!(w.idle_tick(60_000).unwrap(), None, "not idle long enough");
    let tick = w.idle_tick(120_000).unwrap().unwrap();
    assert_eq!(tick.stream_time, 130_000);
    assert!(w.record_tick(tick).unwrap());
    assert_eq!(w.idle_advance(&mut out).unwrap(), None, "not committed yet");
    add(&mut w, "k", 20_000, 1.0, &mut out);
    assert!(out.is_empty());
    let mut store = MemStore::new();
    commit(&mut w, &mut store);
    assert_eq!(w.idle_advance(&mut out).unwrap(), Some(tick));
    assert_eq!(finals(&out), [("k".into(), 0, 60_000, 2, 2.0)]);
    assert_eq!(w.stream_time(), Some(130_000));
    assert_eq!(w.idle_tick(500_000).unwrap(), None, "nothing open");
}

/// The runtime's commit, reduced to what the operator sees: drain every table into its
/// engine.
fn commit(w: &mut WindowOp, store: &mut MemStore) {
    let mut dirty = Vec::new();
    for t in w.tables() {
        t.drain_dirty(&mut dirty);
    }
    let mut batch = WriteBatch::new();
    for (k, v) in dirty {
        batch.push(k, v);
    }
    store.write(batch, None).unwrap();
}

#[derive(Clone, Debug)]
enum Event {
    Record(String, i64, f64),
    /// Wall-clock idleness noticed by the runtime.
    Idle(i64),
    Commit,
}

/// Runs events the way the runtime would: each event's outputs, and whether it committed.
fn drive(
    w: &mut WindowOp,
    store: &mut MemStore,
    events: &[Event],
    stop: usize,
) -> (Vec<Vec<WindowResult>>, Vec<bool>) {
    let (mut outs, mut commits) = (Vec::new(), Vec::new());
    for e in &events[..stop] {
        let mut out = Vec::new();
        let mut committed = false;
        match e {
            Event::Record(k, t, v) => {
                let n = w.aggs().len();
                let vals: Vec<Value> = (0..n).map(|_| Value::Double(*v)).collect();
                let inputs: Vec<Input<'_>> = vals.iter().map(Input::Val).collect();
                w.add(k.as_bytes(), *t, &inputs, &mut out).unwrap();
            }
            Event::Idle(ms) => {
                if let Some(t) = w.idle_tick(*ms).unwrap() {
                    assert!(w.record_tick(t).unwrap());
                    commit(w, store);
                    committed = true;
                    assert_eq!(w.idle_advance(&mut out).unwrap(), Some(t));
                }
            }
            Event::Commit => {
                commit(w, store);
                committed = true;
            }
        }
        outs.push(out);
        commits.push(committed);
    }
    (outs, commits)
}

fn events(seed: u64, n: usize) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut t = 0i64;
    (0..n)
        .map(|_| match rng.below(20) {
            0 => Event::Commit,
            1 => Event::Idle(rng.below(400) as i64),
            _ => {
                // Mostly forward, sometimes out of order.
                t += rng.below(40) as i64;
                let ts = t - rng.below(60) as i64;
                Event::Record(
                    format!("k{}", rng.below(4)),
                    ts,
                    rng.below(1000) as f64 / 7.0,
                )
            }
        })
        .collect()
}

const AGGS: &str = "n: count\ntotal: sum(v)\nlo: min(v)\nhi: max(v)\navg: mean(v)\nsd: stddev(v)\nfirst_v: first(v)\nlast_v: last(v)\np95: p95(v)\np50: p50(v)\nuniq: count_distinct(v)\n";

#[test]
fn a_restored_operator_replays_exactly() {
    let windows = [
        "kind: tumbling\nsize: 100ms\ngrace: 20ms\nidle_timeout: 150ms\n",
        "kind: hopping\nsize: 100ms\nadvance: 30ms\ngrace: 20ms\nemit: update\nidle_timeout: 150ms\n",
        "kind: sliding\nsize: 50ms\ngrace: 30ms\nidle_timeout: 150ms\n",
        "kind: sliding\nsize: 50ms\ngrace: 30ms\nemit: update\n",
        "kind: session\ngap: 40ms\ngrace: 30ms\nidle_timeout: 150ms\n",
        "kind: session\ngap: 40ms\ngrace: 30ms\nemit: update\nidle_timeout: 150ms\n",
    ];
    let (mut resumed_after_tick, mut ticks) = (0, 0);
    for window in windows {
        for seed in 0..6 {
            let evs = events(seed, 600);
            // Reference: no crash.
            let mut reference = op(window, AGGS);
            let mut ref_store = MemStore::new();
            let (expected, ref_commits) = drive(&mut reference, &mut ref_store, &evs, evs.len());
            ticks += evs
                .iter()
                .zip(&ref_commits)
                .filter(|(e, c)| matches!(e, Event::Idle(_)) && **c)
                .count();

            // Crash somewhere, restore from the last commit, replay from there.
            let crash = 150 + (seed as usize * 61) % 400;
            let mut first = op(window, AGGS);
            let mut store = MemStore::new();
            let (before, commits) = drive(&mut first, &mut store, &evs, crash);
            assert_eq!(
                before,
                expected[..crash],
                "{window} seed {seed}: same run, same outputs"
            );
            // The last commit before the crash: an explicit one or the one inside a tick.
            let resume = (0..crash).rev().find(|&i| commits[i]).map_or(0, |i| i + 1);
            drop(first);
            let mut second = op(window, AGGS);
            for t in second.tables() {
                t.attach(Box::new(store.clone())).unwrap();
            }
            let mut store2 = store.clone();
            let (replay, _) = drive(&mut second, &mut store2, &evs[resume..], evs.len() - resume);
            let flat = |v: &[Vec<WindowResult>]| v.iter().flatten().cloned().collect::<Vec<_>>();
            // A tick applied inside the event that committed it shows up at the start of
            // the replay instead: compare the concatenated streams.
            let tail_expected = {
                let mut e = Vec::new();
                if resume > 0 {
                    if let Event::Idle(_) = evs[resume - 1] {
                        resumed_after_tick += 1;
                        e.extend(expected[resume - 1].iter().cloned());
                    }
                }
                e.extend(flat(&expected[resume..]));
                e
            };
            assert_eq!(
                flat(&replay),
                tail_expected,
                "{window} seed {seed} resume {resume}"
            );
            // And the state ends up the same.
            let (mut a, mut b) = (ref_store.clone(), store2.clone());
            commit(&mut reference, &mut a);
            commit(&mut second, &mut b);
            assert_eq!(
                a.snapshot(),
                b.snapshot(),
                "{window} seed {seed}: final state"
            );
        }
    }
    assert!(
        ticks > 20 && resumed_after_tick > 0,
        "{ticks} ticks, {resumed_after_tick} resumes after one"
    );
}

#[test]
fn state_bytes_per_open_window() {
    // count, sum, min, max, mean, p95, count_distinct over a minute of 1 Hz readings.
    let mut w = op(
        "kind: tumbling\nsize: 1m\n",
        "n: count\ntotal: sum(power_w)\nlo: min(power_w)\nhi: max(power_w)\navg: mean(power_w)\np95: p95(power_w)\nsensors: count_distinct(sensor)\n",
    );
    let mut out = Vec::new();
    let mut rng = Rng(1);
    let devices = 100;
    for s in 0..60 {
        for d in 0..devices {
            let power = Value::Double(200.0 + rng.below(5000) as f64 / 10.0);
            let sensor = Value::String(format!("sensor-{}", d % 3));
            let inputs = [
                Input::Null,
                Input::Val(&power),
                Input::Val(&power),
                Input::Val(&power),
                Input::Val(&power),
                Input::Val(&power),
                Input::Val(&sensor),
            ];
            w.add(
                format!("device-{d}").as_bytes(),
                s * 1000,
                &inputs,
                &mut out,
            )
            .unwrap();
        }
    }
    let mut dirty = Vec::new();
    for t in w.tables() {
        t.drain_dirty(&mut dirty);
    }
    let windows: Vec<_> = dirty
        .iter()
        .filter(|(k, _)| k.len() > 17 && k[8] == 0)
        .collect();
    assert_eq!(windows.len(), devices);
    let value_bytes: usize = windows.iter().map(|(_, v)| v.as_ref().unwrap().len()).sum();
    let key_bytes: usize = windows.iter().map(|(k, _)| k.len()).sum();
    println!(
        "state per open window (60 readings, 7 aggregations): {} bytes value + {} bytes key",
        value_bytes / devices,
        key_bytes / devices
    );
    assert!(value_bytes / devices < 1024);
}

#[test]
fn spec_problems_are_keyed_relative_to_the_operator() {
    let spec: WindowSpec = serde_yaml::from_str("kind: tumbling\nsize: 5m\nadvance: 1m\n").unwrap();
    let problems = WindowOp::new(&spec, &[AggSpec::compact("total", "summ(x)")]).unwrap_err();
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["window.advance", "aggregate.total.fn"]);
    assert_eq!(WindowOp::store_names(), ["windows"]);
}

#[test]
fn state_from_another_aggregate_list_is_refused() {
    let mut w = count_sum("kind: tumbling\nsize: 1m\n");
    let mut out = Vec::new();
    add(&mut w, "k", 1, 1.0, &mut out);
    let mut store = MemStore::new();
    commit(&mut w, &mut store);
    let mut other = op("kind: tumbling\nsize: 1m\n", "n: count\nhi: max(v)\n");
    for t in other.tables() {
        t.attach(Box::new(store.clone())).unwrap();
    }
    let err = other.reload().unwrap_err().to_string();
    assert!(err.contains("aggregate list changed"), "{err}");
    // The same list restores, with its stream time.
    let mut same = count_sum("kind: tumbling\nsize: 1m\n");
    for t in same.tables() {
        t.attach(Box::new(store.clone())).unwrap();
    }
    same.reload().unwrap();
    assert_eq!((same.stream_time(), same.open_windows()), (Some(1), 1));
}
