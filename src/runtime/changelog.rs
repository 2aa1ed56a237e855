//! The Kafka side of changelogged state: restoring a task's stores from their changelog
//! partitions and writing a commit's changelog records and markers (steps 2-4 of the commit
//! protocol in docs/EXACTLY_ONCE.md). The protocol's decisions are `sluice_state`'s; this
//! module moves the bytes.
//!
//! - `restore.rs`: the restore sequence ("Restore", steps 1-7) over a plain assigned consumer;
//! - here: the commit path and the acked produce of markers, fences and repair records, whose
//!   offsets become local checkpoints.

mod restore;

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord};
use sluice_connectors::kafka::{ClientOptions, TrackedProducer};
use sluice_state::changelog::TAG_HEADER;
use sluice_state::{
    ChangelogRecord, Checkpoint, Entry, Marker, MarkerKind, RocksEnv, RocksStore, StateError, Tag,
    WriteBatch,
};

use super::RuntimeError;
use sluice_state::table::AnyTable;

/// How long a commit waits for its changelog records to be acknowledged; longer than the
/// producer's `message.timeout.ms`, so a failure is reported by the producer, not by us.
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

/// Where a restored task resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Next input offset; `None` when the task never committed (use the group's position).
    pub input_offset: Option<i64>,
    /// Next output sequence number for `sluice.id`.
    pub output_seq: u64,
}

/// Restore progress of one store, for the progress bar.
#[derive(Debug, Clone, Copy)]
pub struct RestoreProgress<'a> {
    pub store: &'a str,
    pub read: u64,
    pub total: u64,
}

/// One task's changelog position: its epoch and commit sequence.
pub struct TaskLog {
    pub partition: i32,
    /// The epoch of this task's fence; every record and marker it writes carries it.
    epoch: u64,
    /// Sequence number of the next commit.
    next_seq: u64,
}

