//! Runs one stage: a consumer in the stage's group, a task per owned input partition, and
//! commits every `commit_interval` or `max_batch` records.
//!
//! Rebalances are handled inside the consumer's poll, on this thread: a revoked task commits
//! and closes before the partition can be given to another instance (so it stops writing
//! first), and an assigned task restores its stores before its first record is processed.
//!
//! `exactly_once_transactional` swaps the commit for the one in `txn.rs`; `sluice backfill`
//! bounds the input with `bounded.rs`.

mod bounded;
mod txn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_connectors::kafka::{
    consumer_config, ClientOptions, IdWriter, MessageId, TrackedProducer, ID_HEADER,
};
use sluice_topology::Guarantee;

use super::changelog::{restore_task, KafkaCommit, LogEnv, RestoreProgress, TaskLog};
use super::emit::Emitter;
use super::fluvio::{FluvioInputs, Readers};
use super::fluvio_out::{FluvioOutputs, TaskOutputs};
use super::lag::{self, BatchTimes, StageLag};
use super::pause;
use super::processor::{Input, Processor};
use super::standby::{Standbys, TICK_EVERY};
use super::RuntimeError;
use crate::metrics::METRICS;
use sluice_state::protocol::{self, TaskCommit};
use sluice_state::table::AnyTable;
use sluice_state::{accept_id, ids_table, IdsTable, Rebuild};

pub use bounded::{Ends, StageBounds};
pub use txn::transactional_id;

use bounded::Bounded;

/// How often idle tasks are offered an idle tick (`Processor::idle`).
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How often a bounded stage checks whether it has committed its whole range.
const BOUND_CHECK_EVERY: Duration = Duration::from_millis(200);

/// Builds the processor of one task (input partition).
pub type ProcessorFactory =
    Box<dyn Fn(i32) -> Result<Box<dyn Processor>, RuntimeError> + Send + Sync>;

/// Told of restore progress: stage, partition, progress of one store.
pub type RestoreCallback = Arc<dyn Fn(&str, i32, RestoreProgress<'_>) + Send + Sync>;

/// A stage as the runtime runs it.
pub struct StageDef {
    pub app: String,
    pub name: String,
    pub inputs: Vec<String>,
    /// Output topics by port.
    pub outputs: Vec<String>,
    pub dead_letter: Option<String>,
    pub guarantee: Guarantee,
    /// The producer's `transactional.id` ([`transactional_id`]): `Some` exactly when
    /// `guarantee` is `ExactlyOnceTransactional`.
    pub transactional_id: Option<String>,
    pub commit_interval: Duration,
    pub max_batch: usize,
    /// Standby replicas per stateful task on other instances (`src/runtime/standby.rs`).
    pub standby_replicas: u32,
    /// Drop upstream records whose `sluice.id` was already applied (`ids` store first).
    pub dedup_ids: bool,
    pub opts: ClientOptions,
    /// Changelog I/O; `None` for stages without state.
    pub log: Option<LogEnv>,
    pub factory: ProcessorFactory,
    /// Called with restore progress (for a progress bar).
    pub on_restore: Option<RestoreCallback>,
    /// Set once the first assignment is restored (readiness).
    pub ready: Arc<AtomicBool>,
    /// On a clean stop, leave the consumer group even as a static member (scale-in: the
    /// instance is not coming back, so its partitions should move at once). A static member
    /// otherwise stays in the group so a restart within the session timeout gets its
    /// partitions back without a rebalance; a dynamic member always leaves.
    pub leave_group: bool,
    /// Set when some inputs are on Fluvio (`runtime/fluvio.rs`).
    pub fluvio: Option<FluvioInputs>,
    /// Set when some outputs are on Fluvio (`runtime/fluvio_out.rs`); their ends are the
    /// last of the stage's stores.
    pub fluvio_outputs: Option<FluvioOutputs>,
    /// Bounded input (`sluice backfill`): the stage stops by itself once it has committed
    /// every input partition up to these ends. `None`: runs until stopped.
    pub bounds: Option<Arc<StageBounds>>,
}

struct Task {
    processor: Box<dyn Processor>,
    ids: Option<IdsTable>,
    log: Option<TaskLog>,
    /// Records below this offset are already in the restored state.
    skip_below: i64,
    /// Next offset to read, once something was processed.
    next_offset: Option<i64>,
    output_seq: u64,
    /// Set while the task rebuilds after `sluice replay` (docs/REPLAY.md): what it emits while
    /// everything read is below `quiet_below` is numbered, not written; once the input reaches
    /// `first_run_end` the numbering goes on from at least `first_run_seq`.
    rebuild: Rebuild,
    /// Wall clock of the task's last input record or idle tick (idle closing).
    idle_since: Instant,
    /// Input timestamps since the last commit (`sluice_latency_ms`).
    times: BatchTimes,
    /// The task's outputs on Fluvio, and the table of their ends (its last store).
    fluvio: Option<TaskOutputs>,
}

impl Task {
    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        let mut t: Vec<&mut dyn AnyTable> = Vec::new();
        if let Some(ids) = self.ids.as_mut() {
            t.push(ids);
        }
        t.extend(self.processor.tables());
        if let Some(f) = self.fluvio.as_mut() {
            t.push(f.table());
        }
        t
    }

    /// Whether what the task emits now was written by the first run (a replay's rebuild):
    /// everything read so far is below the rebuild's `quiet_below`.
    fn quiet(&self) -> bool {
        self.rebuild.is_active()
            && self.next_offset.unwrap_or(self.skip_below.max(0)) <= self.rebuild.quiet_below
    }

    /// After the record at `offset`: a rebuild that reached the first run's position numbers
    /// on from at least where the first run was, so its ids are never given again.
    fn end_rebuild_at(&mut self, stage: &str, partition: i32, offset: i64) {
        if !self.rebuild.is_active() || offset + 1 < self.rebuild.first_run_end {
            return;
        }
        let r = std::mem::replace(&mut self.rebuild, Rebuild::NONE);
        tracing::info!(
            stage,
            partition,
            offset = r.first_run_end,
            output_seq = self.output_seq,
            first_run_seq = r.first_run_seq,
            "Rebuild after the replay reached where the first run stood."
        );
        self.output_seq = self.output_seq.max(r.first_run_seq);
    }
}

