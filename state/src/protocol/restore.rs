//! The restore sequence (docs/EXACTLY_ONCE.md, "Restore", steps 1-7): from the local
//! checkpoints (when they provably match) or the changelogs' start, up to a fence in a new
//! epoch; then the [`Restorer`]'s decision, the repair records, a base marker per store and
//! the new checkpoints. Every read ends at an offset known before it starts (the high
//! watermark, or our fence's acked offset), so a restore never waits for records that may
//! not come.

use crate::{Checkpoint, Entry, KvStore, Marker, Progress, Restorer, StateError, WriteBatch};

use super::{ChangelogIo, LogRecord, TaskLog};

/// Final records are written to the engines in batches of this many.
const WRITE_EVERY: usize = 4096;
/// Progress is reported at least this often (records read per store).
const REPORT_EVERY: u64 = 16_384;

/// The reads of a restore, besides [`ChangelogIo::send_acked`] for fences, repair records
/// and base markers.
pub trait RestoreIo: ChangelogIo {
    /// Low and high watermarks of store `store`'s changelog partition.
    fn watermarks(&mut self, store: usize) -> Result<(i64, i64), Self::Error>;

    /// Reads store `store`'s changelog partition from offset `from`, handing each record
    /// below `until` to `f` in offset order until `f` returns false. Returns the offset after
    /// the last record handed over when `f` stopped it, else `until` (also when the partition
    /// ends before it: nothing is left below `until`).
    fn read(
        &mut self,
        store: usize,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(i64, Entry<'_>) -> Result<bool, StateError>,
    ) -> Result<i64, Self::Error>;
}

/// Where a restored task resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Next input offset; `None` when the task never committed (use the group's position).
    pub input_offset: Option<i64>,
    /// The last output sequence used: the next output is numbered one higher
    /// ([`super::next_output_seq`]).
    pub output_seq: u64,
    /// Set while the task rebuilds after `sluice replay` ([`crate::Rebuild`]).
    pub rebuild: crate::Rebuild,
}

/// What a restore did, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreStats {
    /// Changelog records read, all stores.
    pub read: u64,
    /// Every store continued from its local checkpoint (none read from the start).
    pub from_local: bool,
    pub repaired: usize,
    pub discarded: u64,
    pub zombies: u64,
}

/// A restored task: its log, where it resumes, its engines (at the restored commit, with
/// their checkpoints) and what the restore did.
#[derive(Debug)]
pub struct Restored<E> {
    pub log: TaskLog,
    pub resume: Resume,
    pub engines: Vec<E>,
    pub stats: RestoreStats,
}

struct Reader<'a, 'p, Io: ?Sized, E> {
    io: &'a mut Io,
    partition: i32,
    r: Restorer,
    engines: Vec<E>,
    low: Vec<i64>,
    /// Our fence's offset per store, once acked (its content is known: no need to read it).
    fence_at: Vec<Option<i64>>,
    fence_epoch: u64,
    /// Per store: still continuing from a local checkpoint (no wipe so far).
    from_local: Vec<bool>,
    progress: &'a mut (dyn FnMut(&Progress) + 'p),
}

