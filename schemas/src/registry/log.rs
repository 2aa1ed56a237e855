//! The `_schemas` topic: creating it, appending proposals, and tailing it into [`State`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::state::{Applied, LogKey, State};
use super::RegistryError;

/// How long a broker call may take before we give up on it.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts to read the topic after an error.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Creates the topic (compacted, one partition) unless it exists.
pub(crate) async fn ensure_topic(brokers: &str, topic: &str) -> Result<(), RegistryError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(RegistryError::Kafka)?;
    // One partition keeps a single total order, which is what makes id allocation safe.
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    for result in admin
        .create_topics([&new], &opts)
        .await
        .map_err(RegistryError::Kafka)?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(RegistryError::Topic(format!("creating {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// Appends records to the topic and reports their offsets.
pub(crate) struct LogWriter {
    producer: FutureProducer,
    topic: String,
}

impl LogWriter {
    pub(crate) fn new(brokers: &str, topic: &str) -> Result<Self, RegistryError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(RegistryError::Kafka)?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Appends one record (`None` value is a tombstone) and returns its offset.
    pub(crate) async fn append(
        &self,
        key: &LogKey,
        value: Option<Vec<u8>>,
    ) -> Result<i64, RegistryError> {
        let key = serde_json::to_vec(key).map_err(|e| RegistryError::Topic(e.to_string()))?;
        let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.topic).key(&key);
        if let Some(v) = &value {
            record = record.payload(v);
        }
        let delivery = self
            .producer
            .send(record, BROKER_TIMEOUT)
            .await
            .map_err(|(e, _)| RegistryError::Kafka(e))?;
        Ok(delivery.offset)
    }
}

/// Tails the topic from the beginning forever, applying each record to `state` and
/// publishing the next offset to read on `applied` (so `applied > o` means `o` is applied).
pub(crate) async fn tail(
    brokers: String,
    topic: String,
    state: Arc<RwLock<State>>,
    applied: watch::Sender<i64>,
) -> Result<(), RegistryError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        // Never joins the group (we assign the partition); librdkafka still wants an id.
        .set(
            "group.id",
            format!("sluice-registry-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "20")
        .create()
        .map_err(RegistryError::Kafka)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .map_err(RegistryError::Kafka)?;
    consumer.assign(&tpl).map_err(RegistryError::Kafka)?;
    loop {
        let msg = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, topic = %topic, "Reading the schemas topic failed; retrying.");
                // Back off so a broker outage does not turn into a busy loop.
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
        };
        let offset = msg.offset();
        if let Some(key) = msg.key() {
            let outcome = state
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(key, msg.payload());
            if let Applied::Rejected(reason) = outcome {
                tracing::debug!(offset, reason = %reason, "Schemas record rejected in log order.");
            }
        }
        applied.send_replace(offset + 1);
    }
}

/// The offset the topic ends at now; the registry is ready once it has applied up to it.
pub(crate) fn end_offset(brokers: &str, topic: &str) -> Result<i64, RegistryError> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-registry-probe")
        .create()
        .map_err(RegistryError::Kafka)?;
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, BROKER_TIMEOUT)
        .map_err(RegistryError::Kafka)?;
    Ok(high)
}
