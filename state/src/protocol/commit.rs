//! The commit sequence (docs/EXACTLY_ONCE.md, "The commit protocol"), for every task of a
//! stage at once, so a commit of many partitions waits for the broker twice, not twice per
//! partition:
//!
//! 1. outputs were sent while processing (numbered with [`next_output_seq`]);
//! 2. every table's dirty entries to its changelog partition, tagged with the commit; one
//!    flush acknowledges the outputs and these records alike;
//! 3. a commit marker per store, acknowledged, their offsets kept;
//! 5. the input offsets committed to the group (its failure tells a zombie it lost the
//!    partition, A5), *before*
//! 4. each store's batch with the checkpoint of its marker, atomically per store.

use crate::table::AnyTable;
use crate::{Checkpoint, Marker, MarkerKind, Rebuild, StateError, Tag, WriteBatch};

use super::{ChangelogIo, LogRecord};

/// The I/O of a commit, besides [`ChangelogIo::send_acked`] for the markers.
pub trait CommitIo: ChangelogIo {
    /// Sends a data record (step 2) to store `store`'s changelog partition `partition`
    /// without waiting; `tag` is the encoded [`Tag`] of the commit.
    fn send_record(
        &mut self,
        partition: i32,
        store: usize,
        key: &[u8],
        value: Option<&[u8]>,
        tag: &[u8],
    ) -> Result<(), Self::Error>;

    /// The wait of steps 1 and 2: every output and changelog record sent so far is
    /// acknowledged, or this fails.
    fn flush(&mut self) -> Result<(), Self::Error>;

    /// Last check before the markers go out: fails when this instance may have lost its
    /// partitions meanwhile (a paused process), so it writes no marker.
    fn before_markers(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 5: commits each task's next input offset `(input index, partition, offset)` to
    /// the group, synchronously. A failure means the partitions may have moved.
    fn commit_offsets(&mut self, offsets: &[(usize, i32, i64)]) -> Result<(), Self::Error>;
}

/// Numbers a task's next output. `seq` holds the last sequence used, which is what a commit
/// marker's `output_seq` carries and a restore resumes from ([`super::Resume::output_seq`]):
/// ids start at 1, and 0 means nothing written yet (the ids table's empty mark).
pub fn next_output_seq(seq: &mut u64) -> u64 {
    *seq += 1;
    *seq
}

/// One task's changelog position: the epoch of its restore's fence, which every record and
/// marker it writes carries, and the sequence number of its next commit.
#[derive(Debug)]
pub struct TaskLog {
    partition: i32,
    stores: usize,
    epoch: u64,
    next_seq: u64,
    /// A rebuild after `sluice replay`: restated in every marker while the input is below
    /// its `first_run_end`.
    rebuild: Rebuild,
}

/// One task's part of a [`commit`].
pub struct TaskCommit<'a> {
    /// The input topic's index, for the offset commit.
    pub input: usize,
    pub partition: i32,
    /// The next input offset: what the marker and the offset commit carry.
    pub input_end: i64,
    /// The last output sequence used ([`next_output_seq`]).
    pub output_seq: u64,
    /// The task's log and its tables in store order; `None` for a task without state.
    pub state: Option<(&'a mut TaskLog, Vec<&'a mut dyn AnyTable>)>,
}

