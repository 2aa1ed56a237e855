//! The restore sequence of docs/EXACTLY_ONCE.md ("Restore", steps 1-7) against the broker.
//!
//! Changelogs are read with a plain consumer that is `assign`ed one partition at a time and
//! never commits: the group id only satisfies librdkafka. Every read ends at an offset known
//! before it starts (the high watermark, or our fence's acked offset), so a restore never
//! waits for records that may not come.
//!
//! In transactional mode the consumer reads `read_committed`: records of aborted
//! transactions are never seen, and the end of a partition is its last stable offset. A
//! transaction still open there (a crashed or fenced previous owner's) holds that end below
//! our fence until it commits, aborts or times out; the read waits for it (`LSO_WAIT`).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::consumer_config;
use sluice_state::{
    ChangelogRecord, Checkpoint, Entry, KvStore, Marker, Restorer, RocksStore, StateError,
};

use super::{
    changelog_entry, check_tables, produce_acked, LogEnv, MarkerRecord, RestoreProgress, Resume,
    TaskLog,
};
use crate::metrics::METRICS;
use crate::runtime::RuntimeError;
use sluice_state::table::AnyTable;

/// Final records are written to RocksDB in batches of this many.
const WRITE_EVERY: usize = 4096;
/// Progress is reported at least this often (records read per store).
const REPORT_EVERY: u64 = 16_384;
/// A read that gets nothing for this long while records are known to exist gives up.
const STALL: Duration = Duration::from_secs(60);
const META_TIMEOUT: Duration = Duration::from_secs(30);
/// read_committed: how long a read waits for an open transaction to end; three times the
/// transaction timeout after which the broker aborts it.
const LSO_WAIT: Duration =
    Duration::from_secs(3 * sluice_connectors::kafka::TRANSACTION_TIMEOUT.as_secs());

struct Reader<'e, 'p> {
    env: &'e LogEnv,
    partition: i32,
    consumer: BaseConsumer,
    r: Restorer,
    engines: Vec<RocksStore>,
    low: Vec<i64>,
    /// Our fence's offset per store, once acked (its content is known: no need to fetch it).
    fence_at: Vec<Option<i64>>,
    fence_epoch: u64,
    /// Per store: still continuing from a local checkpoint (no wipe so far).
    from_local: Vec<bool>,
    progress: &'p mut dyn FnMut(RestoreProgress<'_>),
}

/// Fault injection for tests only (docs/OPERATIONS.md, "Fault injection"): with
/// `SLUICE_FAULT_RESTORE_DELAY_MS=N` every record a restore reads takes N ms longer, so a test
/// can stop a process in the middle of a restore. Unset in production.
fn fault_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SLUICE_FAULT_RESTORE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    })
}

