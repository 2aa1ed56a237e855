//! The runtime's restore sequence against the simulated broker (steps 1-7 of "Restore" in
//! docs/EXACTLY_ONCE.md).

use super::sim::{Broker, Crash, Task, STORES};
use crate::{
    CacheConfig, CachedStore, ChangelogRecord, Checkpoint, KvStore, Marker, MemStore, RestorePlan,
    Restorer, StateError, WriteBatch,
};

thread_local! {
    /// Local stores this thread's restores found not matching their changelog and wiped.
    pub(crate) static WIPES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Feeds `log[from..to]`; on a checkpoint mismatch wipes the engine and starts over at 0.
fn feed(
    r: &mut Restorer,
    i: usize,
    log: &[ChangelogRecord],
    engine: &mut MemStore,
    from: usize,
    to: usize,
) -> Result<(), StateError> {
    let mut at = from;
    while at < to {
        let rec = &log[at];
        let entry = rec.entry(i, at as i64)?;
        match r.feed(i, at as i64, entry) {
            Ok(()) => at += 1,
            Err(StateError::CheckpointMismatch { .. }) => {
                WIPES.with(|w| w.set(w.get() + 1));
                engine.wipe()?;
                r.reset_store(i);
                at = 0;
            }
            Err(e) => return Err(e),
        }
        if r.ready_len(i) >= 64 {
            engine.write(r.take_ready(i), None)?;
        }
    }
    engine.write(r.take_ready(i), None)
}

/// Outcome of a simulated restore: the task, or the local engines as a crash left them.
pub(crate) type Restored = Result<Task, Vec<MemStore>>;

/// The runtime's restore sequence. Returns `Ok(Err(engines))` when it crashed at `crash`.
pub(crate) fn restore(
    broker: &mut Broker,
    engines: Vec<MemStore>,
    nonce: u16,
    crash: Crash,
) -> Result<Restored, StateError> {
    restore_with(broker, engines, nonce, crash, |_| {})
}

/// [`restore`] with a hook that runs right after the fences are written (zombie writes).
pub(crate) fn restore_with(
    broker: &mut Broker,
    mut engines: Vec<MemStore>,
    nonce: u16,
    crash: Crash,
    after_fence: impl FnOnce(&mut Broker),
) -> Result<Restored, StateError> {
    let mut r = Restorer::new(STORES);
    let mut start = [0usize; STORES];
    for (i, e) in engines.iter().enumerate() {
        if let Some(cp) = e.checkpoint()? {
            r.from_checkpoint(i, cp);
            start[i] = cp.marker_offset as usize;
        }
    }
    let mut ends = [0usize; STORES];
    for i in 0..STORES {
        ends[i] = broker.changelogs[i].len();
        let (log, engine) = (&broker.changelogs[i], &mut engines[i]);
        if start[i] > log.len() {
            // The checkpoint points past the log end: the topic was recreated.
            engine.wipe()?;
            start[i] = 0;
            r.reset_store(i);
        }
        feed(&mut r, i, log, engine, start[i], ends[i])?;
    }
    let epoch = r.next_epoch(nonce);
    r.expect_fence(epoch);
    for log in &mut broker.changelogs {
        log.push(ChangelogRecord::marker(&Marker::fence(epoch)));
    }
    if crash == Crash::RestoreAfterFence {
        return Ok(Err(engines));
    }
    after_fence(broker);
    for i in 0..STORES {
        let to = broker.changelogs[i].len();
        feed(
            &mut r,
            i,
            &broker.changelogs[i],
            &mut engines[i],
            ends[i],
            to,
        )?;
    }
    let plan = loop {
        match r.finish() {
            Ok(p) => break p,
            Err(StateError::CheckpointMismatch { store, .. }) => {
                WIPES.with(|w| w.set(w.get() + 1));
                engines[store].wipe()?;
                r.reset_store(store);
                let to = broker.changelogs[store].len();
                feed(
                    &mut r,
                    store,
                    &broker.changelogs[store],
                    &mut engines[store],
                    0,
                    to,
                )?;
            }
            Err(e) => return Err(e),
        }
    };
    finish_restore(broker, engines, plan, crash)
}

fn finish_restore(
    broker: &mut Broker,
    mut engines: Vec<MemStore>,
    plan: RestorePlan,
    crash: Crash,
) -> Result<Restored, StateError> {
    let input_offset = plan.input_offset.unwrap_or(0);
    let tag = plan.repair_tag(input_offset);
    let mut offsets = [0i64; STORES];
    for (i, (sp, engine)) in plan.stores.iter().zip(&mut engines).enumerate() {
        engine.write(sp.apply.clone(), None)?;
        let repairs = sp.repair_records(engine, &tag)?;
        let n = repairs.len() as u32;
        broker.changelogs[i].extend(repairs);
        if i == 0 && crash == Crash::RestoreMidRepair {
            return Ok(Err(engines));
        }
        offsets[i] = broker.changelogs[i].len() as i64;
        broker.changelogs[i].push(ChangelogRecord::marker(&plan.base_marker(input_offset, n)));
    }
    if crash == Crash::RestoreBeforeCheckpoint {
        return Ok(Err(engines));
    }
    for (i, engine) in engines.iter_mut().enumerate() {
        engine.write(
            WriteBatch::new(),
            Some(&Checkpoint {
                marker_offset: offsets[i],
                commit_seq: plan.commit_seq,
                epoch: plan.epoch,
            }),
        )?;
    }
    Ok(Ok(Task {
        stores: engines
            .into_iter()
            .map(|e| CachedStore::new(e, CacheConfig::default()))
            .collect(),
        epoch: plan.epoch,
        commit_seq: plan.commit_seq,
        input_pos: input_offset as usize,
        output_seq: plan.output_seq,
        pending_outputs: Vec::new(),
    }))
}
