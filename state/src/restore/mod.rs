//! Restore as a pure state machine (docs/EXACTLY_ONCE.md has the argument).
//!
//! The runtime feeds each store's changelog in offset order, drains the records that became
//! final into the engine as it goes (memory stays bounded by one commit per store), writes a
//! fence, feeds up to the fence, and asks [`Restorer::finish`] for the [`RestorePlan`]: the
//! commit every store is brought to, where input and output numbering resume, the last
//! records to write and the keys to repair in the changelog.
//!
//! Per store, in log order:
//! - a data record from an epoch lower than the last accepted fence/marker is a zombie write
//!   and ignored;
//! - a commit marker `c` finalises the records of commits `< c`; the records of commit `c`
//!   stay *held* because a later restore may roll that one commit back (a marker is not
//!   proof that the other stores' records of `c` are inside the restore's cut); records of
//!   commits `> c` before it were abandoned by an earlier restore and are dropped;
//! - a marker restating a commit one below the held one rolls the held commit back.
//!
//! `finish` picks `k = min` over stores of the held commit: every store has its marker `k`
//! before the fence, so all records of `k` are too. A store held at `k + 1` drops it.

mod plan;

use std::collections::BTreeSet;

pub use plan::{Progress, RestorePlan, StorePlan};

use crate::{Checkpoint, Entry, Marker, MarkerKind, Rebuild, StateError, Tag, WriteBatch};

/// How often (in records read per store) the progress callback fires.
const PROGRESS_EVERY: u64 = 16_384;

#[derive(Debug)]
struct Rec {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    tag: Tag,
}

#[derive(Debug)]
struct Held {
    marker: Marker,
    /// Where the marker is in the changelog.
    offset: i64,
    records: Vec<Rec>,
    /// Already in the local engine (restore from checkpoint): cannot be rolled back.
    in_engine: bool,
}

#[derive(Debug, Default)]
struct StoreLog {
    expect: Option<Checkpoint>,
    seen_any: bool,
    epoch: u64,
    held: Option<Held>,
    tail: Vec<Rec>,
    ready: WriteBatch,
    /// The newest commit marker whose records are all in `ready` or the engine (a standby
    /// writes it as the engine's checkpoint with them).
    finalized: Option<Checkpoint>,
    fenced: bool,
    read: u64,
    total: u64,
    applied: u64,
    zombies: u64,
    discarded: u64,
}

type ProgressFn = Box<dyn FnMut(&Progress) + Send>;

/// Restore of one task's stores; see the module docs.
pub struct Restorer {
    stores: Vec<StoreLog>,
    fence: Option<u64>,
    max_epoch: u64,
    on_progress: Option<ProgressFn>,
}

impl Restorer {
    pub fn new(stores: usize) -> Self {
        Restorer {
            stores: (0..stores).map(|_| StoreLog::default()).collect(),
            fence: None,
            max_epoch: 0,
            on_progress: None,
        }
    }

    /// The local engine of `store` holds `cp`; the first record fed must be that marker.
    pub fn from_checkpoint(&mut self, store: usize, cp: Checkpoint) {
        let total = self.stores[store].total;
        self.stores[store] = StoreLog {
            expect: Some(cp),
            total,
            ..StoreLog::default()
        };
        self.max_epoch = self.max_epoch.max(cp.epoch);
    }

    /// Forgets what was fed for `store` (after `CheckpointMismatch`: the runtime wipes the
    /// engine and feeds the changelog again from its beginning, fence included).
    pub fn reset_store(&mut self, store: usize) {
        let total = self.stores[store].total;
        self.stores[store] = StoreLog {
            total,
            ..StoreLog::default()
        };
    }

    pub fn set_total(&mut self, store: usize, total: u64) {
        self.stores[store].total = total;
    }

    pub fn on_progress(&mut self, f: impl FnMut(&Progress) + Send + 'static) {
        self.on_progress = Some(Box::new(f));
    }

