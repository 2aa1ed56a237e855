//! `processing.guarantee: exactly_once_transactional` (docs/EXACTLY_ONCE.md, "Transactional
//! mode"): one transactional producer per stage run, and a commit that puts everything a
//! batch wrote (outputs, dead letters, changelog records, markers) and the input offsets
//! into one Kafka transaction. The non-transactional commit in `runner.rs` is untouched.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{
    transactional_producer_config, ClientOptions, KafkaError, TrackedProducer, TRANSACTION_TIMEOUT,
};
use sluice_state::changelog::MARKER_KEY;

use super::{Ctx, Inner};
use crate::metrics::METRICS;
use crate::runtime::changelog::{record_headers, KafkaCommit, LogEnv, TaskLog};
use crate::runtime::RuntimeError;
use rdkafka::consumer::DefaultConsumerContext;
use rdkafka::producer::BaseRecord;
use sluice_state::protocol::Staged;
use sluice_state::table::AnyTable;

/// How long a transaction call (init, flush, offsets, commit, abort) may block: past the
/// transaction timeout, so the broker's verdict arrives before ours.
const CALL_TIMEOUT: Duration = Duration::from_secs(TRANSACTION_TIMEOUT.as_secs() + 10);

/// The `transactional.id` of one instance of `stage`.
///
/// With an instance id (`--instance-id`, the pod name in k8s) it is stable across process
/// restarts: the restarted instance's `init_transactions` fences its previous incarnation
/// and aborts that one's open transaction at once, instead of leaving read_committed
/// readers waiting for `transaction.timeout.ms`. Without one it is random per process and
/// stable across the stage's restarts inside the process (same effect for those), and two
/// processes never share it: they cannot fence each other. Zombie fencing between instances
/// then rests on the group generation sent with the offsets (KIP-447): a member that lost
/// its partitions cannot commit a transaction that includes their offsets.
pub fn transactional_id(app: &str, stage: &str, instance_id: Option<&str>) -> String {
    match instance_id {
        Some(i) => format!("{app}-{stage}-{i}"),
        None => format!("{app}-{stage}-p{}", process_id()),
    }
}

fn process_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// Creates the stage's transactional producer, registers it with the transaction
/// coordinator (fencing older producers with the same id, aborting their open
/// transaction) and begins the first transaction.
pub(super) fn start(opts: &ClientOptions, id: &str) -> Result<TrackedProducer, RuntimeError> {
    let producer = TrackedProducer::with_watched_key(
        opts,
        transactional_producer_config(opts, id),
        MARKER_KEY,
    )?;
    producer
        .inner()
        .init_transactions(CALL_TIMEOUT)
        .map_err(|e| classify(&producer, id, "init_transactions", e.into(), true))?;
    producer
        .inner()
        .begin_transaction()
        .map_err(|e| classify(&producer, id, "begin_transaction", e.into(), false))?;
    tracing::info!(transactional_id = id, brokers = %opts.brokers, "Transactional producer ready.");
    Ok(producer)
}

fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

fn is_unsupported(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion
    )
}

/// Names a failed transaction step: fenced (fatal), no transaction support (fatal), or a
/// failure the stage recovers from by aborting and restarting. `at_init`: a fatal error of
/// `init_transactions` means the broker will not run transactions for us.
fn classify(
    producer: &TrackedProducer,
    id: &str,
    during: &'static str,
    err: RuntimeError,
    at_init: bool,
) -> RuntimeError {
    let (code, fatal) = match &err {
        RuntimeError::Rd(e) | RuntimeError::Kafka(KafkaError::Client(e)) => match e {
            RdError::Transaction(t) => (Some(t.code()), t.is_fatal()),
            other => (other.rdkafka_error_code(), false),
        },
        _ => (None, false),
    };
    // A fenced producer fails its deliveries and later calls with the fatal error; the
    // client keeps the original reason.
    let client_fatal = producer.inner().client().fatal_error();
    let brokers = producer.brokers().to_string();
    let transactional_id = id.to_string();
    if let Some((c, reason)) = client_fatal.as_ref().filter(|(c, _)| is_fencing(*c)) {
        return RuntimeError::Fenced {
            brokers,
            transactional_id,
            during,
            detail: format!("{c:?}: {reason}"),
        };
    }
    if code.is_some_and(is_fencing) {
        return RuntimeError::Fenced {
            brokers,
            transactional_id,
            during,
            detail: err.to_string(),
        };
    }
    if code.is_some_and(is_unsupported) || (at_init && fatal) {
        return RuntimeError::TransactionsUnsupported {
            brokers,
            transactional_id,
            during,
            detail: err.to_string(),
        };
    }
    let detail = match client_fatal {
        Some((c, reason)) => format!("{err} (producer failed fatally: {c:?}: {reason})"),
        None => err.to_string(),
    };
    RuntimeError::Transaction {
        brokers,
        transactional_id,
        during,
        detail,
    }
}

