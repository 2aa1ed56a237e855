//! The exactly-once protocol of docs/EXACTLY_ONCE.md, written once: the commit sequence
//! ([`commit`]), the restore sequence ([`restore`]) and a standby's tailing of the
//! changelogs ([`StandbyTask`]), over small I/O traits ([`ChangelogIo`], [`CommitIo`],
//! [`RestoreIo`]) and the [`KvStore`](crate::KvStore) engines behind the tables.
//!
//! The runtime implements the traits with rdkafka (`src/runtime/changelog/`) over RocksDB
//! engines; the simulated broker in `state/src/tests/` implements them in memory with crash
//! injection, so the crash-point, random-crash and standby proofs run the code production
//! runs. The protocol decides; the I/O moves bytes.

mod commit;
mod restore;
mod standby;

pub use commit::{commit, next_output_seq, CommitIo, Staged, TaskCommit, TaskLog};
pub use restore::{restore, RestoreIo, RestoreStats, Restored, Resume};
pub use standby::{Applied, StandbyTask};

use crate::{ChangelogRecord, StateError};

/// A record for store `store`'s changelog partition `partition`: a marker, a fence or a
/// repair record, written with [`ChangelogIo::send_acked`].
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: i32,
    pub store: usize,
    pub record: ChangelogRecord,
}

/// What commit and restore both need: records written and acknowledged, with their offsets.
pub trait ChangelogIo {
    /// The I/O's error; state errors (engines, decoding) convert into it.
    type Error: From<StateError>;

    /// Produces `records`, in order, and waits until every one is acknowledged; returns each
    /// record's offset. Records to one partition keep their order (A1).
    fn send_acked(&mut self, records: &[LogRecord]) -> Result<Vec<i64>, Self::Error>;
}
