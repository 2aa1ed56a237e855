//! The `ingest:` section: the reference bridge loads, and each mistake gets its line, key
//! and fix from `sluice validate`.

use std::path::{Path, PathBuf};

use sluice_topology::ingest::{MqttProtocol, PayloadFormat, TokenStore};
use sluice_topology::{load, load_str, IngestSpec};

fn iot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("iot.yaml")
}

fn iot_text() -> String {
    std::fs::read_to_string(iot_path()).unwrap()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// The reference file with `from` replaced by `to`: the one problem it has.
fn problem(from: &str, to: &str) -> sluice_topology::Problem {
    let text = iot_text();
    assert!(text.contains(from), "{from}");
    let text = text.replacen(from, to, 1);
    let err = load_str(&iot_path(), &text, &|_| None).expect_err("the edit must be rejected");
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    problems[0].clone()
}

#[test]
fn the_reference_bridge_loads() {
    let loaded = load(&iot_path()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    assert_eq!(t.ingest.len(), 2);
    let b = &t.ingest[0];
    assert_eq!(b.name, "devices-mqtt");
    let IngestSpec::Mqtt(m) = &b.spec else {
        panic!("devices-mqtt is an MQTT bridge")
    };
    assert_eq!(m.topic.0, "devices/+/telemetry");
    assert_eq!(m.topic.device_of("devices/abc/telemetry"), Some("abc"));
    assert_eq!(m.url.port, 1883);
    assert_eq!(m.protocol, MqttProtocol::V5);
    assert_eq!(m.format, PayloadFormat::Json);
    assert_eq!(m.max_payload, 64 * 1024);
    assert_eq!(m.output, "telemetry.raw");
    assert_eq!(m.client_id("iot", &b.name), "sluice-iot-devices-mqtt");
}

#[test]
fn an_undeclared_output_topic_is_named_with_its_line() {
    let p = problem(
        "output: telemetry.raw       #",
        "output: telemetry.rwa       #",
    );
    assert_eq!(p.key, "ingest.devices-mqtt.output");
    assert_eq!(
        p.line,
        line_of(&iot_text(), "output: telemetry.raw       #")
    );
    assert!(p.fix.contains("did you mean `telemetry.raw`"), "{p}");
}

#[test]
fn a_topic_filter_needs_one_plus_level() {
    let p = problem("topic: devices/+/telemetry", "topic: devices/telemetry");
    assert_eq!(p.key, "ingest.devices-mqtt.topic");
    assert!(p.message.contains("no `+` level"), "{p}");
    let p = problem("topic: devices/+/telemetry", "topic: devices/+/+/telemetry");
    assert!(p.message.contains("2 `+` levels"), "{p}");
    let p = problem("topic: devices/+/telemetry", "topic: devices/d+/telemetry");
    assert!(p.message.contains("whole level"), "{p}");
}

#[test]
fn the_device_field_must_be_a_string_field_of_the_output_schema() {
    let p = problem("device_field: device_id", "device_field: device");
    assert_eq!(p.key, "ingest.devices-mqtt.device_field");
    assert!(p.fix.contains("device_id"), "{p}");
    let p = problem("device_field: device_id", "device_field: seq");
    assert!(p.message.contains("not a string"), "{p}");
}

#[test]
fn a_bad_url_a_typo_and_an_unknown_kind_are_located() {
    let p = problem("mqtt://127.0.0.1:1883}", "http://127.0.0.1:1883}");
    assert!(p.key.starts_with("ingest.devices-mqtt"), "{p}");
    assert!(p.message.contains("not an MQTT URL"), "{p}");
    let p = problem("    format: json ", "    fromat: json ");
    assert_eq!(p.key, "ingest.devices-mqtt.fromat");
    assert_eq!(p.line, line_of(&iot_text(), "format: json "));
    assert!(p.fix.contains("did you mean `format`"), "{p}");
    let p = problem("    kind: mqtt", "    kind: mqtt5");
    assert_eq!(p.key, "ingest.devices-mqtt.kind");
    assert!(p.fix.contains("did you mean `mqtt`"), "{p}");
    let p = problem("format: json ", "format: xml ");
    assert!(p.fix.contains("json"), "{p}");
    let p = problem("max_payload: 64KiB", "max_payload: 2MiB");
    assert_eq!(p.key, "ingest.devices-mqtt.max_payload");
}

#[test]
fn the_reference_http_bridge_loads_and_its_token_topic_is_compacted() {
    let loaded = load(&iot_path()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    let b = t.ingest.iter().find(|b| b.name == "devices-http").unwrap();
    let IngestSpec::Http(h) = &b.spec else {
        panic!("devices-http is an HTTP bridge")
    };
    assert_eq!(h.listen.port(), 8088);
    assert_eq!(h.tokens, TokenStore::Topic("devices.tokens".into()));
    assert_eq!(
        (h.max_body, h.max_records, h.max_pending),
        (1 << 20, 10_000, 50_000)
    );
    assert!(h.tls.is_none());
    let plan = t
        .topic_plans()
        .into_iter()
        .find(|p| p.name == "devices.tokens")
        .unwrap();
    assert!(plan
        .all_configs()
        .iter()
        .any(|(k, v)| *k == "cleanup.policy" && v == "compact"));
}

#[test]
fn http_bridge_mistakes_are_located() {
    let p = problem(
        "tokens: { topic: devices.tokens }",
        "tokens: { topic: devices.tokenz }",
    );
    assert_eq!(p.key, "ingest.devices-http.tokens.topic");
    assert!(p.fix.contains("did you mean `devices.tokens`"), "{p}");
    let p = problem("max_pending: 50000 ", "max_pending: 500 ");
    assert_eq!(p.key, "ingest.devices-http.max_pending");
    assert!(p.fix.contains("at least max_records"), "{p}");
    let p = problem("max_body: 1MiB ", "max_body: 64MiB ");
    assert_eq!(p.key, "ingest.devices-http.max_body");
    let p = problem(
        "listen: ${SLUICE_HTTP_INGEST_LISTEN:-127.0.0.1:8088}",
        "listen: localhost",
    );
    assert!(p.key.starts_with("ingest.devices-http"), "{p}");
    let p = problem(
        "tokens: { topic: devices.tokens }",
        "tokens: { file: no-such-tokens.yaml }",
    );
    assert_eq!(p.key, "ingest.devices-http.tokens.file");
    assert!(p.message.contains("no-such-tokens.yaml"), "{p}");
    let text = iot_text().replacen(
        "# tls: { cert: ingest-cert.pem, key: ingest-key.pem }",
        "tls: { cert: ingest-cert.pem, key: ingest-key.pem }",
        1,
    );
    let err = load_str(&iot_path(), &text, &|_| None).expect_err("missing PEM files");
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ingest.devices-http.tls.cert",
            "ingest.devices-http.tls.key"
        ],
        "{err}"
    );
}

#[test]
fn token_files_hold_hashes_never_tokens() {
    use sluice_topology::ingest::parse_token_file;
    let h1 = "a".repeat(64);
    let h2 = "B".repeat(64);
    let ok = parse_token_file(&format!("d1: {h1}\nd2: [{h2}, {}]\n", "c".repeat(64))).unwrap();
    assert_eq!(ok.len(), 3);
    assert!(
        ok.contains(&("b".repeat(64), "d2".to_string())),
        "hashes are lowercased"
    );
    let err = parse_token_file("d1: my-secret-token\n").unwrap_err();
    assert!(err.contains("not a SHA-256"), "{err}");
    let err = parse_token_file(&format!("d1: {h1}\nd2: {h1}\n")).unwrap_err();
    assert!(err.contains("same token hash"), "{err}");
    assert!(parse_token_file("").unwrap().is_empty());
}
