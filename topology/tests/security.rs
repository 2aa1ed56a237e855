//! `connections` with TLS and credentials: passwords come from the environment or a file,
//! never from the topology text, and never show in the parsed topology's `Debug` output.

use std::path::{Path, PathBuf};

use sluice_topology::{
    load_str, Problem, SaslMechanism, SecretSource, SecurityProtocol, TopologyError,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn text(connections: &str) -> String {
    format!(
        r#"apiVersion: sluice/v1
kind: Topology
metadata: {{ name: secure }}
connections:
{connections}
topics: {{}}
stages: {{}}
"#
    )
}

fn load(connections: &str) -> Result<sluice_topology::Loaded, Vec<Problem>> {
    let env = |k: &str| (k == "SECRET_FROM_ENV").then(|| "interpolated-secret".to_string());
    match load_str(&dir().join("secure.yaml"), &text(connections), &env) {
        Ok(l) => Ok(l),
        Err(TopologyError::Invalid { problems, .. }) => Err(problems),
        Err(e) => panic!("{e}"),
    }
}

fn problems(connections: &str) -> Vec<Problem> {
    match load(connections) {
        Ok(_) => panic!("accepted:\n{connections}"),
        Err(p) => p,
    }
}

#[test]
fn sasl_ssl_broker_and_registry_with_basic_auth_load_with_paths_resolved() {
    let loaded = load(
        r#"  brokers: broker.example:9093
  security:
    protocol: sasl_ssl
    ca: ca.pem
    sasl: { mechanism: SCRAM-SHA-512, username: sluice, password_env: SLUICE_BROKER_PASSWORD }
  registry:
    url: https://registry.example:8081
    tls: { ca: ca.pem }
    basic_auth: { username: sluice, password_file: registry.password }
  s3: { endpoint: "https://s3.example", bucket: lake, ca: ca.pem, secret_access_key: "${SECRET_FROM_ENV}" }"#,
    )
    .unwrap_or_else(|p| panic!("{p:#?}"));
    let c = &loaded.topology.connections;
    assert_eq!(c.security.protocol, SecurityProtocol::SaslSsl);
    assert_eq!(
        c.security.ca.as_deref(),
        Some(dir().join("ca.pem").as_path())
    );
    let sasl = c.security.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(
        sasl.password_source(),
        Some(SecretSource::Env("SLUICE_BROKER_PASSWORD".into()))
    );
    assert_eq!(c.registry.url, "https://registry.example:8081");
    assert_eq!(
        c.registry.basic_auth.as_ref().unwrap().password_source(),
        Some(SecretSource::File(dir().join("registry.password")))
    );
    // Nothing secret in what a log line with `{:?}` would print: the S3 secret interpolated
    // from the environment included.
    let debug = format!("{loaded:?}");
    assert!(!debug.contains("interpolated-secret"), "{debug}");
    assert!(debug.contains("SLUICE_BROKER_PASSWORD"), "{debug}");
}

#[test]
fn a_plain_registry_url_still_loads() {
    let loaded = load("  brokers: 127.0.0.1:9092\n  registry: http://127.0.0.1:8081").unwrap();
    let c = &loaded.topology.connections;
    assert_eq!(c.registry.url, "http://127.0.0.1:8081");
    assert!(c.registry.tls.is_none() && c.registry.basic_auth.is_none());
    assert_eq!(c.security.protocol, SecurityProtocol::Plaintext);
}

#[test]
fn an_inline_password_is_rejected_with_where_to_put_it_and_is_not_echoed() {
    let conn = r#"  brokers: 127.0.0.1:9092
  security:
    protocol: sasl_ssl
    sasl: { mechanism: PLAIN, username: u, password: "hunter2" }
  registry:
    url: http://127.0.0.1:8081
    basic_auth:
      username: u
      password: hunter3"#;
    let p = problems(conn);
    let rendered: Vec<String> = p.iter().map(|p| p.render(Path::new("t.yaml"))).collect();
    let all = rendered.join("\n");
    assert!(
        !all.contains("hunter2") && !all.contains("hunter3"),
        "{all}"
    );
    let sasl = p
        .iter()
        .find(|p| p.key == "connections.security.sasl.password")
        .unwrap_or_else(|| panic!("{all}"));
    assert!(sasl.fix.contains("password_env") && sasl.fix.contains("password_file"));
    assert_eq!(sasl.line, 8, "{all}");
    let basic = p
        .iter()
        .find(|p| p.key == "connections.registry.basic_auth.password")
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(basic.line, 13, "{all}");
}

#[test]
fn protocol_sasl_and_sources_must_agree() {
    let p = problems(
        r#"  brokers: 127.0.0.1:9092
  security: { protocol: sasl_ssl, ca: no-such-ca.pem }
  registry: { url: http://127.0.0.1:8081, tls: {} }"#,
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"connections.security.protocol"), "{p:#?}");
    assert!(keys.contains(&"connections.security.ca"), "{p:#?}");
    assert!(keys.contains(&"connections.registry.url"), "{p:#?}");

    let p = problems(
        r#"  brokers: 127.0.0.1:9092
  security:
    protocol: ssl
    sasl: { mechanism: SCRAM-SHA-256, username: u, password_env: A, password_file: b }
  registry: http://127.0.0.1:8081"#,
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"connections.security.sasl"), "{p:#?}");
    assert!(
        keys.contains(&"connections.security.sasl.password_file"),
        "{p:#?}"
    );

    let p = problems(
        r#"  brokers: 127.0.0.1:9092
  security: { protocol: sasl_ssl, sasl: { mechanism: SCRAM-SHA-1, username: u, password_env: A } }
  registry: http://127.0.0.1:8081"#,
    );
    assert!(p[0].message.contains("SCRAM-SHA-1"), "{p:#?}");
    assert!(p[0].fix.contains("did you mean `SCRAM-SHA-"), "{p:#?}");

    let p = problems(
        r#"  brokers: 127.0.0.1:9092
  registry: { url: http://127.0.0.1:8081, basic_auth: { username: u, password_env: A }, tsl: {} }"#,
    );
    assert!(p[0].message.contains("tsl"), "{p:#?}");
}