    pub fn progress(&self, store: usize) -> Progress {
        let s = &self.stores[store];
        Progress {
            store,
            read: s.read,
            total: s.total,
            applied: s.applied,
        }
    }

    /// Highest epoch seen in anything fed so far (markers, fences, tags, checkpoints).
    pub fn max_epoch(&self) -> u64 {
        self.max_epoch
    }

    /// A fresh epoch above every one seen: the counter in the high 48 bits goes up by one and
    /// the low 16 bits carry `nonce` (random per instance), so two restorers racing on the
    /// same log do not pick the same epoch.
    pub fn next_epoch(&self, nonce: u16) -> u64 {
        (((self.max_epoch >> 16) + 1) << 16) | u64::from(nonce)
    }

    /// Declares the epoch of the fence this restore writes; feed each store up to that fence.
    pub fn expect_fence(&mut self, epoch: u64) {
        self.fence = Some(epoch);
    }

    /// Records made final since the last call, to write to `store`'s engine without a
    /// checkpoint (replaying them from the old checkpoint is idempotent).
    pub fn take_ready(&mut self, store: usize) -> WriteBatch {
        std::mem::take(&mut self.stores[store].ready)
    }

    /// For a standby (a warm copy that never writes a fence): the records made final since
    /// the last call and, when a commit marker was finalised meanwhile, the checkpoint that
    /// describes the engine once they are written. A commit is final once a later commit
    /// marker follows it; only the newest commit can still be rolled back, so a checkpoint
    /// taken here stays valid (docs/EXACTLY_ONCE.md, "Standby replicas").
    pub fn take_final(&mut self, store: usize) -> (WriteBatch, Option<Checkpoint>) {
        let s = &mut self.stores[store];
        (std::mem::take(&mut s.ready), s.finalized.take())
    }

    /// For a standby: the commit `(commit_seq, epoch)` every store holds as its newest, if
    /// they all hold the same one. Such a commit cannot be rolled back: a later restore
    /// finds its marker before its fence in every store, so it restores to it or later.
    pub fn settled(&self) -> Option<(u64, u64)> {
        let mut held = self.stores.iter().map(|s| {
            s.held
                .as_ref()
                .map(|h| (h.marker.commit_seq, h.marker.epoch))
        });
        let first = held.next()??;
        held.all(|h| h == Some(first)).then_some(first)
    }

    /// For a standby, once [`Restorer::settled`]: what `store`'s engine needs to be at the
    /// settled commit (the records made final, then that commit's records, which stay held
    /// and are handed out again when they become final) and its checkpoint.
    pub fn take_settled(&mut self, store: usize) -> (WriteBatch, Option<Checkpoint>) {
        let s = &mut self.stores[store];
        let mut batch = std::mem::take(&mut s.ready);
        let Some(h) = s.held.as_ref() else {
            return (batch, s.finalized.take());
        };
        for r in &h.records {
            batch.push(r.key.clone(), r.value.clone());
        }
        s.finalized = None;
        let cp = Checkpoint {
            marker_offset: h.offset,
            commit_seq: h.marker.commit_seq,
            epoch: h.marker.epoch,
        };
        (batch, Some(cp))
    }

    pub fn ready_len(&self, store: usize) -> usize {
        self.stores[store].ready.len()
    }

