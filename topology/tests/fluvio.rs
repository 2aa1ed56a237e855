//! Topics on Fluvio (docs/FLUVIO.md): what a topology may do with them, checked offline, and
//! what the planner makes of them.

use std::path::{Path, PathBuf};

use sluice_topology::{load_str, Broker};

fn iot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("iot.yaml")
}

fn env(k: &str) -> Option<String> {
    (k == "SLUICE_FLUVIO_ENDPOINT").then(|| "127.0.0.1:19003".to_string())
}

/// The reference topology with its raw topic renamed `telemetry-raw` and on Fluvio, without
/// the ingest bridges.
fn on_fluvio() -> String {
    let text = with_raw_on_fluvio();
    let (head, rest) = text.split_once("\ningest:").unwrap();
    let (_, stages) = rest.split_once("\nstages:").unwrap();
    format!("{head}\nstages:{stages}")
}

/// The reference topology with its raw topic renamed `telemetry-raw` and on Fluvio.
fn with_raw_on_fluvio() -> String {
    std::fs::read_to_string(iot_path())
        .unwrap()
        .replace("telemetry.raw", "telemetry-raw")
        .replace(
            "  telemetry-raw:   { partitions: 4,",
            "  telemetry-raw:   { broker: fluvio, partitions: 4,",
        )
        .replace(
            "connections:\n",
            "connections:\n  fluvio: { endpoint: ${SLUICE_FLUVIO_ENDPOINT} }\n",
        )
}

fn problems(text: &str) -> Vec<(usize, String, String, String)> {
    match load_str(&iot_path(), text, &env) {
        Ok(_) => vec![],
        Err(e) => e
            .problems()
            .iter()
            .map(|p| (p.line, p.key.clone(), p.message.clone(), p.fix.clone()))
            .collect(),
    }
}

#[test]
fn the_reference_pipeline_reads_its_raw_topic_from_fluvio() {
    let loaded = load_str(&iot_path(), &on_fluvio(), &env).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    assert_eq!(t.broker_of("telemetry-raw"), Broker::Fluvio);
    assert_eq!(t.broker_of("telemetry.valid"), Broker::Kafka);
    // Created on Fluvio, not on Kafka; the validate group's claim topic is on Kafka.
    let fluvio: Vec<_> = t.fluvio_topic_plans().into_iter().map(|p| p.name).collect();
    assert_eq!(fluvio, ["telemetry-raw"]);
    let kafka: Vec<_> = t.topic_plans().into_iter().map(|p| p.name).collect();
    assert!(!kafka.contains(&"telemetry-raw".to_string()), "{kafka:?}");
    let claim = t.claim_topic("validate", "telemetry-raw");
    assert_eq!(claim, "iot-validate-telemetry-raw-fluvio-claims");
    let plan = t
        .topic_plans()
        .into_iter()
        .find(|p| p.name == claim)
        .unwrap();
    assert_eq!(plan.partitions, 4, "as many partitions as the Fluvio topic");
    assert_eq!(
        t.claim_topics(),
        [("validate".to_string(), "telemetry-raw".to_string(), claim)]
    );
}

#[test]
fn a_fluvio_topic_without_the_connection_is_refused_with_the_fix() {
    let text = on_fluvio().replace("  fluvio: { endpoint: ${SLUICE_FLUVIO_ENDPOINT} }\n", "");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|(_, k, m, f)| k == "topics.telemetry-raw.broker"
                && m.contains("`connections.fluvio` is not set")
                && f.contains("connections.fluvio: { endpoint")),
        "{p:?}"
    );
}

#[test]
fn a_dotted_name_on_fluvio_is_refused_with_a_valid_one() {
    let text = on_fluvio().replace("telemetry-raw", "telemetry.raw");
    let p = problems(&text);
    let line = text
        .lines()
        .position(|l| l.contains("telemetry.raw:   { broker"))
        .unwrap()
        + 1;
    assert!(
        p.iter().any(|(l, k, m, f)| *l == line
            && k == "topics.telemetry.raw"
            && m.contains("not a valid Fluvio topic name")
            && f.contains("`telemetry-raw`")),
        "{p:?}"
    );
}

#[test]
fn a_stage_writing_to_fluvio_is_refused() {
    let text = on_fluvio().replace(
        "  telemetry.valid: { partitions: 4,",
        "  telemetry.valid: { broker: fluvio, partitions: 4,",
    );
    let p = problems(&text);
    assert!(
        p.iter().any(|(_, k, m, _)| k == "stages.validate.output"
            && m.contains("which is on Fluvio")
            && m.contains("headers")),
        "{p:?}"
    );
}

#[test]
fn an_ingest_bridge_may_produce_to_fluvio_but_its_dead_letters_stay_on_kafka() {
    // Both bridges write the raw topic, now on Fluvio: accepted.
    let p = problems(&with_raw_on_fluvio());
    assert!(
        !p.iter().any(|(_, k, _, _)| k.starts_with("ingest.")),
        "{p:?}"
    );
    // Dead letters carry their reason in headers, which Fluvio records do not have.
    let text = with_raw_on_fluvio()
        .replace("telemetry.dlq", "telemetry-dlq")
        .replace(
            "  telemetry-dlq:   { partitions: 1 }",
            "  telemetry-dlq:   { broker: fluvio, partitions: 1 }",
        );
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|(_, k, m, f)| k == "ingest.devices-mqtt.dead_letter"
                && m.contains("on Fluvio")
                && f.contains("Kafka")),
        "{p:?}"
    );
}
