//! Shared by the integration tests: the stack's addresses, a private copy of the reference
//! topology on fresh topics, a `sluice run` child process, and readers for what landed.
#![allow(dead_code, unreachable_pub)]

pub mod fleet;
pub mod secure;
pub mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::sim::expect::Rules;
use sluice::sim::WriterIds;
use sluice_connectors::kafka::{MessageId, ID_HEADER};

pub fn rules() -> Rules {
    Rules {
        windows_ms: vec![60_000, 300_000],
        grace_ms: 30_000,
        max_clock_skew_ms: 900_000,
    }
}

pub fn registry_ids(subject: &str) -> WriterIds {
    let client = sluice_schemas::client::RegistryClient::new(&env("SLUICE_REGISTRY_URL"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = repo().join("schemas");
    let v1 = std::fs::read_to_string(dir.join("telemetry-v1.avsc")).unwrap();
    let v2 = std::fs::read_to_string(dir.join("telemetry-v2.avsc")).unwrap();
    rt.block_on(async {
        WriterIds {
            v1: client
                .register(subject, &v1)
                .await
                .expect("registry reachable"),
            v2: client
                .register(subject, &v2)
                .await
                .expect("registry reachable"),
        }
    })
}

/// Waits until `sluice run` has created `topic`.
pub fn wait_for_topic(brokers: &str, topic: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    eventually(
        "the pipeline to create its topics",
        240,
        Duration::from_millis(500),
        || {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()?;
            md.topics()
                .iter()
                .any(|t| t.name() == topic && !t.partitions().is_empty())
                .then_some(())
        },
    );
}

/// A stack address from the environment; panics with how to start the stack.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the local stack first with `eval \"$(scripts/stack up)\"` (see README.md)")
    })
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A short random suffix for names no other test or run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// The reference topology rewritten for one test: its own application id, topics, S3
/// prefix and state dir, absolute schema paths. Returns the file path.
pub struct TestTopology {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub app: String,
    pub suffix: String,
    pub metrics_port: u16,
    /// Where the `devices-http` ingest bridge listens.
    pub http_port: u16,
}

impl TestTopology {
    pub fn new(edit: impl Fn(String) -> String) -> Self {
        let suffix = unique("t");
        let text = std::fs::read_to_string(repo().join("topology/iot.yaml")).unwrap();
        let schemas = repo().join("schemas");
        let metrics_port = free_port();
        let http_port = free_port();
        let mut text = text
            .replace("name: iot ", &format!("name: iot{suffix} "))
            .replace("../schemas/", &format!("{}/", schemas.display()))
            .replace("prefix: telemetry", &format!("prefix: archive-{suffix}"))
            .replace(
                "${SLUICE_METRICS_LISTEN:-127.0.0.1:9464}",
                &format!("127.0.0.1:{metrics_port}"),
            )
            .replace(
                "${SLUICE_HTTP_INGEST_LISTEN:-127.0.0.1:8088}",
                &format!("127.0.0.1:{http_port}"),
            )
            // The local stack has one broker; `scripts/stack env` says so too, this keeps a
            // test right without it.
            .replace("${SLUICE_REPLICATION:-3}", "${SLUICE_REPLICATION:-1}")
            .replace(
                "${SLUICE_MIN_INSYNC_REPLICAS:-2}",
                "${SLUICE_MIN_INSYNC_REPLICAS:-1}",
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
        let text = edit(text);
        let mut dir = tempfile::tempdir().unwrap();
        // SLUICE_TEST_KEEP_DIR=1 keeps each test's topology, state and logs for a post-mortem.
        if std::env::var_os("SLUICE_TEST_KEEP_DIR").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        // Still overridable, so several instances of one test topology keep separate state.
        let text = text.replace(
            "${SLUICE_STATE_DIR:-../.stack/state}",
            &format!(
                "${{SLUICE_STATE_DIR:-{}}}",
                dir.path().join("state").display()
            ),
        );
        let path = dir.path().join("topology.yaml");
        std::fs::write(&path, text).unwrap();
        TestTopology {
            dir,
            path,
            app: format!("iot{suffix}"),
            suffix,
            metrics_port,
            http_port,
        }
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.suffix)
    }

    pub fn archive_prefix(&self) -> String {
        format!("archive-{}", self.suffix)
    }

    /// `sluice run` of every stage, logging to `sluice.log` in the test's dir, once it has
    /// created the raw topic; with the registry ids to write that topic with.
    pub fn start(&self, brokers: &str) -> Running {
        let log = self.dir.path().join("sluice.log");
        let path = self.path.to_str().unwrap().to_string();
        let run = Sluice::spawn(&["run", &path, "--quiet"], &log);
        let raw = self.topic("telemetry.raw");
        let ids = registry_ids(&format!("{raw}-value"));
        wait_for_topic(brokers, &raw);
        Running { run, log, raw, ids }
    }
}

