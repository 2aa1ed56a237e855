//! The two commands an operator runs before `sluice run`: `sluice topics create` (against the
//! local broker, settings read back from it) and `sluice tsdb init` (against a stand-in for
//! QuestDB's HTTP `/exec` endpoint started here: QuestDB itself is not installed on this
//! machine, so the statements are checked as sent, not as QuestDB runs them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference topology with a fresh application name and topics, written to `dir`.
fn private_topology(dir: &Path) -> (PathBuf, String) {
    let suffix = format!("s{:08x}", rand::random::<u32>());
    let mut text = std::fs::read_to_string(repo().join("topology/iot.yaml"))
        .unwrap()
        .replace("name: iot ", &format!("name: iot{suffix} "))
        .replace(
            "../schemas/",
            &format!("{}/", repo().join("schemas").display()),
        );
    for topic in [
        "telemetry.raw",
        "telemetry.valid",
        "telemetry.dlq",
        "iot.aggregates",
        "iot.anomalies",
        "iot.alerts",
        "devices.tokens",
    ] {
        text = text.replace(topic, &format!("{suffix}.{topic}"));
    }
    let path = dir.join("topology.yaml");
    std::fs::write(&path, text).unwrap();
    (path, suffix)
}

fn sluice(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run sluice")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn brokers() -> String {
    std::env::var("SLUICE_BROKERS").unwrap_or_else(|_| {
        panic!("SLUICE_BROKERS is not set: start the local stack first with `eval \"$(scripts/stack up)\"`")
    })
}

#[test]
fn topics_create_prints_what_it_set_and_the_broker_holds_it() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let (path, suffix) = private_topology(dir.path());
    let path = path.to_str().unwrap();
    // What scripts/stack exports for its single broker.
    let env = [
        ("SLUICE_BROKERS", brokers.as_str()),
        ("SLUICE_REPLICATION", "1"),
        ("SLUICE_MIN_INSYNC_REPLICAS", "1"),
    ];
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let plans = sluice_topology::load_str(
        Path::new(path),
        &std::fs::read_to_string(path).unwrap(),
        &lookup,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .topology
    .topic_plans();
    assert_eq!(
        plans.len(),
        14,
        "7 declared topics (one the HTTP bridge's compacted token topic) and 7 changelogs"
    );

    let first = sluice(&["topics", "create", path], &env);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stdout}{stderr}");
    for p in &plans {
        let mut line = format!(
            "{}: created: partitions={} replication=1 min.insync.replicas=1",
            p.name, p.partitions
        );
        for (k, v) in &p.configs {
            line.push_str(&format!(" {k}={v}"));
        }
        assert!(
            stdout.lines().any(|l| l == line),
            "no line {line:?} in:\n{stdout}"
        );
    }
    assert!(
        stdout.starts_with(&format!(
            "14 topics on {brokers}: 14 created, 0 already existed"
        )),
        "{stdout}"
    );

    let again = sluice(&["topics", "create", path], &env);
    let (stdout, stderr) = text(&again);
    assert!(again.status.success(), "{stdout}{stderr}");
    for p in &plans {
        let prefix = format!("{}: already existed, left as it is; ", p.name);
        assert!(
            stdout.lines().any(|l| l.starts_with(&prefix)),
            "no line starting {prefix:?} in:\n{stdout}"
        );
    }

    // Read back from the broker: partitions and replicas from metadata, configs from
    // DescribeConfigs (which on Nisshi holds exactly what was set at creation).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let changelog = format!("iot{suffix}-aggregate-windows-changelog");
    let declared = format!("{suffix}.iot.alerts");
    for name in [&declared, &changelog] {
        let plan = plans.iter().find(|p| &p.name == name).unwrap();
        let md = consumer
            .fetch_metadata(Some(name), Duration::from_secs(10))
            .unwrap();
        let partitions = md.topics()[0].partitions();
        assert_eq!(partitions.len() as i32, plan.partitions, "{name}");
        assert!(
            partitions.iter().all(|p| p.replicas().len() == 1),
            "{name}: one replica per partition"
        );
        let described = rt
            .block_on(admin.describe_configs(
                [&ResourceSpecifier::Topic(name)],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
            ))
            .unwrap();
        let resource = described[0]
            .as_ref()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let configs: HashMap<&str, Option<&str>> = resource
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            configs.get("min.insync.replicas"),
            Some(&Some("1")),
            "{name}: {configs:?}"
        );
        for (k, v) in &plan.configs {
            assert_eq!(
                configs.get(k),
                Some(&Some(v.as_str())),
                "{name}: {configs:?}"
            );
        }
    }
}

