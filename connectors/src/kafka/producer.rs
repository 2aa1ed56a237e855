//! A producer that can say whether everything sent so far was delivered: the commit path
//! waits on it between its steps (docs/EXACTLY_ONCE.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use super::client::{producer_config, ClientOptions, KafkaError};

/// Counts delivery outcomes; the commit path reads it after a flush.
#[derive(Default)]
pub struct DeliveryTracker {
    delivered: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<String>,
    /// Records with this key have their offsets kept (a transactional commit's markers,
    /// whose offsets become local checkpoints); `None` keeps none.
    watched_key: Option<Vec<u8>>,
    /// (topic, partition, offset) of each delivered record with the watched key.
    watched: Mutex<Vec<(String, i32, i64)>>,
}

impl DeliveryTracker {
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// The rdkafka context that feeds a [`DeliveryTracker`].
#[derive(Clone, Default)]
pub struct TrackingContext(pub Arc<DeliveryTracker>);

impl ClientContext for TrackingContext {}

impl ProducerContext for TrackingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(key) = &self.0.watched_key {
                    if m.key() == Some(&key[..]) {
                        let mut w = self.0.watched.lock().unwrap_or_else(|p| p.into_inner());
                        w.push((m.topic().to_string(), m.partition(), m.offset()));
                    }
                }
            }
            Err((e, m)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut last = self.0.last_error.lock().unwrap_or_else(|p| p.into_inner());
                *last = format!("{e} (topic {} partition {})", m.topic(), m.partition());
            }
        }
    }
}

/// A threaded producer whose sends never drop a record on a full queue and whose
/// [`TrackedProducer::flush`] fails if anything since the last flush was not delivered.
pub struct TrackedProducer {
    inner: ThreadedProducer<TrackingContext>,
    tracker: Arc<DeliveryTracker>,
    brokers: String,
    failed_seen: u64,
}

impl TrackedProducer {
    pub fn new(opts: &ClientOptions) -> Result<Self, KafkaError> {
        Self::with_config(opts, producer_config(opts))
    }

    pub fn with_config(
        opts: &ClientOptions,
        config: rdkafka::ClientConfig,
    ) -> Result<Self, KafkaError> {
        Self::build(opts, config, None)
    }

    /// Like [`TrackedProducer::with_config`], and keeps the offset of every delivered record
    /// whose key is `key` until [`TrackedProducer::take_watched`].
    pub fn with_watched_key(
        opts: &ClientOptions,
        config: rdkafka::ClientConfig,
        key: &[u8],
    ) -> Result<Self, KafkaError> {
        Self::build(opts, config, Some(key.to_vec()))
    }

    fn build(
        opts: &ClientOptions,
        config: rdkafka::ClientConfig,
        watched_key: Option<Vec<u8>>,
    ) -> Result<Self, KafkaError> {
        let tracker = Arc::new(DeliveryTracker {
            watched_key,
            ..DeliveryTracker::default()
        });
        let inner = config.create_with_context(TrackingContext(tracker.clone()))?;
        Ok(TrackedProducer {
            inner,
            tracker,
            brokers: opts.brokers.clone(),
            failed_seen: 0,
        })
    }

    /// Queues one record, waiting for room when the local queue is full.
    pub fn send(&self, mut record: BaseRecord<'_, [u8], [u8], ()>) -> Result<(), KafkaError> {
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // The producer thread drains the queue; give it a moment.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits until every queued record is acknowledged or failed; Err if any failed.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)?;
        let failed = self.tracker.failed();
        if failed > self.failed_seen {
            let n = failed - self.failed_seen;
            self.failed_seen = failed;
            let last = self
                .tracker
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(KafkaError::Delivery {
                brokers: self.brokers.clone(),
                failed: n,
                last,
            });
        }
        Ok(())
    }

    /// (topic, partition, offset) of the records with the watched key delivered since the
    /// last call, in delivery order.
    pub fn take_watched(&self) -> Vec<(String, i32, i64)> {
        std::mem::take(
            &mut *self
                .tracker
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// The broker addresses this producer was created for (error messages).
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    pub fn tracker(&self) -> &DeliveryTracker {
        &self.tracker
    }

    pub fn inner(&self) -> &ThreadedProducer<TrackingContext> {
        &self.inner
    }
}
