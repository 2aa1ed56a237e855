//! TLS and SASL against real servers started by these tests (tests/common/secure.rs): a
//! Nisshi broker requiring SCRAM over TLS, and `sluice registry` over HTTPS with basic
//! auth. Records round-trip through sluice's own clients; a wrong password or CA ends in
//! one clear error naming the connection, within a bounded time, never with the password.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::secure::{Pki, SecureBroker, SecureRegistry, REGISTRY_PASSWORD, REGISTRY_USER, USERS};
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{
    check_connection, consumer_config, ensure_topics, ClientOptions, KafkaError, KafkaSecurity,
    SaslCredentials, TopicToCreate, TrackedProducer,
};
use sluice_schemas::client::{ClientError, RegistryAuth, RegistryClient};
use sluice_schemas::codec::{AvroRecord, TelemetryDecoder};
use sluice_schemas::records::Telemetry;

/// A check that does not answer within this is the hang the tests guard against.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

fn scram(
    broker: &SecureBroker,
    ca: &Path,
    user: &str,
    password: &str,
    mech: &str,
) -> ClientOptions {
    ClientOptions::secured(
        broker.brokers(),
        KafkaSecurity {
            protocol: "sasl_ssl".into(),
            ca: Some(ca.to_path_buf()),
            sasl: Some(SaslCredentials {
                mechanism: mech.into(),
                username: user.into(),
                password: password.into(),
            }),
        },
    )
}

/// Every record of partition 0 of `topic` up to `want` records (bounded by a deadline).
fn read(opts: &ClientOptions, topic: &str, want: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = consumer_config(opts, &unique("secure-reader-"))
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    out
}

