//! Pipelines ending in the `questdb` and `s3_parquet` sinks, end to end on the local stack,
//! over a schema that is not telemetry (nested and optional fields, an enum, a decimal, an
//! array, a map, bytes): records produced by a plain producer, `sluice run` killed with -9
//! three times while they flow (twice with TSDB rows flushed and not committed, once inside
//! a Parquet batch's upload), and then everything read back outside sluice: the TSDB rows
//! through VictoriaMetrics' export API, the Parquet objects from S3 with the Arrow reader of
//! the Apache `parquet` crate and again with pyarrow. Every row must be there exactly as the
//! input makes it, and a replay must leave no duplicate: no Parquet row twice, and no TSDB
//! row that a table with the sink's dedup keys would hold twice (VictoriaMetrics has no
//! dedup keys, so a row a replay wrote again shows as a second sample at the same timestamp:
//! it must carry the same value, which is what an upsert keeps).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::Schema;
use common::*;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;
use sluice_schemas::client::RegistryClient;

/// The input goes on until the kills are done, at least this many records and at most
/// [`MAX_RECORDS`].
const MIN_RECORDS: i64 = 1200;
const MAX_RECORDS: i64 = 20_000;
const BASE_TS: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

fn topology(id: &str, state: &str, port: u16) -> String {
    format!(
        r#"apiVersion: sluice/v1
kind: Topology
metadata: {{ name: {id} }}
processing: {{ commit_interval: 1s }}
connections:
  brokers: ${{SLUICE_BROKERS}}
  registry: ${{SLUICE_REGISTRY_URL}}
  ilp: ${{SLUICE_ILP_ADDR}}
  s3:
    endpoint: ${{SLUICE_S3_ENDPOINT}}
    bucket: ${{SLUICE_S3_BUCKET}}
    region: ${{SLUICE_S3_REGION}}
    access_key_id: ${{SLUICE_S3_ACCESS_KEY_ID}}
    secret_access_key: ${{SLUICE_S3_SECRET_ACCESS_KEY}}
    allow_http: true
state_dir: {state}
metrics: {{ listen: "127.0.0.1:{port}" }}
topic_defaults:
  replication: ${{SLUICE_REPLICATION}}
  min_insync_replicas: ${{SLUICE_MIN_INSYNC_REPLICAS}}
topics:
  {id}.readings: {{ partitions: 2, subject: {id}.readings-value, schema: site-reading.avsc }}
  {id}.dlq: {{ partitions: 1 }}
stages:
  tsdb:
    kind: pipeline
    input: {id}.readings
    dead_letter: {id}.dlq
    sink:
      questdb:
        table: {id}_power
        symbols: [site, meter.id, phase]
        columns: [power.watts, {{ volts: power.volts }}, count, price]
        timestamp: ts
        flush_rows: 5
  lake:
    kind: pipeline
    input: {id}.readings
    dead_letter: {id}.dlq
    operators:
      - filter: "count >= 0"
    sink:
      s3_parquet:
        prefix: e2e/{id}/readings
        time: ts
        granularity: hour
        partition_by: [site]
        rows_per_file: 150
"#
    )
}

fn site(i: i64) -> String {
    format!("s{}", i % 3)
}

/// Input record `i` (in the schema's field order).
fn reading(i: i64) -> Value {
    let opt = |v: Option<Value>| match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    let phase = ["L1", "L2", "L3"][(i % 3) as usize];
    Value::Record(vec![
        ("site".into(), Value::String(site(i))),
        (
            "meter".into(),
            Value::Record(vec![
                ("id".into(), Value::String(format!("m{}", i % 7))),
                (
                    "model".into(),
                    opt((i % 2 == 0).then(|| Value::String("x1".into()))),
                ),
            ]),
        ),
        ("ts".into(), Value::TimestampMillis(BASE_TS + i * 60_000)),
        ("day".into(), Value::Date(19_675)),
        (
            "power".into(),
            Value::Record(vec![
                ("watts".into(), Value::Double(i as f64 * 1.5)),
                (
                    "volts".into(),
                    opt((i % 4 != 0).then_some(Value::Double(230.0 + (i % 10) as f64))),
                ),
            ]),
        ),
        ("phase".into(), Value::Enum((i % 3) as u32, phase.into())),
        ("count".into(), Value::Long(i)),
        ("ok".into(), Value::Boolean(i % 2 == 0)),
        (
            "price".into(),
            Value::Decimal(apache_avro::Decimal::from((i * 10).to_be_bytes().to_vec())),
        ),
        (
            "samples".into(),
            Value::Array((0..i % 3).map(|k| Value::Double(k as f64)).collect()),
        ),
        (
            "labels".into(),
            Value::Map(HashMap::from([(
                "k".to_string(),
                Value::String(format!("v{i}")),
            )])),
        ),
        ("raw".into(), Value::Bytes(vec![(i % 256) as u8])),
    ])
}

