//! A quiet partition's last window closes by an idle tick, and only after the tick was
//! committed (drained into the changelog), through the whole chain.

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::op::{Chain, KeyShape, Record, StreamType};
use sluice_ops::types::RecordType;

const SCHEMA: &str = r#"{"type": "record", "name": "Reading", "fields": [
  {"name": "device_id", "type": "string"},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "value", "type": "double"}]}"#;

fn chain(window: &str) -> Chain {
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(window).unwrap();
    let record = RecordType::from_schema(&Schema::parse_str(SCHEMA).unwrap()).unwrap();
    Chain::plan(
        &ops,
        StreamType {
            value: record,
            key: KeyShape::Input,
        },
    )
    .unwrap_or_else(|p| panic!("{p:?}"))
}

fn reading(device: &str, ts: i64, value: f64) -> Record {
    Record {
        key: Some(device.as_bytes().to_vec()),
        value: Value::Record(vec![
            ("device_id".into(), Value::String(device.into())),
            ("ts".into(), Value::TimestampMillis(ts)),
            ("value".into(), Value::Double(value)),
        ]),
        timestamp: ts,
    }
}

/// What a commit does to the tables: drains their dirty entries into the changelog.
fn commit(r: &mut sluice_ops::op::Running) {
    let mut sink = Vec::new();
    for t in r.tables() {
        t.drain_dirty(&mut sink);
    }
}

const WINDOW: &str = r#"
- window:
    kind: tumbling
    size: 1m
    idle_timeout: 30s
    timestamp: ts
    by: [device_id]
    aggregate: { n: count, total: sum(value) }
- select:
    device_id: device_id
    n: n
    total: total
"#;

#[test]
fn an_idle_tick_closes_the_last_window_after_its_commit() {
    let c = chain(WINDOW);
    let mut r = c.build();
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    r.process(reading("d1", 10_000, 1.5), &mut out, &mut rejected)
        .unwrap();
    r.process(reading("d1", 20_000, 2.5), &mut out, &mut rejected)
        .unwrap();
    assert!(out.is_empty());
    // Quiet for less than idle_timeout: nothing happens.
    assert!(!r.idle(29_000, &mut out, &mut rejected).unwrap());
    // Quiet long enough: a tick to stream time 20s + 45s is recorded, not applied.
    assert!(r.idle(45_000, &mut out, &mut rejected).unwrap());
    assert!(out.is_empty(), "a tick takes effect only after its commit");
    assert!(!r.idle(0, &mut out, &mut rejected).unwrap());
    assert!(out.is_empty(), "still not committed");
    commit(&mut r);
    assert!(!r.idle(0, &mut out, &mut rejected).unwrap());
    assert!(rejected.is_empty());
    assert_eq!(out.len(), 1, "{out:?}");
    // The window's result went through the select after it.
    assert_eq!(
        out[0].value,
        Value::Record(vec![
            ("device_id".into(), Value::String("d1".into())),
            ("n".into(), Value::Long(2)),
            (
                "total".into(),
                Value::Union(1, Box::new(Value::Double(4.0)))
            ),
        ])
    );
    // Nothing open any more: no further ticks.
    assert!(!r.idle(120_000, &mut out, &mut rejected).unwrap());
}

#[test]
fn without_idle_timeout_a_quiet_window_waits_for_the_next_record() {
    let c = chain(&WINDOW.replace("    idle_timeout: 30s\n", ""));
    let mut r = c.build();
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    r.process(reading("d1", 10_000, 1.0), &mut out, &mut rejected)
        .unwrap();
    assert!(!r.idle(3_600_000, &mut out, &mut rejected).unwrap());
    commit(&mut r);
    assert!(!r.idle(3_600_000, &mut out, &mut rejected).unwrap());
    assert!(out.is_empty());
    r.process(reading("d1", 61_000, 1.0), &mut out, &mut rejected)
        .unwrap();
    assert_eq!(out.len(), 1);
}