    /// Feeds the record at `offset` of `store`'s changelog.
    pub fn feed(&mut self, store: usize, offset: i64, entry: Entry<'_>) -> Result<(), StateError> {
        let fence = self.fence;
        let s = &mut self.stores[store];
        s.read += 1;
        let first = !s.seen_any;
        s.seen_any = true;
        if let (true, Some(cp)) = (first, s.expect) {
            let ok = matches!(entry, Entry::Marker(m) if m.kind == MarkerKind::Commit
                && m.commit_seq == cp.commit_seq && m.epoch == cp.epoch)
                && offset == cp.marker_offset;
            if !ok {
                return Err(StateError::CheckpointMismatch {
                    store,
                    reason: format!("expected the marker of commit {} epoch {} at offset {}, read {entry:?} at offset {offset}", cp.commit_seq, cp.epoch, cp.marker_offset),
                });
            }
            let Entry::Marker(marker) = entry else {
                unreachable!("checked above")
            };
            s.epoch = marker.epoch;
            s.held = Some(Held {
                marker,
                offset,
                records: Vec::new(),
                in_engine: true,
            });
            return Ok(());
        }
        if s.fenced {
            // Only zombies write after our fence; the runtime should stop at the fence anyway.
            s.zombies += 1;
            return Ok(());
        }
        match entry {
            Entry::Data { tag, key, value } => {
                self.max_epoch = self.max_epoch.max(tag.epoch);
                if tag.epoch < s.epoch {
                    s.zombies += 1;
                } else {
                    s.tail.push(Rec {
                        key: key.to_vec(),
                        value: value.map(<[u8]>::to_vec),
                        tag,
                    });
                }
            }
            Entry::Marker(m) => {
                self.max_epoch = self.max_epoch.max(m.epoch);
                if m.epoch < s.epoch {
                    s.zombies += 1;
                } else {
                    s.epoch = m.epoch;
                    match m.kind {
                        MarkerKind::Fence => s.fenced = Some(m.epoch) == fence,
                        MarkerKind::Commit => s.on_commit_marker(store, offset, m)?,
                    }
                }
            }
        }
        if s.read % PROGRESS_EVERY == 0 {
            let p = Progress {
                store,
                read: s.read,
                total: s.total,
                applied: s.applied,
            };
            if let Some(f) = self.on_progress.as_mut() {
                f(&p);
            }
        }
        Ok(())
    }

    /// Decides the commit to restore to; see the module docs. Every store must have been fed
    /// up to the fence declared with [`Restorer::expect_fence`].
    pub fn finish(&mut self) -> Result<RestorePlan, StateError> {
        let epoch = self
            .fence
            .ok_or_else(|| StateError::Usage("finish() before expect_fence()".into()))?;
        if let Some(i) = self.stores.iter().position(|s| !s.fenced) {
            return Err(StateError::Usage(format!(
                "store {i} was not fed up to the fence of epoch {epoch}"
            )));
        }
        let target = self
            .stores
            .iter()
            .filter_map(|s| s.held.as_ref().map(|h| h.marker.commit_seq))
            .min();
        // Check everything before changing anything, so a CheckpointMismatch leaves the
        // other stores' state intact for the retry.
        let mut resume: Option<Marker> = None;
        for (i, s) in self.stores.iter().enumerate() {
            let (Some(h), Some(k)) = (&s.held, target) else {
                continue;
            };
            let c = h.marker.commit_seq;
            if c == k {
                if let Some(r) = resume.filter(|r| {
                    (r.input_offset, r.output_seq) != (h.marker.input_offset, h.marker.output_seq)
                }) {
                    return Err(StateError::Inconsistent(format!(
                        "markers of commit {k} disagree: {r:?} vs {:?} in store {i}",
                        h.marker
                    )));
                }
                resume = Some(h.marker);
            } else if c == k + 1 && h.in_engine {
                return Err(StateError::CheckpointMismatch {
                    store: i,
                    reason: format!(
                        "the local store holds commit {c}, which is rolled back to {k}"
                    ),
                });
            } else if c > k + 1 {
                return Err(StateError::Inconsistent(format!("store {i} is at commit {c} while another store is at {k}; stores may differ by one commit at most")));
            }
        }
        if target.is_some() && self.stores.iter().any(|s| s.held.is_none()) {
            tracing::warn!(commit_seq = target, "A store has no marker while others do: a new store or a lost changelog; it starts empty.");
        }
        let mut discarded_input_end: Option<i64> = None;
        let mut plans = Vec::with_capacity(self.stores.len());
        for s in &mut self.stores {
            let mut plan = StorePlan {
                zombie_records: s.zombies,
                ..StorePlan::default()
            };
            let mut repair = BTreeSet::new();
            let mut discard = |r: Rec, plan: &mut StorePlan| {
                discarded_input_end = discarded_input_end.max(Some(r.tag.input_end));
                plan.discarded_records += 1;
                repair.insert(r.key);
            };
            if let Some(h) = s.held.take() {
                if Some(h.marker.commit_seq) == target {
                    s.finalize(h.records);
                } else {
                    h.records.into_iter().for_each(|r| discard(r, &mut plan));
                }
            }
            for r in std::mem::take(&mut s.tail) {
                // Only repair records of an interrupted restore sit after a marker with a
                // commit number at or below the target; they hold restored values.
                if target.is_some_and(|k| r.tag.commit_seq <= k) {
                    s.finalize(std::iter::once(r));
                } else {
                    discard(r, &mut plan);
                }
            }
            plan.discarded_records += s.discarded;
            plan.apply = std::mem::take(&mut s.ready);
            plan.applied_records = s.applied;
            plan.repair_keys = repair.into_iter().collect();
            plans.push(plan);
        }
        tracing::info!(
            commit_seq = target.unwrap_or(0),
            epoch,
            discarded = plans.iter().map(|p| p.discarded_records).sum::<u64>(),
            zombies = plans.iter().map(|p| p.zombie_records).sum::<u64>(),
            "Restore decided."
        );
        Ok(RestorePlan {
            commit_seq: target.unwrap_or(0),
            epoch,
            input_offset: resume.map(|m| m.input_offset),
            output_seq: resume.map_or(0, |m| m.output_seq),
            rebuild: resume.map_or(Rebuild::NONE, |m| m.rebuild),
            stores: plans,
            discarded_input_end,
        })
    }
}

