//! The example consumer in examples/consumers/ (what README.md tells people outside sluice to
//! start from) reads a topic holding what a crash leaves behind: a stage's records, then a
//! replay of its last batch as byte-identical copies. A plain consumer sees the copies; the
//! example delivers every record once, resumes where it stopped, and undoes a half-written
//! batch after a crash of its own.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_connectors::kafka::{
    ensure_topics, ClientOptions, IdWriter, MessageId, TopicToCreate, ID_HEADER,
};

/// Sends `(stage, producing partition, seq)` records keyed by seq, as a sluice task would;
/// `seq == 0` sends a record without an id (a producer other than sluice).
fn send(brokers: &str, topic: &str, records: &[(&str, i32, u64)]) {
    let producer: BaseProducer =
        sluice_connectors::kafka::producer_config(&ClientOptions::new(brokers))
            .create()
            .unwrap();
    for &(stage, partition, seq) in records {
        let key = format!("[\"{stage}\",{partition},{seq}]");
        let value = format!("value of {stage}/{partition}/{seq}");
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
            .key(key.as_bytes())
            .payload(value.as_bytes());
        if seq > 0 {
            let mut ids = IdWriter::new(stage);
            let id = ids.id(partition, seq).to_vec();
            rec = rec.headers(OwnedHeaders::new().insert(Header {
                key: ID_HEADER,
                value: Some(&id),
            }));
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Runs the example until the topic is quiet; returns its JSON summary line.
fn run_example(brokers: &str, topic: &str, group: &str, dir: &Path) -> serde_json::Value {
    let script = repo().join("examples/consumers/exactly_once_consumer.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--brokers", brokers, "--topic", topic, "--group", group])
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--out")
        .arg(dir.join("out.jsonl"))
        .args(["--until-quiet", "3"])
        .output()
        .unwrap_or_else(|e| panic!("python3 {}: {e}; run scripts/setup", script.display()));
    assert!(
        out.status.success(),
        "the example consumer failed ({}); stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap()
}

/// The ids in the example's output, in order, and the records without one.
fn delivered(dir: &Path) -> (Vec<(String, i32, u64)>, usize) {
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    let mut ids = Vec::new();
    let mut without = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["id"].as_str() {
            Some(hex) => {
                let raw: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                let id = MessageId::decode(&raw).unwrap();
                ids.push((id.stage.to_string(), id.partition, id.seq));
            }
            None => without += 1,
        }
    }
    (ids, without)
}

#[test]
fn the_example_consumer_delivers_each_record_once_where_a_plain_consumer_sees_repeats() {
    let brokers = env("SLUICE_BROKERS");
    let topic = unique("outside-consumer-");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(ensure_topics(
        &ClientOptions::new(&brokers),
        &[TopicToCreate {
            name: topic.clone(),
            partitions: 3,
            replication: 1,
            configs: vec![],
        }],
    ))
    .unwrap();

    // Two tasks of stage `agg` write 1..=60 and 1..=40; task 0 then crashes after seq 60 and
    // its replay rewrites 41..=60 as identical copies; three records come from elsewhere.
    let mut first: Vec<(&str, i32, u64)> = (1..=60).map(|s| ("agg", 0, s)).collect();
    first.extend((1..=40).map(|s| ("agg", 1, s)));
    first.extend([("other", 0, 0), ("other", 0, 0), ("other", 0, 0)]);
    send(&brokers, &topic, &first);
    let replay: Vec<(&str, i32, u64)> = (41..=60).map(|s| ("agg", 0, s)).collect();
    send(&brokers, &topic, &replay);

    let plain = read_topic(&brokers, &topic);
    assert_eq!(plain.len(), 123, "a plain consumer sees the 20 repeats");
    let with_id: BTreeSet<String> = plain
        .iter()
        .filter_map(|r| r.headers.get(ID_HEADER).cloned())
        .collect();
    assert_eq!(with_id.len(), 100, "repeats carry the ids of the originals");

    let dir = tempfile::tempdir().unwrap();
    let group = unique("outside-");
    let summary = run_example(&brokers, &topic, &group, dir.path());
    assert_eq!(summary["accepted"], 103, "{summary}");
    assert_eq!(summary["dropped_repeats"], 20, "{summary}");
    let (ids, without) = delivered(dir.path());
    assert_eq!(without, 3);
    let unique_ids: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(unique_ids.len(), ids.len(), "an id was delivered twice");
    let want: BTreeSet<(String, i32, u64)> = (1..=60)
        .map(|s| ("agg".to_string(), 0, s))
        .chain((1..=40).map(|s| ("agg".to_string(), 1, s)))
        .collect();
    assert_eq!(unique_ids, want, "every record delivered");

    // A crash of the example after writing a batch but before saving its state: the
    // half-done batch is cut away and read again.
    let out = dir.path().join("out.jsonl");
    let mut text = std::fs::read_to_string(&out).unwrap();
    text.push_str("{\"half\": \"written\"}\n");
    std::fs::write(&out, text).unwrap();
    send(&brokers, &topic, &[("agg", 1, 41), ("agg", 1, 39)]);
    let summary = run_example(&brokers, &topic, &group, dir.path());
    assert_eq!(summary["accepted"], 1, "only the new record: {summary}");
    assert_eq!(summary["dropped_repeats"], 1, "{summary}");
    let (ids, without) = delivered(dir.path());
    assert_eq!((ids.len(), without), (101, 3), "nothing lost or repeated");
    assert_eq!(ids.last(), Some(&("agg".to_string(), 1, 41)));
}
