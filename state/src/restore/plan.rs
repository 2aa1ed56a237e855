//! What a restore hands back: progress while it runs, the plan when it has decided.

use crate::{ChangelogRecord, KvStore, Marker, MarkerKind, Rebuild, StateError, Tag, WriteBatch};

/// Restore progress of one store, for a progress bar and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub store: usize,
    /// Changelog records read so far.
    pub read: u64,
    /// Records expected (end offset minus start offset, set by the runtime; 0 if unknown).
    pub total: u64,
    /// Records made final (handed out for writing).
    pub applied: u64,
}

/// What [`Restorer::finish`] decided.
#[derive(Debug)]
pub struct RestorePlan {
    /// The commit every store now reflects; 0 when the task never committed.
    pub commit_seq: u64,
    /// The new epoch (the fence's); commits after the restore carry it.
    pub epoch: u64,
    /// Next input offset to read; `None` when the task never committed (start from the
    /// group's position or the reset policy).
    pub input_offset: Option<i64>,
    /// Next output sequence number.
    pub output_seq: u64,
    /// The restored marker's rebuild after `sluice replay`, if any.
    pub rebuild: Rebuild,
    pub stores: Vec<StorePlan>,
    /// Highest input end offset named by a discarded record: how far the lost commit got.
    pub discarded_input_end: Option<i64>,
}

/// Per-store part of a [`RestorePlan`].
#[derive(Debug, Default)]
pub struct StorePlan {
    /// The last records to write (after every batch taken with `take_ready`).
    pub apply: WriteBatch,
    /// Keys touched by discarded records: rewrite their restored values to the changelog
    /// (see [`StorePlan::repair_records`]) so compaction can never leave a discarded value
    /// as a key's only record.
    pub repair_keys: Vec<Vec<u8>>,
    pub applied_records: u64,
    pub discarded_records: u64,
    pub zombie_records: u64,
}

impl StorePlan {
    /// The repair records, with values read from `engine` after `apply` was written.
    pub fn repair_records<S: KvStore>(
        &self,
        engine: &S,
        tag: &Tag,
    ) -> Result<Vec<ChangelogRecord>, StateError> {
        self.repair_keys
            .iter()
            .map(|k| Ok(ChangelogRecord::data(k.clone(), engine.get(k)?, tag)))
            .collect()
    }
}

impl RestorePlan {
    /// Tag for the repair records.
    pub fn repair_tag(&self, input_offset: i64) -> Tag {
        Tag {
            epoch: self.epoch,
            commit_seq: self.commit_seq,
            input_end: input_offset,
        }
    }

    /// The marker restating the restored commit in the new epoch, written to every store
    /// after its repair records; its offset becomes the store's checkpoint. `input_offset`
    /// is `self.input_offset` or, for a task that never committed, where input starts.
    pub fn base_marker(&self, input_offset: i64, repair_records: u32) -> Marker {
        Marker {
            kind: MarkerKind::Commit,
            commit_seq: self.commit_seq,
            epoch: self.epoch,
            input_offset,
            output_seq: self.output_seq,
            records: repair_records,
            rebuild: self.rebuild.at(input_offset),
        }
    }
}
