//! One Fluvio partition written by its only writer, and read back from an offset to its end:
//! what a stage task writing a Fluvio output needs (docs/FLUVIO.md, "Stages writing Fluvio").

use std::sync::Arc;
use std::time::Duration;

use ::fluvio::consumer::{ConsumerConfigExtBuilder, OffsetManagementStrategy, RetryMode};
use ::fluvio::{
    DeliverySemantic, Isolation, Offset, RecordKey, RetryPolicy, TopicProducerConfigBuilder,
    TopicProducerPool,
};
use futures::StreamExt;

use super::{FluvioClient, FluvioError, FluvioRecord};

/// Bytes of records handed to the producer before a flush; well below [`BATCH_BYTES`], so
/// the producer never sends a batch on its own (a full batch would go out early, and the
/// client sends later batches after a failed one: records after a hole). A record larger
/// than this is written alone.
const CHUNK_BYTES: usize = 1 << 20;
/// The producer's batch: records of one chunk stay in one batch.
const BATCH_BYTES: usize = 4 << 20;
/// How long the SPU may take to store a write (its replicas included).
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write may take before it fails here: longer than the server's, so a request
/// the SPU still stores cannot land after this side gave up on it (and after a restored
/// task read the partition).
const ACK_TIMEOUT: Duration = Duration::from_secs(90);

/// Writes one partition of a topic, in order, one request at a time: a write either lands
/// whole, or a prefix of it does and the call fails, and nothing is sent after a failure.
/// So the partition holds, past any offset this writer reached, a prefix of what it was
/// asked to write next; a restored writer can find its records there by comparing.
pub struct PartitionWriter {
    inner: TopicProducerPool,
    endpoint: String,
    topic: String,
    partition: i32,
    failed: bool,
}

