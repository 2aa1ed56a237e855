//! `sluice-state`: keyed state for sluice stages, Kafka-agnostic.
//!
//! - [`KvStore`]: the engine trait; [`RocksStore`] and [`MemStore`] implement it and pass one
//!   conformance suite.
//! - [`changelog`]: record tags, commit markers, fences, checkpoints and topic names.
//! - [`Restorer`]: rebuilds a task's stores from their changelogs and decides where input and
//!   output numbering resume.
//! - [`table`]: typed write-back tables over an engine, what operators keep their state in;
//!   their dirty entries are a commit's changelog records.
//! - [`IdsTable`]: downstream de-duplication by `sluice.id`.
//! - [`protocol`]: the commit, restore and standby sequences tying these together, written
//!   once over small I/O traits that the runtime implements with Kafka and the tests with a
//!   simulated broker. The argument is in docs/EXACTLY_ONCE.md.

pub mod changelog;
mod codec;
#[cfg(all(test, feature = "rocksdb"))]
mod conformance;
mod dedup;
mod error;
mod mem;
pub mod protocol;
mod restore;
#[cfg(feature = "rocksdb")]
mod rocks;
mod seqs;
mod size;
mod store;
pub mod table;
#[cfg(test)]
mod tests;

pub use changelog::{
    changelog_topic, ChangelogRecord, Checkpoint, Entry, Marker, MarkerKind, Rebuild, Tag,
};
pub use dedup::{accept_id, ids_table, Hwm, IdWriter, IdsTable, MessageId, ID_HEADER};
pub use error::StateError;
pub use mem::MemStore;
pub use restore::{Progress, RestorePlan, Restorer, StorePlan};
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksConfig, RocksEnv, RocksStore};
pub use seqs::SeqWindow;
pub use size::ByteSize;
pub use store::{KeyRange, KvPair, KvStore, ScanIter, WriteBatch};
