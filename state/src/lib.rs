//! `sluice-state`: keyed state for sluice stages, Kafka-agnostic.
//!
//! - [`KvStore`]: the engine trait; [`RocksStore`] and [`MemStore`] implement it and pass one
//!   conformance suite.
//! - [`CachedStore`]: the write-back record cache in front of an engine; its commits produce
//!   the changelog records.
//! - [`changelog`]: record tags, commit markers, fences, checkpoints and topic names.
//! - [`Restorer`]: rebuilds a task's stores from their changelogs and decides where input and
//!   output numbering resume.
//! - [`table`]: typed write-back tables over an engine, what operators keep their state in.
//! - [`HighWaterMarks`]: downstream de-duplication by `sluice.id`.
//!
//! The protocol tying these together is in docs/EXACTLY_ONCE.md.

mod cache;
pub mod changelog;
mod codec;
#[cfg(all(test, feature = "rocksdb"))]
mod conformance;
mod dedup;
mod error;
mod mem;
mod restore;
#[cfg(feature = "rocksdb")]
mod rocks;
mod size;
mod store;
pub mod table;
#[cfg(all(test, feature = "rocksdb"))]
mod tests;

pub use cache::{CacheConfig, CacheStats, CachedStore, MergedScan};
pub use changelog::{changelog_topic, ChangelogRecord, Checkpoint, Entry, Marker, MarkerKind, Tag};
pub use dedup::{HighWaterMarks, IdWriter, MessageId, ID_HEADER};
pub use error::StateError;
pub use mem::MemStore;
pub use restore::{Progress, RestorePlan, Restorer, StorePlan};
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksConfig, RocksEnv, RocksStore};
pub use size::ByteSize;
pub use store::{KeyRange, KvPair, KvStore, ScanIter, WriteBatch};