/// A stand-in for QuestDB's `/exec`: records each `query`, answers 200 with QuestDB's DDL
/// reply, or 400 with its error shape for statements that contain `refuse`.
async fn fake_questdb(refuse: Option<&'static str>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = move |State(seen): State<Arc<Mutex<Vec<String>>>>,
                        Query(q): Query<HashMap<String, String>>| async move {
        let query = q.get("query").cloned().unwrap_or_default();
        seen.lock().unwrap().push(query.clone());
        if refuse.is_some_and(|r| query.contains(r)) {
            (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({
                    "query": query,
                    "error": "table name contains illegal characters",
                    "position": 27
                })),
            )
        } else {
            (StatusCode::OK, Json(serde_json::json!({"ddl": "OK"})))
        }
    };
    let app = Router::new()
        .route("/exec", get(handler))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

const AGGREGATES_DDL: &str = "CREATE TABLE IF NOT EXISTS aggregates (ts TIMESTAMP, device_id SYMBOL, metric SYMBOL, \"window\" SYMBOL, \"count\" LONG, \"min\" DOUBLE, \"max\" DOUBLE, mean DOUBLE, stddev DOUBLE) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, device_id, metric, \"window\")";
const ANOMALIES_DDL: &str = "CREATE TABLE IF NOT EXISTS anomalies (ts TIMESTAMP, device_id SYMBOL, metric SYMBOL, detector SYMBOL, value DOUBLE, score DOUBLE) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, device_id, metric, detector)";

async fn sluice_async(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(&args)
        .envs(env)
        .output()
        .await
        .expect("run sluice")
}

#[tokio::test]
async fn tsdb_init_creates_both_tables_with_dedup_keys_at_the_ilp_http_address() {
    let (url, seen) = fake_questdb(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = private_topology(dir.path());
    let addr = url.trim_start_matches("http://");
    let out = sluice_async(
        vec!["tsdb".into(), "init".into(), path.display().to_string()],
        vec![(
            "SLUICE_ILP_ADDR".into(),
            format!("http::addr={addr};protocol_version=2;"),
        )],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(*seen.lock().unwrap(), [AGGREGATES_DDL, ANOMALIES_DDL]);
    assert!(
        stdout.contains(&format!("aggregates: ready at {url}")),
        "{stdout}"
    );
}

#[tokio::test]
async fn tsdb_init_reports_questdb_errors_with_url_and_table() {
    let (url, seen) = fake_questdb(Some("anomalies")).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = private_topology(dir.path());
    let out = sluice_async(
        vec![
            "tsdb".into(),
            "init".into(),
            path.display().to_string(),
            "--url".into(),
            url.clone(),
        ],
        vec![],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert_eq!(*seen.lock().unwrap(), [AGGREGATES_DDL, ANOMALIES_DDL]);
    assert!(
        stderr.contains(&format!(
            "QuestDB at {url} refused to create table anomalies (HTTP 400 Bad Request): table name contains illegal characters."
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn tsdb_init_names_an_unreachable_url_and_what_to_do() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = private_topology(dir.path());
    let out = sluice_async(
        vec![
            "tsdb".into(),
            "init".into(),
            path.display().to_string(),
            "--url".into(),
            url.clone(),
        ],
        vec![],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "no QuestDB answered at {url} while creating table aggregates"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Start it, pass --url"), "{stderr}");
}

#[tokio::test]
async fn tsdb_init_needs_a_url_when_the_sink_speaks_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = private_topology(dir.path());
    let out = sluice_async(
        vec!["tsdb".into(), "init".into(), path.display().to_string()],
        vec![("SLUICE_ILP_ADDR".into(), "tcp::addr=127.0.0.1:9009;".into())],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("pass --url http://HOST:9000"), "{stderr}");
}

#[tokio::test]
async fn tsdb_init_creates_the_table_of_every_pipeline_questdb_sink_with_its_dedup_keys() {
    let (url, seen) = fake_questdb(None).await;
    let path = repo().join("examples/energy/energy.yaml");
    let out = sluice_async(
        vec![
            "tsdb".into(),
            "init".into(),
            path.display().to_string(),
            "--url".into(),
            url.clone(),
        ],
        vec![],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "CREATE TABLE IF NOT EXISTS site_energy (ts TIMESTAMP, site SYMBOL, energy_kwh DOUBLE, \
             meters LONG, readings LONG) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, site)",
            "CREATE TABLE IF NOT EXISTS site_demand (ts TIMESTAMP, site SYMBOL, p95_w DOUBLE, \
             peak_w DOUBLE, mean_w DOUBLE) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, site)",
        ]
    );
    assert!(
        stdout.contains(&format!("site_demand: ready at {url}")),
        "{stdout}"
    );
}
