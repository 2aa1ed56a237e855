//! The `dedup` operator through `Chain::plan` with a realistic schema: what it drops, its
//! problems, and restores that replay exactly.

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::op::{Chain, KeyShape, Record, Rejection, Running, StreamType};
use sluice_ops::types::RecordType;
use sluice_state::MemStore;

mod common;
use common::{commit, restored};

const SCHEMA: &str = r#"{
  "type": "record", "name": "MachineReading", "namespace": "io.acme.factory",
  "fields": [
    {"name": "gateway", "type": ["null", {"type": "record", "name": "Gateway", "fields": [
      {"name": "id", "type": "string"},
      {"name": "firmware", "type": ["null", "string"], "default": null}
    ]}], "default": null, "doc": "The gateway that forwarded the reading; NULL when the machine sent it directly."},
    {"name": "device_id", "type": "string", "doc": "Unique per gateway."},
    {"name": "seq", "type": "long", "doc": "Per-device message number; a retransmission repeats it."},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "metric", "type": {"type": "enum", "name": "Metric", "symbols": ["TEMPERATURE", "VIBRATION", "POWER"]}},
    {"name": "value", "type": "double"},
    {"name": "quality", "type": ["null", "int"], "default": null}
  ]
}"#;

const OPERATORS: &str = r#"
- filter: "quality IS NULL OR quality >= 50"
- dedup:
    by: [gateway.id, device_id, seq]
    within: 10m
    timestamp: event_time
- key_by: [device_id]
"#;

const MIN: i64 = 60_000;
const T0: i64 = 1_767_225_600_000;

fn input() -> StreamType {
    StreamType {
        value: RecordType::from_schema(&Schema::parse_str(SCHEMA).unwrap()).unwrap(),
        key: KeyShape::Input,
    }
}

fn chain(yaml: &str) -> Result<Chain, Vec<sluice_ops::Problem>> {
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(yaml).unwrap();
    Chain::plan(&ops, input())
}

/// A reading: gateway (None: sent directly), device, seq, event time, quality.
#[derive(Debug, Clone, Copy, PartialEq)]
struct R {
    gateway: Option<&'static str>,
    device: &'static str,
    seq: i64,
    t: i64,
    quality: i32,
}

fn r(gateway: Option<&'static str>, device: &'static str, seq: i64, t: i64) -> R {
    R {
        gateway,
        device,
        seq,
        t,
        quality: 90,
    }
}

fn record(r: &R) -> Record {
    let gateway = match r.gateway {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(g) => Value::Union(
            1,
            Box::new(Value::Record(vec![
                ("id".into(), Value::String(g.into())),
                ("firmware".into(), Value::Union(0, Box::new(Value::Null))),
            ])),
        ),
    };
    Record {
        key: None,
        value: Value::Record(vec![
            ("gateway".into(), gateway),
            ("device_id".into(), Value::String(r.device.into())),
            ("seq".into(), Value::Long(r.seq)),
            ("event_time".into(), Value::TimestampMillis(r.t)),
            ("metric".into(), Value::Enum(2, "POWER".into())),
            ("value".into(), Value::Double(r.seq as f64 * 1.5)),
            (
                "quality".into(),
                Value::Union(1, Box::new(Value::Int(r.quality))),
            ),
        ]),
        timestamp: r.t + 5,
    }
}

/// Runs one reading; what came out (at most one record) and the dead letters.
fn step(run: &mut Running, r: &R) -> (Vec<Record>, Vec<Rejection>) {
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    run.process(record(r), &mut out, &mut rejected).unwrap();
    (out, rejected)
}