impl FluvioClient {
    /// The only writer of partition `partition` of `topic`: records wait until
    /// [`PartitionWriter::write`] flushes them (no linger flush, no retry that could write a
    /// batch twice), acknowledged once every in-sync replica has them.
    pub async fn partition_writer(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionWriter, FluvioError> {
        let what = format!("opening a writer of {topic}/{partition}");
        let config = TopicProducerConfigBuilder::default()
            .partitioner(Arc::new(Fixed(partition as u32)))
            .isolation(Isolation::ReadCommitted)
            // Waits for the SPU's answer and keeps its error code (the at-most-once path of
            // 0.50.1 reports success whatever the SPU answered), with no retry: a retried
            // request that had been stored would be written twice.
            .delivery_semantic(DeliverySemantic::AtLeastOnce(RetryPolicy {
                max_retries: 0,
                timeout: ACK_TIMEOUT - Duration::from_secs(10),
                ..RetryPolicy::default()
            }))
            .batch_size(BATCH_BYTES)
            .max_request_size(BATCH_BYTES * 2)
            .linger(Duration::from_secs(24 * 3600))
            .timeout(SERVER_TIMEOUT)
            .build()
            .map_err(|e| self.failed(what.clone(), e))?;
        let inner = self
            .fluvio
            .topic_producer_with_config(topic, config)
            .await
            .map_err(|e| self.failed(what, format!("{e:#}")))?;
        Ok(PartitionWriter {
            inner,
            endpoint: self.endpoint.clone(),
            topic: topic.to_string(),
            partition,
            failed: false,
        })
    }

    /// Every record of partition `partition` of `topic` from offset `from` to the end the
    /// partition's leader reports when asked (read-committed), in offset order, none skipped
    /// (offsets missing even when read from their own offset, e.g. past retention, are
    /// accepted as gone). A stream error is an error, not an early end.
    pub async fn read_to_end(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<Vec<FluvioRecord>, FluvioError> {
        let what = format!("reading {topic}/{partition} from {from} to its end");
        let mut out = Vec::new();
        let mut next = from;
        // The offset the last reopening was for: a gap there again is accepted.
        let mut reopened_at = None;
        loop {
            let config = ConsumerConfigExtBuilder::default()
                .topic(topic.to_string())
                .partition(partition as u32)
                .offset_start(Offset::absolute(next).map_err(|e| self.failed(what.clone(), e))?)
                .offset_strategy(OffsetManagementStrategy::None)
                .isolation(Isolation::ReadCommitted)
                .disable_continuous(true)
                .retry_mode(RetryMode::Disabled)
                .build()
                .map_err(|e| self.failed(what.clone(), e))?;
            let mut stream = Box::pin(
                self.fluvio
                    .consumer_with_config(config)
                    .await
                    .map_err(|e| self.failed(what.clone(), format!("{e:#}")))?,
            );
            let before = next;
            let mut gap = false;
            while let Some(r) = tokio::time::timeout(ACK_TIMEOUT, stream.next())
                .await
                .map_err(|_| self.failed(what.clone(), "no record for 60 s"))?
            {
                let r = r.map_err(|code| self.failed(what.clone(), format!("{code:?}")))?;
                if r.offset() < next {
                    continue;
                }
                if r.offset() > next && reopened_at != Some(next) {
                    // The 0.50 client's stream can skip records (docs/BROKER_GAPS.md):
                    // open it again at the first one missing.
                    gap = true;
                    reopened_at = Some(next);
                    break;
                }
                next = r.offset() + 1;
                out.push(FluvioRecord {
                    offset: r.offset(),
                    timestamp: r.timestamp(),
                    key: r.key().map(<[u8]>::to_vec),
                    value: r.value().to_vec(),
                });
            }
            // Done when a reading from `next` found nothing more: the end it was opened with.
            if !gap && next == before {
                return Ok(out);
            }
        }
    }
}

impl PartitionWriter {
    fn failed(&mut self, what: &str, e: impl std::fmt::Display) -> FluvioError {
        self.failed = true;
        FluvioError::Request {
            endpoint: self.endpoint.clone(),
            what: format!("{what} {}/{}", self.topic, self.partition),
            reason: e.to_string(),
        }
    }

    /// Writes `records` (key, value) in order; `None` when there were none. Chunks go one
    /// after another, each acknowledged before the next is sent. After a failure the writer
    /// refuses to write more (its caller restores and compares, see the type's doc).
    pub async fn write(
        &mut self,
        records: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Option<Landed>, FluvioError> {
        if self.failed {
            return Err(self.failed("writing to", "an earlier write failed"));
        }
        let mut landed: Option<Landed> = None;
        let mut records = records.into_iter().peekable();
        let size = |(k, v): &(Vec<u8>, Vec<u8>)| k.len() + v.len() + 16;
        while records.peek().is_some() {
            let mut bytes = 0;
            let mut outs = Vec::new();
            // A chunk ends before the record that would take it past CHUNK_BYTES.
            while let Some(r) =
                records.next_if(|r| outs.is_empty() || bytes + size(r) <= CHUNK_BYTES)
            {
                bytes += size(&r);
                let (k, v) = r;
                match self.inner.send(RecordKey::from(k), v).await {
                    Ok(out) => outs.push(out),
                    Err(e) => return Err(self.failed("producing to", format!("{e:#}"))),
                }
            }
            let count = outs.len();
            // The chunk is one batch: its first and last records' offsets say where all of
            // it landed (a batch of it that failed would show as fewer offsets than records).
            let acked = async {
                self.inner.flush().await.map_err(|e| format!("{e:#}"))?;
                let last = outs.pop().expect("a chunk has a record");
                let first = match outs.into_iter().next() {
                    Some(out) => out.wait().await.map_err(|e| format!("{e:#}"))?.offset(),
                    None => -1,
                };
                let last = last.wait().await.map_err(|e| format!("{e:#}"))?.offset();
                Ok::<_, String>((if first < 0 { last } else { first }, last))
            };
            let (first, last) = match tokio::time::timeout(ACK_TIMEOUT, acked).await {
                Ok(Ok(at)) => at,
                Ok(Err(e)) => {
                    return Err(self.failed("waiting for the acknowledgement of a write to", e))
                }
                Err(_) => {
                    return Err(self.failed(
                        "waiting for the acknowledgement of a write to",
                        format!("none within {ACK_TIMEOUT:?}"),
                    ))
                }
            };
            if last - first + 1 != count as i64 {
                return Err(self.failed(
                    "writing to",
                    format!("{count} records landed at offsets {first} to {last}: not one run"),
                ));
            }
            landed = Some(match landed {
                None => Landed { first, last, count },
                Some(l) => Landed {
                    first: l.first,
                    last,
                    count: l.count + count,
                },
            });
        }
        Ok(landed)
    }
}

/// Where a write's records landed: the offsets of the first and the last, and how many
/// there were (`last - first + 1` when nothing else was written in between).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub first: i64,
    pub last: i64,
    pub count: usize,
}

/// Every record to one partition.
struct Fixed(u32);

impl ::fluvio::Partitioner for Fixed {
    fn partition(
        &self,
        _config: &::fluvio::PartitionerConfig,
        _key: Option<&[u8]>,
        _value: &[u8],
    ) -> u32 {
        self.0
    }
}
