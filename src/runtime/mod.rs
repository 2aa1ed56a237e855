//! The stage runtime: one consumer group per stage, one task per input partition, and the
//! commit path that makes outputs exactly once (docs/EXACTLY_ONCE.md).

mod changelog;
mod emit;
mod ids;
mod processor;
mod runner;
mod table;

pub use changelog::{LogEnv, RestoreProgress, Resume, TaskLog};
pub use processor::{Emit, Input, ProcessError, Processor, Rejection};
pub use runner::{run_stage, run_supervised, ProcessorFactory, RestoreCallback, StageDef};
pub use table::{AnyTable, CachedTable, Codec, DecodeFn, Encode, OrderedTable};

/// Errors of the runtime; each says whose problem it is.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Kafka(#[from] sluice_connectors::kafka::KafkaError),
    #[error("kafka: {0}")]
    Rd(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("state: {0}")]
    State(#[from] sluice_state::StateError),
    #[error("{0}")]
    Config(String),
    /// A bug in sluice.
    #[error("internal error: {0}")]
    Internal(String),
}
