//! The stage runtime: one consumer group per stage, one task per input partition, and the
//! commit path that makes outputs exactly once (docs/EXACTLY_ONCE.md).

pub mod bounds;
mod changelog;
mod emit;
pub mod fluvio;
pub mod fluvio_out;
mod lag;
mod pause;
mod processor;
mod runner;
pub mod shutdown;
mod standby;
pub mod tables;

pub use changelog::{commit_task, restore_task, LogEnv, RestoreProgress, Resume, TaskLog};
pub use processor::{Emit, Input, ProcessError, Processor, Rejection};
pub use runner::{
    run_stage, run_supervised, transactional_id, Ends, ProcessorFactory, RestoreCallback,
    StageBounds, StageDef,
};
pub use sluice_state::table::{AnyTable, CachedTable, Codec, DecodeFn, Encode, OrderedTable};

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
    #[error(transparent)]
    Fluvio(#[from] sluice_connectors::fluvio::FluvioError),
    /// A bug in sluice.
    #[error("internal error: {0}")]
    Internal(String),
    /// A shutdown was requested while the work (a restore, a sink flush) was under way; it
    /// was left unfinished and uncommitted, to be done again at the next start.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// This instance may no longer own its partitions (its group session expired, or the
    /// process was paused long enough for that): the open batch was dropped unwritten, and a
    /// restart rejoins the group and restores from the last commit.
    #[error("stage {stage} may have lost its group membership ({reason}); it rejoins and restores from its last commit")]
    MembershipLost { stage: String, reason: String },
    /// `exactly_once_transactional` on a broker that cannot run transactions: the user's
    /// choice of guarantee for this broker. A restart cannot help.
    #[error(
        "the broker at {brokers} cannot run transactions: {during} failed for \
         transactional.id `{transactional_id}`: {detail}. processing.guarantee \
         `exactly_once_transactional` needs a broker with transactions (Kafka, Redpanda); \
         use `exactly_once`, which needs none (docs/EXACTLY_ONCE.md, docs/BROKER_GAPS.md)"
    )]
    TransactionsUnsupported {
        brokers: String,
        transactional_id: String,
        during: &'static str,
        detail: String,
    },
    /// The broker fenced our transactional producer: a newer producer with the same
    /// `transactional.id` exists. This run of the stage cannot write any more.
    #[error(
        "transactional producer `{transactional_id}` was fenced by the broker at {brokers} \
         during {during}: {detail}. A newer producer with the same transactional.id took \
         over: another instance runs with the same instance id (`--instance-id` / \
         SLUICE_INSTANCE_ID), or a transaction outlived transaction.timeout.ms and the \
         broker bumped the producer epoch. The stage stops; its open transaction is aborted"
    )]
    Fenced {
        brokers: String,
        transactional_id: String,
        during: &'static str,
        detail: String,
    },
    /// A transaction call failed (abortable or retriable): the batch is aborted and the
    /// stage restarts from its last commit.
    #[error("transaction of `{transactional_id}` on {brokers} failed during {during}: {detail}")]
    Transaction {
        brokers: String,
        transactional_id: String,
        during: &'static str,
        detail: String,
    },
}

impl RuntimeError {
    /// True when restarting the stage in this process cannot help (`run_supervised` stops).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            RuntimeError::TransactionsUnsupported { .. } | RuntimeError::Fenced { .. }
        )
    }
}
