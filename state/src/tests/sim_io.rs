//! The simulated broker's side of the production protocol: `SimIo` implements the
//! protocol's I/O traits over a [`Broker`] in memory, `SimEngine` the engines over disks that
//! survive a crash, and both crash where a test says ([`Crash`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::sim::{Broker, Crash, STORES};
use crate::changelog::TAG_HEADER;
use crate::protocol::{ChangelogIo, CommitIo, LogRecord, RestoreIo};
use crate::{
    ChangelogRecord, Checkpoint, Entry, KeyRange, KvStore, MarkerKind, MemStore, ScanIter,
    StateError, WriteBatch,
};

thread_local! {
    /// Local stores holding a checkpoint that this thread's restores wiped.
    pub(crate) static WIPES: Cell<u64> = const { Cell::new(0) };
}

/// What survives a crash of one store: its local engine's contents.
pub(crate) type Disk = Arc<Mutex<MemStore>>;

pub(crate) fn fresh_engines() -> Vec<Disk> {
    (0..STORES).map(|_| Disk::default()).collect()
}

/// Engines over `disks` for a process with power.
pub(crate) fn sim_engines(disks: &[Disk]) -> Vec<SimEngine> {
    let power = Power::on();
    disks
        .iter()
        .map(|disk| SimEngine {
            disk: disk.clone(),
            power: power.clone(),
        })
        .collect()
}

/// A process's power: how many more checkpointed engine writes it gets before it dies
/// (negative: no limit).
#[derive(Clone)]
pub(crate) struct Power(Arc<AtomicI64>);

impl Power {
    pub(crate) fn on() -> Self {
        Power(Arc::new(AtomicI64::new(-1)))
    }

    pub(crate) fn die_after(&self, writes: i64) {
        self.0.store(writes, Ordering::SeqCst);
    }
}

fn crashed() -> StateError {
    StateError::Unavailable("simulated crash".into())
}

/// A local engine: the store's disk, written only while the process has power.
pub(crate) struct SimEngine {
    pub(crate) disk: Disk,
    pub(crate) power: Power,
}

impl KvStore for SimEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.disk.lock().unwrap().get(key)
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>, StateError> {
        let items: Vec<_> = self.disk.lock().unwrap().scan(range)?.collect();
        Ok(Box::new(items.into_iter()))
    }

    fn write(
        &mut self,
        batch: WriteBatch,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StateError> {
        if checkpoint.is_some() {
            let left = self.power.0.load(Ordering::SeqCst);
            if left == 0 {
                return Err(crashed());
            }
            if left > 0 {
                self.power.0.store(left - 1, Ordering::SeqCst);
            }
        }
        self.disk.lock().unwrap().write(batch, checkpoint)
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        self.disk.lock().unwrap().checkpoint()
    }

    fn wipe(&mut self) -> Result<(), StateError> {
        let mut disk = self.disk.lock().unwrap();
        if disk.checkpoint()?.is_some() {
            WIPES.with(|w| w.set(w.get() + 1));
        }
        disk.wipe()
    }

    fn flush(&self) -> Result<(), StateError> {
        Ok(())
    }
}

/// Writes to the broker in the middle of a restore (a zombie's).
type Hook<'b> = Box<dyn FnOnce(&mut Broker) + 'b>;

/// The broker side of one commit or one restore, crashing at `crash`.
pub(crate) struct SimIo<'b> {
    broker: &'b mut Broker,
    crash: Crash,
    power: Power,
    /// Changelog records sent, not yet flushed.
    pending: Vec<(usize, ChangelogRecord)>,
    /// `send_acked` calls so far.
    calls: usize,
    pub(crate) crashed: bool,
    /// Runs right after the restore's fences are written (zombie writes).
    pub(crate) after_fence: Option<Hook<'b>>,
}

impl<'b> SimIo<'b> {
    pub(crate) fn new(broker: &'b mut Broker, crash: Crash, power: Power) -> Self {
        SimIo {
            broker,
            crash,
            power,
            pending: Vec::new(),
            calls: 0,
            crashed: false,
            after_fence: None,
        }
    }

    fn crash(&mut self) -> StateError {
        self.crashed = true;
        self.power.die_after(0);
        crashed()
    }

    fn append(&mut self, store: usize, record: ChangelogRecord) -> i64 {
        let log = &mut self.broker.changelogs[store];
        log.push(record);
        log.len() as i64 - 1
    }
}

impl ChangelogIo for SimIo<'_> {
    type Error = StateError;

    fn send_acked(&mut self, records: &[LogRecord]) -> Result<Vec<i64>, StateError> {
        self.calls += 1;
        // A crash in the middle of this write: only store 0's records arrive.
        let partial = match self.crash {
            Crash::MidMarkers => true,
            Crash::RestoreMidRepair => self.calls == 2,
            _ => false,
        };
        let mut offsets = Vec::with_capacity(records.len());
        for r in records {
            if !partial || r.store == 0 {
                offsets.push(self.append(r.store, r.record.clone()));
            }
        }
        if partial {
            return Err(self.crash());
        }
        if self.calls == 1 {
            if self.crash == Crash::RestoreAfterFence {
                return Err(self.crash());
            }
            if let Some(f) = self.after_fence.take() {
                f(&mut *self.broker);
            }
        }
        let base_markers = records.iter().all(|r| {
            matches!(r.record.entry(r.store, 0), Ok(Entry::Marker(m)) if m.kind == MarkerKind::Commit)
        });
        if self.crash == Crash::RestoreBeforeCheckpoint && self.calls > 1 && base_markers {
            // Acked, but the process dies before its engines take the checkpoints.
            self.crashed = true;
            self.power.die_after(0);
        }
        Ok(offsets)
    }
}

impl CommitIo for SimIo<'_> {
    fn send_record(
        &mut self,
        _partition: i32,
        store: usize,
        key: &[u8],
        value: Option<&[u8]>,
        tag: &[u8],
    ) -> Result<(), StateError> {
        self.pending.push((
            store,
            ChangelogRecord {
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
                header_name: TAG_HEADER,
                header_value: tag.to_vec(),
            },
        ));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StateError> {
        let queued = std::mem::take(&mut self.broker.queue);
        self.broker.output.extend(queued);
        if self.crash == Crash::AfterOutputs {
            return Err(self.crash());
        }
        for (store, r) in std::mem::take(&mut self.pending) {
            self.append(store, r);
        }
        if self.crash == Crash::AfterRecords {
            return Err(self.crash());
        }
        Ok(())
    }

    fn commit_offsets(&mut self, _offsets: &[(usize, i32, i64)]) -> Result<(), StateError> {
        match self.crash {
            Crash::AfterMarkers => Err(self.crash()),
            Crash::MidEngine => {
                // The process dies after its first store's checkpointed write.
                self.crashed = true;
                self.power.die_after(1);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl RestoreIo for SimIo<'_> {
    fn watermarks(&mut self, store: usize) -> Result<(i64, i64), StateError> {
        Ok((0, self.broker.changelogs[store].len() as i64))
    }

    fn read(
        &mut self,
        store: usize,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(i64, Entry<'_>) -> Result<bool, StateError>,
    ) -> Result<i64, StateError> {
        let log = &self.broker.changelogs[store];
        let end = until.min(log.len() as i64);
        for off in from.max(0)..end {
            if !f(off, log[off as usize].entry(store, off)?)? {
                return Ok(off + 1);
            }
        }
        Ok(until)
    }
}