#[test]
fn a_pipeline_drops_retransmissions_and_keeps_everything_else() {
    let c = chain(OPERATORS).unwrap();
    assert_eq!(c.stores(), ["1-dedup-seen"]);
    assert_eq!(c.output.value, input().value, "dedup keeps the record type");
    assert_eq!(c.output.key, KeyShape::Fields(vec!["device_id".into()]));
    let mut run = c.build();
    let g = Some("gw-7");
    let low_quality = R {
        quality: 10,
        ..r(g, "press-1", 9, T0 + 3 * MIN)
    };
    let cases = [
        (r(g, "press-1", 1, T0), true),
        (r(g, "press-1", 1, T0), false),    // retransmission
        (r(g, "press-2", 1, T0 + 1), true), // same seq, other device
        (r(Some("gw-8"), "press-1", 1, T0 + 2), true), // same device id, other gateway
        (r(None, "press-1", 1, T0 + 3), true), // no gateway: never deduplicated
        (r(None, "press-1", 1, T0 + 4), true),
        (r(g, "press-1", 2, T0 + MIN), true),
        (r(g, "press-1", 1, T0 - MIN), false), // a late copy: still remembered
        (low_quality, false),                  // filtered before dedup
        (r(g, "press-1", 9, T0 + 3 * MIN), true), // so this is no repeat
        (r(g, "press-1", 2, T0 + 11 * MIN), false), // 10m after the last copy, inclusive
        (r(g, "press-3", 1, T0 + 21 * MIN + 1), true), // stream time moves on
        (r(g, "press-1", 2, T0 + 21 * MIN + 1), true), // forgotten: passes again
    ];
    for (i, (reading, passes)) in cases.iter().enumerate() {
        let (out, rejected) = step(&mut run, reading);
        assert!(rejected.is_empty(), "case {i}: a repeat is no dead letter");
        if *passes {
            assert_eq!(out.len(), 1, "case {i}: {reading:?} passes");
            let mut expected = record(reading);
            expected.key = Some(reading.device.as_bytes().to_vec());
            assert_eq!(out[0], expected, "case {i}: unchanged but for the key");
        } else {
            assert!(out.is_empty(), "case {i}: {reading:?} is dropped");
        }
    }
    // Stream time is T0 + 21m + 1ms: only the last two readings are remembered (the meta
    // entry joins them at the first commit).
    assert_eq!(run.tables()[0].len(), 2);
}

#[test]
fn problems_are_keyed_by_their_place_in_the_operator_list() {
    let problems = chain(
        r#"
- dedup:
    by: [device_id, sequ]
    within: 10
    timestmp: event_time
- filter: "valu > 1"
"#,
    )
    .unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys[..3],
        ["[0].dedup.timestmp", "[0].dedup.by[1]", "[0].dedup.within"]
    );
    assert!(
        problems[0].fix.contains("did you mean `timestamp`?"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].fix.contains("did you mean `seq`?"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].message.contains("has no unit"),
        "{}",
        problems[2]
    );
    // The operators after it are still checked: dedup hands on its input type.
    assert!(
        problems
            .iter()
            .any(|p| p.key.starts_with("[1].filter") && p.fix.contains("value")),
        "{problems:?}"
    );

    let problems = chain("- dedup: { by: [gateway], within: 1m }\n").unwrap_err();
    assert_eq!(problems[0].key, "[0].dedup.by[0]");
    assert!(
        problems[0].message.contains("cannot identify a repeat"),
        "{}",
        problems[0]
    );

    let problems = chain("- dedupe: { by: [seq], within: 1m }\n").unwrap_err();
    assert_eq!(problems[0].fix, "did you mean `dedup`?");
}

/// Deterministic readings: a few devices on two gateways and direct, sequence numbers going
/// up, retransmissions of recent messages (some long after), clocks out of order.
fn readings(seed: u64, n: usize) -> Vec<R> {
    const DEVICES: [&str; 4] = ["press-1", "press-2", "lathe-1", "robot-9"];
    const GATEWAYS: [Option<&str>; 3] = [Some("gw-7"), Some("gw-8"), None];
    let mut rng = Rng::new(seed);
    let mut t = T0;
    let mut sent: Vec<R> = Vec::new();
    (0..n)
        .map(|_| {
            t += rng.below(20_000) as i64;
            let reading = if !sent.is_empty() && rng.below(3) == 0 {
                // A retransmission, from the recent past or much older.
                let back = if rng.below(4) == 0 { 60 } else { 8 };
                let i = sent.len() - 1 - rng.below(back.min(sent.len() as u64)) as usize;
                let mut again = sent[i];
                if rng.below(2) == 0 {
                    again.t = t - rng.below(30_000) as i64; // re-stamped on resend
                }
                again
            } else {
                let device = DEVICES[rng.below(4) as usize];
                let gateway = GATEWAYS[rng.below(3) as usize];
                let seq = sent.len() as i64;
                r(gateway, device, seq, t - rng.below(90_000) as i64)
            };
            sent.push(reading);
            reading
        })
        .collect()
}

const SHORT: &str = r#"
- dedup:
    by: [gateway.id, device_id, seq]
    within: 3m
    timestamp: event_time
"#;