impl StoreLog {
    fn finalize(&mut self, records: impl IntoIterator<Item = Rec>) {
        for r in records {
            self.ready.push(r.key, r.value);
            self.applied += 1;
        }
    }

    fn on_commit_marker(&mut self, store: usize, offset: i64, m: Marker) -> Result<(), StateError> {
        let c = m.commit_seq;
        if let Some(h) = self.held.take() {
            let hc = h.marker.commit_seq;
            if c == hc
                && h.in_engine
                && (m.input_offset, m.output_seq) != (h.marker.input_offset, h.marker.output_seq)
            {
                // A restore restates the commit it restored to with the same position; another
                // position means the local store took its checkpoint on a zombie's commit (an
                // instance that committed after a newer fence, e.g. one started during
                // `sluice replay`).
                return Err(StateError::CheckpointMismatch {
                    store,
                    reason: format!(
                        "commit {hc} of the local store is at input {} output {}, the changelog's at input {} output {}",
                        h.marker.input_offset, h.marker.output_seq, m.input_offset, m.output_seq
                    ),
                });
            }
            if c >= hc {
                self.finalize(h.records);
                self.finalized = Some(Checkpoint {
                    marker_offset: h.offset,
                    commit_seq: hc,
                    epoch: h.marker.epoch,
                });
            } else if h.in_engine {
                return Err(StateError::CheckpointMismatch {
                    store,
                    reason: format!(
                        "commit {hc} of the local store was rolled back to {c} by a later restore"
                    ),
                });
            } else if c + 1 == hc {
                // An earlier restore rolled the held commit back (and repaired its keys).
                self.discarded += h.records.len() as u64;
            } else {
                return Err(StateError::Inconsistent(format!(
                    "store {store}: marker of commit {c} after commit {hc}"
                )));
            }
        }
        let mut held = Vec::new();
        for r in std::mem::take(&mut self.tail) {
            match r.tag.commit_seq.cmp(&c) {
                std::cmp::Ordering::Less => self.finalize(std::iter::once(r)),
                std::cmp::Ordering::Equal => held.push(r),
                std::cmp::Ordering::Greater => self.discarded += 1,
            }
        }
        self.held = Some(Held {
            marker: m,
            offset,
            records: held,
            in_engine: false,
        });
        Ok(())
    }
}