/// Record `i` as its Parquet row reads back (decimal scaled, enum as its symbol, times in
/// ms, date in days).
fn parquet_row(i: i64) -> serde_json::Value {
    json!({
        "site": site(i),
        "meter": { "id": format!("m{}", i % 7), "model": if i % 2 == 0 { json!("x1") } else { json!(null) } },
        "ts": BASE_TS + i * 60_000,
        "day": 19_675,
        "power": { "watts": i as f64 * 1.5, "volts": if i % 4 != 0 { json!(230.0 + (i % 10) as f64) } else { json!(null) } },
        "phase": (["L1", "L2", "L3"][(i % 3) as usize]),
        "count": i,
        "ok": i % 2 == 0,
        "price": (i * 10) as f64 / 1000.0,
        "samples": (0..i % 3).map(|k| k as f64).collect::<Vec<_>>(),
        "labels": { "k": format!("v{i}") },
        "raw": [(i % 256)],
    })
}

/// How many batch manifests the lake stage has written so far.
fn manifests(
    rt: &tokio::runtime::Runtime,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    id: &str,
) -> usize {
    let prefix = object_store::path::Path::from(format!("e2e/{id}/readings/_manifest"));
    rt.block_on(async {
        store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .map_or(0, |v| v.len())
    })
}

/// The Hive folder of record `i` under the prefix.
fn folder(i: i64) -> String {
    let ms = BASE_TS + i * 60_000;
    let hour = ms.div_euclid(3_600_000);
    let (y, m, d) = sluice_ops::expr::civil_from_days(hour.div_euclid(24));
    format!(
        "date={y:04}-{m:02}-{d:02}/hour={:02}/site={}",
        hour.rem_euclid(24),
        site(i)
    )
}