/// A running reference topology ([`TestTopology::start`]).
pub struct Running {
    pub run: Sluice,
    pub log: PathBuf,
    pub raw: String,
    pub ids: WriterIds,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `sluice` child process, interrupted (SIGINT) when dropped.
pub struct Sluice(pub Child);

impl Sluice {
    pub fn spawn(args: &[&str], log: &Path) -> Sluice {
        Self::spawn_with_env(args, &[], log)
    }

    /// As [`Sluice::spawn`], with extra environment variables; the log is appended to.
    pub fn spawn_with_env(args: &[&str], envs: &[(&str, &str)], log: &Path) -> Sluice {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start sluice");
        Sluice(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// kill -9: no chance to commit or flush.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }

    /// Sends `sig` (a name `kill` knows: TERM, STOP, CONT, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed: {st}", self.0.id());
    }

    /// SIGTERM, as Kubernetes and systemd stop a process; waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.0.wait().expect("wait for sluice")
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // A stopped (SIGSTOP) process would never see the interrupt.
            let _ = Command::new("kill")
                .args(["-CONT", &self.0.id().to_string()])
                .status();
            self.interrupt();
        }
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (ms), as the broker returns it.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    /// Every header as it was on the wire, in order (to compare copies byte for byte).
    pub raw_headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Every record in `topic`, read from the start up to the high watermarks each partition had
/// when the read began (Nisshi's watermarks are exact, docs/BROKER_GAPS.md). Reading "until
/// quiet" instead cut reads short on a loaded machine, where one fetch can take seconds.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader-"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    // Per partition: the offset to reach, and the next offset read so far.
    let mut todo: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for p in parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("watermarks of {topic} partition {p} at {brokers}: {e}"));
        if high > low {
            todo.insert(p, (high, low));
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut progress = std::time::Instant::now();
    while todo.values().any(|(high, next)| next < high) {
        assert!(
            progress.elapsed() < Duration::from_secs(120),
            "reading {topic} from {brokers}: no record for 120 s with {todo:?} (partition: (end, next)) left"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            // Nothing came: a partition whose position already reached its end is done,
            // whether or not its end-of-partition event was seen.
            if let Ok(pos) = consumer.position() {
                for e in pos.elements() {
                    if let (Offset::Offset(at), Some((high, next))) =
                        (e.offset(), todo.get_mut(&e.partition()))
                    {
                        if at >= *high {
                            *next = (*next).max(*high);
                        }
                    }
                }
            }
            continue;
        };
        let m = match m {
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                // The end was reached: offsets past the last record (none here) are done too.
                if let Some((high, next)) = todo.get_mut(&p) {
                    *next = (*next).max(*high);
                }
                continue;
            }
            other => other.unwrap(),
        };
        progress = std::time::Instant::now();
        if let Some((_, next)) = todo.get_mut(&m.partition()) {
            *next = (*next).max(m.offset() + 1);
        }
        if todo
            .get(&m.partition())
            .is_some_and(|(high, _)| m.offset() >= *high)
        {
            // Written after the read began: not part of this snapshot.
            continue;
        }
        let raw_headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.unwrap_or_default();
                        // The id is binary: shown as `<stage>/<partition>/<seq>`, never lossily.
                        let v = if h.key == ID_HEADER {
                            MessageId::decode(v)
                                .unwrap_or_else(|e| panic!("{topic}: bad {ID_HEADER}: {e}"))
                                .to_string()
                        } else {
                            String::from_utf8_lossy(v).to_string()
                        };
                        (h.key.to_string(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Read {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            raw_headers,
        });
    }
    out
}

/// Records of `topic` after dropping repeated `sluice.id`s, as downstream consumers do.
pub fn read_deduplicated(brokers: &str, topic: &str) -> (Vec<Read>, usize) {
    let all = read_topic(brokers, topic);
    let n = all.len();
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<Read> = all
        .into_iter()
        .filter(|r| {
            seen.insert(
                r.headers
                    .get("sluice.id")
                    .cloned()
                    .expect("every output carries sluice.id"),
            )
        })
        .collect();
    let dups = n - unique.len();
    (unique, dups)
}

/// Polls `check` until it returns Some, at most `tries` times `every` apart. This is a hang
/// guard for a pipeline that never finishes, not a performance limit.
pub fn eventually<T>(
    what: &str,
    tries: u32,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    for _ in 0..tries {
        if let Some(v) = check() {
            return v;
        }
        std::thread::sleep(every);
    }
    panic!("gave up waiting for {what}");
}

/// Like [`eventually`], but `check` says what is still missing (`Err`), and the last such
/// answer is the failure message.
pub fn eventually_or<T>(
    what: &str,
    tries: u32,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let mut last = String::new();
    for _ in 0..tries {
        match check() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(every);
    }
    panic!("gave up waiting for {what}: {last}");
}

/// VictoriaMetrics series matching `selector`, as (labels, values, timestamps).
/// One exported series: labels, values, timestamps (ms).
pub type Series = (BTreeMap<String, String>, Vec<f64>, Vec<i64>);

pub fn tsdb_export(selector: &str) -> Vec<Series> {
    let base = env("SLUICE_TSDB_QUERY_URL");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        client
            .get(format!("{base}/internal/force_flush"))
            .send()
            .await
            .expect("tsdb reachable");
        let body = client
            .post(format!("{base}/api/v1/export"))
            .form(&[("match[]", selector), ("start", "0")])
            .send()
            .await
            .expect("tsdb export")
            .text()
            .await
            .unwrap();
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let labels = v["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let values = v["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(f64::NAN))
                    .collect();
                let ts = v["timestamps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect();
                (labels, values, ts)
            })
            .collect()
    })
}

