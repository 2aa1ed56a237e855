//! The stage kinds a topology can use and their settings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{human_duration, human_durations};
pub use crate::pipeline::PipelineSpec;

/// Every stage kind, by its `kind:` name.
pub const STAGE_KINDS: &[&str] = &[
    "validate",
    "aggregate",
    "detect",
    "questdb_sink",
    "s3_parquet_sink",
    "pipeline",
];

/// A stage's settings; which struct depends on `kind`.
#[derive(Debug, Clone)]
pub enum StageSpec {
    Validate(ValidateSpec),
    Aggregate(AggregateSpec),
    Detect(DetectSpec),
    QuestdbSink(QuestdbSinkSpec),
    S3ParquetSink(S3ParquetSinkSpec),
    Pipeline(PipelineSpec),
}

impl StageSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            StageSpec::Validate(_) => "validate",
            StageSpec::Aggregate(_) => "aggregate",
            StageSpec::Detect(_) => "detect",
            StageSpec::QuestdbSink(_) => "questdb_sink",
            StageSpec::S3ParquetSink(_) => "s3_parquet_sink",
            StageSpec::Pipeline(_) => "pipeline",
        }
    }

    /// Topics the stage consumes, with the key path that names each (for errors).
    pub fn inputs(&self) -> Vec<(&'static str, &str)> {
        match self {
            StageSpec::Validate(s) => vec![("input", &s.input)],
            StageSpec::Aggregate(s) => vec![("input", &s.input)],
            StageSpec::Detect(s) => vec![("input", &s.input)],
            StageSpec::QuestdbSink(s) => s.inputs.iter().map(|t| ("inputs", t.as_str())).collect(),
            StageSpec::S3ParquetSink(s) => vec![("input", &s.input)],
            StageSpec::Pipeline(s) => vec![("input", &s.input)],
        }
    }

    /// Topics the stage produces to, with the key path that names each.
    pub fn outputs(&self) -> Vec<(&'static str, &str)> {
        match self {
            StageSpec::Validate(s) => vec![("output", &s.output), ("dead_letter", &s.dead_letter)],
            StageSpec::Aggregate(s) => {
                vec![("output", &s.output), ("dead_letter", &s.dead_letter)]
            }
            StageSpec::Detect(s) => vec![("output", &s.output), ("alerts", &s.alerts)],
            StageSpec::QuestdbSink(_) | StageSpec::S3ParquetSink(_) => vec![],
            StageSpec::Pipeline(s) => {
                let mut v: Vec<(&'static str, &str)> =
                    s.writes().map(|w| ("output", w)).into_iter().collect();
                v.extend(s.branches.iter().map(|b| ("branches", b.output.as_str())));
                if let Some(d) = &s.dead_letter {
                    v.push(("dead_letter", d.as_str()));
                }
                v
            }
        }
    }

    /// The state stores the stage keeps, each changelogged to its own topic.
    pub fn stores(&self) -> Vec<String> {
        let fixed: &[&str] = match self {
            StageSpec::Validate(_) => &["dedup"],
            StageSpec::Aggregate(_) => &["ids", "windows"],
            StageSpec::Detect(_) => &["ids", "detectors", "suppression"],
            // Rows are upserted by key, so a replay rewrites the same rows: no state needed.
            StageSpec::QuestdbSink(_) => &[],
            StageSpec::S3ParquetSink(_) => &["ids"],
            // `ids` first (the runner's upstream high-water marks; with it every pipeline
            // commits markers, so its outputs are numbered exactly once even when no
            // operator keeps state), then the operators' stores.
            StageSpec::Pipeline(p) => {
                let mut v = vec!["ids".to_string()];
                if let Some(plan) = &p.plan {
                    v.extend(plan.chain.stores());
                    v.extend(plan.branches.iter().flat_map(|b| b.chain.stores()));
                }
                return v;
            }
        };
        fixed.iter().map(|s| s.to_string()).collect()
    }
}

