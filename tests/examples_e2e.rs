//! The examples end to end on the real local stack: `sluice run` on an example topology, the
//! input of one of its `sluice test` cases produced by a plain producer, and what lands read
//! back by a plain consumer outside sluice and compared with the case's `expect:` by the
//! comparison `sluice test` uses ([`sluice::testdriver::compare_topic`]). A difference is a
//! difference between the in-process driver and the real runtime.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use sluice::testdriver::{avro_to_json, compare_topic, json_to_avro, record_json, CaseFile};
use sluice_connectors::kafka::dlq::{ERROR_CLASS, ERROR_MESSAGE};
use sluice_connectors::kafka::ID_HEADER;
use sluice_schemas::client::RegistryClient;
use sluice_topology::StageSpec;

/// The example's topics, renamed for each run.
const ENERGY_TOPICS: [&str; 4] = [
    "energy.readings",
    "energy.site_kwh",
    "energy.demand",
    "energy.dlq",
];

#[test]
fn energy_example_on_the_stack_outputs_what_its_first_case_expects() {
    let started = Instant::now();
    let brokers = env("SLUICE_BROKERS");
    let registry = env("SLUICE_REGISTRY_URL");
    // The topology reads these (the local stack has one broker); `scripts/stack up` sets them.
    env("SLUICE_REPLICATION");
    env("SLUICE_MIN_INSYNC_REPLICAS");

    let ex = Example::energy();
    let loaded = sluice_topology::load(&ex.path).unwrap_or_else(|e| {
        panic!(
            "the rewritten topology {} does not load: {e}",
            ex.path.display()
        )
    });
    // Windows keep stream time per input partition, so only one partition gives the very
    // window closings of the in-process run (which has one partition per topic): every topic
    // (and so every changelog) of the rewritten topology has 1 partition.
    for p in loaded.topology.topic_plans() {
        assert_eq!(p.partitions, 1, "{}: {} partitions", p.name, p.partitions);
    }
    let input = ex.topic("energy.readings");
    let subject = loaded.topology.topics[&input]
        .subject
        .clone()
        .expect("the input topic has a subject");
    // Every stage sluice runs, in order (a pipeline cut at a `key_by` adds a stage reading
    // the repartition topic right after it): its input, the topic it writes (counted in
    // `sluice_records_out_total`), its dead-letter topic and its consumer group.
    let mut stages = Vec::new();
    for s in &loaded.topology.stages {
        let StageSpec::Pipeline(p) = &s.spec else {
            panic!("stage {} of the energy example is not a pipeline", s.name);
        };
        stages.push(Stage {
            name: s.name.clone(),
            input: p.input.clone(),
            writes: p.writes().to_string(),
            dead_letter: p.dead_letter.clone(),
            group: format!("{}-{}", ex.app, s.name),
        });
    }
    assert!(
        stages.iter().any(|s| s.input == input),
        "no stage reads {input}"
    );

    let cases: CaseFile = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("examples/energy/cases.yaml")).unwrap(),
    )
    .expect("examples/energy/cases.yaml is a case file");
    let case = &cases.cases[0];

    let sluice_bin = env!("CARGO_BIN_EXE_sluice");
    let path = ex.path.to_str().unwrap().to_string();
    let created = Command::new(sluice_bin)
        .args(["topics", "create", &path])
        .output()
        .expect("run sluice topics create");
    assert!(
        created.status.success(),
        "sluice topics create {path} failed ({}):\n{}{}",
        created.status,
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
    let log = ex.dir.path().join("sluice.log");
    let mut run = Sluice::spawn(&["run", &path, "--quiet"], &log);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = RegistryClient::new(&registry);
    // `sluice run` registers the input schema (and the derived output schemas) itself.
    let writer = eventually_or(
        &format!("sluice run to register the input schema under {subject}"),
        240,
        Duration::from_millis(500),
        || {
            alive(&mut run, &log);
            rt.block_on(client.latest(&subject))
                .map_err(|e| e.to_string())
        },
    );
    let writer_schema = Schema::parse_str(&writer.schema).expect("the registered schema parses");

    // In order, to partition 0, each acknowledged by every in-sync replica before the next.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .create()
        .unwrap();
    let mut ts = 0;
    // The case passes no wall clock (`advance:`), which a real run could not reproduce.
    let records: Vec<&sluice::testdriver::InputRecord> = case
        .input
        .iter()
        .map(|item| match item {
            sluice::testdriver::InputItem::Record(r) => r,
            sluice::testdriver::InputItem::Advance(_) => {
                panic!("the end-to-end case must not pass wall clock")
            }
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        if let Some(t) = &r.timestamp {
            ts = t.millis().unwrap();
        }
        let avro = json_to_avro(&r.value, &writer_schema)
            .unwrap_or_else(|e| panic!("input record {i} does not fit the input schema: {e}"));
        let mut value = Vec::new();
        sluice_schemas::wire::write_header(writer.id, &mut value);
        value.extend(sluice_ops::codec::encode_once(&writer_schema, &avro).unwrap());
        let topic = ex.topic(&r.topic);
        let mut rec = BaseRecord::<[u8], [u8]>::to(&topic)
            .partition(0)
            .payload(&value)
            .timestamp(ts);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_bytes());
        }
        producer
            .send(rec)
            .unwrap_or_else(|(e, _)| panic!("producing input record {i}: {e}"));
        producer
            .flush(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("producing input record {i}: {e}"));
    }
    let input_end = end_offsets(&brokers, &input)[&0];
    assert_eq!(
        input_end,
        records.len() as i64,
        "{input} holds other records"
    );

    // Done when every stage committed all of its input, looked at in the order the stages
    // feed each other: a commit acknowledges a stage's outputs before its input offsets, so
    // once a stage committed everything its input topic is final for the stage reading it;
    // and without `idle_timeout` (the example sets none) a window closes only when a record
    // arrives, so nothing more is written.
    let committed = eventually_or(
        "every stage to commit all of its input",
        240,
        Duration::from_millis(500),
        || {
            alive(&mut run, &log);
            let mut read = BTreeMap::new();
            for s in &stages {
                let end = end_offsets(&brokers, &s.input);
                let at = committed_offsets(&brokers, &s.group, &s.input);
                let behind: Vec<String> = end
                    .iter()
                    .filter(|(p, e)| **e > 0 && at.get(p) != Some(e))
                    .map(|(p, e)| format!("partition {p} at {:?} of {e}", at.get(p)))
                    .collect();
                if !behind.is_empty() {
                    return Err(format!(
                        "stage {} on {}: {}",
                        s.name,
                        s.input,
                        behind.join(", ")
                    ));
                }
                read.insert(s.name.clone(), end.values().sum::<i64>());
            }
            Ok(read)
        },
    );

    let mut schemas: HashMap<u32, Schema> = HashMap::new();
    let mut diffs = Vec::new();
    let mut landed = BTreeMap::new();
    for (name, expected) in &case.expect {
        let topic = ex.topic(name);
        let read = read_topic(&brokers, &topic);
        // A plain consumer keeping every record sees each one once.
        let mut ids = HashSet::new();
        for r in &read {
            match r.headers.get(ID_HEADER) {
                None => diffs.push(format!(
                    "{name}: the record at offset {} has no {ID_HEADER} header",
                    r.offset
                )),
                Some(id) if !ids.insert(id.clone()) => diffs.push(format!(
                    "{name}: record {id} appears twice (again at offset {})",
                    r.offset
                )),
                Some(_) => {}
            }
        }
        let actual: Vec<serde_json::Value> = read
            .iter()
            .map(|r| {
                let dead = r.headers.get(ERROR_CLASS).map(|class| {
                    let message = r.headers.get(ERROR_MESSAGE).map_or("", String::as_str);
                    (class.as_str(), message)
                });
                let value = match &r.value {
                    Some(v) => decode(&rt, &client, &mut schemas, v),
                    None => serde_json::Value::Null,
                };
                let ts = r
                    .timestamp
                    .unwrap_or_else(|| panic!("{name}: offset {} has no timestamp", r.offset));
                record_json(r.key.as_deref(), ts, dead, value)
            })
            .collect();
        diffs.extend(compare_topic(name, expected, &actual).unwrap());
        landed.insert(name.clone(), (topic, read.len()));
    }
    assert!(
        diffs.is_empty(),
        "`sluice run` on {} did not write what case `{}` of examples/energy/cases.yaml expects:\n    {}\nlog: {} (SLUICE_TEST_KEEP_DIR=1 keeps it)",
        ex.path.display(),
        case.name,
        diffs.join("\n    "),
        log.display()
    );

    // What the instance says it wrote is what landed.
    for (name, (topic, n)) in &landed {
        let n = *n as f64;
        if stages.iter().any(|s| &s.writes == topic) {
            let counted = metric_where(
                ex.metrics_port,
                "sluice_records_out_total",
                &format!("topic=\"{topic}\""),
            );
            assert_eq!(
                counted,
                Some(n),
                "sluice_records_out_total of {name}, against the records on it"
            );
        }
        let writers: Vec<&Stage> = stages
            .iter()
            .filter(|s| s.dead_letter.as_ref() == Some(topic))
            .collect();
        if !writers.is_empty() {
            let counted: f64 = writers
                .iter()
                .filter_map(|s| {
                    metric_where(
                        ex.metrics_port,
                        "sluice_dead_letters_total",
                        &format!("stage=\"{}\"", s.name),
                    )
                })
                .sum();
            assert_eq!(
                counted, n,
                "sluice_dead_letters_total of the stages writing to {name}, against the records on it"
            );
        }
    }
    // Each stage read each record of its input once.
    for (stage, records) in &committed {
        let read = metric_where(
            ex.metrics_port,
            "sluice_records_in_total",
            &format!("stage=\"{stage}\""),
        );
        assert_eq!(
            read,
            Some(*records as f64),
            "sluice_records_in_total of stage {stage}, against the records of its input"
        );
    }

    // Each operator's records in and out, worked out from the case: the filters drop the
    // reading without a site (both stages) and the negative one (site_energy only); the
    // late reading goes into the energy window but no result comes out for it.
    let operator = |stage: &str, op: &str, direction: &str| -> f64 {
        let want = [
            format!("stage=\"{stage}\""),
            format!("operator=\"{op}\""),
            format!("direction=\"{direction}\""),
        ];
        metric_lines(ex.metrics_port)
            .iter()
            .filter(|l| l.starts_with("sluice_operator_records_total{"))
            .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for (stage, op, input, output) in [
        ("site_energy", "0-filter", 10.0, 8.0),
        ("site_energy", "1-select", 8.0, 8.0),
        ("site_energy", "2-key_by", 8.0, 8.0),
        ("site_energy-rekeyed", "3-window", 8.0, 3.0),
        ("demand", "0-filter", 10.0, 9.0),
        ("demand", "1-key_by", 9.0, 9.0),
        ("demand-rekeyed", "2-window", 9.0, 3.0),
    ] {
        assert_eq!(
            (operator(stage, op, "in"), operator(stage, op, "out")),
            (input, output),
            "sluice_operator_records_total of {stage} {op} (in, out)"
        );
    }

    // SIGTERM: a final commit, exit 0, and nothing written after what was read.
    let status = run.terminate();
    assert!(
        status.success(),
        "sluice run exited with {status} on SIGTERM; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for (name, (topic, n)) in &landed {
        let now: i64 = end_offsets(&brokers, topic).values().sum();
        assert_eq!(now, *n as i64, "{name} grew after everything was committed");
    }
    eprintln!(
        "energy example end to end: {} inputs, {} expected topics, {:.1} s",
        case.input.len(),
        case.expect.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A stage as `sluice run` runs it.
struct Stage {
    name: String,
    input: String,
    writes: String,
    dead_letter: Option<String>,
    group: String,
}

/// An example topology rewritten for one run: its own application name and topics (random
/// names), state and metrics of its own, one partition per topic; the rest as it is.
struct Example {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    app: String,
    /// Example topic name -> this run's.
    topics: HashMap<String, String>,
    metrics_port: u16,
}

impl Example {
    fn energy() -> Example {
        let src = repo().join("examples/energy");
        let mut text = std::fs::read_to_string(src.join("energy.yaml")).unwrap();
        let suffix = unique("e2e");
        let app = format!("energy{suffix}");
        let metrics_port = free_port();
        let mut dir = tempfile::tempdir().unwrap();
        // SLUICE_TEST_KEEP_DIR=1 keeps the topology, state and log for a post-mortem.
        if std::env::var_os("SLUICE_TEST_KEEP_DIR").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let state = dir.path().join("state");
        let mut topics = HashMap::new();
        for t in ENERGY_TOPICS {
            let renamed = format!("{suffix}.{t}");
            text = replace_once_or_more(&text, t, &renamed);
            topics.insert(t.to_string(), renamed);
        }
        for (from, to) in [
            ("\n  name: energy\n", format!("\n  name: {app}\n")),
            (
                "${SLUICE_STATE_DIR:-../../.stack/state}",
                state.display().to_string(),
            ),
            (
                "${SLUICE_METRICS_LISTEN:-127.0.0.1:9465}",
                format!("127.0.0.1:{metrics_port}"),
            ),
            // One partition for every topic: see the test.
            ("partitions: 4", "partitions: 1".to_string()),
        ] {
            text = replace_once_or_more(&text, from, &to);
        }
        std::fs::copy(
            src.join("meter-reading.avsc"),
            dir.path().join("meter-reading.avsc"),
        )
        .unwrap();
        let path = dir.path().join("energy.yaml");
        std::fs::write(&path, text).unwrap();
        Example {
            dir,
            path,
            app,
            topics,
            metrics_port,
        }
    }

    /// This run's name of the example's topic `name`.
    fn topic(&self, name: &str) -> String {
        self.topics
            .get(name)
            .unwrap_or_else(|| panic!("the case names topic `{name}`, not one of the example's"))
            .clone()
    }
}

/// `text` with `from` replaced; fails when the example no longer contains `from`.
fn replace_once_or_more(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example topology no longer contains `{from}`: update tests/examples_e2e.rs"
    );
    text.replace(from, to)
}

/// Fails with the log when `sluice run` exited.
fn alive(run: &mut Sluice, log: &Path) {
    if let Some(st) = run.exited() {
        panic!(
            "sluice run exited ({st}); log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// A wire-format value as JSON, decoded with its writer schema from the registry; what does
/// not decode is shown as a string saying why (and then differs from any expectation).
fn decode(
    rt: &tokio::runtime::Runtime,
    client: &RegistryClient,
    schemas: &mut HashMap<u32, Schema>,
    bytes: &[u8],
) -> serde_json::Value {
    let (id, body) = match sluice_schemas::wire::parse(bytes) {
        Ok(x) => x,
        Err(e) => return format!("<{} bytes, not Avro: {e}>", bytes.len()).into(),
    };
    let schema = schemas.entry(id).or_insert_with(|| {
        let json = rt
            .block_on(client.schema_by_id(id))
            .unwrap_or_else(|e| panic!("schema id {id} from the registry: {e}"));
        Schema::parse_str(&json).unwrap_or_else(|e| panic!("schema id {id} does not parse: {e}"))
    });
    match sluice_ops::codec::decode_once(schema, None, body) {
        Ok(v) => avro_to_json(v),
        Err(e) => format!("<undecodable with schema {id}: {e}>").into(),
    }
}