impl TaskLog {
    /// Restores every store of task `partition` (from the local checkpoint when it provably
    /// matches the changelog, from the changelog's start otherwise), fences older epochs,
    /// attaches each restored engine to its table (`tables[i]` is store `env.stores[i]`),
    /// and says where input and output numbering resume.
    pub fn restore(
        env: &LogEnv,
        partition: i32,
        tables: &mut [&mut dyn AnyTable],
        progress: &mut dyn FnMut(RestoreProgress<'_>),
    ) -> Result<(TaskLog, Resume), RuntimeError> {
        restore::restore(env, partition, tables, progress)
    }

    /// The epoch this task writes in (tests, logs).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number the next commit will carry.
    pub fn next_commit_seq(&self) -> u64 {
        self.next_seq
    }

    /// Steps 2-4 of a commit, after the batch's outputs were acknowledged: every table's
    /// dirty entries to its changelog partition (tagged with this commit), wait for acks, a
    /// marker carrying `input_offset` and `output_seq` to every changelog partition, wait for
    /// acks, then each engine's batch with the marker's checkpoint.
    pub fn commit(
        &mut self,
        env: &LogEnv,
        producer: &mut TrackedProducer,
        tables: &mut [&mut dyn AnyTable],
        input_offset: i64,
        output_seq: u64,
    ) -> Result<(), RuntimeError> {
        let staged = self.send_records(env, producer, tables, input_offset, output_seq)?;
        // Step 2's wait: every record acknowledged before a marker may name it.
        producer.flush(FLUSH_TIMEOUT)?;
        let markers = staged.markers(env, self.partition);
        let offsets = produce_acked(env, &markers)?;
        self.finish(env, tables, staged, &offsets)
    }

    /// Step 2 of a commit without the wait: every table's dirty entries are sent to its
    /// changelog. The caller flushes `producer` (for every task at once, so a commit of
    /// many partitions waits once), then produces [`Staged::markers`] acknowledged (step 3)
    /// and hands their offsets to [`TaskLog::finish`] (step 4).
    pub fn send_records(
        &self,
        env: &LogEnv,
        producer: &TrackedProducer,
        tables: &mut [&mut dyn AnyTable],
        input_offset: i64,
        output_seq: u64,
    ) -> Result<Staged, RuntimeError> {
        check_tables(env, tables)?;
        let tag = Tag {
            epoch: self.epoch,
            commit_seq: self.next_seq,
            input_end: input_offset,
        };
        let tag_bytes = tag.encode();
        let mut drained = Vec::with_capacity(tables.len());
        for (table, (_, topic)) in tables.iter_mut().zip(&env.stores) {
            let mut out = Vec::new();
            table.drain_dirty(&mut out);
            for (key, value) in &out {
                producer.send(data_record(
                    topic,
                    self.partition,
                    key,
                    value.as_deref(),
                    &tag_bytes,
                ))?;
            }
            drained.push(out);
        }
        Ok(Staged {
            tag,
            output_seq,
            drained,
        })
    }

    /// Step 4: each engine's batch with its checkpoint (the offset of its store's marker,
    /// in store order), atomically per store.
    pub fn finish(
        &mut self,
        env: &LogEnv,
        tables: &mut [&mut dyn AnyTable],
        staged: Staged,
        marker_offsets: &[i64],
    ) -> Result<(), RuntimeError> {
        check_tables(env, tables)?;
        if marker_offsets.len() != staged.drained.len() {
            return Err(RuntimeError::Internal(format!(
                "{} marker offsets for {} stores",
                marker_offsets.len(),
                staged.drained.len()
            )));
        }
        let tag = staged.tag;
        for ((table, out), &marker_offset) in
            tables.iter_mut().zip(staged.drained).zip(marker_offsets)
        {
            write_store(&mut **table, out, &tag, marker_offset)?;
        }
        tracing::debug!(
            partition = self.partition,
            commit_seq = tag.commit_seq,
            epoch = tag.epoch,
            input_offset = tag.input_end,
            output_seq = staged.output_seq,
            "Committed changelogs."
        );
        self.next_seq += 1;
        Ok(())
    }
}

/// One task's changelog records sent and not yet marked (between steps 2 and 3).
pub struct Staged {
    tag: Tag,
    output_seq: u64,
    drained: Vec<Drained>,
}

impl Staged {
    /// The marker of each store, in store order: (topic, partition, record).
    pub(crate) fn markers<'e>(&self, env: &'e LogEnv, partition: i32) -> Vec<MarkerRecord<'e>> {
        env.stores
            .iter()
            .zip(&self.drained)
            .map(|((_, topic), out)| {
                let marker = commit_marker(&self.tag, self.output_seq, out.len());
                (topic.as_str(), partition, ChangelogRecord::marker(&marker))
            })
            .collect()
    }
}

/// A record for [`produce_acked`]: topic, partition, record.
pub(crate) type MarkerRecord<'a> = (&'a str, i32, ChangelogRecord);

/// A transactional commit of one task, written into the open transaction and waiting for
/// it to commit before its stores take the batch (see [`TaskLog::write_in_txn`]).
pub(crate) type PendingCommit = Staged;

/// One store's entries of a commit: key and new value (`None`: deleted).
type Drained = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Step 4 for one store: its entries and the checkpoint of its marker, atomically.
fn write_store(
    table: &mut dyn AnyTable,
    out: Drained,
    tag: &Tag,
    marker_offset: i64,
) -> Result<(), RuntimeError> {
    let engine = table
        .engine_mut()
        .ok_or_else(|| RuntimeError::Internal("commit on a table with no engine".into()))?;
    let mut batch = WriteBatch::with_capacity(out.len());
    for (k, v) in out {
        batch.push(k, v);
    }
    engine.write(
        batch,
        Some(&Checkpoint {
            marker_offset,
            commit_seq: tag.commit_seq,
            epoch: tag.epoch,
        }),
    )?;
    Ok(())
}

