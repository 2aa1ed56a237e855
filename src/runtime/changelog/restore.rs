//! A restore's reads from the broker, for the restore sequence in
//! `sluice_state::protocol::restore` (docs/EXACTLY_ONCE.md, "Restore", steps 1-7).
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
use sluice_state::protocol::{self, ChangelogIo, LogRecord, RestoreIo};
use sluice_state::table::AnyTable;
use sluice_state::{Entry, Progress, StateError};

use super::{changelog_entry, produce_acked, LogEnv, RestoreProgress, Resume, TaskLog};
use crate::metrics::METRICS;
use crate::runtime::RuntimeError;

/// A read that gets nothing for this long while records are known to exist gives up.
const STALL: Duration = Duration::from_secs(60);
const META_TIMEOUT: Duration = Duration::from_secs(30);
/// read_committed: how long a read waits for an open transaction to end; three times the
/// transaction timeout after which the broker aborts it.
const LSO_WAIT: Duration =
    Duration::from_secs(3 * sluice_connectors::kafka::TRANSACTION_TIMEOUT.as_secs());

/// The broker side of one task's restore.
struct KafkaRestore<'e> {
    env: &'e LogEnv,
    partition: i32,
    consumer: BaseConsumer,
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

/// Restores every store of task `partition` (from the local checkpoint when it provably
/// matches the changelog, from the changelog's start otherwise), fences older epochs,
/// attaches each restored engine to its table (`tables[i]` is store `env.stores[i]`), and
/// says where input and output numbering resume.
pub fn restore_task(
    env: &LogEnv,
    partition: i32,
    tables: &mut [&mut dyn AnyTable],
    progress: &mut dyn FnMut(RestoreProgress<'_>),
) -> Result<(TaskLog, Resume), RuntimeError> {
    if tables.len() != env.stores.len() {
        return Err(RuntimeError::Internal(format!(
            "{} tables for {} changelogged stores of stage {}",
            tables.len(),
            env.stores.len(),
            env.stage
        )));
    }
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
    let mut io = KafkaRestore {
        env,
        partition,
        consumer,
    };
    let mut report = |p: &Progress| {
        progress(RestoreProgress {
            store: &env.stores[p.store].0,
            read: p.read,
            total: p.total,
        })
    };
    let restored = protocol::restore(&mut io, partition, engines, env.nonce, &mut report)?;
    let stats = restored.stats;
    let from = if stats.from_local {
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
        .inc_by(stats.read);
    tracing::info!(
        stage = %env.stage,
        partition,
        epoch = restored.log.epoch(),
        commit_seq = restored.log.next_commit_seq() - 1,
        read = stats.read,
        repaired = stats.repaired,
        discarded = stats.discarded,
        zombies = stats.zombies,
        ms = started.elapsed().as_millis() as u64,
        "Restored changelogs."
    );
    for (table, engine) in tables.iter_mut().zip(restored.engines) {
        table.attach(Box::new(engine))?;
    }
    Ok((restored.log, restored.resume))
}

impl ChangelogIo for KafkaRestore<'_> {
    type Error = RuntimeError;

    fn send_acked(&mut self, records: &[LogRecord]) -> Result<Vec<i64>, RuntimeError> {
        produce_acked(self.env, records)
    }
}

impl RestoreIo for KafkaRestore<'_> {
    fn watermarks(&mut self, store: usize) -> Result<(i64, i64), RuntimeError> {
        let topic = self.env.topic(store)?;
        Ok(self
            .consumer
            .fetch_watermarks(topic, self.partition, META_TIMEOUT)?)
    }

    /// Reads from `from` until `until`, the partition's end or our fence.
    fn read(
        &mut self,
        store: usize,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(i64, Entry<'_>) -> Result<bool, StateError>,
    ) -> Result<i64, RuntimeError> {
        let topic = self.env.topic(store)?;
        let mut at = from;
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
            let go_on = f(off, changelog_entry(store, &m)?)?;
            at = off + 1;
            if !go_on || at >= until {
                return Ok(at);
            }
        }
    }
}

impl KafkaRestore<'_> {
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
}