#[test]
fn scram_256_and_512_over_tls_round_trip_and_bad_credentials_fail_naming_the_connection() {
    let broker = SecureBroker::start();
    let ca = broker.pki.ca.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (user, password, _, mechanism) in USERS {
        let opts = scram(&broker, &ca, user, password, mechanism);
        check_connection(&opts, CHECK_TIMEOUT)
            .unwrap_or_else(|e| panic!("{mechanism} as {user}: {e}\n{}", broker.log()));
        let topic = unique("secure-");
        rt.block_on(ensure_topics(
            &opts,
            &[TopicToCreate {
                name: topic.clone(),
                partitions: 1,
                replication: 1,
                configs: vec![],
            }],
        ))
        .unwrap();
        let mut producer = TrackedProducer::new(&opts).unwrap();
        let payload = format!("over {mechanism} as {user}");
        producer
            .send(
                BaseRecord::to(&topic)
                    .key(user.as_bytes())
                    .payload(payload.as_bytes()),
            )
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
        let got = read(&opts, &topic, 1);
        assert_eq!(
            got,
            vec![(user.as_bytes().to_vec(), payload.into_bytes())],
            "{mechanism}"
        );
    }

    // A wrong password: an authentication error naming address, mechanism and user.
    let (user, _, _, mechanism) = USERS[1];
    let wrong = scram(&broker, &ca, user, "not-bobs-password", mechanism);
    let started = Instant::now();
    let err = check_connection(&wrong, CHECK_TIMEOUT).unwrap_err();
    let msg = err.to_string();
    eprintln!("wrong password: {msg} (after {:?})", started.elapsed());
    assert!(matches!(err, KafkaError::Authentication { .. }), "{msg}");
    for part in [broker.brokers().as_str(), mechanism, user] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    assert!(!msg.contains("not-bobs-password"), "{msg}");
    assert!(started.elapsed() < CHECK_TIMEOUT, "{:?}", started.elapsed());

    // A CA that did not sign the broker's certificate: a TLS error, not an auth one.
    let (user, password, _, mechanism) = USERS[0];
    let untrusted = scram(&broker, &broker.pki.other_ca, user, password, mechanism);
    let started = Instant::now();
    let err = check_connection(&untrusted, CHECK_TIMEOUT).unwrap_err();
    let msg = err.to_string();
    eprintln!("wrong CA: {msg} (after {:?})", started.elapsed());
    assert!(matches!(err, KafkaError::Tls { .. }), "{msg}");
    assert!(msg.contains(&broker.brokers()), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(!msg.contains(password), "{msg}");
    assert!(started.elapsed() < CHECK_TIMEOUT, "{:?}", started.elapsed());
}

#[test]
fn registry_over_https_with_basic_auth_works_and_a_wrong_password_is_a_401_naming_the_url() {
    let pki = Pki::new();
    let registry = SecureRegistry::start(&pki, &env("SLUICE_BROKERS"), &unique("_schemas-tls-"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let subject = unique("secure-subject-");
    let v2 = std::fs::read_to_string(repo().join("schemas/telemetry-v2.avsc")).unwrap();

    // Through the topology's `connections.registry`, as `sluice run` builds its client.
    let topology = format!(
        r#"apiVersion: sluice/v1
kind: Topology
metadata: {{ name: secure }}
connections:
  brokers: 127.0.0.1:1
  registry:
    url: {url}
    tls: {{ ca: {ca} }}
    basic_auth: {{ username: {REGISTRY_USER}, password_file: {pw} }}
topics: {{}}
stages: {{}}
"#,
        url = registry.url,
        ca = pki.ca.display(),
        pw = registry.password_file.display(),
    );
    let loaded =
        sluice_topology::load_str(&pki.dir.path().join("t.yaml"), &topology, &|_| None).unwrap();
    let client =
        sluice::connections::registry_client(&loaded.topology.connections.registry).unwrap();
    let id = rt.block_on(client.register(&subject, &v2)).unwrap();
    let back = rt.block_on(client.schema_by_id(id)).unwrap();
    assert!(back.contains("Telemetry"), "{back}");

    let wrong = RegistryClient::with_auth(
        &registry.url,
        RegistryAuth {
            ca: Some(pki.ca.clone()),
            basic: Some((REGISTRY_USER.into(), "not-the-password".into())),
        },
    )
    .unwrap();
    let err = rt.block_on(wrong.schema_by_id(id)).unwrap_err();
    let msg = err.to_string();
    eprintln!("wrong registry password: {msg}");
    assert!(
        matches!(err, ClientError::Unauthorized { status: 401, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&registry.url) && msg.contains(REGISTRY_USER),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password") && !msg.contains(REGISTRY_PASSWORD));

    // Without our CA the system's roots do not trust the registry's certificate.
    let untrusted = RegistryClient::with_auth(
        &registry.url,
        RegistryAuth {
            ca: Some(pki.other_ca.clone()),
            basic: Some((REGISTRY_USER.into(), REGISTRY_PASSWORD.into())),
        },
    )
    .unwrap();
    let err = rt.block_on(untrusted.schema_by_id(id)).unwrap_err();
    assert!(matches!(err, ClientError::Http(_)), "{err}");
    eprintln!("untrusted registry certificate: {err}");
}

/// `sluice run` of the validate stage with its broker on SASL_SSL (SCRAM-SHA-512) and its
/// registry on HTTPS with basic auth: every record produced comes out valid, once.
#[test]
fn a_validate_stage_runs_end_to_end_over_sasl_ssl_and_an_https_registry() {
    let broker = SecureBroker::start();
    let pki = &broker.pki;
    let registry = SecureRegistry::start(pki, &env("SLUICE_BROKERS"), &unique("_schemas-tls-"));
    let (user, password, _, mechanism) = USERS[1];
    let password_file = broker.dir.path().join("broker-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let addr = broker.brokers();
    let connections = format!(
        r#"  brokers: {addr}
  security:
    protocol: sasl_ssl
    ca: {ca}
    sasl: {{ mechanism: {mechanism}, username: {user}, password_file: {pwf} }}
  registry:
    url: {url}
    tls: {{ ca: {ca} }}
    basic_auth: {{ username: {REGISTRY_USER}, password_env: SLUICE_TEST_REGISTRY_PASSWORD }}
"#,
        ca = pki.ca.display(),
        pwf = password_file.display(),
        url = registry.url,
    );
    let topo = TestTopology::new(|t| {
        let start = t.find("  brokers:").unwrap();
        let end = t.find("  ilp:").unwrap();
        format!("{}{connections}{}", &t[..start], &t[end..])
    });
    let path = topo.path.display().to_string();
    let raw = topo.topic("telemetry.raw");
    let valid = topo.topic("telemetry.valid");
    let opts = scram(&broker, &pki.ca, user, password, mechanism);

    // The writer ids, registered before the run pushes the topology's schemas.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::with_auth(
        &registry.url,
        RegistryAuth {
            ca: Some(pki.ca.clone()),
            basic: Some((REGISTRY_USER.into(), REGISTRY_PASSWORD.into())),
        },
    )
    .unwrap();
    let dir = repo().join("schemas");
    let subject = format!("{raw}-value");
    let mut v2 = 0;
    for file in ["telemetry-v1.avsc", "telemetry-v2.avsc"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        v2 = rt.block_on(client.register(&subject, &text)).unwrap();
    }

    let log = topo.dir.path().join("run.log");
    let mut run = Sluice::spawn_with_env(
        &["run", &path, "--quiet", "--stage", "validate"],
        &[("SLUICE_TEST_REGISTRY_PASSWORD", REGISTRY_PASSWORD)],
        &log,
    );
    let probe: BaseConsumer = consumer_config(&opts, &unique("probe-")).create().unwrap();
    eventually(
        "the run to create its topics",
        240,
        Duration::from_millis(500),
        || {
            if let Some(status) = run.exited() {
                panic!(
                    "sluice run exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let md = probe
                .fetch_metadata(Some(&raw), Duration::from_secs(5))
                .ok()?;
            md.topics()
                .iter()
                .any(|t| t.name() == raw && !t.partitions().is_empty())
                .then_some(())
        },
    );

    let mut producer = TrackedProducer::new(&opts).unwrap();
    let t0 = 1_767_225_600_000i64;
    let mut sent = BTreeSet::new();
    let mut buf = Vec::new();
    for d in 0..4 {
        let device = format!("{}-dev{d}", topo.suffix);
        for seq in 1..=10i64 {
            let rec = Telemetry {
                device_id: device.clone(),
                metric: "temperature".into(),
                event_time: t0 + seq * 10_000,
                value: 20.0 + seq as f64 / 10.0,
                seq,
                quality: 100,
            };
            buf.clear();
            rec.encode_wire(v2, &mut buf);
            producer
                .send(
                    BaseRecord::to(&raw)
                        .key(device.as_bytes())
                        .payload(&buf[..])
                        .timestamp(t0 + seq * 10_000),
                )
                .unwrap();
            sent.insert((device.clone(), seq));
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let out = read(&opts, &valid, sent.len());
    let mut got = BTreeSet::new();
    let mut t = Telemetry::default();
    let mut decoder = TelemetryDecoder::new();
    for (_, payload) in &out {
        let id = u32::from_be_bytes(payload[1..5].try_into().unwrap());
        if !decoder.knows(id) {
            let schema = rt.block_on(client.schema_by_id(id)).unwrap();
            decoder.add_writer_schema_json(id, &schema).unwrap();
        }
        decoder.decode(payload, &mut t).unwrap();
        got.insert((t.device_id.clone(), t.seq));
    }
    // Nothing beyond what was read: the partitions' ends add up to the records sent.
    let held: i64 = (0..4)
        .map(|p| {
            let (low, high) = probe
                .fetch_watermarks(&valid, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum();
    run.interrupt();
    assert_eq!(held, sent.len() as i64);
    assert_eq!(
        out.len(),
        sent.len(),
        "each record once:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(got, sent);
}