impl Inner {
    /// The commit in transactional mode: `end_batch` and sinks as in the plain commit, then
    /// changelog records and markers of every task that is not held into the open
    /// transaction, all acks, the input offsets with the group's metadata, the commit,
    /// the local stores (only now: an aborted batch must not reach them), and the next
    /// transaction. Any error leaves the transaction to be aborted by `run_stage`.
    pub(super) fn commit_transactional(
        &mut self,
        consumer: Option<&BaseConsumer<Ctx>>,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let id =
            self.def.transactional_id.clone().ok_or_else(|| {
                RuntimeError::Internal("transactional commit without an id".into())
            })?;
        let held = self.end_batches()?;
        let mut tpl = TopicPartitionList::new();
        let mut pending = Vec::new();
        for (&(i, partition), task) in self.tasks.iter_mut() {
            let Some(next) = task.next_offset else {
                continue;
            };
            if held.contains(&(i, partition)) {
                continue;
            }
            if let (Some(log), Some(env)) = (task.log.as_ref(), self.def.log.as_ref()) {
                let mut tables: Vec<&mut dyn AnyTable> = Vec::new();
                if let Some(ids) = task.ids.as_mut() {
                    tables.push(ids);
                }
                tables.extend(task.processor.tables());
                let p = write_in_txn(
                    env,
                    &mut self.producer,
                    log,
                    &mut tables,
                    next,
                    task.output_seq,
                )
                .map_err(|e| classify(&self.producer, &id, "changelog writes", e, false))?;
                pending.push(((i, partition), p));
            }
            tpl.add_partition_offset(&self.kafka_inputs[i], partition, Offset::Offset(next))?;
        }
        // Every record of the batch acknowledged (and the markers' offsets known) before
        // the offsets join the transaction.
        self.producer
            .flush(CALL_TIMEOUT)
            .map_err(|e| classify(&self.producer, &id, "flush", e.into(), false))?;
        let markers = self.producer.take_watched();
        if let (Some(c), true) = (consumer, tpl.count() > 0) {
            let meta = c.group_metadata().ok_or_else(|| {
                RuntimeError::Internal("the consumer has no group metadata".into())
            })?;
            self.producer
                .inner()
                .send_offsets_to_transaction(&tpl, &meta, CALL_TIMEOUT)
                .map_err(|e| {
                    classify(
                        &self.producer,
                        &id,
                        "send_offsets_to_transaction",
                        e.into(),
                        false,
                    )
                })?;
        }
        self.producer
            .inner()
            .commit_transaction(CALL_TIMEOUT)
            .map_err(|e| classify(&self.producer, &id, "commit_transaction", e.into(), false))?;
        for ((i, partition), p) in pending {
            let (Some(task), Some(env)) = (self.tasks.get_mut(&(i, partition)), &self.def.log)
            else {
                return Err(RuntimeError::Internal(format!(
                    "task {i}/{partition} vanished during its commit"
                )));
            };
            let Some(log) = task.log.as_mut() else {
                continue;
            };
            let mut tables: Vec<&mut dyn AnyTable> = Vec::new();
            if let Some(ids) = task.ids.as_mut() {
                tables.push(ids);
            }
            tables.extend(task.processor.tables());
            apply_committed(env, log, &mut tables, p, &markers)?;
        }
        self.producer
            .inner()
            .begin_transaction()
            .map_err(|e| classify(&self.producer, &id, "begin_transaction", e.into(), false))?;
        self.committed(&tpl, &held);
        let name = &self.def.name;
        METRICS.commits.with_label_values(&[name]).inc();
        METRICS
            .commit_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// A run's error, restated as `Fenced` when the transactional producer was fenced: a
    /// send or flush during processing then fails with a generic error.
    pub(super) fn explain_failure(&self, err: RuntimeError) -> RuntimeError {
        let Some(id) = self.def.transactional_id.as_deref() else {
            return err;
        };
        if matches!(
            err,
            RuntimeError::Fenced { .. } | RuntimeError::TransactionsUnsupported { .. }
        ) {
            return err;
        }
        match self.producer.inner().client().fatal_error() {
            Some((code, reason)) if is_fencing(code) => RuntimeError::Fenced {
                brokers: self.producer.brokers().to_string(),
                transactional_id: id.to_string(),
                during: "processing",
                detail: format!("{code:?}: {reason} (first reported as: {err})"),
            },
            _ => err,
        }
    }

    /// Aborts the open transaction after a failed run, so read_committed readers move on
    /// at once; a restart's `init_transactions` would abort it too. A fenced producer
    /// cannot abort (the broker already did).
    pub(super) fn abort_transaction(&self) {
        let Some(id) = self.def.transactional_id.as_deref() else {
            return;
        };
        if let Some((code, reason)) = self.producer.inner().client().fatal_error() {
            tracing::warn!(transactional_id = id, code = ?code, reason, "Producer failed fatally; not aborting its transaction (the broker aborts it).");
            return;
        }
        match self.producer.inner().abort_transaction(CALL_TIMEOUT) {
            Ok(()) => tracing::info!(transactional_id = id, "Aborted the open transaction."),
            Err(e) => {
                tracing::warn!(transactional_id = id, error = %e, "Could not abort the open transaction; the next init_transactions or the transaction timeout ends it.")
            }
        }
    }
}

/// Steps 2-3 of a commit in transactional mode: every table's dirty entries and then a marker
/// per store go into `producer`'s open transaction, without waiting for acks (the
/// transaction makes them visible together or never). The markers' offsets come back through
/// the producer's watched key ([`MARKER_KEY`]); once the transaction committed,
/// [`apply_committed`] writes the stores.
fn write_in_txn(
    env: &LogEnv,
    producer: &mut TrackedProducer,
    log: &TaskLog,
    tables: &mut [&mut dyn AnyTable],
    input_offset: i64,
    output_seq: u64,
) -> Result<Staged, RuntimeError> {
    let mut io = KafkaCommit::<DefaultConsumerContext> {
        env: Some(env),
        producer,
        consumer: None,
        inputs: &[],
        stage: &env.stage,
        pause_mark: None,
    };
    let staged = log.send_records(&mut io, tables, input_offset, output_seq)?;
    for m in staged.markers() {
        let mut rec = BaseRecord::to(env.topic(m.store)?)
            .partition(m.partition)
            .key(&m.record.key[..])
            .headers(record_headers(&m.record));
        if let Some(v) = &m.record.value {
            rec = rec.payload(&v[..]);
        }
        io.producer.send(rec)?;
    }
    Ok(staged)
}

/// Step 4 after the transaction of `pending` committed: each engine's batch with the
/// checkpoint of its marker, found in `markers` (topic, partition, offset).
fn apply_committed(
    env: &LogEnv,
    log: &mut TaskLog,
    tables: &mut [&mut dyn AnyTable],
    pending: Staged,
    markers: &[(String, i32, i64)],
) -> Result<(), RuntimeError> {
    let partition = log.partition();
    let mut offsets = Vec::with_capacity(env.stores.len());
    for (store, topic) in &env.stores {
        let mut found = markers
            .iter()
            .filter(|(t, p, _)| t == topic && *p == partition);
        match (found.next(), found.next()) {
            (Some(&(_, _, off)), None) => offsets.push(off),
            _ => {
                return Err(RuntimeError::Internal(format!(
                    "expected one acknowledged marker for store {store} ({topic} partition {partition}) in commit {}",
                    pending.tag().commit_seq
                )))
            }
        }
    }
    log.finish(tables, pending, &offsets)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_use_the_instance_id_or_one_random_id_per_process() {
        assert_eq!(
            transactional_id("iot", "validate", Some("sluice-2")),
            "iot-validate-sluice-2"
        );
        let a = transactional_id("iot", "validate", None);
        let b = transactional_id("iot", "aggregate", None);
        assert!(a.starts_with("iot-validate-p"), "{a}");
        // The same process part for every stage and every call (stable across restarts).
        assert_eq!(a.rsplit_once('-').unwrap().1, b.rsplit_once('-').unwrap().1);
        assert_eq!(a, transactional_id("iot", "validate", None));
        assert_eq!(a.rsplit_once("-p").unwrap().1.len(), 16);
    }
}