#[test]
fn a_task_restored_midway_continues_as_if_uninterrupted() {
    let c = chain(SHORT).unwrap();
    let rs = readings(1, 2000);
    let mut reference = c.build();
    let expected: Vec<Vec<Record>> = rs.iter().map(|r| step(&mut reference, r).0).collect();
    let dropped = expected.iter().filter(|o| o.is_empty()).count();
    assert!(
        (300..900).contains(&dropped),
        "{dropped} of 2000 dropped: the data has repeats and repeats let through again"
    );
    let old_repeats_passed = rs
        .iter()
        .enumerate()
        .filter(|(i, r)| !expected[*i].is_empty() && rs[..*i].contains(r))
        .count();
    assert!(old_repeats_passed > 20, "{old_repeats_passed}");

    let mut final_state = vec![MemStore::new()];
    commit(&mut reference, &mut final_state);
    for midway in [1, 700, 1333] {
        let mut first = c.build();
        let mut got: Vec<Vec<Record>> =
            rs[..midway].iter().map(|r| step(&mut first, r).0).collect();
        let mut stores = vec![MemStore::new()];
        commit(&mut first, &mut stores);
        drop(first);
        let mut second = restored(&c, &stores);
        got.extend(rs[midway..].iter().map(|r| step(&mut second, r).0));
        assert_eq!(got, expected, "restored after {midway} readings");
        // And the state ends up the same.
        commit(&mut second, &mut stores);
        assert_eq!(
            final_state[0].snapshot(),
            stores[0].snapshot(),
            "after {midway}"
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Reading(R),
    Commit,
}

#[test]
fn a_crash_between_commits_replays_the_same_drops() {
    let c = chain(SHORT).unwrap();
    let mut resumed_after_a_commit = 0;
    for seed in 0..8 {
        let mut rng = Rng::new(seed + 100);
        let events: Vec<Event> = readings(seed, 1500)
            .into_iter()
            .flat_map(|r| {
                let commit = rng.below(40) == 0;
                std::iter::once(Event::Reading(r)).chain(commit.then_some(Event::Commit))
            })
            .collect();
        let drive = |run: &mut Running, stores: &mut Vec<MemStore>, evs: &[Event]| {
            let mut outs = Vec::new();
            let mut commits = Vec::new();
            for e in evs {
                match e {
                    Event::Reading(r) => {
                        outs.push(step(run, r).0);
                        commits.push(false);
                    }
                    Event::Commit => {
                        commit(run, stores);
                        outs.push(Vec::new());
                        commits.push(true);
                    }
                }
            }
            (outs, commits)
        };
        let mut reference = c.build();
        let mut ref_stores = vec![MemStore::new()];
        let (expected, _) = drive(&mut reference, &mut ref_stores, &events);

        let crash = 200 + (seed as usize * 173) % 1200;
        let mut first = c.build();
        let mut stores = vec![MemStore::new()];
        let (before, commits) = drive(&mut first, &mut stores, &events[..crash]);
        assert_eq!(before, expected[..crash], "seed {seed}");
        // Uncommitted work is lost with the task; the runtime rewinds the input to the
        // offset of the last commit and replays from there.
        drop(first);
        let resume = (0..crash).rev().find(|&i| commits[i]).map_or(0, |i| i + 1);
        resumed_after_a_commit += usize::from(resume > 0 && resume < crash);
        let mut second = restored(&c, &stores);
        let (replay, _) = drive(&mut second, &mut stores, &events[resume..]);
        assert_eq!(
            replay,
            expected[resume..],
            "seed {seed}: crash {crash}, resume {resume}"
        );
        commit(&mut reference, &mut ref_stores);
        commit(&mut second, &mut stores);
        assert_eq!(
            ref_stores[0].snapshot(),
            stores[0].snapshot(),
            "seed {seed}: final state"
        );
    }
    assert!(resumed_after_a_commit >= 6, "{resumed_after_a_commit}");
}

#[test]
fn changelog_bytes_per_remembered_reading() {
    let c =
        chain("- dedup: { by: [device_id, seq], within: 10m, timestamp: event_time }\n").unwrap();
    let mut run = c.build();
    let devices: Vec<&'static str> = (0..100)
        .map(|d| &*Box::leak(format!("sensor-{d:04}").into_boxed_str()))
        .collect();
    let mut n = 0;
    for s in 0..100i64 {
        for d in &devices {
            let (out, _) = step(&mut run, &r(None, d, 500_000 + s, T0 + s * 1000));
            assert_eq!(out.len(), 1);
            n += 1;
        }
    }
    let mut dirty = Vec::new();
    run.tables()[0].drain_dirty(&mut dirty);
    let seen: Vec<_> = dirty.iter().filter(|(k, _)| k[0] == 0).collect();
    assert_eq!(seen.len(), n);
    let key: usize = seen.iter().map(|(k, _)| k.len()).sum::<usize>() / n;
    let value: usize = seen
        .iter()
        .map(|(_, v)| v.as_ref().unwrap().len())
        .sum::<usize>()
        / n;
    println!("changelog per remembered reading (11-character device id, seq < 2^20): {key} bytes key + {value} byte value");
    assert_eq!((key, value), (1 + 8 + 12 + 3, 1));
}

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_add(0x9e37_79b9_7f4a_7c15) % n
    }
}
