//! Client settings shared by every stage, in one place so a reader sees what sluice asks of
//! the broker.

use std::time::Duration;

use rdkafka::config::ClientConfig;

use super::security::KafkaSecurity;

/// `transaction.timeout.ms` of transactional producers (librdkafka's default, stated): how
/// long a transaction left open by a crashed or stuck instance holds back read_committed
/// readers before the broker aborts it. A commit must finish well within it.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("broker at {brokers} did not answer: {source}. Is it running? Start the local one with `scripts/stack up`")]
    Unreachable {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("authentication to {connection} failed: {reason}. Check the user and the password's source (connections.security.sasl); the password is not shown")]
    Authentication { connection: String, reason: String },
    #[error("TLS to {connection} failed: {reason}. Check `connections.security.ca` names the CA that signed the broker's certificate")]
    Tls { connection: String, reason: String },
    #[error("cannot reach {connection}: {reason}")]
    Connect { connection: String, reason: String },
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic} on {brokers} failed: {reason}")]
    CreateTopic {
        topic: String,
        brokers: String,
        reason: String,
    },
    #[error("{failed} of the records sent to {brokers} were not delivered; last error: {last}")]
    Delivery {
        brokers: String,
        failed: u64,
        last: String,
    },
}

/// What differs between deployments; everything else is fixed below.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub brokers: String,
    /// `group.instance.id` for static membership (a rolling restart keeps assignments).
    pub instance_id: Option<String>,
    /// Read only committed records (transactional mode).
    pub read_committed: bool,
    /// Idempotent producer: keeps per-partition order through retries. Brokers without
    /// InitProducerId support need `false` plus one request in flight (see BROKER_GAPS.md).
    pub idempotence: bool,
    /// TLS and SASL (`connections.security`); default plaintext.
    pub security: KafkaSecurity,
}

impl ClientOptions {
    pub fn new(brokers: impl Into<String>) -> Self {
        ClientOptions {
            brokers: brokers.into(),
            instance_id: None,
            read_committed: false,
            idempotence: std::env::var("SLUICE_KAFKA_IDEMPOTENCE").map_or(true, |v| v != "false"),
            security: KafkaSecurity::default(),
        }
    }

    /// As [`ClientOptions::new`], with TLS and SASL.
    pub fn secured(brokers: impl Into<String>, security: KafkaSecurity) -> Self {
        ClientOptions {
            security,
            ..ClientOptions::new(brokers)
        }
    }

    /// The connection as errors name it (address, protocol, SASL user; never the password).
    pub fn describe(&self) -> String {
        self.security.describe(&self.brokers)
    }
}

/// A client with only the connection settings (address, TLS, SASL): admin clients and the
/// consumers that only read metadata or offsets.
pub fn admin_config(opts: &ClientOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.brokers);
    opts.security.apply(&mut c);
    c
}

/// A consumer in `group`, committing offsets by hand (the changelog marker is the authority).
pub fn consumer_config(opts: &ClientOptions, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Restore runs inside the rebalance callback; give it room before the group gives
        // up on this member.
        .set("max.poll.interval.ms", "600000")
        .set("session.timeout.ms", "30000")
        .set("queued.min.messages", "200000")
        .set("fetch.wait.max.ms", "100")
        .set(
            "isolation.level",
            if opts.read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        );
    if let Some(id) = &opts.instance_id {
        c.set("group.instance.id", id);
    }
    opts.security.apply(&mut c);
    c
}

/// A producer that batches for throughput and keeps each partition in order: downstream
/// de-duplication by high-water mark depends on that order.
pub fn producer_config(opts: &ClientOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.brokers)
        // A missing topic is an error, never a silently auto-created one with the broker's
        // default partition count (Nisshi creates 4): topics come from the topology.
        .set("allow.auto.create.topics", "false")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        // Java's partitioner, so keys land where Kafka Streams and other clients put them.
        .set("partitioner", "murmur2_random")
        // A delivery that cannot finish in 5 minutes fails the commit; the task then
        // restarts from its last marker.
        .set("message.timeout.ms", "300000");
    if opts.idempotence {
        c.set("enable.idempotence", "true");
    } else {
        c.set("max.in.flight.requests.per.connection", "1");
    }
    opts.security.apply(&mut c);
    c
}

/// A transactional producer (`processing.guarantee: exactly_once_transactional`): the
/// settings of [`producer_config`] plus `transactional.id`. Deliveries time out with the
/// transaction (librdkafka refuses a `message.timeout.ms` above `transaction.timeout.ms`),
/// and transactions imply idempotence whatever `opts.idempotence` says.
pub fn transactional_producer_config(opts: &ClientOptions, transactional_id: &str) -> ClientConfig {
    let timeout_ms = TRANSACTION_TIMEOUT.as_millis().to_string();
    let mut c = producer_config(opts);
    c.set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", &timeout_ms)
        .set("message.timeout.ms", &timeout_ms)
        .set("enable.idempotence", "true");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assumption A1 of docs/EXACTLY_ONCE.md: every producer sluice builds (outputs,
    /// changelogs, markers, simulate, dlq replay, bench) comes from these two functions.
    #[test]
    fn every_producer_waits_for_all_in_sync_replicas() {
        let mut opts = ClientOptions::new("127.0.0.1:9092");
        opts.idempotence = true;
        let plain = producer_config(&opts);
        let txn = transactional_producer_config(&opts, "t");
        for c in [&plain, &txn] {
            assert_eq!(c.get("acks"), Some("all"));
            assert_eq!(c.get("enable.idempotence"), Some("true"));
        }
        opts.idempotence = false;
        let plain = producer_config(&opts);
        assert_eq!(plain.get("acks"), Some("all"));
        assert_eq!(
            plain.get("max.in.flight.requests.per.connection"),
            Some("1")
        );
    }
}
