//! `sluice report FILE [--truth FILE]`: what a run left behind, each figure read where it
//! landed: records held on every topic of the topology (as a plain consumer counts them),
//! rows in the TSDB (its query API), rows in the Parquet archive (the objects' footers), and,
//! given the simulator's ground truth, how the detector did against the injected anomalies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{consumer_config, ClientOptions};
use sluice_schemas::codec::{AvroRecord, Decoder};
use sluice_schemas::records::{Alert, Anomaly};
use sluice_topology::{StageSpec, Topology};

use crate::sim::SimSummary;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub file: PathBuf,
    /// Ground truth written by `sluice simulate --truth`: score the detector against it.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// The TSDB's query API (VictoriaMetrics' `/api/v1/export`), to count the rows of the
    /// topology's QuestDB tables there.
    #[arg(long, env = "SLUICE_TSDB_QUERY_URL")]
    pub tsdb_query_url: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = sluice_topology::load(&a.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &loaded.topology;
    let truth: Option<SimSummary> = match &a.truth {
        Some(p) => Some(
            serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{}: not a `sluice simulate --truth` file", p.display()))?,
        ),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    println!("topics on {} (records held):", t.connections.brokers);
    let held = topic_counts(t)?;
    for (topic, n) in &held {
        println!("  {topic:<32} {n:>12}");
    }

    let device_prefix = truth.as_ref().map(|s| s.device_prefix.as_str());
    if let Some(url) = &a.tsdb_query_url {
        let tables = tsdb_tables(t);
        if !tables.is_empty() {
            println!("TSDB at {url} (rows{}):", scope(device_prefix));
            for table in tables {
                let n = rt
                    .block_on(tsdb_rows(url, &table, device_prefix))
                    .with_context(|| format!("counting the rows of {table} at {url}"))?;
                println!("  {table:<32} {n:>12}");
            }
        }
    }

    if let Some(conn) = &t.connections.s3 {
        println!(
            "Parquet archive in s3://{}/ at {} (objects, rows):",
            conn.bucket, conn.endpoint
        );
        let by_prefix = rt
            .block_on(parquet_rows(conn))
            .with_context(|| format!("reading the archive at {}", conn.endpoint))?;
        for (prefix, (objects, rows)) in by_prefix {
            println!("  {prefix:<32} {objects:>6} {rows:>12}");
        }
    }

    if let Some(truth) = &truth {
        let Some((anomalies_topic, alerts_topic)) = t.stages.iter().find_map(|s| match &s.spec {
            StageSpec::Detect(d) => Some((d.output.clone(), d.alerts.clone())),
            _ => None,
        }) else {
            anyhow::bail!("--truth given but the topology has no detect stage to score");
        };
        let registry = crate::connections::registry_client(&t.connections.registry)?;
        let opts = crate::connections::client_options(&t.connections)?;
        let anomalies: Vec<Anomaly> = read_decoded(&rt, &registry, &opts, &anomalies_topic)?;
        let alerts: Vec<Alert> = read_decoded(&rt, &registry, &opts, &alerts_topic)?;
        let score = Score::of(truth, &anomalies, &alerts);
        println!(
            "detector against the simulator's ground truth ({} injected anomalies):",
            truth.injected.len()
        );
        for (kind, (found, of)) in &score.by_kind {
            println!("  {kind:<12} {found:>5} of {of:<5} flagged");
        }
        println!(
            "  anomalies: {} scored on {anomalies_topic}; alerts on {alerts_topic}: {} ({} at an injected anomaly, {} false)",
            score.anomalies, score.alerts, score.true_alerts, score.alerts - score.true_alerts
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn scope(device_prefix: Option<&str>) -> String {
    device_prefix.map_or_else(String::new, |p| format!(" of devices {p}*"))
}

/// Records held per declared topic: high minus low watermark over its partitions.
fn topic_counts(t: &Topology) -> anyhow::Result<BTreeMap<String, i64>> {
    let brokers = &t.connections.brokers;
    let opts = crate::connections::client_options(&t.connections)?;
    let client: BaseConsumer = consumer_config(&opts, "sluice-report")
        .create()
        .context("creating a Kafka client")?;
    let mut out = BTreeMap::new();
    for topic in t.topics.keys() {
        let n = match partitions(&client, topic, brokers)? {
            None => continue,
            Some(ps) => {
                let mut n = 0;
                for p in ps {
                    let (low, high) = client
                        .fetch_watermarks(topic, p, TIMEOUT)
                        .with_context(|| format!("watermarks of {topic}/{p} on {brokers}"))?;
                    n += high - low;
                }
                n
            }
        };
        out.insert(topic.clone(), n);
    }
    Ok(out)
}

/// A topic's partitions, `None` when it does not exist.
pub(super) fn partitions(
    client: &BaseConsumer,
    topic: &str,
    brokers: &str,
) -> anyhow::Result<Option<Vec<i32>>> {
    let md = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("metadata of {topic} from the broker at {brokers}"))?;
    let ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|m| m.error().is_none())
        .flat_map(|m| m.partitions().iter().map(|p| p.id()))
        .collect();
    Ok((!ids.is_empty()).then_some(ids))
}

/// Every record of `topic` from its first held offset to its high watermark, decoded with
/// the writer schemas the registry holds; repeats (same natural key) are kept once by the
/// caller's scoring, as a keyed consumer would.
fn read_decoded<T: AvroRecord + Default>(
    rt: &tokio::runtime::Runtime,
    registry: &sluice_schemas::client::RegistryClient,
    opts: &ClientOptions,
    topic: &str,
) -> anyhow::Result<Vec<T>> {
    let brokers = opts.brokers.as_str();
    let consumer: BaseConsumer = consumer_config(opts, "sluice-report")
        .create()
        .context("creating a Kafka client")?;
    let Some(ps) = partitions(&consumer, topic, brokers)? else {
        anyhow::bail!("topic {topic} does not exist on {brokers}");
    };
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in ps {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    consumer.assign(&tpl)?;
    let mut dec: Decoder<T> = Decoder::new();
    let mut out = Vec::new();
    while !ends.is_empty() {
        let Some(m) = consumer.poll(TIMEOUT) else {
            anyhow::bail!("no record from {topic} on {brokers} for {TIMEOUT:?} before its end");
        };
        let m = m.with_context(|| format!("reading {topic} on {brokers}"))?;
        if let Some(bytes) = m.payload() {
            if bytes.len() >= 5 {
                let id = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
                if !dec.knows(id) {
                    let json = rt
                        .block_on(registry.schema_by_id(id))
                        .with_context(|| format!("schema {id} of a record on {topic}"))?;
                    dec.add_writer_schema_json(id, &json)?;
                }
                let mut rec = T::default();
                dec.decode(bytes, &mut rec).with_context(|| {
                    format!("decoding {topic}/{} at {}", m.partition(), m.offset())
                })?;
                out.push(rec);
            }
        }
        if ends
            .get(&m.partition())
            .is_some_and(|e| m.offset() + 1 >= *e)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(out)
}

/// The QuestDB tables the topology's TSDB sinks write: the built-in sink's and each
/// pipeline's `questdb` sink table.
fn tsdb_tables(t: &Topology) -> Vec<String> {
    let mut out = BTreeSet::new();
    for s in &t.stages {
        match &s.spec {
            StageSpec::QuestdbSink(q) => {
                let addr = q.addr.as_ref().or(t.connections.ilp.as_ref());
                let mut config =
                    sluice_connectors::questdb::QuestDbConfig::new(addr.map_or("", |a| a));
                config.aggregates_table = q.aggregates_table.clone();
                config.anomalies_table = q.anomalies_table.clone();
                out.extend(
                    sluice_connectors::questdb::table_ddl(&config)
                        .into_iter()
                        .map(|d| d.table),
                );
            }
            StageSpec::Pipeline(p) => {
                if let Some(sluice_ops::sink::SinkPlan::Questdb(q)) = p.sink_plan() {
                    out.insert(q.table.clone());
                }
            }
            _ => {}
        }
    }
    out.into_iter().collect()
}

/// Rows of an ILP table in VictoriaMetrics: each field of a row is a sample of the series
/// `<table>_<field>`, so a row is one (labels, timestamp) among them.
async fn tsdb_rows(url: &str, table: &str, device_prefix: Option<&str>) -> anyhow::Result<usize> {
    let selector = match device_prefix {
        Some(p) => format!(
            "{{__name__=~\"{table}_.+\",device_id=~\"{}.*\"}}",
            regex_escape(p)
        ),
        None => format!("{{__name__=~\"{table}_.+\"}}"),
    };
    let export = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/export", url.trim_end_matches('/')),
        [("match[]", selector.as_str())],
    )?;
    let body = reqwest::Client::new()
        .get(export)
        .timeout(Duration::from_secs(120))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut rows: BTreeSet<(String, i64)> = BTreeSet::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let mut labels: Vec<(String, String)> = v["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        labels.sort();
        let labels = format!("{labels:?}");
        for ts in v["timestamps"].as_array().into_iter().flatten() {
            rows.insert((labels.clone(), ts.as_i64().unwrap_or_default()));
        }
    }
    Ok(rows.len())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// Objects and rows (from each Parquet footer) per top-level prefix of the bucket.
async fn parquet_rows(
    conn: &sluice_topology::S3Connection,
) -> anyhow::Result<BTreeMap<String, (usize, i64)>> {
    use futures::TryStreamExt as _;
    use parquet::file::reader::FileReader as _;
    let store = crate::stages::archive::s3_config(conn, "", 0).build_store()?;
    let objects: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await?;
    let mut out: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for o in objects
        .iter()
        .filter(|o| o.location.as_ref().ends_with(".parquet"))
    {
        let bytes = store.get(&o.location).await?.bytes().await?;
        let reader = parquet::file::reader::SerializedFileReader::new(bytes)
            .with_context(|| format!("{} is not Parquet", o.location))?;
        let rows = reader.metadata().file_metadata().num_rows();
        let prefix = o
            .location
            .as_ref()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let e = out.entry(prefix).or_default();
        e.0 += 1;
        e.1 += rows;
    }
    Ok(out)
}

/// The detector's anomalies and alerts against the injected anomalies.
#[derive(Debug, Default, PartialEq)]
struct Score {
    /// Per kind of injected anomaly: (flagged, injected).
    by_kind: BTreeMap<String, (usize, usize)>,
    /// Distinct anomalies (device, metric, event time) of the simulated devices.
    anomalies: usize,
    /// Distinct alerts of the simulated devices, and how many fall on an injected anomaly.
    alerts: usize,
    true_alerts: usize,
}

/// Readings after an injected anomaly's last one within which a flag still counts as finding
/// it (a level shift is seen once the detector's window holds enough shifted readings).
const FOUND_WITHIN_STEPS: i64 = 5;

impl Score {
    fn of(truth: &SimSummary, anomalies: &[Anomaly], alerts: &[Alert]) -> Score {
        let ours = |device: &str| device.starts_with(&truth.device_prefix);
        let slack = FOUND_WITHIN_STEPS * truth.step_ms;
        let at_injected = |device: &str, metric: &str, t: i64| {
            truth.injected.iter().any(|i| {
                i.device_id == device && i.metric == metric && t >= i.start && t <= i.end + slack
            })
        };
        let anomalies: BTreeSet<(&str, &str, i64)> = anomalies
            .iter()
            .filter(|a| ours(&a.device_id))
            .map(|a| (a.device_id.as_str(), a.metric.as_str(), a.event_time))
            .collect();
        let alerts: BTreeSet<(&str, &str, i64)> = alerts
            .iter()
            .filter(|a| ours(&a.device_id))
            .map(|a| (a.device_id.as_str(), a.metric.as_str(), a.event_time))
            .collect();
        let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for i in &truth.injected {
            let found = anomalies
                .range((i.device_id.as_str(), i.metric.as_str(), i.start)..)
                .next()
                .is_some_and(|(d, m, t)| {
                    *d == i.device_id && *m == i.metric && *t <= i.end + slack
                });
            let kind = serde_json::to_value(i.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let e = by_kind.entry(kind).or_default();
            e.0 += usize::from(found);
            e.1 += 1;
        }
        Score {
            by_kind,
            anomalies: anomalies.len(),
            alerts: alerts.len(),
            true_alerts: alerts
                .iter()
                .filter(|(d, m, t)| at_injected(d, m, *t))
                .count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::generator::{AnomalyKind, InjectedAnomaly};

    fn injected(device: &str, kind: AnomalyKind, start: i64, end: i64) -> InjectedAnomaly {
        InjectedAnomaly {
            device_id: device.into(),
            metric: "temperature".into(),
            kind,
            start,
            end,
        }
    }

    fn anomaly(device: &str, t: i64) -> Anomaly {
        Anomaly {
            device_id: device.into(),
            metric: "temperature".into(),
            event_time: t,
            ..Anomaly::default()
        }
    }

    fn alert(device: &str, t: i64) -> Alert {
        Alert {
            device_id: device.into(),
            metric: "temperature".into(),
            event_time: t,
            ..Alert::default()
        }
    }

    #[test]
    fn a_flag_within_the_slack_finds_an_anomaly_and_others_are_false_alerts() {
        let truth = SimSummary {
            injected: vec![
                injected("d-1", AnomalyKind::Spike, 1_000, 1_000),
                injected("d-2", AnomalyKind::LevelShift, 5_000, 9_000),
                injected("d-3", AnomalyKind::Spike, 1_000, 1_000),
            ],
            step_ms: 100,
            device_prefix: "d-".into(),
            ..SimSummary::default()
        };
        let anomalies = [
            anomaly("d-1", 1_400), // within 5 steps after the spike
            anomaly("d-2", 4_000), // before the level shift: not a find
            anomaly("d-3", 1_600), // past the slack: not a find
            anomaly("x-9", 1_000), // another run's device: ignored
        ];
        let alerts = [
            alert("d-1", 1_400),
            alert("d-1", 1_400), // a repeat counts once
            alert("d-2", 4_000),
            alert("x-9", 1_000),
        ];
        let s = Score::of(&truth, &anomalies, &alerts);
        assert_eq!(s.by_kind["spike"], (1, 2));
        assert_eq!(s.by_kind["level_shift"], (0, 1));
        assert_eq!(s.anomalies, 3);
        assert_eq!((s.alerts, s.true_alerts), (2, 1));
    }

    #[test]
    fn label_values_are_matched_literally() {
        assert_eq!(regex_escape("dev-1.a"), "dev-1\\.a");
    }
}
