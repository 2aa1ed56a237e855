//! The Kafka side of changelogged state: restoring a task's stores from their changelog
//! partitions and writing a commit's changelog records and markers (steps 2-4 of the commit
//! protocol in docs/EXACTLY_ONCE.md). The protocol's decisions are `sluice_state`'s; this
//! module moves the bytes.
//!
//! TO BE IMPLEMENTED (owner: state engineer). The runner (`runner.rs`) calls exactly this API.

use std::path::PathBuf;

use rdkafka::producer::FutureProducer;
use sluice_connectors::kafka::{ClientOptions, TrackedProducer};
use sluice_state::RocksEnv;

use super::table::AnyTable;
use super::RuntimeError;

/// Everything a stage's tasks share for changelog I/O.
pub struct LogEnv {
    pub app: String,
    pub stage: String,
    /// Store names and their changelog topics, in the order of the stage's tables.
    pub stores: Vec<(&'static str, String)>,
    pub opts: ClientOptions,
    /// Stores live in `<state_dir>/<app>/<stage>/<partition>/<store>`.
    pub state_dir: PathBuf,
    pub rocks: RocksEnv,
    /// For markers and fences, whose offsets become checkpoints.
    pub marker_producer: FutureProducer,
    pub rt: tokio::runtime::Handle,
    /// Random per process: makes the epochs of two racing restores differ.
    pub nonce: u16,
}

/// Where a restored task resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Next input offset; `None` when the task never committed (use the group's position).
    pub input_offset: Option<i64>,
    /// Next output sequence number for `sluice.id`.
    pub output_seq: u64,
}

/// Restore progress of one store, for the progress bar.
#[derive(Debug, Clone, Copy)]
pub struct RestoreProgress<'a> {
    pub store: &'a str,
    pub read: u64,
    pub total: u64,
}

/// One task's changelog position: its epoch and commit sequence.
pub struct TaskLog {
    pub partition: i32,
}

impl TaskLog {
    /// Restores every store of task `partition` (from the local checkpoint when it provably
    /// matches the changelog, from the changelog's start otherwise), fences older epochs,
    /// attaches each restored engine to its table (`tables[i]` is store `env.stores[i]`),
    /// and says where input and output numbering resume.
    pub fn restore(
        env: &LogEnv,
        partition: i32,
        tables: &mut [&mut dyn AnyTable],
        progress: &mut dyn FnMut(RestoreProgress<'_>),
    ) -> Result<(TaskLog, Resume), RuntimeError> {
        let _ = (env, partition, tables, progress);
        Err(RuntimeError::Internal(
            "changelog restore is not implemented yet".into(),
        ))
    }

    /// Steps 2-4 of a commit, after the batch's outputs were acknowledged: every table's
    /// dirty entries to its changelog partition (tagged with this commit), wait for acks, a
    /// marker carrying `input_offset` and `output_seq` to every changelog partition, wait for
    /// acks, then each engine's batch with the marker's checkpoint.
    pub fn commit(
        &mut self,
        env: &LogEnv,
        producer: &mut TrackedProducer,
        tables: &mut [&mut dyn AnyTable],
        input_offset: i64,
        output_seq: u64,
    ) -> Result<(), RuntimeError> {
        let _ = (env, producer, tables, input_offset, output_seq);
        Err(RuntimeError::Internal(
            "changelog commit is not implemented yet".into(),
        ))
    }
}