#[test]
fn questdb_and_parquet_sinks_write_every_row_once_across_kill9() {
    let started = Instant::now();
    let brokers = env("SLUICE_BROKERS");
    let registry = env("SLUICE_REGISTRY_URL");
    for v in [
        "SLUICE_ILP_ADDR",
        "SLUICE_S3_ENDPOINT",
        "SLUICE_REPLICATION",
        "SLUICE_MIN_INSYNC_REPLICAS",
    ] {
        env(v);
    }
    let id = unique("snk");
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("SLUICE_TEST_KEEP_DIR").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    let avsc = repo().join("topology/tests/fixtures/site-reading.avsc");
    std::fs::copy(&avsc, dir.path().join("site-reading.avsc")).unwrap();
    let port = free_port();
    let state = dir.path().join("state");
    let path = dir.path().join("sinks.yaml");
    std::fs::write(&path, topology(&id, state.to_str().unwrap(), port)).unwrap();
    let path = path.to_str().unwrap().to_string();
    let input = format!("{id}.readings");

    let created = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topics", "create", &path])
        .output()
        .expect("run sluice topics create");
    assert!(
        created.status.success(),
        "sluice topics create failed:\n{}{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
    // A data engineer would run `sluice tsdb init` against QuestDB; the stack's TSDB
    // (VictoriaMetrics) creates its series on write, and has no dedup keys: see the module.
    let log = dir.path().join("sluice.log");
    // A fixed instance id: a restart rejoins at once instead of after the killed member's
    // session timeout (static membership).
    let args = ["run", &path, "--quiet", "--instance-id", "sinks-kill9"];
    // Parquet objects upload slowly, so the last kill lands inside a batch's upload.
    let envs = [("SLUICE_FAULT_S3_OBJECT_DELAY_MS", "100")];
    let mut run = Sluice::spawn_with_env(&args, &envs, &log);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = RegistryClient::new(&registry);
    let text = std::fs::read_to_string(&avsc).unwrap();
    let schema = Schema::parse_str(&text).unwrap();
    let writer_id = rt
        .block_on(client.register(&format!("{input}-value"), &text))
        .expect("register the input schema");
    // The input streams in (about 15 ms a record) while sluice is killed -9 three times and
    // restarted, and for as long as that takes: each kill loses the work since the last
    // commit, whose TSDB rows were flushed already (every 5 rows) and whose Parquet batches
    // may be uploaded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (brokers, input, stop) = (brokers.clone(), input.clone(), stop.clone());
        std::thread::spawn(move || -> i64 {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("acks", "all")
                .create()
                .unwrap();
            let mut i = 0;
            while i < MAX_RECORDS
                && (i < MIN_RECORDS || !stop.load(std::sync::atomic::Ordering::Relaxed))
            {
                let mut value = Vec::new();
                sluice_schemas::wire::write_header(writer_id, &mut value);
                value.extend(sluice_ops::codec::encode_once(&schema, &reading(i)).unwrap());
                let key = format!("m{}", i % 7);
                let rec = BaseRecord::to(&input)
                    .partition((i % 2) as i32)
                    .key(key.as_bytes())
                    .payload(&value)
                    .timestamp(BASE_TS + i * 60_000);
                producer.send(rec).map_err(|(e, _)| e).unwrap();
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(15));
                i += 1;
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            i
        })
    };
    // Each kill comes once the running instance has committed twice (so it is processing:
    // a restart takes a few seconds to rejoin), half a commit interval after its last one.
    let committed = |stage: &str| -> i64 {
        committed_offsets(&brokers, &format!("{id}-{stage}"), &input)
            .values()
            .sum()
    };
    let store = s3();
    let mut kills = 0;
    while kills < 3 {
        assert!(
            !producer.is_finished(),
            "the input ended ({MAX_RECORDS} records) before the kills were done"
        );
        for _ in 0..2 {
            let before = committed("tsdb");
            eventually_or(
                "the restarted instance to commit",
                600,
                Duration::from_millis(100),
                || {
                    if let Some(st) = run.exited() {
                        panic!("sluice run exited ({st}); log: {}", log.display());
                    }
                    let now = committed("tsdb");
                    if now > before {
                        Ok(())
                    } else {
                        Err(format!("tsdb committed {now}"))
                    }
                },
            );
        }
        if kills < 2 {
            // Half a commit interval in: TSDB rows flushed, not committed.
            std::thread::sleep(Duration::from_millis(500));
        } else {
            // The moment a new batch's manifest appears: its objects are on their way and
            // its commit has not happened.
            let before = manifests(&rt, &store, &id);
            eventually_or(
                "a batch upload to start",
                600,
                Duration::from_millis(10),
                || {
                    let now = manifests(&rt, &store, &id);
                    if now > before {
                        Ok(())
                    } else {
                        Err(format!("{now} manifests"))
                    }
                },
            );
        }
        run.kill9();
        kills += 1;
        run = Sluice::spawn_with_env(&args, &envs, &log);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let records = producer.join().expect("the producer");
    // Every stage committed all of its input.
    for stage in ["tsdb", "lake"] {
        let group = format!("{id}-{stage}");
        eventually_or(
            &format!("stage {stage} to commit all of {input}"),
            240,
            Duration::from_millis(500),
            || {
                if let Some(st) = run.exited() {
                    panic!(
                        "sluice run exited ({st}); log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                let end = end_offsets(&brokers, &input);
                let at = committed_offsets(&brokers, &group, &input);
                if end.iter().all(|(p, e)| at.get(p) == Some(e)) {
                    Ok(())
                } else {
                    Err(format!("end {end:?}, committed {at:?}"))
                }
            },
        );
    }
    let status = run.terminate();
    assert!(
        status.success(),
        "sluice run exited with {status} on SIGTERM"
    );
    let dlq = read_topic(&brokers, &format!("{id}.dlq"));
    assert!(dlq.is_empty(), "dead letters: {dlq:?}");

    // TSDB: one row per record and column, at the record's ts, with its symbols as labels.
    let table = format!("{id}_power");
    let series = tsdb_export(&format!("{{__name__=~\"{table}_.*\"}}"));
    let mut samples: BTreeMap<(String, String, String, String, i64), Vec<f64>> = BTreeMap::new();
    for (labels, values, ts) in &series {
        let name = labels["__name__"]
            .trim_start_matches(&format!("{table}_"))
            .to_string();
        for (v, t) in values.iter().zip(ts) {
            samples
                .entry((
                    name.clone(),
                    labels.get("site").cloned().unwrap_or_default(),
                    labels.get("meter_id").cloned().unwrap_or_default(),
                    labels.get("phase").cloned().unwrap_or_default(),
                    *t,
                ))
                .or_default()
                .push(*v);
        }
    }
    let mut want: BTreeMap<(String, String, String, String, i64), f64> = BTreeMap::new();
    for i in 0..records {
        let key = |col: &str| {
            (
                col.to_string(),
                site(i),
                format!("m{}", i % 7),
                ["L1", "L2", "L3"][(i % 3) as usize].to_string(),
                BASE_TS + i * 60_000,
            )
        };
        want.insert(key("power_watts"), i as f64 * 1.5);
        if i % 4 != 0 {
            want.insert(key("volts"), 230.0 + (i % 10) as f64);
        }
        want.insert(key("count"), i as f64);
        want.insert(key("price"), (i * 10) as f64 / 1000.0);
    }
    let mut rewritten = 0;
    for (key, values) in &samples {
        let Some(w) = want.get(key) else {
            panic!("the TSDB holds a row no record makes: {key:?} = {values:?}");
        };
        for v in values {
            assert!(
                (v - w).abs() <= 1e-9 * w.abs().max(1.0),
                "{key:?}: {v} != {w}"
            );
        }
        rewritten += values.len() - 1;
    }
    assert!(
        rewritten > 0,
        "no TSDB row was written twice: the kills did not make the sinks replay anything"
    );
    let recuts = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("Re-cutting the batches a crash interrupted")
        .count();
    assert!(
        recuts > 0,
        "no task re-cut a batch after the kill inside an upload; log: {}",
        log.display()
    );
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !samples.contains_key(k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "TSDB rows missing, e.g. {missing:?}");

    // Parquet: every record exactly once, in its folder, with every field as produced.
    let prefix = object_store::path::Path::from(format!("e2e/{id}/readings"));
    let downloads = dir.path().join("objects");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut files: BTreeMap<String, String> = BTreeMap::new(); // local file -> folder
    let (objects, rows) = rt.block_on(async {
        let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        let mut rows: BTreeMap<i64, Vec<(String, serde_json::Value)>> = BTreeMap::new();
        let mut objects = 0;
        for o in listed {
            let key = o.location.as_ref().to_string();
            if !key.ends_with(".parquet") {
                continue;
            }
            objects += 1;
            let dir = key
                .trim_start_matches(&format!("{prefix}/"))
                .rsplit_once('/')
                .unwrap()
                .0
                .to_string();
            let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            let local = downloads.join(format!("{objects}.parquet"));
            std::fs::write(&local, &bytes).unwrap();
            files.insert(local.display().to_string(), dir.clone());
            for row in sluice_connectors::s3::parquet_json(bytes).unwrap() {
                let i = row["count"].as_i64().unwrap();
                rows.entry(i).or_default().push((dir.clone(), row));
            }
        }
        (objects, rows)
    });
    let twice: Vec<_> = rows
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(i, _)| i)
        .take(5)
        .collect();
    assert!(
        twice.is_empty(),
        "Parquet rows archived twice, e.g. records {twice:?}"
    );
    assert_eq!(rows.len() as i64, records, "Parquet rows");
    for (i, copies) in &rows {
        let (dir, row) = &copies[0];
        assert_eq!(dir, &folder(*i), "folder of record {i}");
        assert_eq!(row, &parquet_row(*i), "Parquet row of record {i}");
    }
    // The same objects read by another engine: pyarrow (scripts/setup installs it).
    let out = Command::new("python3")
        .arg(repo().join("tests/support/parquet_rows.py"))
        .args(files.keys())
        .output()
        .expect("run python3 (scripts/setup installs it with pyarrow)");
    assert!(
        out.status.success(),
        "pyarrow could not read the objects (is it installed? scripts/setup):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen_by_pyarrow = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(schema) = v.get("schema") {
            assert_eq!(
                schema,
                &json!({
                    "site": "string", "meter": "struct<id: string not null, model: string>",
                    "ts": "timestamp[ms, tz=UTC]", "day": "date32[day]",
                    "power": "struct<watts: double not null, volts: double>",
                    "phase": "dictionary<values=string, indices=int32, ordered=0>",
                    "count": "int64", "ok": "bool", "price": "decimal128(9, 3)",
                    "samples": "list<item: double not null>",
                    "labels": "map<string, string ('labels')>", "raw": "binary"
                }),
                "the Arrow schema pyarrow reads from {}",
                v["file"]
            );
            continue;
        }
        let row = &v["row"];
        let i = row["count"].as_i64().unwrap();
        assert_eq!(row, &parquet_row(i), "record {i} as pyarrow reads it");
        assert_eq!(files[v["file"].as_str().unwrap()], folder(i));
        *seen_by_pyarrow.entry(i).or_insert(0) += 1;
    }
    assert_eq!(seen_by_pyarrow.len() as i64, records, "rows pyarrow read");
    assert!(
        seen_by_pyarrow.values().all(|&n| n == 1),
        "a row pyarrow read twice"
    );
    eprintln!(
        "sinks end to end: {records} records, {kills} kill -9s, {} TSDB rows ({rewritten} rewritten by replays, upserted), {objects} Parquet objects ({recuts} tasks re-cut a crashed run's batches), {:.1} s",
        want.len(),
        started.elapsed().as_secs_f64()
    );
}
