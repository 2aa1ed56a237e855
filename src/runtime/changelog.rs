//! The Kafka side of changelogged state: the I/O of the protocol in
//! `sluice_state::protocol` (commit, restore), with rdkafka. The protocol's sequence and
//! decisions are there, written once and proven on a simulated broker; this module moves the
//! bytes.
//!
//! - here: [`KafkaCommit`], a commit's I/O (changelog records through the stage's producer,
//!   markers acknowledged with their offsets, the offset commit), and the acked produce of
//!   markers, fences and repair records, whose offsets become local checkpoints;
//! - `restore.rs`: a restore's reads over a plain assigned consumer.

mod restore;

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{ClientOptions, TrackedProducer};
use sluice_state::changelog::TAG_HEADER;
use sluice_state::protocol::{self, ChangelogIo, CommitIo, LogRecord, TaskCommit};
use sluice_state::table::AnyTable;
use sluice_state::{ChangelogRecord, Entry, RocksEnv, RocksStore, StateError};

pub use restore::restore_task;
pub use sluice_state::protocol::{Resume, TaskLog};

use super::pause;
use super::RuntimeError;

/// How long a commit waits for its outputs and changelog records to be acknowledged; longer
/// than the producer's `message.timeout.ms`, so a failure is reported by the producer, not
/// by us.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(330);

/// Everything a stage's tasks share for changelog I/O.
pub struct LogEnv {
    pub app: String,
    pub stage: String,
    /// Store names and their changelog topics, in the order of the stage's tables.
    pub stores: Vec<(String, String)>,
    pub opts: ClientOptions,
    /// Stores live in `<state_dir>/<app>/<stage>/<partition>/<store>`.
    pub state_dir: PathBuf,
    pub rocks: RocksEnv,
    /// For markers and fences, whose offsets become checkpoints.
    pub marker_producer: FutureProducer,
    pub rt: tokio::runtime::Handle,
    /// Random per process: makes the epochs of two racing restores differ.
    pub nonce: u16,
}

impl LogEnv {
    /// Directory of store `store` of task `partition`.
    pub fn store_dir(&self, partition: i32, store: &str) -> PathBuf {
        self.state_dir
            .join(&self.app)
            .join(&self.stage)
            .join(partition.to_string())
            .join(store)
    }

    /// Opens store `store` of task `partition` in its directory, creating it if needed.
    pub fn open_store(&self, partition: i32, store: &str) -> Result<RocksStore, RuntimeError> {
        let dir = self.store_dir(partition, store);
        std::fs::create_dir_all(&dir).map_err(|e| {
            RuntimeError::Internal(format!("cannot create state dir {}: {e}", dir.display()))
        })?;
        Ok(RocksStore::open(&self.rocks, &dir, store)?)
    }

    /// The changelog topic of store number `store`.
    pub(crate) fn topic(&self, store: usize) -> Result<&str, RuntimeError> {
        self.stores
            .get(store)
            .map(|(_, t)| t.as_str())
            .ok_or_else(|| {
                RuntimeError::Internal(format!(
                    "store {store} of stage {}, which has {} changelogged stores",
                    self.stage,
                    self.stores.len()
                ))
            })
    }
}

/// The changelog entry a consumed record of store `store` carries (data or marker).
pub(crate) fn changelog_entry<'m>(
    store: usize,
    m: &'m BorrowedMessage<'_>,
) -> Result<Entry<'m>, StateError> {
    let hs = m
        .headers()
        .into_iter()
        .flat_map(|h| h.iter().map(|h| (h.key, h.value)));
    Entry::decode(
        store,
        m.offset(),
        hs,
        m.key().unwrap_or_default(),
        m.payload(),
    )
}

/// Restore progress of one store, for the progress bar.
#[derive(Debug, Clone, Copy)]
pub struct RestoreProgress<'a> {
    pub store: &'a str,
    pub read: u64,
    pub total: u64,
}

