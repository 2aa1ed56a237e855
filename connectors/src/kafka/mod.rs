//! Kafka: client settings, topic creation, a producer that knows what was delivered, and
//! the headers sluice puts on records.

mod admin;
mod client;
mod headers;
mod producer;
mod security;

pub use admin::{ensure_topics, TopicOutcome, TopicToCreate};
pub use client::{
    admin_config, consumer_config, producer_config, transactional_producer_config, ClientOptions,
    KafkaError, TRANSACTION_TIMEOUT,
};
pub use headers::{dlq, header_str, IdWriter, MessageId, ID_HEADER};
pub use producer::{DeliveryTracker, TrackedProducer};
pub use security::{check_connection, KafkaSecurity, SaslCredentials};