pub(super) fn restore(
    env: &LogEnv,
    partition: i32,
    tables: &mut [&mut dyn AnyTable],
    progress: &mut dyn FnMut(RestoreProgress<'_>),
) -> Result<(TaskLog, Resume), RuntimeError> {
    check_tables(env, tables)?;
    let started = Instant::now();
    let group = format!("{}-{}-restore", env.app, env.stage);
    let consumer: BaseConsumer = consumer_config(&env.opts, &group)
        .set("enable.partition.eof", "true")
        // The broker answers a fetch at the log end after this long; a restore reads to a
        // known end offset, so a short wait keeps small restores (new tasks) quick.
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut engines = Vec::with_capacity(env.stores.len());
    for (name, _) in &env.stores {
        engines.push(env.open_store(partition, name)?);
    }
    let n = env.stores.len();
    let mut rd = Reader {
        env,
        partition,
        consumer,
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
    for (i, (store, topic)) in env.stores.iter().enumerate() {
        let (low, high) = rd
            .consumer
            .fetch_watermarks(topic, partition, META_TIMEOUT)?;
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
                    store = *store,
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
    let epoch = rd.r.next_epoch(env.nonce);
    rd.r.expect_fence(epoch);
    rd.fence_epoch = epoch;
    let fences: Vec<MarkerRecord<'_>> = env
        .stores
        .iter()
        .map(|(_, t)| {
            (
                t.as_str(),
                partition,
                ChangelogRecord::marker(&Marker::fence(epoch)),
            )
        })
        .collect();
    for (i, off) in produce_acked(env, &fences)?.into_iter().enumerate() {
        rd.fence_at[i] = Some(off);
    }
    // Step 4: whatever landed between the end we read and our fence, fence included.
    for (i, &end) in ends.iter().enumerate() {
        let fence = rd.fence_at[i].expect("set above");
        rd.feed(i, end, fence + 1)?;
    }
    // Step 5: decide; a local store that turns out not to match is restored from scratch.
    let mut plan = loop {
        match rd.r.finish() {
            Ok(plan) => break plan,
            Err(StateError::CheckpointMismatch { store, reason }) => {
                tracing::info!(
                    store = env.stores[store].0,
                    partition,
                    reason,
                    "Local store does not match its changelog; restoring it from the start."
                );
                let to = rd.fence_at[store].expect("set above") + 1;
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
    let mut repairs: Vec<MarkerRecord<'_>> = Vec::new();
    let mut counts = Vec::with_capacity(n);
    for (i, sp) in plan.stores.iter_mut().enumerate() {
        rd.engines[i].write(std::mem::take(&mut sp.apply), None)?;
        let recs = sp.repair_records(&rd.engines[i], &tag)?;
        counts.push(recs.len() as u32);
        repairs.extend(
            recs.into_iter()
                .map(|r| (env.stores[i].1.as_str(), partition, r)),
        );
    }
    if !repairs.is_empty() {
        produce_acked(env, &repairs)?;
    }
    let bases: Vec<MarkerRecord<'_>> = env
        .stores
        .iter()
        .zip(&counts)
        .map(|((_, t), &c)| {
            (
                t.as_str(),
                partition,
                ChangelogRecord::marker(&plan.base_marker(input, c)),
            )
        })
        .collect();
    let offsets = produce_acked(env, &bases)?;
    for (engine, marker_offset) in rd.engines.iter_mut().zip(offsets) {
        let cp = Checkpoint {
            marker_offset,
            commit_seq: plan.commit_seq,
            epoch: plan.epoch,
        };
        engine.write(sluice_state::WriteBatch::new(), Some(&cp))?;
    }
    for i in 0..n {
        rd.report(i);
    }
    let read: u64 = (0..n).map(|i| rd.r.progress(i).read).sum();
    let from = if rd.from_local.iter().all(|l| *l) {
        "local"
    } else {
        "changelog"
    };
    METRICS
        .restores
        .with_label_values(&[&env.stage, from])
        .inc();
    METRICS
        .restore_read
        .with_label_values(&[&env.stage, from])
        .inc_by(read);
    tracing::info!(
        stage = %env.stage,
        partition,
        epoch,
        commit_seq = plan.commit_seq,
        read,
        repaired = repairs.len(),
        discarded = plan.stores.iter().map(|s| s.discarded_records).sum::<u64>(),
        zombies = plan.stores.iter().map(|s| s.zombie_records).sum::<u64>(),
        ms = started.elapsed().as_millis() as u64,
        "Restored changelogs."
    );
    for (table, engine) in tables.iter_mut().zip(rd.engines) {
        table.attach(Box::new(engine))?;
    }
    let log = TaskLog {
        partition,
        epoch: plan.epoch,
        next_seq: plan.commit_seq + 1,
    };
    let resume = Resume {
        input_offset: plan.input_offset.filter(|o| *o >= 0),
        output_seq: plan.output_seq,
    };
    Ok((log, resume))
}

impl Reader<'_, '_> {
    fn report(&mut self, i: usize) {
        let p = self.r.progress(i);
        (self.progress)(RestoreProgress {
            store: &self.env.stores[i].0,
            read: p.read,
            total: p.total,
        });
    }

    /// Wipes store `i` and forgets what was fed, after a checkpoint mismatch.
    fn restart(&mut self, i: usize) -> Result<(), RuntimeError> {
        self.from_local[i] = false;
        self.engines[i].wipe()?;
        self.r.reset_store(i);
        Ok(())
    }

    /// Feeds store `i`'s changelog records with offsets in `[from, until)`, writing final
    /// records as they fill a batch. A checkpoint mismatch wipes the store and starts over
    /// at the low watermark, up to the same `until`.
    fn feed(&mut self, i: usize, from: i64, until: i64) -> Result<(), RuntimeError> {
        let mut at = from;
        while at < until {
            if self.fence_at[i] == Some(at) {
                // Our own fence, acked at this offset: known without fetching it.
                let fence = Entry::Marker(Marker::fence(self.fence_epoch));
                at = match self.r.feed(i, at, fence) {
                    Ok(()) => at + 1,
                    Err(StateError::CheckpointMismatch { .. }) => self.mismatch(i, until)?,
                    Err(e) => return Err(e.into()),
                };
                continue;
            }
            at = self.fetch(i, at, until)?;
        }
        self.write_ready(i)?;
        self.report(i);
        Ok(())
    }

    fn mismatch(&mut self, i: usize, until: i64) -> Result<i64, RuntimeError> {
        tracing::info!(
            store = self.env.stores[i].0,
            partition = self.partition,
            "Local checkpoint does not match the changelog; restoring the store from the start."
        );
        self.restart(i)?;
        let low = self.low[i];
        self.r.set_total(i, (until - low).max(0) as u64);
        Ok(low)
    }

    /// Reads from `at` until `until`, the partition's end or our fence (fed by `feed`);
    /// returns where reading stopped.
    fn fetch(&mut self, i: usize, mut at: i64, until: i64) -> Result<i64, RuntimeError> {
        let topic = self.env.stores[i].1.as_str();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, self.partition, Offset::Offset(at))?;
        self.consumer.assign(&tpl)?;
        let mut last_progress = Instant::now();
        // read_committed only: where the last stable offset held the read back.
        let mut held_at: Option<i64> = None;
        loop {
            if crate::runtime::shutdown::requested() {
                return Err(RuntimeError::Interrupted);
            }
            if let Some(d) = fault_delay() {
                std::thread::sleep(d);
            }
            let m = match self.consumer.poll(Duration::from_millis(200)) {
                None => {
                    if let Some(lso) = held_at {
                        if last_progress.elapsed() > LSO_WAIT {
                            return Err(RuntimeError::Internal(format!("restore of {topic} partition {}: a transaction left open by another producer keeps the last stable offset at {lso}, below {until}, for over {LSO_WAIT:?}; it ends when that producer commits or aborts, or after its transaction.timeout.ms", self.partition)));
                        }
                    } else if last_progress.elapsed() > STALL {
                        return Err(RuntimeError::Internal(format!("restore of {topic} partition {} got no records for {STALL:?} at offset {at} (end {until}); is the broker up?", self.partition)));
                    }
                    continue;
                }
                // The end of the partition now is at or past `until`: nothing left before it.
                Some(Err(RdError::PartitionEOF(_))) if !self.env.opts.read_committed => {
                    return Ok(until)
                }
                // read_committed: the end is the last stable offset. The position has passed
                // every control record and aborted record below it.
                Some(Err(RdError::PartitionEOF(_))) => {
                    let pos = self.position(topic)?.unwrap_or(at).max(at);
                    if pos >= until {
                        return Ok(until);
                    }
                    if held_at.is_none() {
                        tracing::info!(
                            topic,
                            partition = self.partition,
                            last_stable = pos,
                            until,
                            "Waiting for an open transaction on the changelog to end."
                        );
                        last_progress = Instant::now();
                    }
                    held_at = Some(pos);
                    continue;
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => m,
            };
            last_progress = Instant::now();
            held_at = None;
            let off = m.offset();
            if off < at {
                continue;
            }
            if off >= until {
                return Ok(until);
            }
            let entry = changelog_entry(i, &m)?;
            match self.r.feed(i, off, entry) {
                Ok(()) => at = off + 1,
                Err(StateError::CheckpointMismatch { .. }) => return self.mismatch(i, until),
                Err(e) => return Err(e.into()),
            }
            if self.r.ready_len(i) >= WRITE_EVERY {
                self.write_ready(i)?;
            }
            if self.r.progress(i).read % REPORT_EVERY == 0 {
                self.report(i);
            }
            if at >= until || self.fence_at[i] == Some(at) {
                return Ok(at);
            }
        }
    }

    /// The consumer's position in `topic` (next offset after what it delivered, control
    /// records included), if it has one.
    fn position(&self, topic: &str) -> Result<Option<i64>, RuntimeError> {
        let tpl = self.consumer.position()?;
        Ok(tpl
            .find_partition(topic, self.partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }))
    }

    fn write_ready(&mut self, i: usize) -> Result<(), RuntimeError> {
        let batch = self.r.take_ready(i);
        if !batch.is_empty() {
            self.engines[i].write(batch, None)?;
        }
        Ok(())
    }
}