struct Inner {
    def: StageDef,
    /// The topics the stage's consumer subscribes to, by input index: the input itself, or
    /// its claim topic for an input on Fluvio.
    kafka_inputs: Vec<String>,
    /// Readers of the owned partitions of inputs on Fluvio.
    readers: Option<Readers>,
    producer: TrackedProducer,
    /// By (input index, partition).
    tasks: HashMap<(usize, i32), Task>,
    out_counters: Vec<IntCounter>,
    in_counter: IntCounter,
    id_key: Vec<u8>,
    /// Writes the `sluice.id` of each output (the stage name laid down once).
    id_buf: IdWriter,
    /// The first error inside a rebalance callback; the loop returns it.
    failed: Option<RuntimeError>,
    /// Set when the run failed: state may be mid-batch, so nothing may be committed.
    poisoned: bool,
    standbys: Standbys,
    /// When this run of the stage last knew it was not paused (see `pause`).
    pause_mark: pause::Mark,
    lag: Arc<StageLag>,
    bounded: Option<Bounded>,
}

struct Ctx {
    inner: Arc<Mutex<Inner>>,
    lag: Arc<StageLag>,
}

impl ClientContext for Ctx {
    /// Served by the stage's own `poll` every `lag::STATS_INTERVAL_MS`.
    fn stats_raw(&self, statistics: &[u8]) {
        self.lag.on_stats(statistics);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.failed.is_none() && !inner.poisoned {
                // A lost assignment (our session expired, e.g. the process was paused) or a
                // pause long enough to have lost it: another instance may already own these
                // partitions, so nothing of the open batch may be written.
                let why = if consumer.assignment_lost() {
                    Some("the group expired this member's session".to_string())
                } else {
                    pause::since(inner.pause_mark)
                        .map(|d| format!("the process was paused for {d:?}"))
                };
                if let Some(why) = why {
                    let e = inner.membership_lost(why);
                    inner.failed = Some(e);
                }
            }
            if inner.failed.is_some() || inner.poisoned {
                inner.drop_tasks();
                return;
            }
            // Commit everything owned, then drop the revoked tasks: after this returns another
            // instance may restore them, so nothing may be written for them afterwards.
            if let Err(e) = inner.commit(Some(consumer)) {
                inner.failed = Some(e);
                return;
            }
            for el in tpl.elements() {
                if let Some(i) = inner.input_index(el.topic()) {
                    if let Some(r) = inner.readers.as_mut() {
                        r.stop(i, el.partition());
                    }
                    if let Some(mut task) = inner.tasks.remove(&(i, el.partition())) {
                        for t in task.tables() {
                            if let Some(e) = t.detach() {
                                let _ = e.flush();
                            }
                        }
                    }
                }
            }
            inner.owned_changed();
            inner.standbys.replace_soon();
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.failed.is_some() {
                return;
            }
            // A restore can outlast the transaction timeout: commit what the tasks kept
            // processed first, so no transaction stays open across it.
            if inner.def.transactional_id.is_some() && !inner.tasks.is_empty() && !inner.poisoned {
                if let Err(e) = inner.commit(Some(consumer)) {
                    inner.failed = Some(e);
                    return;
                }
            }
            // Claim partitions are never fetched (`runtime/fluvio.rs`).
            let mut claimed = TopicPartitionList::new();
            for el in tpl.elements() {
                let Some(i) = inner.input_index(el.topic()) else {
                    continue;
                };
                if inner.readers.as_ref().and_then(|r| r.claim(i)).is_some() {
                    claimed.add_partition(el.topic(), el.partition());
                }
                if inner.tasks.contains_key(&(i, el.partition())) {
                    continue;
                }
                let Inner { def, standbys, .. } = &mut *inner;
                if let Some(env) = def.log.as_ref() {
                    if let Err(e) = standbys.release(env, el.partition()) {
                        inner.failed = Some(e);
                        return;
                    }
                }
                match inner.open_task(el.partition()) {
                    Ok(task) => {
                        let from = task.skip_below;
                        inner.tasks.insert((i, el.partition()), task);
                        if inner.readers.is_some() {
                            if let Err(e) = inner.start_reader(consumer, i, el.partition(), from) {
                                inner.failed = Some(e);
                                return;
                            }
                        }
                    }
                    Err(RuntimeError::Interrupted) => {
                        // Stopping: the task is not opened and nothing is committed for it;
                        // the next start restores it again (a restore is safe to cut short).
                        tracing::info!(stage = %inner.def.name, partition = el.partition(), "Shutdown interrupted the restore of this partition; it restores again at the next start.");
                        continue;
                    }
                    Err(e) => {
                        inner.failed = Some(e);
                        return;
                    }
                }
            }
            if claimed.count() > 0 {
                if let Err(e) = consumer.pause(&claimed) {
                    inner.failed = Some(e.into());
                    return;
                }
            }
            inner.owned_changed();
            inner.standbys.replace_soon();
            inner.def.ready.store(true, Ordering::Relaxed);
        }
    }
}