/// `kind: validate`: decode raw telemetry through the registry, check ranges, drop
/// retransmissions, re-stamp skewed clocks; bad records to the dead-letter topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSpec {
    /// Always `validate`.
    pub kind: String,
    /// Raw telemetry topic (Avro, Confluent wire format).
    pub input: String,
    /// Topic for valid records, written with the reader schema.
    pub output: String,
    /// Topic for records that failed, with the reason in headers.
    pub dead_letter: String,
    /// The `.avsc` incoming records are resolved to, relative to the topology file.
    pub reader_schema: PathBuf,
    /// Registry subject the output is registered under.
    pub output_subject: String,
    /// Accepted `[min, max]` per metric; values outside go to the dead-letter topic.
    /// Metrics not listed are accepted when `unknown_metrics: accept` (the default).
    #[serde(default)]
    pub ranges: BTreeMap<String, [f64; 2]>,
    /// `accept` (default) or `reject` metrics that have no range.
    #[serde(default)]
    pub unknown_metrics: UnknownMetrics,
    /// How many recent sequence numbers per device are remembered to drop retransmissions;
    /// a sequence number older than that is dropped as a retransmission too. Default 1024.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: u32,
    /// Device clocks further than this from the broker's timestamp are replaced by the
    /// broker's. Default `15m`.
    #[serde(
        default = "default_max_clock_skew",
        deserialize_with = "human_duration"
    )]
    pub max_clock_skew: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownMetrics {
    #[default]
    Accept,
    Reject,
}

/// `kind: aggregate`: tumbling windows per device and metric in event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// Always `aggregate`.
    pub kind: String,
    pub input: String,
    pub output: String,
    /// Registry subject of the output records.
    pub output_subject: String,
    /// Window lengths. Default `[1m, 5m]`.
    #[serde(default = "default_windows", deserialize_with = "human_durations")]
    pub windows: Vec<Duration>,
    /// Topic for records too late for every window.
    pub dead_letter: String,
    /// How long after a window's end late records are still counted. Default `30s`.
    #[serde(default = "default_grace", deserialize_with = "human_duration")]
    pub grace: Duration,
}

/// `kind: detect`: streaming anomaly detection per device and metric, with alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSpec {
    /// Always `detect`.
    pub kind: String,
    pub input: String,
    /// Topic for anomalies.
    pub output: String,
    /// Registry subject of anomaly records.
    pub output_subject: String,
    /// Topic for alerts (anomalies after suppression).
    pub alerts: String,
    /// Registry subject of alert records.
    pub alerts_subject: String,
    /// The detector and its parameters, e.g. `{ kind: zscore, window: 120 }`; see
    /// docs/DETECTORS.md. Checked by the detector library.
    pub detector: serde_yaml::Value,
    /// Scores at or above this are anomalies. Default 0.9.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// A second alert for the same device and rule within this interval is suppressed.
    /// Default `5m`.
    #[serde(default = "default_suppression", deserialize_with = "human_duration")]
    pub alert_suppression: Duration,
}

/// `kind: questdb_sink`: rows to QuestDB (or any ILP server), idempotent by key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestdbSinkSpec {
    /// Always `questdb_sink`.
    pub kind: String,
    /// Aggregate and anomaly topics to write.
    pub inputs: Vec<String>,
    /// questdb-rs configuration string; default `connections.ilp`.
    #[serde(default)]
    pub addr: Option<String>,
    /// Table for closed windows. Default `aggregates` (`sluice backfill` writes
    /// `aggregates_<version>`).
    #[serde(default = "default_aggregates_table")]
    pub aggregates_table: String,
    /// Table for anomalies. Default `anomalies`.
    #[serde(default = "default_anomalies_table")]
    pub anomalies_table: String,
}

/// `kind: s3_parquet_sink`: records archived as Parquet, Hive-partitioned by date and hour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ParquetSinkSpec {
    /// Always `s3_parquet_sink`.
    pub kind: String,
    pub input: String,
    /// Key prefix inside the bucket. Default `telemetry`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Most rows per object. Default 100000.
    #[serde(default = "default_rows_per_file")]
    pub rows_per_file: usize,
}

fn default_dedup_window() -> u32 {
    1024
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(900)
}
fn default_windows() -> Vec<Duration> {
    vec![Duration::from_secs(60), Duration::from_secs(300)]
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_threshold() -> f64 {
    0.9
}
fn default_suppression() -> Duration {
    Duration::from_secs(300)
}
fn default_aggregates_table() -> String {
    "aggregates".into()
}
fn default_anomalies_table() -> String {
    "anomalies".into()
}
fn default_prefix() -> String {
    "telemetry".into()
}
fn default_rows_per_file() -> usize {
    100_000
}
