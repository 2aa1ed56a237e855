//! A standby's side of the protocol (docs/EXACTLY_ONCE.md, "Standby replicas"): tail each
//! store's changelog into the same [`Restorer`] a restore uses, never write a fence, and
//! write to the local engines only commits no restore can roll back, each with its
//! checkpoint. A new owner's ordinary restore then starts from those checkpoints.

use crate::{Entry, KvStore, MarkerKind, Restorer, StateError};

/// One partition's standby: its stores' engines and the restore state machine fed so far.
pub struct StandbyTask<E> {
    engines: Vec<E>,
    r: Restorer,
    /// Next offset to read, per store.
    next: Vec<i64>,
    /// The last commit written to every store as settled.
    settled: Option<(u64, u64)>,
}

/// What [`StandbyTask::apply`] did with a record.
#[derive(Debug)]
pub enum Applied {
    /// Below the store's next offset: already applied.
    Skipped,
    /// Fed; this many records were written to the engines.
    Written(usize),
    /// The local store cannot continue from here (its checkpoint does not match the
    /// changelog, or the log contradicts it): it was wiped and reads again from offset 0.
    Restarted(StateError),
}

impl<E: KvStore> StandbyTask<E> {
    /// A standby over `engines` (one per store), continuing from their checkpoints (a former
    /// owner's or an earlier standby's) or, without one, from the changelogs' start.
    pub fn open(mut engines: Vec<E>) -> Result<Self, StateError> {
        let n = engines.len();
        let mut r = Restorer::new(n);
        let mut next = vec![0; n];
        for (i, engine) in engines.iter_mut().enumerate() {
            match engine.checkpoint()? {
                Some(cp) => {
                    r.from_checkpoint(i, cp);
                    next[i] = cp.marker_offset;
                }
                None => engine.wipe()?,
            }
        }
        Ok(StandbyTask {
            engines,
            r,
            next,
            settled: None,
        })
    }

    /// The next offset to read, per store.
    pub fn next(&self) -> &[i64] {
        &self.next
    }

    pub fn engines(&self) -> &[E] {
        &self.engines
    }

    pub fn into_engines(self) -> Vec<E> {
        self.engines
    }

    /// Applies the record at `offset` of store `store`'s changelog.
    pub fn apply(
        &mut self,
        store: usize,
        offset: i64,
        entry: Entry<'_>,
    ) -> Result<Applied, StateError> {
        if offset < self.next[store] {
            return Ok(Applied::Skipped);
        }
        let commit_marker = matches!(entry, Entry::Marker(m) if m.kind == MarkerKind::Commit);
        match self.r.feed(store, offset, entry) {
            Ok(()) => self.next[store] = offset + 1,
            Err(e @ (StateError::CheckpointMismatch { .. } | StateError::Inconsistent(_))) => {
                self.engines[store].wipe()?;
                self.r.reset_store(store);
                self.next[store] = 0;
                self.settled = None;
                return Ok(Applied::Restarted(e));
            }
            Err(e) => return Err(e),
        }
        if commit_marker && self.settle() {
            // Every store holds the same newest commit: checkpoint them all at it, so the
            // checkpoint is the owner's last commit (the marker compaction keeps).
            let mut n = 0;
            for j in 0..self.engines.len() {
                let (batch, cp) = self.r.take_settled(j);
                n += batch.len();
                self.engines[j].write(batch, cp.as_ref())?;
            }
            return Ok(Applied::Written(n));
        }
        let (batch, cp) = self.r.take_final(store);
        let n = batch.len();
        if n > 0 || cp.is_some() {
            self.engines[store].write(batch, cp.as_ref())?;
        }
        Ok(Applied::Written(n))
    }

    /// True when every store now holds a newer common commit than the last one written.
    fn settle(&mut self) -> bool {
        match self.r.settled() {
            Some(c) if Some(c) != self.settled => {
                self.settled = Some(c);
                true
            }
            _ => false,
        }
    }
}