/// A commit's I/O with Kafka: data records through the stage's producer (with its outputs),
/// markers through `env`'s marker producer, offsets through the stage's consumer.
pub(crate) struct KafkaCommit<'a, C: ConsumerContext + 'static> {
    /// `None` for a stage without state (no changelog records, no markers).
    pub(crate) env: Option<&'a LogEnv>,
    pub(crate) producer: &'a mut TrackedProducer,
    /// `None` outside a group (tests): no offsets are committed.
    pub(crate) consumer: Option<&'a BaseConsumer<C>>,
    /// The stage's input topics, by index.
    pub(crate) inputs: &'a [String],
    pub(crate) stage: &'a str,
    /// When the stage last knew the process was not paused; checked before the markers.
    pub(crate) pause_mark: Option<pause::Mark>,
}

impl<C: ConsumerContext + 'static> KafkaCommit<'_, C> {
    fn env(&self) -> Result<&LogEnv, RuntimeError> {
        self.env.ok_or_else(|| {
            RuntimeError::Internal(format!(
                "changelog I/O for stage {} without state",
                self.stage
            ))
        })
    }
}

impl<C: ConsumerContext + 'static> ChangelogIo for KafkaCommit<'_, C> {
    type Error = RuntimeError;

    fn send_acked(&mut self, records: &[LogRecord]) -> Result<Vec<i64>, RuntimeError> {
        produce_acked(self.env()?, records)
    }
}

impl<C: ConsumerContext + 'static> CommitIo for KafkaCommit<'_, C> {
    fn send_record(
        &mut self,
        partition: i32,
        store: usize,
        key: &[u8],
        value: Option<&[u8]>,
        tag: &[u8],
    ) -> Result<(), RuntimeError> {
        let topic = self.env()?.topic(store)?;
        self.producer
            .send(data_record(topic, partition, key, value, tag))?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RuntimeError> {
        Ok(self.producer.flush(FLUSH_TIMEOUT)?)
    }

    /// A pause inside the steps before may have made us a zombie: no marker then.
    fn before_markers(&mut self) -> Result<(), RuntimeError> {
        match self.pause_mark.and_then(pause::since) {
            Some(d) => Err(RuntimeError::MembershipLost {
                stage: self.stage.to_string(),
                reason: format!("the process was paused for {d:?}"),
            }),
            None => Ok(()),
        }
    }

    fn commit_offsets(&mut self, offsets: &[(usize, i32, i64)]) -> Result<(), RuntimeError> {
        let Some(c) = self.consumer else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for &(input, partition, next) in offsets {
            let topic = self.inputs.get(input).ok_or_else(|| {
                RuntimeError::Internal(format!("input {input} of stage {}", self.stage))
            })?;
            tpl.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
        c.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    }
}

/// One task's commit outside a stage's consumer group (tests, tools): the protocol's commit
/// of one task, with no offsets committed.
pub fn commit_task<'a>(
    env: &LogEnv,
    producer: &mut TrackedProducer,
    log: &'a mut TaskLog,
    tables: Vec<&'a mut dyn AnyTable>,
    input_offset: i64,
    output_seq: u64,
) -> Result<(), RuntimeError> {
    let inputs = [String::new()];
    let mut io = KafkaCommit::<rdkafka::consumer::DefaultConsumerContext> {
        env: Some(env),
        producer,
        consumer: None,
        inputs: &inputs,
        stage: &env.stage,
        pause_mark: None,
    };
    let partition = log.partition();
    protocol::commit(
        &mut io,
        &mut [TaskCommit {
            input: 0,
            partition,
            input_end: input_offset,
            output_seq,
            state: Some((log, tables)),
        }],
    )
}

/// A data record of step 2: store key, value or tombstone, and the commit's tag.
pub(crate) fn data_record<'a>(
    topic: &'a str,
    partition: i32,
    key: &'a [u8],
    value: Option<&'a [u8]>,
    tag: &[u8],
) -> BaseRecord<'a, [u8], [u8], ()> {
    let rec =
        BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .headers(OwnedHeaders::new().insert(Header {
                key: TAG_HEADER,
                value: Some(tag),
            }));
    match value {
        Some(v) => rec.payload(v),
        None => rec,
    }
}