/// The object store of the local stack.
pub fn s3() -> std::sync::Arc<dyn object_store::ObjectStore> {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(env("SLUICE_S3_ENDPOINT"))
        .with_bucket_name(env("SLUICE_S3_BUCKET"))
        .with_region(env("SLUICE_S3_REGION"))
        .with_access_key_id(env("SLUICE_S3_ACCESS_KEY_ID"))
        .with_secret_access_key(env("SLUICE_S3_SECRET_ACCESS_KEY"))
        .with_allow_http(true)
        .build()
        .expect("S3 client");
    std::sync::Arc::new(store)
}

/// Runs `scripts/stack ARGS` (stop, start, pause or resume a service of the local stack).
pub fn stack(args: &[&str]) {
    let st = Command::new(repo().join("scripts/stack"))
        .args(args)
        .status()
        .expect("run scripts/stack");
    assert!(st.success(), "scripts/stack {args:?} failed: {st}");
}

/// The lines of a running sluice's `/metrics` page (empty when it does not answer).
pub fn metric_lines(port: u16) -> Vec<String> {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return Vec::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines().map(str::to_string).collect()
}

/// A counter or gauge of a running sluice, summed over its label sets, from `/metrics`.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    metric_where(port, name, "")
}

/// Like [`metric`], over the label sets that contain `label` (e.g. `from="local"`).
pub fn metric_where(port: u16, name: &str, label: &str) -> Option<f64> {
    let mut total = None;
    for line in metric_lines(port) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let labels = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((labels, _)) => labels,
                None => continue,
            },
            None if rest.starts_with(' ') => "",
            None => continue,
        };
        if !labels.contains(label) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *total.get_or_insert(0.0) += v;
    }
    total
}

/// The high watermark (end offset) of every partition of `topic`, by partition.
pub fn end_offsets(brokers: &str, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{}: {e}", p.id()));
            (p.id(), high)
        })
        .collect()
}

