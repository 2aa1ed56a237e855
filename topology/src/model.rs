//! The topology file's shape. Every struct rejects unknown keys; every field says its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::ingest::IngestBridge;
use crate::security::{BrokerSecurity, RegistryConnection};
use crate::stage::StageSpec;

/// The version of the file format this build reads.
pub const API_VERSION: &str = "sluice/v1";

/// A whole topology file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopologyFile {
    /// Must be `sluice/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Must be `Topology`.
    pub kind: String,
    pub metadata: Metadata,
    /// Delivery guarantee and commit cadence.
    #[serde(default)]
    pub processing: Processing,
    pub connections: Connections,
    /// Where RocksDB stores live; one folder per stage and partition. Default `state`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Prometheus metrics and health endpoints.
    #[serde(default)]
    pub metrics: Metrics,
    /// Replication and `min.insync.replicas` of every topic the topology creates.
    #[serde(default)]
    pub topic_defaults: TopicDefaults,
    /// Every topic the topology reads or writes, by name.
    pub topics: BTreeMap<String, TopicSpec>,
    /// Kept as raw YAML here: each stage is parsed on its own so errors keep their lines.
    pub stages: serde_yaml::Mapping,
    /// Bridges bringing device data in (`sluice ingest`), by name; raw like `stages`.
    #[serde(default)]
    pub ingest: serde_yaml::Mapping,
}

/// The parsed topology with typed stages, in file order.
#[derive(Debug, Clone)]
pub struct Topology {
    pub metadata: Metadata,
    pub processing: Processing,
    pub connections: Connections,
    pub state_dir: PathBuf,
    pub metrics: Metrics,
    pub topic_defaults: TopicDefaults,
    pub topics: BTreeMap<String, TopicSpec>,
    pub stages: Vec<Stage>,
    /// The `ingest:` bridges, in file order.
    pub ingest: Vec<IngestBridge>,
}

/// A named stage.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub spec: StageSpec,
    /// For a stage sluice added (the part of a pipeline after a repartition): the stage in
    /// the file it belongs to. `sluice run --stage NAME` runs NAME and its parts.
    pub part_of: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Application id: prefixes consumer groups (`<name>-<stage>`) and changelog topics.
    pub name: String,
}

/// How results are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Changelog markers and output ids; needs no broker transactions (the default).
    #[default]
    ExactlyOnce,
    /// Kafka transactions; for brokers that have them (Kafka, Redpanda).
    ExactlyOnceTransactional,
    /// Outputs may repeat after a crash.
    AtLeastOnce,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Processing {
    /// Default `exactly_once`.
    #[serde(default)]
    pub guarantee: Guarantee,
    /// How often a task commits outputs, changelog and offsets. Default `1s`.
    #[serde(
        default = "default_commit_interval",
        deserialize_with = "human_duration"
    )]
    pub commit_interval: Duration,
    /// Most records a task processes between commits. Default 50000.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Warm copies of each stateful task's stores kept on other instances of the stage (as
    /// Kafka Streams' `num.standby.replicas`): a partition that moves restores only the
    /// changelog's tail. Default 0.
    #[serde(default)]
    pub standby_replicas: u32,
}

impl Default for Processing {
    fn default() -> Self {
        Processing {
            guarantee: Guarantee::default(),
            commit_interval: default_commit_interval(),
            max_batch: default_max_batch(),
            standby_replicas: 0,
        }
    }
}

/// Addresses of the services the topology talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connections {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// TLS and SASL to the brokers (docs/SECURITY.md). Default: plaintext, no SASL.
    #[serde(default)]
    pub security: BrokerSecurity,
    /// Confluent-compatible schema registry: its base URL, or `{url, tls: {ca},
    /// basic_auth: {username, password_env | password_file}}`.
    pub registry: RegistryConnection,
    /// questdb-rs configuration string for the ILP sink, e.g. `tcp::addr=127.0.0.1:9009;`.
    #[serde(default)]
    pub ilp: Option<String>,
    /// S3-compatible object store for archives.
    #[serde(default)]
    pub s3: Option<S3Connection>,
    /// A Fluvio cluster holding the topics declared with `broker: fluvio` (docs/FLUVIO.md).
    #[serde(default)]
    pub fluvio: Option<crate::fluvio::FluvioConnection>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Connection {
    /// Endpoint URL; empty means AWS itself.
    #[serde(default)]
    pub endpoint: String,
    pub bucket: String,
    /// Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id; empty means the AWS default chain.
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: String,
    /// Allow plain HTTP endpoints (local servers). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// PEM file of an extra certificate authority for an https endpoint (a private S3
    /// server); relative to the topology file. Default: the system's roots only.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// The secret key is left out: a topology is logged with `{:?}` in places.
impl std::fmt::Debug for S3Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Connection")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("allow_http", &self.allow_http)
            .field("ca", &self.ca)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address for `/metrics`, `/healthz` and `/readyz`. Default `127.0.0.1:9464`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: default_metrics_listen(),
        }
    }
}

/// How durable the topics the topology creates are: declared topics that do not say
/// otherwise, and every changelog. An acknowledged write (`acks=all`) survives the loss of
/// `replication - min_insync_replicas` brokers; docs/OPERATIONS.md says what exactly-once needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaults {
    /// Replication factor. Default 3 (a single-broker test stack sets 1).
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// The topic config `min.insync.replicas`: how many replicas must have a write before
    /// an `acks=all` producer is told it succeeded. At least 1, at most `replication`.
    /// Default 2 (a single-broker test stack sets 1).
    #[serde(default = "default_min_insync_replicas")]
    pub min_insync_replicas: i32,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            replication: default_replication(),
            min_insync_replicas: default_min_insync_replicas(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Partition count; stages reading this topic run one task per partition.
    pub partitions: i32,
    /// Replication factor. Default `topic_defaults.replication`.
    #[serde(default)]
    pub replication: Option<i32>,
    /// `min.insync.replicas` of this topic. Default `topic_defaults.min_insync_replicas`.
    #[serde(default)]
    pub min_insync_replicas: Option<i32>,
    /// Registry subject for record values, if the topic carries Avro.
    #[serde(default)]
    pub subject: Option<String>,
    /// The `.avsc` registered under `subject` by `sluice schemas push`.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Where the topic lives: `kafka` (the default, `connections.brokers`) or `fluvio`
    /// (`connections.fluvio`; a stage input only, docs/FLUVIO.md).
    #[serde(default)]
    pub broker: crate::fluvio::Broker,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_batch() -> usize {
    50_000
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
/// Kafka's usual production setting: one broker may be down while writes continue.
fn default_replication() -> i32 {
    3
}
fn default_min_insync_replicas() -> i32 {
    2
}

/// `30s`, `5m`, `1h 30m`: durations written for people.
pub(crate) fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration ({e}); write it like `30s`, `5m` or `1h`"
        ))
    })
}

/// A list of human durations.
pub(crate) fn human_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration ({e}); write it like `1m` or `5m`"
                ))
            })
        })
        .collect()
}