/// Restores task `partition`'s stores into `engines` (one per store, in store order), fences
/// older epochs and says where input and output numbering resume. `nonce` is random per
/// process, so two racing restores pick different epochs.
pub fn restore<Io: RestoreIo + ?Sized, E: KvStore>(
    io: &mut Io,
    partition: i32,
    engines: Vec<E>,
    nonce: u16,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Restored<E>, Io::Error> {
    let n = engines.len();
    let mut rd = Reader {
        io,
        partition,
        r: Restorer::new(n),
        engines,
        low: vec![0; n],
        fence_at: vec![None; n],
        fence_epoch: 0,
        from_local: vec![false; n],
        progress,
    };
    // Steps 1-2: from the checkpoint (or the start) up to the end read now.
    let mut ends = Vec::with_capacity(n);
    for i in 0..n {
        let (low, high) = rd.io.watermarks(i)?;
        rd.low[i] = low;
        ends.push(high);
        let mut start = low;
        match rd.engines[i].checkpoint()? {
            Some(cp) if cp.marker_offset >= low && cp.marker_offset <= high => {
                rd.r.from_checkpoint(i, cp);
                rd.from_local[i] = true;
                start = cp.marker_offset;
            }
            Some(cp) => {
                tracing::info!(
                    store = i,
                    partition,
                    marker_offset = cp.marker_offset,
                    low,
                    high,
                    "Local checkpoint is outside the changelog; restoring from the start."
                );
                rd.engines[i].wipe()?;
            }
            None => rd.engines[i].wipe()?,
        }
        rd.r.set_total(i, (high - start).max(0) as u64);
        rd.feed(i, start, high)?;
    }
    // Step 3: fence every changelog partition in a fresh epoch.
    let epoch = rd.r.next_epoch(nonce);
    rd.r.expect_fence(epoch);
    rd.fence_epoch = epoch;
    let fences: Vec<LogRecord> = (0..n)
        .map(|store| LogRecord {
            partition,
            store,
            record: crate::ChangelogRecord::marker(&Marker::fence(epoch)),
        })
        .collect();
    let offsets = rd.io.send_acked(&fences)?;
    for (i, off) in offsets.into_iter().enumerate().take(n) {
        rd.fence_at[i] = Some(off);
    }
    // Step 4: whatever landed between the end we read and our fence, fence included.
    for (i, &end) in ends.iter().enumerate() {
        let fence = rd.fence(i)?;
        rd.feed(i, end, fence + 1)?;
    }
    // Step 5: decide; a local store that turns out not to match is restored from scratch.
    let mut plan = loop {
        match rd.r.finish() {
            Ok(plan) => break plan,
            Err(StateError::CheckpointMismatch { store, reason }) => {
                tracing::info!(
                    store,
                    partition,
                    reason,
                    "Local store does not match its changelog; restoring it from the start."
                );
                let to = rd.fence(store)? + 1;
                rd.restart(store)?;
                let from = rd.low[store];
                rd.feed(store, from, to)?;
            }
            Err(e) => return Err(e.into()),
        }
    };
    // Step 6: last records, repairs, base markers, checkpoints.
    let input = plan.input_offset.unwrap_or(-1);
    let tag = plan.repair_tag(input);
    let mut repairs: Vec<LogRecord> = Vec::new();
    let mut counts = Vec::with_capacity(n);
    for (i, sp) in plan.stores.iter_mut().enumerate() {
        rd.engines[i].write(std::mem::take(&mut sp.apply), None)?;
        let recs = sp.repair_records(&rd.engines[i], &tag)?;
        counts.push(recs.len() as u32);
        repairs.extend(recs.into_iter().map(|record| LogRecord {
            partition,
            store: i,
            record,
        }));
    }
    if !repairs.is_empty() {
        rd.io.send_acked(&repairs)?;
    }
    let bases: Vec<LogRecord> = counts
        .iter()
        .enumerate()
        .map(|(store, &c)| LogRecord {
            partition,
            store,
            record: crate::ChangelogRecord::marker(&plan.base_marker(input, c)),
        })
        .collect();
    let offsets = rd.io.send_acked(&bases)?;
    for (engine, marker_offset) in rd.engines.iter_mut().zip(offsets) {
        let cp = Checkpoint {
            marker_offset,
            commit_seq: plan.commit_seq,
            epoch: plan.epoch,
        };
        engine.write(WriteBatch::new(), Some(&cp))?;
    }
    for i in 0..n {
        rd.report(i);
    }
    let stats = RestoreStats {
        read: (0..n).map(|i| rd.r.progress(i).read).sum(),
        from_local: rd.from_local.iter().all(|l| *l),
        repaired: repairs.len(),
        discarded: plan.stores.iter().map(|s| s.discarded_records).sum(),
        zombies: plan.stores.iter().map(|s| s.zombie_records).sum(),
    };
    Ok(Restored {
        log: TaskLog::new(partition, n, plan.epoch, plan.commit_seq + 1).with_rebuild(plan.rebuild),
        resume: Resume {
            input_offset: plan.input_offset.filter(|o| *o >= 0),
            output_seq: plan.output_seq,
            rebuild: plan.rebuild,
        },
        engines: rd.engines,
        stats,
    })
}

impl<Io: RestoreIo + ?Sized, E: KvStore> Reader<'_, '_, Io, E> {
    fn fence(&self, i: usize) -> Result<i64, Io::Error> {
        self.fence_at[i]
            .ok_or_else(|| StateError::Usage(format!("no fence offset for store {i}")).into())
    }

    fn report(&mut self, i: usize) {
        (self.progress)(&self.r.progress(i));
    }

    /// Wipes store `i` and forgets what was fed, after a checkpoint mismatch.
    fn restart(&mut self, i: usize) -> Result<(), StateError> {
        self.from_local[i] = false;
        self.engines[i].wipe()?;
        self.r.reset_store(i);
        Ok(())
    }

    /// Restarts store `i` at the low watermark, to be read up to `until`.
    fn mismatch(&mut self, i: usize, until: i64) -> Result<i64, StateError> {
        tracing::info!(
            store = i,
            partition = self.partition,
            "Local checkpoint does not match the changelog; restoring the store from the start."
        );
        self.restart(i)?;
        let low = self.low[i];
        self.r.set_total(i, (until - low).max(0) as u64);
        Ok(low)
    }

    /// Feeds store `i`'s changelog records with offsets in `[from, until)`, writing final
    /// records as they fill a batch. A checkpoint mismatch wipes the store and starts over
    /// at the low watermark, up to the same `until`.
    fn feed(&mut self, i: usize, from: i64, until: i64) -> Result<(), Io::Error> {
        let mut at = from;
        while at < until {
            if self.fence_at[i] == Some(at) {
                // Our own fence, acked at this offset: known without reading it.
                let fence = Entry::Marker(Marker::fence(self.fence_epoch));
                at = match self.r.feed(i, at, fence) {
                    Ok(()) => at + 1,
                    Err(StateError::CheckpointMismatch { .. }) => self.mismatch(i, until)?,
                    Err(e) => return Err(e.into()),
                };
                continue;
            }
            let stop = match self.fence_at[i] {
                Some(f) if f > at && f < until => f,
                _ => until,
            };
            at = self.read(i, at, stop, until)?;
        }
        let batch = self.r.take_ready(i);
        if !batch.is_empty() {
            self.engines[i].write(batch, None)?;
        }
        self.report(i);
        Ok(())
    }

    /// Reads `[at, stop)` into the restorer; on a checkpoint mismatch restarts the store
    /// (to be read up to `until`). Returns where to go on reading.
    fn read(&mut self, i: usize, at: i64, stop: i64, until: i64) -> Result<i64, Io::Error> {
        let mut mismatch = false;
        let (r, engines, progress) = (&mut self.r, &mut self.engines, &mut *self.progress);
        let reached = self.io.read(i, at, stop, &mut |off, entry| {
            match r.feed(i, off, entry) {
                Ok(()) => {}
                Err(StateError::CheckpointMismatch { .. }) => {
                    mismatch = true;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
            if r.ready_len(i) >= WRITE_EVERY {
                engines[i].write(r.take_ready(i), None)?;
            }
            let p = r.progress(i);
            if p.read % REPORT_EVERY == 0 {
                progress(&p);
            }
            Ok(true)
        })?;
        if mismatch {
            return Ok(self.mismatch(i, until)?);
        }
        Ok(reached)
    }
}
