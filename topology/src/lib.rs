//! The topology model: a YAML file of stages, checked without a network, and the plan of
//! topics, consumer groups and state stores it needs.

mod error;
pub mod fluvio;
pub mod ingest;
mod interp;
mod lines;
mod load;
mod model;
mod namespace;
mod pipeline;
mod plan;
mod security;
mod stage;
mod validate;

pub use error::{Problem, TopologyError};
pub use fluvio::{Broker, FluvioConnection, POSITIONS_STORE};
pub use ingest::{IngestBridge, IngestSpec, INGEST_KINDS};
pub use load::{load, load_namespaced, load_namespaced_str, load_str, resolve_state_dir, Loaded};
pub use model::{
    Connections, Guarantee, Metadata, Metrics, Processing, S3Connection, Stage, TopicDefaults,
    TopicSpec, Topology, API_VERSION,
};
pub use namespace::{BadVersion, Namespace};
pub use pipeline::{BranchPlan, BranchSpec, PipelinePlan};
pub use plan::{
    StagePlan, StorePlan, TopicPlan, CHANGELOG_MIN_COMPACTION_LAG_MS, MIN_INSYNC_REPLICAS,
};
pub use security::{
    BasicAuthSpec, BrokerSecurity, RegistryConnection, SaslMechanism, SaslSpec, Secret,
    SecretSource, SecurityProtocol, TlsSpec,
};
pub use stage::{
    AggregateSpec, DetectSpec, PipelineSpec, QuestdbSinkSpec, S3ParquetSinkSpec, StageSpec,
    UnknownMetrics, ValidateSpec, STAGE_KINDS,
};
