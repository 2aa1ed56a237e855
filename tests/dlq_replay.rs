//! `sluice dlq replay` after a fix: records dead-lettered for a range the topology then
//! widens are re-injected, pass validation the second time, and a second replay finds nothing
//! left to do.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::BaseRecord;
use sluice_connectors::kafka::{ClientOptions, TrackedProducer};
use sluice_schemas::codec::AvroRecord;
use sluice_schemas::records::Telemetry;

fn sluice(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sluice {args:?} failed:\n{text}");
    text
}

#[test]
fn dead_letters_replayed_after_a_fix_become_valid_records() {
    let brokers = env("SLUICE_BROKERS");
    let topo = TestTopology::new(|t| t);
    let path = topo.path.display().to_string();
    let raw = topo.topic("telemetry.raw");
    let ids = registry_ids(&format!("{raw}-value"));
    let log = topo.dir.path().join("run-1.log");
    let mut run = Sluice::spawn(&["run", &path, "--quiet", "--stage", "validate"], &log);
    wait_for_topic(&brokers, &raw);

    let mut producer = TrackedProducer::new(&ClientOptions::new(&brokers)).unwrap();
    let device = format!("{}-dev", topo.suffix);
    let t0 = 1_767_225_600_000i64;
    let mut buf = Vec::new();
    for seq in 1..=15i64 {
        // Every third reading is 200 degrees: outside the topology's [-40, 125].
        let value = if seq % 3 == 0 {
            200.0
        } else {
            20.0 + seq as f64 / 10.0
        };
        let rec = Telemetry {
            device_id: device.clone(),
            metric: "temperature".into(),
            event_time: t0 + seq * 10_000,
            value,
            seq,
            quality: 100,
        };
        buf.clear();
        rec.encode_wire(ids.v2, &mut buf);
        producer
            .send(
                BaseRecord::to(&raw)
                    .key(device.as_bytes())
                    .payload(&buf[..])
                    .timestamp(t0 + seq * 10_000),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dlq = topo.topic("telemetry.dlq");
    let valid = topo.topic("telemetry.valid");
    let dead = eventually("five dead letters", 240, Duration::from_millis(500), || {
        let d = read_topic(&brokers, &dlq);
        (d.len() >= 5).then_some(d)
    });
    assert_eq!(dead.len(), 5);
    assert!(dead
        .iter()
        .all(|d| d.headers["sluice.dlq.error_class"] == "out_of_range"));
    eventually("ten valid records", 240, Duration::from_millis(500), || {
        (read_topic(&brokers, &valid).len() >= 10).then_some(())
    });
    run.interrupt();

    // The fix: widen the range, restart the stage, replay.
    let text = std::fs::read_to_string(&topo.path)
        .unwrap()
        .replace("temperature: [-40, 125]", "temperature: [-40, 250]");
    std::fs::write(&topo.path, text).unwrap();
    let mut run = Sluice::spawn(
        &["run", &path, "--quiet", "--stage", "validate"],
        &topo.dir.path().join("run-2.log"),
    );
    let report = sluice(&["dlq", "replay", "--topology", &path]);
    assert!(report.contains("replayed 5 of 5"), "{report}");
    let records = eventually(
        "fifteen valid records",
        240,
        Duration::from_millis(500),
        || {
            let v = read_topic(&brokers, &valid);
            (v.len() >= 15).then_some(v)
        },
    );
    assert_eq!(records.len(), 15, "each replayed record once");
    let again = sluice(&["dlq", "replay", "--topology", &path]);
    assert!(
        again.contains("replayed 0 of 0"),
        "a second replay continues where the first stopped: {again}"
    );
    run.interrupt();
}
