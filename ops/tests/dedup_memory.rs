//! Memory per remembered record of `dedup`. `cargo test -p sluice-ops --test dedup_memory --
//! --nocapture` prints the figure (growth of the resident set over 200 000 remembered
//! records: an estimate, allocator slack included).

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::op::{Chain, KeyShape, Record, StreamType};
use sluice_ops::types::RecordType;

/// Resident memory of this process (Linux), in bytes; 0 elsewhere.
fn rss() -> isize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<isize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn bytes_per_remembered_record() {
    let schema = Schema::parse_str(
        r#"{"type": "record", "name": "Telemetry", "namespace": "io.sluice.iot", "fields": [
            {"name": "device_id", "type": "string"},
            {"name": "seq", "type": "long"},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "value", "type": "double"}
        ]}"#,
    )
    .unwrap();
    let input = StreamType {
        value: RecordType::from_schema(&schema).unwrap(),
        key: KeyShape::Input,
    };
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(
        "- dedup: { by: [device_id, seq], within: 1h, timestamp: event_time }\n",
    )
    .unwrap();
    let chain = Chain::plan(&ops, input).unwrap();
    let mut run = chain.build();
    let n = 200_000i64;
    let devices: Vec<String> = (0..1000).map(|d| format!("sensor-{d:04}")).collect();
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    // Drained every 10 000 records, as commits would: the dirty set stays small.
    let mut dirty = Vec::new();
    let before = rss();
    for i in 0..n {
        let rec = Record {
            key: None,
            value: Value::Record(vec![
                (
                    "device_id".into(),
                    Value::String(devices[i as usize % devices.len()].clone()),
                ),
                ("seq".into(), Value::Long(500_000 + i / 1000)),
                ("event_time".into(), Value::TimestampMillis(i * 10)),
                ("value".into(), Value::Double(1.0)),
            ]),
            timestamp: 0,
        };
        run.process(rec, &mut out, &mut rejected).unwrap();
        out.clear();
        if i % 10_000 == 0 {
            dirty.clear();
            run.tables()[0].drain_dirty(&mut dirty);
        }
    }
    dirty.clear();
    run.tables()[0].drain_dirty(&mut dirty);
    drop(dirty);
    let live = rss() - before;
    assert_eq!(
        run.tables()[0].len() as i64,
        n + 1,
        "all remembered, and the meta"
    );
    println!(
        "dedup by [device_id, seq] (11-character ids): {} bytes in memory per remembered record",
        live / n as isize
    );
    assert!(live / (n as isize) < 400, "{}", live / n as isize);
}
