//! The examples end to end on the real local stack: `sluice run` on an example topology, the
//! input of one of its `sluice test` cases produced by a plain producer, and what lands read
//! back by a plain consumer outside sluice and compared with the case's `expect:` by the
//! comparison `sluice test` uses ([`sluice::testdriver::compare_topic`]). A difference is a
//! difference between the in-process driver and the real runtime.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// The examples' topics, renamed for each run.
const ENERGY_TOPICS: [&str; 5] = [
    "energy.readings",
    "energy.meters",
    "energy.site_kwh",
    "energy.demand",
    "energy.dlq",
];
const FACTORY_TOPICS: [&str; 7] = [
    "factory.readings",
    "factory.machines",
    "factory.over_limit",
    "factory.line_temperature",
    "factory.anomalies",
    "factory.alerts",
    "factory.dlq",
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
    let stages = pipeline_stages(&loaded, &ex.app);
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
    let records = case_records(case);
    for r in &records {
        if let Some(t) = &r.timestamp {
            ts = t.millis().unwrap();
        }
        produce(
            &producer,
            &ex.topic(&r.topic),
            (writer.id, &writer_schema),
            r,
            ts,
        );
    }
    let input_end = end_offsets(&brokers, &input)[&0];
    assert_eq!(
        input_end,
        records.len() as i64,
        "{input} holds other records"
    );

    // Without `idle_timeout` (the example sets none) a window closes only when a record
    // arrives, so once every stage committed all of its input nothing more is written.
    let committed = wait_all_committed(&brokers, &stages, &mut run, &log);

    let (diffs, landed) = compare_landed(&brokers, &ex, case, &rt, &client);
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
        metric_sum(
            ex.metrics_port,
            "sluice_operator_records_total",
            &[
                &format!("stage=\"{stage}\""),
                &format!("operator=\"{op}\""),
                &format!("direction=\"{direction}\""),
            ],
        )
    };
    for (stage, op, input, output) in [
        ("site_energy", "0-join", 10.0, 10.0),
        ("site_energy", "1-filter", 10.0, 8.0),
        ("site_energy", "2-select", 8.0, 8.0),
        ("site_energy", "3-key_by", 8.0, 8.0),
        ("site_energy-rekeyed", "4-window", 8.0, 3.0),
        ("demand", "0-join", 10.0, 10.0),
        ("demand", "1-filter", 10.0, 9.0),
        ("demand", "2-select", 9.0, 9.0),
        ("demand", "3-key_by", 9.0, 9.0),
        ("demand-rekeyed", "4-window", 9.0, 3.0),
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

    // `sluice lag`, read from the broker as an operator would: every stage (the re-keyed
    // ones too) has committed all it holds, and `--wait` returns at once.
    let lag = |extra: &[&str]| {
        let mut args = vec!["lag", path.as_str()];
        args.extend_from_slice(extra);
        Command::new(sluice_bin)
            .args(&args)
            .output()
            .expect("run sluice lag")
    };
    let lag_json = |out: &std::process::Output| -> Vec<serde_json::Value> {
        assert!(
            out.status.success(),
            "sluice lag failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("sluice lag --json prints JSON")
    };
    let behind = |stages: &[serde_json::Value]| -> BTreeMap<String, i64> {
        stages
            .iter()
            .map(|s| {
                let lag = s["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        let end = p["end"].as_i64().unwrap();
                        let from = p["committed"]
                            .as_i64()
                            .unwrap_or(p["start"].as_i64().unwrap());
                        end - from
                    })
                    .sum();
                (s["stage"].as_str().unwrap().to_string(), lag)
            })
            .collect()
    };
    let drained = lag_json(&lag(&["--json"]));
    let names: BTreeSet<String> = drained
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = stages.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, want, "sluice lag names every stage");
    assert!(
        behind(&drained).values().all(|l| *l == 0),
        "sluice lag after everything was committed: {drained:?}"
    );
    let waited = lag(&["--wait", "--json"]);
    assert!(
        waited.status.success(),
        "sluice lag --wait on a drained pipeline"
    );
    // One more reading, with no instance running: the stages reading the input are one
    // behind, and `--wait` gives up once nothing moves, naming them.
    produce(
        &producer,
        &input,
        (writer.id, &writer_schema),
        records[records.len() - 1],
        ts,
    );
    let after = behind(&lag_json(&lag(&["--json"])));
    for s in &stages {
        let want = i64::from(s.input == input);
        assert_eq!(
            after[&s.name], want,
            "lag of {} after one more reading",
            s.name
        );
    }
    let stuck = lag(&["--wait", "--stall", "1s"]);
    let said = String::from_utf8_lossy(&stuck.stderr);
    assert!(
        !stuck.status.success() && said.contains("site_energy (group"),
        "sluice lag --wait with no instance running: {}, said: {said}",
        stuck.status
    );
    // `sluice report`, as the demo ends: every output topic with the records a plain
    // consumer read from it (plus the one more reading on the input), and every `questdb`
    // sink table with the rows the case expects, counted in the TSDB.
    let report = Command::new(sluice_bin)
        .args(["report", &path])
        .output()
        .expect("run sluice report");
    let said = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "sluice report failed ({}): {said}{}",
        report.status,
        String::from_utf8_lossy(&report.stderr)
    );
    let reported = |name: &str| -> Option<usize> {
        said.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
        })
    };
    for (topic, n) in landed.values() {
        assert_eq!(
            reported(topic),
            Some(*n),
            "sluice report on {topic}:\n{said}"
        );
    }
    assert_eq!(
        reported(&input),
        Some(records.len() + 1),
        "sluice report on {input}:\n{said}"
    );
    for (name, rows) in &case.expect {
        if let Some(table) = name.strip_prefix("questdb:") {
            let table = ex.table(table);
            assert_eq!(
                reported(&table),
                Some(rows.len()),
                "sluice report on the TSDB table {table}:\n{said}"
            );
        }
    }
    eprintln!(
        "energy example end to end: {} inputs, {} expected topics, {:.1} s",
        case.input.len(),
        case.expect.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The factory example joins readings with a machine registry (a table) on the stack: the
/// registry's updates and deletes reach exactly the readings its first case says, the table
/// is loaded once and read on from its stored offsets after a restart.
#[test]
fn factory_example_joins_with_its_registry_as_its_first_case_expects() {
    let started = Instant::now();
    let brokers = env("SLUICE_BROKERS");
    let registry = env("SLUICE_REGISTRY_URL");
    env("SLUICE_REPLICATION");
    env("SLUICE_MIN_INSYNC_REPLICAS");

    let ex = Example::factory();
    let loaded = sluice_topology::load(&ex.path)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", ex.path.display()));
    let t = &loaded.topology;
    for p in t.topic_plans() {
        assert_eq!(p.partitions, 1, "{}: {} partitions", p.name, p.partitions);
    }
    let machines = ex.topic("factory.machines");
    let stages = pipeline_stages(&loaded, &ex.app);
    // Each join's snapshot store: its changelog is where a committed snapshot shows.
    let snapshots: Vec<String> = t
        .stage_plans()
        .iter()
        .flat_map(|s| s.stores.iter())
        .filter(|st| st.name.ends_with("-join-snapshot"))
        .map(|st| st.changelog.clone())
        .collect();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");

    let cases: CaseFile = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("examples/factory/cases.yaml")).unwrap(),
    )
    .expect("examples/factory/cases.yaml is a case file");
    let case = &cases.cases[0];

    // The producers' schemas, registered as a device fleet's producers would.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = RegistryClient::new(&registry);
    let writers = register_writers(&loaded, &rt, &client);

    let sluice_bin = env!("CARGO_BIN_EXE_sluice");
    let path = ex.path.to_str().unwrap().to_string();
    let created = Command::new(sluice_bin)
        .args(["topics", "create", &path])
        .output()
        .expect("run sluice topics create");
    assert!(
        created.status.success(),
        "sluice topics create {path} failed:\n{}{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .create()
        .unwrap();
    let records = case_records(case);
    let mut ts = 0;
    let mut send = |r: &sluice::testdriver::InputRecord| {
        if let Some(t) = &r.timestamp {
            ts = t.millis().unwrap();
        }
        let topic = ex.topic(&r.topic);
        let (id, schema) = &writers[&topic];
        produce(&producer, &topic, (*id, schema), r, ts);
    };
    // The registry as it stands before the first reading: loaded before any task starts.
    let first_reading = records
        .iter()
        .position(|r| ex.topic(&r.topic) != machines)
        .expect("the case has readings");
    for &r in &records[..first_reading] {
        send(r);
    }

    let log = ex.dir.path().join("sluice.log");
    let mut run = Sluice::spawn(&["run", &path, "--quiet"], &log);
    // `sluice test` processes each record before the next arrives, and a registry update
    // reaches the readings after it. Here the stages run on their own, so before an update
    // every stage has committed the readings before it (none of them can see it), and before
    // the reading after an update every join has committed a snapshot that includes it.
    let (mut readings_since, mut updated) = (false, false);
    for &r in &records[first_reading..] {
        if ex.topic(&r.topic) == machines {
            if readings_since {
                wait_all_committed(&brokers, &stages, &mut run, &log);
                readings_since = false;
            }
            updated = true;
        } else {
            if updated {
                let end = end_offsets(&brokers, &machines)[&0];
                eventually_or(
                    "every join to commit a snapshot including the registry's updates",
                    240,
                    Duration::from_millis(200),
                    || {
                        alive(&mut run, &log);
                        for topic in &snapshots {
                            let at = last_snapshot(&brokers, topic);
                            if at.first().is_none_or(|&a| a < end) {
                                return Err(format!("{topic}: {at:?}, the registry ends at {end}"));
                            }
                        }
                        Ok(())
                    },
                );
                updated = false;
            }
            readings_since = true;
        }
        send(r);
    }
    wait_all_committed(&brokers, &stages, &mut run, &log);
    let (diffs, _) = compare_landed(&brokers, &ex, case, &rt, &client);
    assert!(
        diffs.is_empty(),
        "`sluice run` on {} did not write what case `{}` of examples/factory/cases.yaml expects:\n    {}\nlog: {}",
        ex.path.display(),
        case.name,
        diffs.join("\n    "),
        log.display()
    );

    // The table's reader counted what it applied, once per process however many joins.
    let table = format!("table=\"{machines}\"");
    let m = ex.metrics_port;
    let updates = |result: &str| {
        metric_sum(
            m,
            "sluice_table_updates_total",
            &[&table, &format!("result=\"{result}\"")],
        )
    };
    assert_eq!((updates("applied"), updates("deleted")), (3.0, 1.0));
    assert_eq!(
        metric_sum(m, "sluice_table_partitions_loaded", &[&table]),
        1.0
    );
    assert_eq!(
        metric_sum(m, "sluice_table_stale_lookups_total", &[&table]),
        0.0
    );
    let status = run.terminate();
    assert!(
        status.success(),
        "sluice run exited with {status} on SIGTERM"
    );

    // A restart reads the registry on from the offsets its store kept: nothing again.
    let mut run = Sluice::spawn(&["run", &path, "--quiet"], &log);
    eventually_or(
        "the restarted instance to load the registry",
        240,
        Duration::from_millis(200),
        || {
            alive(&mut run, &log);
            match metric_sum(m, "sluice_table_partitions_loaded", &[&table]) {
                n if n >= 1.0 => Ok(()),
                n => Err(format!("sluice_table_partitions_loaded {n}")),
            }
        },
    );
    assert_eq!(
        metric_sum(m, "sluice_table_updates_total", &[&table]),
        0.0,
        "the restarted instance read the registry again"
    );
    let status = run.terminate();
    assert!(
        status.success(),
        "sluice run exited with {status} on SIGTERM"
    );
    eprintln!(
        "factory example end to end: {} inputs, {:.1} s",
        records.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The sum of metric `name` over the series whose labels include every one of `labels`
/// (`key="value"`); 0 when there is none.
fn metric_sum(port: u16, name: &str, labels: &[&str]) -> f64 {
    metric_lines(port)
        .iter()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Joins stay deterministic across crashes: the factory example under a stream of registry
/// updates (limits changed, machines removed and added back) racing the readings, killed
/// with kill -9 three times mid-input and restarted at once. Every copy a plain consumer
/// sees of an output id is the same record byte for byte, and the ids have no holes: a
/// replay joined with the table its first run saw.
#[test]
fn factory_joins_replay_identically_after_kill9() {
    let brokers = env("SLUICE_BROKERS");
    let registry = env("SLUICE_REGISTRY_URL");
    env("SLUICE_REPLICATION");
    env("SLUICE_MIN_INSYNC_REPLICAS");
    let ex = Example::factory();
    let loaded = sluice_topology::load(&ex.path).unwrap_or_else(|e| panic!("{e}"));
    let stages = pipeline_stages(&loaded, &ex.app);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = RegistryClient::new(&registry);
    let writers = register_writers(&loaded, &rt, &client);
    let path = ex.path.to_str().unwrap().to_string();
    let created = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topics", "create", &path])
        .output()
        .expect("run sluice topics create");
    assert!(created.status.success(), "sluice topics create failed");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .create()
        .unwrap();
    let (readings, machines) = (ex.topic("factory.readings"), ex.topic("factory.machines"));
    let send = |topic: &str, key: &str, value: serde_json::Value, ts: i64| {
        let r: sluice::testdriver::InputRecord = serde_json::from_value(serde_json::json!({
            "topic": topic, "key": key, "value": value
        }))
        .unwrap();
        let (id, schema) = &writers[topic];
        produce(&producer, topic, (*id, schema), &r, ts);
    };
    let machine = |i: usize, max_temp: f64| {
        serde_json::json!({
            "machine_id": format!("m{i:02}"), "line": format!("L{}", i % 4), "model": null,
            "limits": { "max_temperature_c": max_temp, "max_vibration_mm_s": 10.0 }
        })
    };
    const MACHINES: usize = 20;
    for i in 0..MACHINES {
        send(&machines, &format!("m{i:02}"), machine(i, 80.0), 0);
    }

    let log = ex.dir.path().join("sluice.log");
    let args = ["run", &path, "--quiet", "--instance-id", "join-kill9"];
    let mut run = Sluice::spawn(&args, &log);
    let t0 = 1_772_359_200_000_i64;
    let mut kills = 0;
    for chunk in 0..40_usize {
        for k in 0..50_usize {
            let n = chunk * 50 + k;
            let i = n % MACHINES;
            let ts = t0 + n as i64 * 1_000;
            let reading = serde_json::json!({
                "machine_id": format!("m{i:02}"),
                "ts": ts,
                "temperature_c": 60.0 + ((n * 7) % 30) as f64,
                "vibration_mm_s": if n % 3 == 0 { serde_json::Value::Null } else { ((n % 13) as f64).into() }
            });
            send(&readings, &format!("m{i:02}"), reading, ts);
        }
        // Registry changes racing the readings: a limit moved, a machine removed, one back.
        let i = chunk % MACHINES;
        send(
            &machines,
            &format!("m{i:02}"),
            machine(i, 70.0 + (chunk % 15) as f64),
            0,
        );
        let gone = (chunk * 7) % MACHINES;
        let r: sluice::testdriver::InputRecord = serde_json::from_value(serde_json::json!({
            "topic": machines, "key": format!("m{gone:02}"), "value": null
        }))
        .unwrap();
        produce(&producer, &machines, (0, &writers[&machines].1), &r, 0);
        let back = (chunk * 7 + 3) % MACHINES;
        send(&machines, &format!("m{back:02}"), machine(back, 85.0), 0);
        if chunk % 10 == 9 && chunk < 39 {
            alive(&mut run, &log);
            run.kill9();
            kills += 1;
            run = Sluice::spawn(&args, &log);
        }
    }
    wait_all_committed(&brokers, &stages, &mut run, &log);
    let status = run.terminate();
    assert!(
        status.success(),
        "sluice run exited with {status} on SIGTERM"
    );

    let mut repeated = 0;
    for name in [
        "factory.over_limit",
        "factory.line_temperature",
        "factory.alerts",
    ] {
        let topic = ex.topic(name);
        // (producer, zero-padded sequence) -> (key, value) of its first copy.
        let mut copies: BTreeMap<(String, String), KeyValue> = BTreeMap::new();
        for r in read_topic(&brokers, &topic) {
            let id = r
                .headers
                .get(ID_HEADER)
                .cloned()
                .unwrap_or_else(|| panic!("{name}: offset {} has no {ID_HEADER}", r.offset));
            // `stage/partition/seq`: the sequence numbers of one producer.
            let (producer_id, seq) = id.rsplit_once('/').expect("an id ends with its sequence");
            let seq = format!("{:020}", seq.parse::<u64>().expect("a numeric sequence"));
            let record = (r.key.clone(), r.value.clone());
            match copies.get(&(producer_id.to_string(), seq.clone())) {
                Some(first) => {
                    repeated += 1;
                    assert_eq!(
                        first, &record,
                        "{name}: output {id} was written twice with different contents"
                    );
                }
                None => {
                    copies.insert((producer_id.to_string(), seq), record);
                }
            }
        }
        // No holes: each producer's sequence runs 1, 2, 3, ...
        let mut next: HashMap<String, u64> = HashMap::new();
        for (producer_id, seq) in copies.keys() {
            let want = next.entry(producer_id.clone()).or_insert(1);
            assert_eq!(
                seq.parse::<u64>().unwrap(),
                *want,
                "{name}: producer {producer_id} skips from {} on",
                *want
            );
            *want += 1;
        }
        // Alerts need a reading far out of its machine's recent range, which this input
        // does not have; the other two always get records.
        assert!(
            name == "factory.alerts" || !copies.is_empty(),
            "{name}: nothing was written"
        );
    }
    eprintln!(
        "factory joins under {kills} kill -9s: {repeated} outputs written again, each identical"
    );
}

/// Registers the schema of every topic with a `schema:` under its subject, as the producers
/// of a device fleet would; by topic, the id and schema to write with.
fn register_writers(
    loaded: &sluice_topology::Loaded,
    rt: &tokio::runtime::Runtime,
    client: &RegistryClient,
) -> HashMap<String, (u32, Schema)> {
    let mut writers = HashMap::new();
    for (name, spec) in &loaded.topology.topics {
        let (Some(subject), Some(file)) = (&spec.subject, &spec.schema) else {
            continue;
        };
        let text = std::fs::read_to_string(loaded.resolve(file)).unwrap();
        let id = rt
            .block_on(client.register(subject, &text))
            .unwrap_or_else(|e| panic!("registering {subject}: {e}"));
        writers.insert(name.clone(), (id, Schema::parse_str(&text).unwrap()));
    }
    writers
}

/// The case's input records: it must pass no wall clock (`advance:`), which a real run
/// cannot reproduce.
fn case_records(case: &sluice::testdriver::Case) -> Vec<&sluice::testdriver::InputRecord> {
    case.input
        .iter()
        .map(|item| match item {
            sluice::testdriver::InputItem::Record(r) => r,
            sluice::testdriver::InputItem::Advance(_) => {
                panic!("the end-to-end case must not pass wall clock")
            }
        })
        .collect()
}

/// A record's key and value as read.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The last snapshot a join committed: the positions in the last `at` record of its
/// changelog (empty before its first commit).
fn last_snapshot(brokers: &str, changelog: &str) -> Vec<i64> {
    read_topic(brokers, changelog)
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(&b"at"[..]))
        .filter_map(|r| r.value)
        .next_back()
        .map(|v| {
            v.chunks_exact(8)
                .map(|c| i64::from_be_bytes(c.try_into().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every stage sluice runs for `loaded`, in order (a pipeline cut at a `key_by` adds a stage
/// reading the repartition topic right after it): its input, the topic it writes (counted in
/// `sluice_records_out_total`), its dead-letter topic and its consumer group.
fn pipeline_stages(loaded: &sluice_topology::Loaded, app: &str) -> Vec<Stage> {
    loaded
        .topology
        .stages
        .iter()
        .map(|s| {
            let StageSpec::Pipeline(p) = &s.spec else {
                panic!("stage {} of the example is not a pipeline", s.name);
            };
            Stage {
                name: s.name.clone(),
                input: p.input.clone(),
                writes: p.writes().unwrap_or_default().to_string(),
                dead_letter: p.dead_letter.clone(),
                group: format!("{app}-{}", s.name),
            }
        })
        .collect()
}

/// Waits until every stage committed all of its input, looked at in the order the stages
/// feed each other: a commit acknowledges a stage's outputs before its input offsets, so once
/// a stage committed everything its input topic is final for the stage reading it. Returns
/// the records each stage read.
fn wait_all_committed(
    brokers: &str,
    stages: &[Stage],
    run: &mut Sluice,
    log: &Path,
) -> BTreeMap<String, i64> {
    eventually_or(
        "every stage to commit all of its input",
        240,
        Duration::from_millis(500),
        || {
            alive(run, log);
            let mut read = BTreeMap::new();
            for s in stages {
                let end = end_offsets(brokers, &s.input);
                let at = committed_offsets(brokers, &s.group, &s.input);
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
    )
}

/// Reads every topic `case` expects with a plain consumer keeping every record, and compares
/// it with the case as `sluice test` does. Returns the differences (a record seen twice is
/// one) and, per expected topic, this run's name and the records on it.
fn compare_landed(
    brokers: &str,
    ex: &Example,
    case: &sluice::testdriver::Case,
    rt: &tokio::runtime::Runtime,
    client: &RegistryClient,
) -> (Vec<String>, BTreeMap<String, (String, usize)>) {
    let mut schemas: HashMap<u32, Schema> = HashMap::new();
    let mut diffs = Vec::new();
    let mut landed = BTreeMap::new();
    for (name, expected) in &case.expect {
        if let Some(table) = name.strip_prefix("questdb:") {
            // Rows of a `questdb` sink, read back from the stack's TSDB.
            let actual = tsdb_rows(&ex.table(table), &mut diffs);
            diffs.extend(compare_topic(name, expected, &actual).unwrap());
            continue;
        }
        let topic = ex.topic(name);
        let read = read_topic(brokers, &topic);
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
                    Some(v) => decode(rt, client, &mut schemas, v),
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
    (diffs, landed)
}

/// The rows of `table` in the stack's TSDB (VictoriaMetrics: one series per numeric column,
/// `<table>_<column>`, the symbols as labels), as `sluice test` shows a `questdb` sink's rows:
/// `timestamp` and `value.ts` the designated timestamp (ms), then the symbols and columns.
/// Sorted by timestamp, then symbols (so a case lists them that way). A sample written twice
/// for one row is a difference.
fn tsdb_rows(table: &str, diffs: &mut Vec<String>) -> Vec<serde_json::Value> {
    let series = tsdb_export(&format!("{{__name__=~\"{table}_.*\"}}"));
    // (timestamp, symbols) -> the row.
    type Rows = BTreeMap<(i64, Vec<(String, String)>), serde_json::Map<String, serde_json::Value>>;
    let mut rows: Rows = BTreeMap::new();
    for (labels, values, ts) in &series {
        let column = labels["__name__"]
            .strip_prefix(&format!("{table}_"))
            .unwrap_or_default()
            .to_string();
        let symbols: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut seen = HashSet::new();
        for (v, t) in values.iter().zip(ts) {
            if !seen.insert(*t) {
                diffs.push(format!(
                    "questdb:{table}: {column} {symbols:?} at {t} written twice"
                ));
                continue;
            }
            let row = rows.entry((*t, symbols.clone())).or_insert_with(|| {
                let mut o = serde_json::Map::new();
                o.insert("ts".into(), (*t).into());
                for (k, v) in &symbols {
                    o.insert(k.clone(), v.clone().into());
                }
                o
            });
            row.insert(column.clone(), serde_json::json!(v));
        }
    }
    rows.into_iter()
        .map(|((t, _), o)| record_json(None, t, None, serde_json::Value::Object(o)))
        .collect()
}

/// Produces one case record to partition 0, acknowledged by every in-sync replica before
/// the next; `value: null` is a record without a value (a tombstone).
fn produce(
    producer: &BaseProducer,
    topic: &str,
    writer: (u32, &Schema),
    r: &sluice::testdriver::InputRecord,
    ts: i64,
) {
    let mut value = Vec::new();
    if !r.value.is_null() {
        let avro = json_to_avro(&r.value, writer.1)
            .unwrap_or_else(|e| panic!("a record for {topic} does not fit its schema: {e}"));
        sluice_schemas::wire::write_header(writer.0, &mut value);
        value.extend(sluice_ops::codec::encode_once(writer.1, &avro).unwrap());
    }
    let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(0)
        .timestamp(ts);
    if !r.value.is_null() {
        rec = rec.payload(&value);
    }
    if let Some(k) = &r.key {
        rec = rec.key(k.as_bytes());
    }
    producer
        .send(rec)
        .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    producer
        .flush(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("producing to {topic}: {e}"));
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
    /// Example TSDB table name -> this run's.
    tables: HashMap<String, String>,
    metrics_port: u16,
}

impl Example {
    fn energy() -> Example {
        Example::new(
            "energy",
            "energy.yaml",
            &ENERGY_TOPICS,
            &["site_energy", "site_demand"],
        )
    }

    fn factory() -> Example {
        Example::new("factory", "factory.yaml", &FACTORY_TOPICS, &[])
    }

    /// `examples/<folder>/<file>` with its `.avsc` files, rewritten for one run.
    fn new(folder: &str, file: &str, example_topics: &[&str], example_tables: &[&str]) -> Example {
        let src = repo().join("examples").join(folder);
        let mut text = std::fs::read_to_string(src.join(file)).unwrap();
        let suffix = unique("e2e");
        let app = format!("{folder}{suffix}");
        let metrics_port = free_port();
        let mut dir = tempfile::tempdir().unwrap();
        // SLUICE_TEST_KEEP_DIR=1 keeps the topology, state and log for a post-mortem.
        if std::env::var_os("SLUICE_TEST_KEEP_DIR").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let state = dir.path().join("state");
        let mut topics = HashMap::new();
        for t in example_topics {
            let renamed = format!("{suffix}.{t}");
            text = replace_once_or_more(&text, t, &renamed);
            topics.insert(t.to_string(), renamed);
        }
        // The TSDB is shared by every run: tables of this run's own.
        let mut tables = HashMap::new();
        for t in example_tables {
            let renamed = format!("{suffix}_{t}");
            text = replace_once_or_more(
                &text,
                &format!("table: {t}\n"),
                &format!("table: {renamed}\n"),
            );
            tables.insert(t.to_string(), renamed);
        }
        let listen = text
            .find("${SLUICE_METRICS_LISTEN:-")
            .and_then(|i| Some(text[i..i + text[i..].find('}')? + 1].to_string()))
            .expect("the example's metrics.listen reads SLUICE_METRICS_LISTEN");
        for (from, to) in [
            (
                format!("\n  name: {folder}\n"),
                format!("\n  name: {app}\n"),
            ),
            (
                "${SLUICE_STATE_DIR:-../../.stack/state}".to_string(),
                state.display().to_string(),
            ),
            (listen, format!("127.0.0.1:{metrics_port}")),
        ] {
            text = replace_once_or_more(&text, &from, &to);
        }
        // One partition for every topic: see the tests.
        text = regex_free_partitions(&text);
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "avsc") {
                std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        Example {
            dir,
            path,
            app,
            topics,
            tables,
            metrics_port,
        }
    }

    /// This run's name of the example's TSDB table `name`.
    fn table(&self, name: &str) -> String {
        self.tables
            .get(name)
            .unwrap_or_else(|| panic!("the case names table `{name}`, not one of the example's"))
            .clone()
    }

    /// This run's name of the example's topic `name`.
    fn topic(&self, name: &str) -> String {
        self.topics
            .get(name)
            .unwrap_or_else(|| panic!("the case names topic `{name}`, not one of the example's"))
            .clone()
    }
}

/// `text` with every `partitions: N` made `partitions: 1`.
fn regex_free_partitions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("partitions: ") {
        let (head, tail) = rest.split_at(i + "partitions: ".len());
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        out.push('1');
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
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
