//! A producer that can say whether everything sent so far was delivered: the commit path
//! waits on it between its steps (docs/EXACTLY_ONCE.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientContext, Message};

use super::client::{producer_config, ClientOptions, KafkaError};

/// Counts delivery outcomes; the commit path reads it after a flush.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    last_error: Mutex<String>,
    /// Records with this key have their offsets kept (a transactional commit's markers,
    /// whose offsets become local checkpoints); `None` keeps none.
    watched_key: Option<Vec<u8>>,
    /// (topic, partition, offset) of each delivered record with the watched key.
    watched: Mutex<Vec<(String, i32, i64)>>,
}

impl DeliveryTracker {
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
        mut config: rdkafka::ClientConfig,
        watched_key: Option<Vec<u8>>,
    ) -> Result<Self, KafkaError> {
        if watched_key.is_none() {
            // Only failures matter to `flush`; a report per delivered record costs an event,
            // a queue hop and a callback each (about 5% of a stage's CPU in a profile).
            config.set("delivery.report.only.error", "true");
        }
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

    /// Drops every record still queued in this process (not yet sent to the broker); they
    /// count as failed deliveries. For an instance that may have lost its partitions: what
    /// it has not sent yet, it must not send.
    pub fn purge_unsent(&self) {
        self.inner.purge(PurgeConfig::default().queue());
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

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    fn record(topic: &str) -> BaseRecord<'_, [u8], [u8], ()> {
        BaseRecord::to(topic).key(&b"k"[..]).payload(&b"v"[..])
    }

    /// Successes are not reported (`delivery.report.only.error`), failures still are: a
    /// record the broker refuses fails the next flush, and only that one.
    #[test]
    fn a_refused_record_fails_the_flush_and_delivered_ones_do_not() {
        let mock: MockCluster<'static, DefaultProducerContext> =
            MockCluster::new(1).expect("mock cluster");
        mock.create_topic("t", 1, 1).expect("topic");
        let opts = ClientOptions::new(mock.bootstrap_servers());
        let mut producer = TrackedProducer::new(&opts).expect("producer");

        for _ in 0..100 {
            producer.send(record("t")).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        assert_eq!(producer.tracker().failed(), 0);

        // Not retriable: the record fails at once instead of being retried until it times out.
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        producer.send(record("t")).unwrap();
        match producer.flush(Duration::from_secs(30)) {
            Err(KafkaError::Delivery { failed, .. }) => assert_eq!(failed, 1),
            other => panic!("expected a delivery failure, got {other:?}"),
        }

        producer.send(record("t")).unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    }
}