impl TaskLog {
    /// Steps 2-3 of a commit in transactional mode: every table's dirty entries and then a
    /// marker per store go into `producer`'s open transaction, without waiting for acks
    /// (the transaction makes them visible together or never). The markers' offsets come
    /// back through the producer's watched key ([`sluice_state::changelog::MARKER_KEY`]);
    /// once the transaction committed, [`TaskLog::apply_committed`] writes the stores.
    pub(crate) fn write_in_txn(
        &self,
        env: &LogEnv,
        producer: &TrackedProducer,
        tables: &mut [&mut dyn AnyTable],
        input_offset: i64,
        output_seq: u64,
    ) -> Result<PendingCommit, RuntimeError> {
        let staged = self.send_records(env, producer, tables, input_offset, output_seq)?;
        for (topic, partition, marker) in staged.markers(env, self.partition) {
            let mut rec = BaseRecord::to(topic)
                .partition(partition)
                .key(&marker.key[..])
                .headers(record_headers(&marker));
            if let Some(v) = &marker.value {
                rec = rec.payload(&v[..]);
            }
            producer.send(rec)?;
        }
        Ok(staged)
    }

    /// Step 4 after the transaction of `pending` committed: each engine's batch with the
    /// checkpoint of its marker, found in `markers` (topic, partition, offset).
    pub(crate) fn apply_committed(
        &mut self,
        env: &LogEnv,
        tables: &mut [&mut dyn AnyTable],
        pending: PendingCommit,
        markers: &[(String, i32, i64)],
    ) -> Result<(), RuntimeError> {
        check_tables(env, tables)?;
        let Staged { tag, drained, .. } = pending;
        for ((table, out), (store, topic)) in tables.iter_mut().zip(drained).zip(&env.stores) {
            let mut found = markers
                .iter()
                .filter(|(t, p, _)| t == topic && *p == self.partition);
            let marker_offset = match (found.next(), found.next()) {
                (Some(&(_, _, off)), None) => off,
                _ => {
                    return Err(RuntimeError::Internal(format!(
                        "expected one acknowledged marker for store {store} ({topic} partition {}) in commit {}",
                        self.partition, tag.commit_seq
                    )))
                }
            };
            write_store(&mut **table, out, &tag, marker_offset)?;
        }
        tracing::debug!(
            partition = self.partition,
            commit_seq = tag.commit_seq,
            epoch = tag.epoch,
            input_offset = tag.input_end,
            "Committed changelogs in a transaction."
        );
        self.next_seq += 1;
        Ok(())
    }
}

fn check_tables(env: &LogEnv, tables: &[&mut dyn AnyTable]) -> Result<(), RuntimeError> {
    if tables.len() != env.stores.len() {
        return Err(RuntimeError::Internal(format!(
            "{} tables for {} changelogged stores of stage {}",
            tables.len(),
            env.stores.len(),
            env.stage
        )));
    }
    Ok(())
}

/// The commit marker of step 3 for a store that wrote `records` data records.
fn commit_marker(tag: &Tag, output_seq: u64, records: usize) -> Marker {
    Marker {
        kind: MarkerKind::Commit,
        commit_seq: tag.commit_seq,
        epoch: tag.epoch,
        input_offset: tag.input_end,
        output_seq,
        records: u32::try_from(records).unwrap_or(u32::MAX),
    }
}

/// A data record of step 2: store key, value or tombstone, and the commit's tag.
fn data_record<'a>(
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

fn record_headers(rec: &ChangelogRecord) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: rec.header_name,
        value: Some(&rec.header_value[..]),
    })
}

/// Produces `records` (topic, record) to `partition` with the marker producer and waits for
/// every ack; returns each record's offset. Records to one partition keep their order (A1).
pub(crate) fn produce_acked(
    env: &LogEnv,
    records: &[MarkerRecord<'_>],
) -> Result<Vec<i64>, RuntimeError> {
    env.rt.block_on(async {
        let mut pending = Vec::with_capacity(records.len());
        let mut offsets = Vec::with_capacity(records.len());
        for (topic, partition, rec) in records {
            let mut fr = FutureRecord::to(topic)
                .partition(*partition)
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
    use sluice_state::Entry;

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
    fn markers_carry_the_commit_and_read_back() {
        let tag = Tag {
            epoch: 9,
            commit_seq: 4,
            input_end: 1000,
        };
        let m = commit_marker(&tag, 55, 12);
        assert_eq!(
            (
                m.kind,
                m.commit_seq,
                m.epoch,
                m.input_offset,
                m.output_seq,
                m.records
            ),
            (MarkerKind::Commit, 4, 9, 1000, 55, 12)
        );
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