/// The offsets `group` committed on `topic`'s partitions (absent: nothing committed), read
/// without joining the group.
pub fn committed_offsets(brokers: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let Ok(got) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return BTreeMap::new();
    };
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The HTTP status of `GET path` on a running sluice's metrics listener (None: no answer).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A record's key and value bytes.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// (device, seq) of every reading in a raw topic (ingest tests), with how many copies each has; copies
/// must be byte-identical (key and value).
pub fn landed_readings(brokers: &str, raw: &str) -> BTreeMap<(String, i64), usize> {
    let client = sluice_schemas::client::RegistryClient::new(&env("SLUICE_REGISTRY_URL"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut schemas: BTreeMap<u32, apache_avro::Schema> = BTreeMap::new();
    let mut first: BTreeMap<(String, i64), KeyValue> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for r in read_topic(brokers, raw) {
        let value = r.value.clone().expect("a raw record has a value");
        let (id, body) = sluice_schemas::wire::parse(&value).expect("Confluent-framed");
        let schema = schemas.entry(id).or_insert_with(|| {
            let text = rt
                .block_on(client.schema_by_id(id))
                .expect("registry has the id");
            apache_avro::Schema::parse_str(&text).unwrap()
        });
        let apache_avro::types::Value::Record(fields) =
            sluice_ops::codec::decode_once(schema, None, body).unwrap()
        else {
            panic!("not a record")
        };
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let (
            Some(apache_avro::types::Value::String(device)),
            Some(apache_avro::types::Value::Long(seq)),
        ) = (get("device_id"), get("seq"))
        else {
            panic!("no device_id/seq in {fields:?}")
        };
        assert_eq!(r.key.as_deref(), Some(device.as_bytes()), "keyed by device");
        let k = (device, seq);
        match first.get(&k) {
            None => {
                first.insert(k.clone(), (r.key.clone(), r.value.clone()));
            }
            Some(copy) => assert_eq!(
                copy,
                &(r.key.clone(), r.value.clone()),
                "a repeat of {k:?} that is not an identical copy"
            ),
        }
        *out.entry(k).or_insert(0) += 1;
    }
    out
}

/// A `TestTopology` rewrite: the raw topic `<suffix>.telemetry.raw` becomes
/// `<suffix>-telemetry-raw` (Fluvio's names take no dots) and lives on the local Fluvio
/// cluster (`SLUICE_FLUVIO_ENDPOINT`). Returns the text and the raw topic's name.
pub fn raw_on_fluvio(text: &str) -> (String, String) {
    let (text, raw) = topic_on_fluvio(text, "telemetry.raw", "   ");
    let text = text.replace(
        "connections:\n",
        "connections:\n  fluvio: { endpoint: ${SLUICE_FLUVIO_ENDPOINT} }\n",
    );
    (text, raw)
}

/// A test topology (after [`raw_on_fluvio`]) with its valid topic on Fluvio too, renamed
/// `<suffix>-telemetry-valid` (its subject with it); returns the text and the name.
pub fn valid_on_fluvio(text: &str) -> (String, String) {
    topic_on_fluvio(text, "telemetry.valid", " ")
}

/// Renames the test topology's `<suffix>.<topic>` to `<suffix>-<topic with dashes>` (Fluvio
/// names take no dots) and puts it on Fluvio; `pad` is the spaces after its key in iot.yaml.
fn topic_on_fluvio(text: &str, topic: &str, pad: &str) -> (String, String) {
    let at = text.find(&format!(".{topic}")).expect("the topic");
    let suffix = text[..at]
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap();
    let name = format!("{suffix}-{}", topic.replace('.', "-"));
    let text = text.replace(&format!("{suffix}.{topic}"), &name).replace(
        &format!("  {name}:{pad}{{ partitions: 4,"),
        &format!("  {name}:{pad}{{ broker: fluvio, partitions: 4,"),
    );
    assert!(
        text.contains(&format!("{name}:{pad}{{ broker: fluvio")),
        "{name} is on Fluvio in:\n{text}"
    );
    (text, name)
}

/// The readings of a raw topic on the local Fluvio cluster, read by a plain Fluvio reader
/// once its partitions' ends count at least `at_least` records: how often each (device,
/// seq) is there, and the number of partitions. Each record must be keyed by its device,
/// in Kafka's partition for that key (4 partitions), and Confluent-framed.
pub fn fluvio_readings(raw: &str, at_least: usize) -> (BTreeMap<(String, i64), usize>, usize) {
    use apache_avro::types::Value;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = std::sync::Arc::new(
        rt.block_on(sluice_connectors::fluvio::FluvioClient::connect(
            &env("SLUICE_FLUVIO_ENDPOINT"),
            Duration::from_secs(20),
        ))
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let ends = eventually_or(
        "Fluvio's ends to count every reading",
        240,
        Duration::from_millis(250),
        || {
            let ends = rt.block_on(client.ends(raw)).map_err(|e| e.to_string())?;
            let n: i64 = ends.values().sum();
            if n >= at_least as i64 {
                Ok(ends)
            } else {
                Err(format!("{n} of {at_least} records"))
            }
        },
    );
    let registry = sluice_schemas::client::RegistryClient::new(&env("SLUICE_REGISTRY_URL"));
    let mut got: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (&p, &end) in &ends {
        let records = rt.block_on(async {
            let mut reader = client.reader(raw, p, None, 1000).await?;
            let mut out = Vec::new();
            while (out.len() as i64) < end {
                out.extend(reader.next_batch().await?);
            }
            Ok::<_, sluice_connectors::fluvio::FluvioError>(out)
        });
        for r in records.unwrap_or_else(|e| panic!("{e}")) {
            let key = r.key.expect("keyed by the device");
            assert_eq!(
                sluice_connectors::fluvio::kafka_partition(&key, 4) as i32,
                p,
                "{} is in Kafka's partition for its key",
                String::from_utf8_lossy(&key)
            );
            let (id, body) = sluice_schemas::wire::parse(&r.value).expect("Confluent-framed");
            let text = rt
                .block_on(registry.schema_by_id(id))
                .expect("the registry has the id");
            let schema = apache_avro::Schema::parse_str(&text).unwrap();
            let Value::Record(fields) =
                sluice_ops::codec::decode_once(&schema, None, body).unwrap()
            else {
                panic!("not a record")
            };
            let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let (Some(Value::String(device)), Some(Value::Long(seq))) =
                (get("device_id"), get("seq"))
            else {
                panic!("no device_id/seq in {fields:?}")
            };
            assert_eq!(device.as_bytes(), &key[..]);
            *got.entry((device, seq)).or_default() += 1;
        }
    }
    (got, ends.len())
}
