//! The one error type of `sluice-state`.

/// Everything that can go wrong in the state layer.
///
/// Each variant says whose problem it is: the engine (`Rocks`, an external library on local
/// disk), the changelog contents (`Decode`, `Inconsistent`: data written by someone else or
/// damaged), or a condition the runtime is expected to handle (`CheckpointMismatch`: wipe the
/// store and restore it from the start of its changelog).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// RocksDB failed; retrying rarely helps (disk full, corruption, permissions).
    #[cfg(feature = "rocksdb")]
    #[error("RocksDB error in store `{store}`: {source}")]
    Rocks {
        store: String,
        #[source]
        source: rocksdb::Error,
    },
    /// Bytes read from a changelog, a header or the local checkpoint could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    /// A changelog record carries neither a marker header nor a commit tag, so it was not
    /// written by sluice; the topic is shared with something else.
    #[error("changelog record at offset {offset} of store {store} has no `sluice.tag` header; the topic is not a sluice changelog")]
    MissingTag { store: usize, offset: i64 },
    /// The local store does not provably match the changelog. Not a failure: the runtime
    /// wipes store `store`, calls `Restorer::reset_store` and reads that changelog from the start.
    #[error("local checkpoint of store {store} does not match its changelog ({reason}); wipe it and restore from the beginning")]
    CheckpointMismatch { store: usize, reason: String },
    /// The changelogs of one task contradict the commit protocol (see docs/EXACTLY_ONCE.md);
    /// restoring would produce state that never existed, so we refuse.
    #[error("changelogs are inconsistent: {0}")]
    Inconsistent(String),
    /// Something state is loaded from cannot be reached or read (e.g. a table's topic); the
    /// message names it and where.
    #[error("{0}")]
    Unavailable(String),
    /// A caller broke an API precondition (ours to fix, never retried).
    #[error("invalid use of the state API: {0}")]
    Usage(String),
}

impl StateError {
    pub fn decode(what: &'static str, reason: impl Into<String>) -> Self {
        StateError::Decode {
            what,
            reason: reason.into(),
        }
    }
}