pub(crate) fn record_headers(rec: &ChangelogRecord) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: rec.header_name,
        value: Some(&rec.header_value[..]),
    })
}

/// Produces `records` with the marker producer and waits for every ack; returns each
/// record's offset. Records to one partition keep their order (A1).
pub(crate) fn produce_acked(env: &LogEnv, records: &[LogRecord]) -> Result<Vec<i64>, RuntimeError> {
    let mut topics = Vec::with_capacity(records.len());
    for r in records {
        topics.push(env.topic(r.store)?);
    }
    env.rt.block_on(async {
        let mut pending = Vec::with_capacity(records.len());
        let mut offsets = Vec::with_capacity(records.len());
        for (r, topic) in records.iter().zip(&topics) {
            let rec = &r.record;
            let mut fr = FutureRecord::to(topic)
                .partition(r.partition)
                .key(&rec.key[..])
                .headers(record_headers(rec));
            if let Some(v) = &rec.value {
                fr = fr.payload(&v[..]);
            }
            // Enqueue without waiting so all records travel together; on a full local
            // queue, wait for what is in flight first.
            let fut = match env.marker_producer.send_result(fr) {
                Ok(f) => f,
                Err((_, fr)) => {
                    for f in pending.drain(..) {
                        await_delivery(f, &mut offsets).await?;
                    }
                    env.marker_producer
                        .send_result(fr)
                        .map_err(|(e, _)| RuntimeError::Rd(e))?
                }
            };
            pending.push(fut);
        }
        for f in pending {
            await_delivery(f, &mut offsets).await?;
        }
        Ok(offsets)
    })
}

async fn await_delivery(
    f: rdkafka::producer::DeliveryFuture,
    offsets: &mut Vec<i64>,
) -> Result<(), RuntimeError> {
    match f.await {
        Ok(Ok(d)) => {
            offsets.push(d.offset);
            Ok(())
        }
        Ok(Err((e, _))) => Err(RuntimeError::Rd(e)),
        Err(_) => Err(RuntimeError::Internal(
            "marker producer dropped a delivery".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;
    use sluice_state::changelog::MARKER_KEY;
    use sluice_state::{Entry, Marker, MarkerKind, Tag};

    use super::*;

    #[test]
    fn data_records_read_back_as_tagged_entries() {
        let tag = Tag {
            epoch: 5 << 16,
            commit_seq: 3,
            input_end: 77,
        };
        let tag_bytes = tag.encode();
        for value in [Some(&b"v"[..]), None] {
            let rec = data_record("t", 2, b"k", value, &tag_bytes);
            assert_eq!(rec.partition, Some(2));
            let headers = rec.headers.as_ref().unwrap();
            let entry = Entry::decode(
                0,
                0,
                headers.iter().map(|h| (h.key, h.value)),
                rec.key.unwrap(),
                rec.payload,
            )
            .unwrap();
            assert_eq!(
                entry,
                Entry::Data {
                    tag,
                    key: b"k",
                    value
                }
            );
        }
    }

    #[test]
    fn markers_read_back_through_kafka_headers() {
        let m = Marker {
            kind: MarkerKind::Commit,
            commit_seq: 4,
            epoch: 9,
            input_offset: 1000,
            output_seq: 55,
            records: 12,
            rebuild: sluice_state::Rebuild::NONE,
        };
        let rec = ChangelogRecord::marker(&m);
        assert_eq!(rec.key, MARKER_KEY);
        let headers = record_headers(&rec);
        let entry = Entry::decode(
            0,
            0,
            headers.iter().map(|h| (h.key, h.value)),
            &rec.key,
            rec.value.as_deref(),
        )
        .unwrap();
        assert_eq!(entry, Entry::Marker(m));
    }
}