/// Commits `tasks` together: steps 2, 3, 5 and 4 of the protocol, in that order. On an error
/// nothing more is written; which records reached the broker is unknown, so the caller must
/// drop its tasks and restore them.
pub fn commit<Io: CommitIo + ?Sized>(
    io: &mut Io,
    tasks: &mut [TaskCommit<'_>],
) -> Result<(), Io::Error> {
    let mut staged = Vec::new();
    for (n, t) in tasks.iter_mut().enumerate() {
        if let Some((log, tables)) = t.state.as_mut() {
            staged.push((n, log.send_records(io, tables, t.input_end, t.output_seq)?));
        }
    }
    io.flush()?;
    io.before_markers()?;
    let markers: Vec<LogRecord> = staged.iter().flat_map(|(_, st)| st.markers()).collect();
    let offsets = if markers.is_empty() {
        Vec::new()
    } else {
        io.send_acked(&markers)?
    };
    if offsets.len() != markers.len() {
        return Err(StateError::Usage(format!(
            "{} offsets for {} markers",
            offsets.len(),
            markers.len()
        ))
        .into());
    }
    // Step 5 before step 4. The markers hold the position, but a failed offset commit is how
    // a member learns it was fenced out of the group (A5). A zombie must learn it before its
    // local stores take a checkpoint: its markers come after the new owner's fence, so a
    // restore ignores them, but a local checkpoint on one would make the next restore here
    // skip the new owner's commits before it.
    let positions: Vec<(usize, i32, i64)> = tasks
        .iter()
        .map(|t| (t.input, t.partition, t.input_end))
        .collect();
    if !positions.is_empty() {
        io.commit_offsets(&positions)?;
    }
    let mut at = 0;
    for (n, st) in staged {
        let k = st.drained.len();
        let (log, tables) = tasks[n].state.as_mut().expect("staged tasks have state");
        log.finish(tables, st, &offsets[at..at + k])?;
        at += k;
    }
    Ok(())
}

impl TaskLog {
    pub(crate) fn new(partition: i32, stores: usize, epoch: u64, next_seq: u64) -> Self {
        TaskLog {
            partition,
            stores,
            epoch,
            next_seq,
            rebuild: Rebuild::NONE,
        }
    }

    /// The log of a task rebuilding after `sluice replay`: its markers restate `rebuild`
    /// until the input reaches its `first_run_end`.
    pub fn with_rebuild(mut self, rebuild: Rebuild) -> Self {
        self.rebuild = rebuild;
        self
    }

    pub fn rebuild(&self) -> Rebuild {
        self.rebuild
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The epoch this task writes in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number the next commit will carry.
    pub fn next_commit_seq(&self) -> u64 {
        self.next_seq
    }

    fn check(&self, tables: usize) -> Result<(), StateError> {
        if tables != self.stores {
            return Err(StateError::Usage(format!(
                "{tables} tables for the {} changelogged stores of task {}",
                self.stores, self.partition
            )));
        }
        Ok(())
    }

    /// Step 2 without the wait: every table's dirty entries go to its changelog, tagged with
    /// this commit. [`commit`] flushes, produces [`Staged::markers`] and hands their offsets
    /// to [`TaskLog::finish`]; the transactional commit does the same inside a transaction.
    pub fn send_records<Io: CommitIo + ?Sized>(
        &self,
        io: &mut Io,
        tables: &mut [&mut dyn AnyTable],
        input_end: i64,
        output_seq: u64,
    ) -> Result<Staged, Io::Error> {
        self.check(tables.len())?;
        let tag = Tag {
            epoch: self.epoch,
            commit_seq: self.next_seq,
            input_end,
        };
        let tag_bytes = tag.encode();
        let mut drained = Vec::with_capacity(tables.len());
        for (store, table) in tables.iter_mut().enumerate() {
            let mut out = Vec::new();
            table.drain_dirty(&mut out);
            for (key, value) in &out {
                io.send_record(self.partition, store, key, value.as_deref(), &tag_bytes)?;
            }
            drained.push(out);
        }
        Ok(Staged {
            partition: self.partition,
            tag,
            output_seq,
            rebuild: self.rebuild.at(input_end),
            drained,
        })
    }

    /// Step 4: each engine's batch with its checkpoint (the offset of its store's marker, in
    /// store order), atomically per store.
    pub fn finish(
        &mut self,
        tables: &mut [&mut dyn AnyTable],
        staged: Staged,
        marker_offsets: &[i64],
    ) -> Result<(), StateError> {
        self.check(tables.len())?;
        if marker_offsets.len() != staged.drained.len() {
            return Err(StateError::Usage(format!(
                "{} marker offsets for {} stores",
                marker_offsets.len(),
                staged.drained.len()
            )));
        }
        let tag = staged.tag;
        for ((table, out), &marker_offset) in
            tables.iter_mut().zip(staged.drained).zip(marker_offsets)
        {
            let engine = table
                .engine_mut()
                .ok_or_else(|| StateError::Usage("commit on a table with no engine".into()))?;
            let mut batch = WriteBatch::with_capacity(out.len());
            for (k, v) in out {
                batch.push(k, v);
            }
            engine.write(
                batch,
                Some(&Checkpoint {
                    marker_offset,
                    commit_seq: tag.commit_seq,
                    epoch: tag.epoch,
                }),
            )?;
        }
        tracing::debug!(
            partition = self.partition,
            commit_seq = tag.commit_seq,
            epoch = tag.epoch,
            input_offset = tag.input_end,
            output_seq = staged.output_seq,
            "Committed changelogs."
        );
        self.next_seq += 1;
        Ok(())
    }
}

/// One store's entries of a commit: key and new value (`None`: deleted).
type Drained = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One task's changelog records sent and not yet marked (between steps 2 and 3).
#[derive(Debug)]
pub struct Staged {
    partition: i32,
    tag: Tag,
    output_seq: u64,
    rebuild: Rebuild,
    drained: Vec<Drained>,
}

impl Staged {
    /// The commit marker of each store, in store order.
    pub fn markers(&self) -> Vec<LogRecord> {
        self.drained
            .iter()
            .enumerate()
            .map(|(store, out)| LogRecord {
                partition: self.partition,
                store,
                record: crate::ChangelogRecord::marker(&Marker {
                    rebuild: self.rebuild,
                    ..commit_marker(&self.tag, self.output_seq, out.len())
                }),
            })
            .collect()
    }

    /// The commit this is part of.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }
}

/// The commit marker of step 3 for a store that wrote `records` data records.
fn commit_marker(tag: &Tag, output_seq: u64, records: usize) -> Marker {
    Marker {
        kind: MarkerKind::Commit,
        commit_seq: tag.commit_seq,
        epoch: tag.epoch,
        input_offset: tag.input_end,
        output_seq,
        records: u32::try_from(records).unwrap_or(u32::MAX),
        rebuild: Rebuild::NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Entry;

    #[test]
    fn markers_carry_the_commit_and_read_back() {
        let tag = Tag {
            epoch: 9,
            commit_seq: 4,
            input_end: 1000,
        };
        let m = commit_marker(&tag, 55, 12);
        assert_eq!(
            (
                m.kind,
                m.commit_seq,
                m.epoch,
                m.input_offset,
                m.output_seq,
                m.records
            ),
            (MarkerKind::Commit, 4, 9, 1000, 55, 12)
        );
        let rec = crate::ChangelogRecord::marker(&m);
        assert_eq!(rec.entry(0, 0).unwrap(), Entry::Marker(m));
    }

    #[test]
    fn markers_restate_a_rebuild_until_the_input_reaches_the_first_runs_end() {
        let rebuild = Rebuild {
            quiet_below: 60,
            first_run_end: 100,
            first_run_seq: 40,
        };
        let log = TaskLog::new(3, 1, 7, 2).with_rebuild(rebuild);
        let marker_at = |input_end: i64| {
            let staged = Staged {
                partition: 3,
                tag: Tag {
                    epoch: 7,
                    commit_seq: 2,
                    input_end,
                },
                output_seq: 9,
                rebuild: log.rebuild().at(input_end),
                drained: vec![Vec::new()],
            };
            match staged.markers()[0].record.entry(0, 0).unwrap() {
                Entry::Marker(m) => m.rebuild,
                e => panic!("{e:?}"),
            }
        };
        assert_eq!(marker_at(0), rebuild);
        assert_eq!(
            marker_at(80),
            rebuild,
            "past quiet_below, not yet the first run's end"
        );
        assert_eq!(marker_at(100), Rebuild::NONE, "the input reached it");
        assert_eq!(marker_at(250), Rebuild::NONE);
    }

    #[test]
    fn output_sequences_start_at_one_after_the_last_used() {
        let mut seq = 0;
        assert_eq!(next_output_seq(&mut seq), 1);
        assert_eq!(next_output_seq(&mut seq), 2);
        assert_eq!(seq, 2, "a marker carries the last sequence used");
    }
}
