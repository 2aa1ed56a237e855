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

/// The reference topology with `telemetry.valid` on Fluvio as `telemetry-valid` too:
/// validate writes it, aggregate, detect and archive read it.
fn valid_on_fluvio() -> String {
    on_fluvio()
        .replace("telemetry.valid", "telemetry-valid")
        .replace(
            "  telemetry-valid: { partitions: 4,",
            "  telemetry-valid: { broker: fluvio, partitions: 4,",
        )
}

#[test]
fn a_stage_may_write_fluvio_and_keeps_the_partitions_end_in_a_store() {
    let loaded = load_str(&iot_path(), &valid_on_fluvio(), &env).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    let stage = t.stages.iter().find(|s| s.name == "validate").unwrap();
    assert_eq!(
        t.fluvio_outputs(stage),
        [("output", "telemetry-valid".to_string())]
    );
    assert_eq!(t.stage_stores(stage), ["dedup", "fluvio_positions"]);
    let plan = t
        .stage_plans()
        .into_iter()
        .find(|p| p.name == "validate")
        .unwrap();
    let changelogs: Vec<_> = plan.stores.iter().map(|s| s.changelog.as_str()).collect();
    assert_eq!(
        changelogs,
        [
            "iot-validate-dedup-changelog",
            "iot-validate-fluvio_positions-changelog"
        ]
    );
    // Its readers claim its partitions like any Fluvio input.
    let claims: Vec<_> = t.claim_topics().into_iter().map(|c| c.0).collect();
    assert_eq!(claims, ["validate", "aggregate", "detect", "archive"]);
    // A stage that writes no Fluvio topic keeps no positions.
    let agg = t.stages.iter().find(|s| s.name == "aggregate").unwrap();
    assert_eq!(t.stage_stores(agg), ["ids", "windows"]);
}

/// `text` with its dead-letter topic on Fluvio, as `telemetry-dlq`.
fn dlq_on_fluvio(text: &str) -> String {
    text.replace("telemetry.dlq", "telemetry-dlq").replace(
        "  telemetry-dlq:   { partitions: 1 }",
        "  telemetry-dlq:   { broker: fluvio, partitions: 1 }",
    )
}

#[test]
fn dead_letters_on_fluvio_are_refused() {
    let text = dlq_on_fluvio(&on_fluvio());
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|(_, k, m, f)| k == "stages.validate.dead_letter"
                && m.contains("headers")
                && f.contains("on Kafka")),
        "{p:?}"
    );
}

#[test]
fn a_fluvio_output_has_one_writing_stage() {
    // detect writes its anomalies and its alerts to one Fluvio topic.
    let text = valid_on_fluvio()
        .replace("iot.anomalies", "iot-anomalies")
        .replace("alerts: iot.alerts", "alerts: iot-anomalies")
        .replace(
            "  iot-anomalies:   { partitions: 4,",
            "  iot-anomalies:   { broker: fluvio, partitions: 4,",
        );
    let p = problems(&text);
    assert!(
        p.iter().any(|(_, k, m, _)| k == "stages.detect.alerts"
            && m.contains("written by stages.detect.output and stages.detect.alerts")),
        "{p:?}"
    );
}

#[test]
fn a_fluvio_output_needs_its_inputs_partitions_and_no_kafka_transactions() {
    let text = valid_on_fluvio().replace(
        "  telemetry-valid: { broker: fluvio, partitions: 4,",
        "  telemetry-valid: { broker: fluvio, partitions: 6,",
    );
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|(_, k, m, f)| k == "topics.telemetry-valid.partitions"
                && m.contains("4 partitions, but it has 6")
                && f == "give `telemetry-valid` 4 partitions"),
        "{p:?}"
    );
    let text = valid_on_fluvio().replace(
        "guarantee: exactly_once ",
        "guarantee: exactly_once_transactional ",
    );
    let p = problems(&text);
    assert!(
        p.iter().any(|(_, k, m, f)| k == "processing.guarantee"
            && m.contains("stage `validate` writes a Fluvio topic")
            && f.contains("exactly_once")),
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
    let text = dlq_on_fluvio(&with_raw_on_fluvio());
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|(_, k, m, f)| k == "ingest.devices-mqtt.dead_letter"
                && m.contains("on Fluvio")
                && f.contains("Kafka")),
        "{p:?}"
    );
}