impl Inner {
    /// The input index of a topic the consumer was assigned.
    fn input_index(&self, topic: &str) -> Option<usize> {
        self.kafka_inputs.iter().position(|t| t == topic)
    }

    /// Starts reading Fluvio partition `partition` of input `i` where the task resumes:
    /// its restored position (`restored`, from the commit markers), else the position the
    /// group committed on the claim partition, else the beginning.
    fn start_reader(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        i: usize,
        partition: i32,
        restored: i64,
    ) -> Result<(), RuntimeError> {
        let Some(claim) = self
            .readers
            .as_ref()
            .and_then(|r| r.claim(i))
            .map(str::to_string)
        else {
            return Ok(());
        };
        let mut from = (restored >= 0).then_some(restored);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&claim, partition);
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
        if let Some(Offset::Offset(o)) = committed
            .find_partition(&claim, partition)
            .map(|e| e.offset())
        {
            from = Some(from.map_or(o, |f| f.max(o)));
        }
        if let Some(o) = from {
            let mut at = TopicPartitionList::new();
            at.add_partition_offset(&claim, partition, Offset::Offset(o))?;
            self.lag.committed(&at);
        }
        if let Some(r) = self.readers.as_mut() {
            r.start(i, partition, from);
        }
        Ok(())
    }

    /// The error that ends this run of the stage when it may have become a zombie: the
    /// uncommitted batch is dropped, queued outputs are purged, and `run_supervised` rejoins
    /// the group and restores from the last commit.
    fn membership_lost(&mut self, why: String) -> RuntimeError {
        self.poisoned = true;
        self.producer.purge_unsent();
        tracing::warn!(stage = %self.def.name, reason = %why, tasks = self.tasks.len(), "Membership may be lost: dropping the uncommitted batch without writing it, then rejoining.");
        RuntimeError::MembershipLost {
            stage: self.def.name.clone(),
            reason: why,
        }
    }

    /// Fails if the process was paused since the stage last looked: checked before anything
    /// of a batch leaves the process.
    fn check_not_paused(&mut self) -> Result<(), RuntimeError> {
        match pause::since(self.pause_mark) {
            Some(d) => Err(self.membership_lost(format!("the process was paused for {d:?}"))),
            None => Ok(()),
        }
    }

    /// Closes every task without committing: their engines hold committed data only (a
    /// commit writes them at step 4), so flushing the engines is safe.
    fn drop_tasks(&mut self) {
        for (_, mut task) in self.tasks.drain() {
            for t in task.tables() {
                if let Some(e) = t.detach() {
                    let _ = e.flush();
                }
            }
        }
        if let Some(r) = self.readers.as_mut() {
            r.stop_all();
        }
        self.owned_changed();
    }

    /// Publishes the partitions the stage now owns (`sluice_partitions_owned`, lag).
    fn owned_changed(&self) {
        METRICS
            .partitions_owned
            .with_label_values(&[&self.def.name])
            .set(self.tasks.len() as i64);
        let inputs = &self.kafka_inputs;
        self.lag
            .owned(self.tasks.keys().map(|&(i, p)| (inputs[i].clone(), p)));
    }

    /// `partition:next offset` of every task that processed something, for logs.
    fn positions(&self) -> String {
        let mut v: Vec<(i32, i64)> = self
            .tasks
            .iter()
            .filter_map(|(&(_, p), t)| t.next_offset.map(|o| (p, o)))
            .collect();
        v.sort_unstable();
        let parts: Vec<String> = v.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        format!("[{}]", parts.join(" "))
    }

    /// The standbys' turn. A failure there costs only warmth: it is logged and the standby
    /// tasks are dropped, to be placed again later.
    fn standby_turn(&mut self, consumer: &BaseConsumer<Ctx>) {
        let Some(env) = self.def.log.as_ref() else {
            return;
        };
        let owned: std::collections::BTreeSet<i32> = self.tasks.keys().map(|(_, p)| *p).collect();
        if let Err(e) = self.standbys.tick(env, consumer, &owned) {
            tracing::warn!(stage = %self.def.name, error = %e, "Standby replicas failed; they are placed again later.");
            self.standbys.reset(env);
        }
    }

    fn open_task(&mut self, partition: i32) -> Result<Task, RuntimeError> {
        let processor = (self.def.factory)(partition)?;
        let mut task = Task {
            processor,
            ids: self.def.dedup_ids.then(ids_table),
            log: None,
            skip_below: -1,
            next_offset: None,
            output_seq: 0,
            rebuild: Rebuild::NONE,
            idle_since: Instant::now(),
            times: BatchTimes::default(),
            fluvio: self
                .def
                .fluvio_outputs
                .as_ref()
                .map(|o| TaskOutputs::new(o, &self.def.name, partition)),
        };
        if let Some(env) = &self.def.log {
            let stage = self.def.name.clone();
            let cb = self.def.on_restore.clone();
            let mut progress = |p: RestoreProgress<'_>| {
                METRICS
                    .restore_applied
                    .with_label_values(&[&stage, p.store])
                    .set(p.read as i64);
                METRICS
                    .restore_total
                    .with_label_values(&[&stage, p.store])
                    .set(p.total as i64);
                if let Some(cb) = &cb {
                    cb(&stage, partition, p);
                }
            };
            let mut tables = task.tables();
            let (log, resume) = restore_task(env, partition, &mut tables, &mut progress)?;
            drop(tables);
            task.log = Some(log);
            task.output_seq = resume.output_seq;
            task.rebuild = resume.rebuild;
            if resume.rebuild.is_active() {
                task.processor.rebuild(resume.rebuild.quiet_below);
            }
            if let Some(off) = resume.input_offset {
                task.skip_below = off;
            }
            tracing::info!(stage = %self.def.name, partition, resume_offset = ?resume.input_offset, output_seq = resume.output_seq, rebuild = ?resume.rebuild, "Restored task.");
        }
        if let Some(f) = task.fluvio.as_mut() {
            f.open(task.skip_below >= 0)?;
        }
        Ok(task)
    }

    fn process(&mut self, m: &BorrowedMessage<'_>) -> Result<(), RuntimeError> {
        let Some(i) = self.input_index(m.topic()) else {
            return Ok(());
        };
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == ID_HEADER).and_then(|h| h.value));
        self.process_one(
            i,
            m.partition(),
            m.offset(),
            m.timestamp().to_millis(),
            m.key(),
            m.payload(),
            id,
        )
    }

    /// Processes one input record of input `i` (from Kafka or Fluvio); `id` is its
    /// `sluice.id` header, if it has one.
    #[allow(clippy::too_many_arguments)]
    fn process_one(
        &mut self,
        i: usize,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        id: Option<&[u8]>,
    ) -> Result<(), RuntimeError> {
        let Inner {
            def,
            tasks,
            producer,
            out_counters,
            id_buf,
            in_counter,
            id_key,
            bounded,
            ..
        } = self;
        let Some(task) = tasks.get_mut(&(i, partition)) else {
            // Not ours (a message fetched just before a revoke): it will be read by the owner.
            return Ok(());
        };
        if offset < task.skip_below {
            return Ok(());
        }
        in_counter.inc();
        if let Some(b) = bounded.as_ref() {
            b.records.inc();
        }
        task.next_offset = Some(offset + 1);
        task.idle_since = Instant::now();
        task.times.push(timestamp);
        let input = Input {
            topic: &def.inputs[i],
            partition,
            offset,
            timestamp: timestamp.unwrap_or(0),
            key,
            value,
        };
        if let (Some(ids), true) = (task.ids.as_mut(), def.guarantee != Guarantee::AtLeastOnce) {
            if let Some(id) = id.and_then(|v| MessageId::decode(v).ok()) {
                if !accept_id(ids, &id, id_key)? {
                    METRICS
                        .duplicates_dropped
                        .with_label_values(&[&def.name, "replayed_id"])
                        .inc();
                    task.processor.skipped(&input)?;
                    task.end_rebuild_at(&def.name, partition, offset);
                    return Ok(());
                }
            }
        }
        let quiet = task.quiet();
        let mut em = emitter(
            def,
            producer,
            out_counters,
            id_buf,
            partition,
            &mut task.output_seq,
            quiet,
            task.fluvio.as_mut(),
        );
        task.processor.process(&input, &mut em)?;
        if let Some(e) = em.error {
            return Err(e.into());
        }
        task.end_rebuild_at(&def.name, partition, offset);
        Ok(())
    }

    /// Processes the Fluvio batches waiting, up to `room` records or so; returns how many
    /// records were processed.
    fn process_fluvio(&mut self, room: usize) -> Result<usize, RuntimeError> {
        let mut done = 0;
        while done < room {
            let Some(d) = self.readers.as_mut().and_then(|r| r.next()) else {
                break;
            };
            let records = d.batch?;
            for r in &records {
                self.process_one(
                    d.input,
                    d.partition,
                    r.offset,
                    (r.timestamp >= 0).then_some(r.timestamp),
                    r.key.as_deref(),
                    Some(&r.value),
                    None,
                )?;
            }
            done += records.len();
        }
        Ok(done)
    }

    /// Sets the lag of the owned Fluvio partitions from their last known ends.
    fn fluvio_lag(&self) {
        let Some(r) = self.readers.as_ref() else {
            return;
        };
        for (i, p, end) in r.ends() {
            if let Some(claim) = r.claim(i) {
                self.lag.fluvio_end(&self.def.inputs[i], claim, p, end);
            }
        }
    }

    /// Hands every task its idle time (`Processor::idle`); returns how many tasks recorded
    /// a tick or emitted, so the loop commits them soon.
    fn idle_tasks(&mut self) -> Result<usize, RuntimeError> {
        let mut changed = 0;
        for (&(_, partition), task) in self.tasks.iter_mut() {
            let before = task.output_seq;
            let quiet = task.quiet();
            let mut em = emitter(
                &self.def,
                &self.producer,
                &self.out_counters,
                &mut self.id_buf,
                partition,
                &mut task.output_seq,
                quiet,
                task.fluvio.as_mut(),
            );
            let ticked = task.processor.idle(task.idle_since.elapsed(), &mut em)?;
            if let Some(e) = em.error {
                return Err(e.into());
            }
            if ticked {
                task.idle_since = Instant::now();
            }
            if ticked || task.output_seq != before || task.processor.wants_commit() {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Every task's `end_batch` (closing windows emits) and sink flush; returns the tasks
    /// whose sink holds their commit back.
    fn end_batches(&mut self) -> Result<Vec<(usize, i32)>, RuntimeError> {
        let mut held = Vec::new();
        for (&(input, partition), task) in self.tasks.iter_mut() {
            let quiet = task.quiet();
            let mut em = emitter(
                &self.def,
                &self.producer,
                &self.out_counters,
                &mut self.id_buf,
                partition,
                &mut task.output_seq,
                quiet,
                task.fluvio.as_mut(),
            );
            task.processor.end_batch(&mut em)?;
            if let Some(e) = em.error {
                return Err(e.into());
            }
            if pause::since(self.pause_mark).is_some() {
                break;
            }
            if !task.processor.flush_external()? {
                held.push((input, partition));
            }
        }
        // Fluvio writes cannot be told apart later: none from a process that was paused
        // (the commit then fails as a zombie's, before anything else leaves it).
        if pause::since(self.pause_mark).is_none() {
            super::fluvio_out::flush_all(
                self.tasks.values_mut().filter_map(|t| t.fluvio.as_mut()),
            )?;
        }
        Ok(held)
    }

    /// The commit path (docs/EXACTLY_ONCE.md): sinks flushed, then the protocol's commit:
    /// outputs and changelog records acknowledged, markers, consumer offsets, local stores.
    fn commit(&mut self, consumer: Option<&BaseConsumer<Ctx>>) -> Result<(), RuntimeError> {
        if self.def.transactional_id.is_some() {
            return self.commit_transactional(consumer);
        }
        let started = Instant::now();
        let name = self.def.name.clone();
        self.check_not_paused()?;
        let held = self.end_batches()?;
        self.check_not_paused()?;
        // The protocol's commit (`sluice_state::protocol::commit`: changelog records, one
        // flush for them and the outputs, markers, offsets, local stores) for every task that
        // read input and whose sink does not hold it back, all together, so a commit of many
        // partitions waits for the broker twice, not twice per partition.
        let Inner {
            def,
            kafka_inputs,
            producer,
            tasks,
            pause_mark,
            ..
        } = &mut *self;
        let mut commits = Vec::new();
        for (&(input, partition), task) in tasks.iter_mut() {
            let Some(next) = task.next_offset else {
                continue;
            };
            if held.contains(&(input, partition)) {
                continue;
            }
            let Task {
                processor,
                ids,
                log,
                output_seq,
                fluvio,
                ..
            } = task;
            let state = match (log.as_mut(), def.log.is_some()) {
                (Some(log), true) => {
                    let mut tables: Vec<&mut dyn AnyTable> = Vec::new();
                    if let Some(ids) = ids.as_mut() {
                        tables.push(ids);
                    }
                    tables.extend(processor.tables());
                    if let Some(f) = fluvio.as_mut() {
                        tables.push(f.table());
                    }
                    Some((log, tables))
                }
                _ => None,
            };
            commits.push(TaskCommit {
                input,
                partition,
                input_end: next,
                output_seq: *output_seq,
                state,
            });
        }
        let mut io = KafkaCommit {
            env: def.log.as_ref(),
            producer,
            consumer,
            inputs: kafka_inputs,
            stage: &def.name,
            pause_mark: Some(*pause_mark),
        };
        let committed = protocol::commit(&mut io, &mut commits);
        // What was committed, for the lag's committed positions.
        let mut tpl = TopicPartitionList::new();
        for c in &commits {
            tpl.add_partition_offset(
                &kafka_inputs[c.input],
                c.partition,
                Offset::Offset(c.input_end),
            )?;
        }
        drop(commits);
        match committed {
            // Paused before the markers: a zombie, maybe; the batch is dropped unwritten.
            Err(RuntimeError::MembershipLost { reason, .. }) => {
                return Err(self.membership_lost(reason))
            }
            result => result?,
        }
        self.committed(&tpl, &held);
        METRICS.commits.with_label_values(&[&name]).inc();
        METRICS
            .commit_seconds
            .with_label_values(&[&name])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

impl Inner {
    /// After a commit of `tpl`: the lag's committed positions, and one latency observation
    /// per input record of every task committed (a held task's wait until its sink flushes).
    fn committed(&mut self, tpl: &TopicPartitionList, held: &[(usize, i32)]) {
        self.lag.committed(tpl);
        if let Some(b) = self.bounded.as_mut() {
            b.committed(tpl);
        }
        let hist = METRICS.latency_ms.with_label_values(&[&self.def.name]);
        let now = lag::now_ms();
        for (key, task) in self.tasks.iter_mut() {
            if !held.contains(key) {
                task.times.committed(&hist, now);
            }
        }
    }
}

impl Inner {
    /// Bounded mode: true when `m` is at or past its partition's end (not to be
    /// processed); the partition is paused so the live input beyond is not fetched.
    fn past_end(&mut self, m: &BorrowedMessage<'_>, consumer: &BaseConsumer<Ctx>) -> bool {
        let Some(b) = self.bounded.as_mut() else {
            return false;
        };
        if !b.past_end(m.topic(), m.partition(), m.offset()) {
            return false;
        }
        for (topic, partition) in b.to_pause.drain(..) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            if let Err(e) = consumer.pause(&tpl) {
                tracing::debug!(stage = %self.def.name, topic = %topic, partition, error = %e, "Could not pause a partition past its backfill end; its records are skipped.");
            }
        }
        true
    }

    /// Bounded mode: whether every input partition is committed up to its end.
    fn bounded_done(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<bool, RuntimeError> {
        let Inner {
            def,
            tasks,
            bounded,
            ..
        } = self;
        let Some(b) = bounded.as_mut() else {
            return Ok(false);
        };
        let reached = |topic: &str, partition: i32| {
            let i = def.inputs.iter().position(|t| t == topic)?;
            let t = tasks.get(&(i, partition))?;
            Some(t.skip_below)
        };
        Ok(b.done(consumer, reached)?)
    }
}

/// The `Emit` for one task's outputs: numbered per input partition, counted per topic.
#[allow(clippy::too_many_arguments)]
fn emitter<'a>(
    def: &'a StageDef,
    producer: &'a TrackedProducer,
    out_counters: &'a [IntCounter],
    id: &'a mut IdWriter,
    partition: i32,
    seq: &'a mut u64,
    quiet: bool,
    fluvio: Option<&'a mut TaskOutputs>,
) -> Emitter<'a> {
    Emitter {
        producer,
        stage: &def.name,
        partition,
        seq,
        outputs: &def.outputs,
        out_counters,
        dead_letter: def.dead_letter.as_deref(),
        with_ids: def.guarantee != Guarantee::AtLeastOnce,
        id,
        error: None,
        quiet,
        fluvio,
    }
}

/// Runs the stage until `stop` is set or an error occurs.
pub fn run_stage(def: StageDef, stop: &AtomicBool) -> Result<(), RuntimeError> {
    let transactional = def.guarantee == Guarantee::ExactlyOnceTransactional;
    let producer = match (&def.transactional_id, transactional) {
        (None, false) => TrackedProducer::new(&def.opts)?,
        (Some(id), true) => txn::start(&def.opts, id)?,
        _ => {
            return Err(RuntimeError::Internal(format!(
                "stage {}: a transactional.id must be given exactly for exactly_once_transactional",
                def.name
            )))
        }
    };
    let out_counters = def
        .outputs
        .iter()
        .map(|t| METRICS.records_out.with_label_values(&[&def.name, t]))
        .collect();
    let in_counter = METRICS.records_in.with_label_values(&[&def.name]);
    // Exported at 0 from the start, so a rate over it is 0 rather than absent.
    METRICS.commit_failures.with_label_values(&[&def.name]);
    let group = format!("{}-{}", def.app, def.name);
    // Unique per run, so standby placement finds this instance among the group's members.
    let client_id = format!("{group}-{:08x}", rand::random::<u32>());
    let names = std::iter::once(client_id.clone())
        .chain(def.opts.instance_id.clone())
        .collect();
    let inputs = def.inputs.clone();
    let kafka_inputs: Vec<String> = match &def.fluvio {
        Some(f) => inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                f.claims
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| t.clone())
            })
            .collect(),
        None => inputs.clone(),
    };
    let standbys = Standbys::new(
        if def.log.is_some() {
            def.standby_replicas
        } else {
            0
        },
        group.clone(),
        names,
        kafka_inputs.first().cloned().unwrap_or_default(),
    );
    let readers = def.fluvio.clone().map(|f| Readers::new(f, inputs.clone()));
    let (commit_interval, max_batch) = (def.commit_interval, def.max_batch);
    let leave_group = def.leave_group;
    let name = def.name.clone();
    let lag = Arc::new(StageLag::new(&name, def.opts.read_committed));
    lag.claims(kafka_inputs.iter().filter(|t| !inputs.contains(t)).cloned());
    let bounded = def.bounds.clone().map(|b| Bounded::new(&name, b));
    let inner = Arc::new(Mutex::new(Inner {
        def,
        kafka_inputs: kafka_inputs.clone(),
        readers,
        producer,
        tasks: HashMap::new(),
        out_counters,
        in_counter,
        id_key: Vec::with_capacity(64),
        id_buf: IdWriter::new(&name),
        failed: None,
        poisoned: false,
        standbys,
        pause_mark: pause::mark(),
        lag: lag.clone(),
        bounded,
    }));
    let opts = inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .def
        .opts
        .clone();
    let consumer: BaseConsumer<Ctx> = consumer_config(&opts, &group)
        .set("client.id", &client_id)
        .set("statistics.interval.ms", lag::STATS_INTERVAL_MS)
        .create_with_context(Ctx {
            inner: inner.clone(),
            lag,
        })?;
    let topics: Vec<&str> = kafka_inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(stage = %name, group = %group, inputs = ?inputs, "Stage started.");
    let has_fluvio = kafka_inputs != inputs;

    let mut pending = 0usize;
    let mut last_commit = Instant::now();
    let mut last_error: Option<String> = None;
    let mut last_standby_turn = Instant::now();
    let mut last_idle_check = Instant::now();
    let mut fluvio_ready = false;
    let mut last_bound_check = Instant::now();
    // Idle ticks emit between batches, outside any transaction: not under Kafka
    // transactions (docs/TOPOLOGY.md says `idle_timeout` needs `exactly_once`).
    let idle_checks = !transactional;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            // Stop fetching; what was processed is committed (outputs, sinks, changelogs,
            // markers, offsets), then the tasks close.
            let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
            let committed = g.commit(Some(&consumer));
            if committed.is_ok() {
                tracing::info!(stage = %name, committed = %g.positions(), "Final commit done.");
                g.drop_tasks();
            }
            break committed;
        }
        // With Fluvio inputs, the consumer only serves rebalances and statistics, so it is
        // polled briefly between the readers' batches.
        let wait = if !has_fluvio {
            Duration::from_millis(50)
        } else if fluvio_ready {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        };
        let polled = consumer.poll(wait);
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.failed.take() {
            break Err(e);
        }
        if has_fluvio {
            if let Err(e) = g.check_not_paused() {
                break Err(e);
            }
            match g.process_fluvio(max_batch.saturating_sub(pending).max(1)) {
                Ok(n) => {
                    fluvio_ready = n > 0;
                    pending += n;
                }
                Err(e) => break Err(e),
            }
        }
        match polled {
            None => {}
            Some(Err(e)) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(stage = %name, brokers = %opts.brokers, error = %msg, "Consumer error; retrying.");
                    last_error = Some(msg);
                }
            }
            Some(Ok(m)) => {
                last_error = None;
                if let Err(e) = g.check_not_paused() {
                    break Err(e);
                }
                if g.past_end(&m, &consumer) {
                    // Past the backfill's range: not processed.
                } else if let Err(e) = g.process(&m) {
                    break Err(e);
                } else {
                    pending += 1;
                }
            }
        }
        if last_idle_check.elapsed() >= IDLE_CHECK_EVERY {
            last_idle_check = Instant::now();
            g.fluvio_lag();
            if idle_checks {
                match g.idle_tasks() {
                    Ok(n) => pending += n,
                    Err(e) => break Err(e),
                }
            }
        }
        if pending > 0 && (pending >= max_batch || last_commit.elapsed() >= commit_interval) {
            if let Err(e) = g.commit(Some(&consumer)) {
                METRICS.commit_failures.with_label_values(&[&name]).inc();
                break Err(e);
            }
            pending = 0;
            last_commit = Instant::now();
        }
        if pending == 0 && g.bounded.is_some() && last_bound_check.elapsed() >= BOUND_CHECK_EVERY {
            last_bound_check = Instant::now();
            match g.bounded_done(&consumer) {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(stage = %name, committed = %g.positions(), "Backfill range committed: the stage stops.");
                    g.drop_tasks();
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        }
        if g.standbys.enabled() && last_standby_turn.elapsed() >= TICK_EVERY {
            g.standby_turn(&consumer);
            last_standby_turn = Instant::now();
        }
    };
    // A failed run does not commit, and aborts its transaction first.
    let result = match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
            g.poisoned = true;
            let e = g.explain_failure(e);
            g.abort_transaction();
            g.drop_tasks();
            Err(e)
        }
    };
    // A dynamic member leaves the group so its partitions move at once. A static member
    // stays (closing sends no LeaveGroup, KIP-345): restarted within the session timeout with
    // the same instance id (the process after a SIGTERM, or `run_supervised` at once after a
    // failure), it gets its partitions back with no rebalance for anyone. It leaves with
    // `leave_group` (scale-in) or when it stops for good on a fatal error.
    let is_static = opts.instance_id.is_some();
    let fatal = result.as_ref().is_err_and(RuntimeError::is_fatal);
    let leave = !is_static || fatal || (leave_group && result.is_ok());
    if leave {
        consumer.unsubscribe();
    }
    tracing::info!(stage = %name, left_group = leave, "Stage stopped.");
    result
}

/// Runs the stage, restarting it after failures with a capped backoff: a service that is
/// down (broker, registry, sink) is waited for, never a reason to lose or skip records.
pub fn run_supervised(
    make: impl Fn() -> Result<StageDef, RuntimeError>,
    stop: &AtomicBool,
) -> Result<(), RuntimeError> {
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let def = make()?;
        let name = def.name.clone();
        let started = Instant::now();
        let result = run_stage(def, stop);
        // A stage that ran a good while before failing starts its backoff afresh: an outage
        // an hour after the last one is retried quickly again, not after 30 s.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = FIRST_BACKOFF;
        }
        match result {
            Ok(()) => return Ok(()),
            Err(e) if stop.load(Ordering::Relaxed) => {
                tracing::warn!(stage = %name, error = %e, "Stopping, but the final commit failed: what was processed since the stage's last commit is not committed and is processed again at the next start; nothing is lost.");
                return Err(e);
            }
            Err(e) if e.is_fatal() => {
                tracing::error!(stage = %name, error = %e, "Stage failed; a restart cannot help, so it stays stopped.");
                return Err(e);
            }
            Err(e) => {
                METRICS.commit_failures.with_label_values(&[&name]).inc();
                tracing::error!(stage = %name, error = %e, retry_in = ?backoff, "Stage failed; it restarts from its last commit.");
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
