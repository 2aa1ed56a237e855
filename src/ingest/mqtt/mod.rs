//! The MQTT bridge: messages from a persistent QoS 1 session, mapped to the output topic's
//! schema and produced; each message is acknowledged to the MQTT broker only once the Kafka
//! broker acknowledged every record made of it (or its dead letter), in arrival order. A
//! crash anywhere loses nothing: what was not acknowledged comes again with the session.

mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use sluice_connectors::kafka::{dlq, IdWriter};
use sluice_topology::ingest::MqttIngestSpec;
use tokio::sync::watch;

use super::payload::{MapError, Mapper, Rejected, BAD_TOPIC};
use super::{BridgeReport, IngestError};
use crate::metrics::METRICS;
use session::{AckToken, Incoming, SessionConfig};

/// A bridge ready to run.
pub struct MqttBridge {
    pub name: String,
    pub client_id: String,
    pub spec: MqttIngestSpec,
    pub mapper: Mapper,
    /// Built from `sluice_connectors::kafka::producer_config`: acks=all and idempotence as
    /// every producer sluice has (docs/EXACTLY_ONCE.md, A1); a future per record is what
    /// acknowledging each MQTT message after its own delivery needs.
    pub writer: super::Writer,
    /// Set while the MQTT session is connected (readiness).
    pub connected: Arc<AtomicBool>,
}

/// One received message whose records are on their way to the Kafka broker.
struct InFlight {
    ack: AckToken,
    received: Instant,
    records: u64,
    /// The dead-letter class when the message went to the dead-letter topic.
    dead: Option<&'static str>,
    /// Every delivery result, Err(reason) for a failed one.
    results: Vec<Result<(), String>>,
    produce_seconds: f64,
}

impl MqttBridge {
    /// Runs until `stop` turns true: then stops taking messages, waits for the records in
    /// flight, acknowledges them, disconnects (the broker keeps the session) and returns.
    /// A failed delivery ends the bridge with an error and nothing after it acknowledged.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<BridgeReport, IngestError> {
        let name = self.name.clone();
        let cfg = SessionConfig {
            bridge: name.clone(),
            client_id: self.client_id.clone(),
            spec: self.spec.clone(),
        };
        let (client, mut rx, task) =
            session::start(&cfg, self.connected.clone(), self.spec.max_unacked);
        let received_c = METRICS.ingest_received.with_label_values(&[&name]);
        let produced_c = METRICS.ingest_produced.with_label_values(&[&name]);
        let acked_c = METRICS.ingest_acked.with_label_values(&[&name]);
        let pending_g = METRICS.ingest_acks_pending.with_label_values(&[&name]);
        let produce_h = METRICS.ingest_produce_seconds.with_label_values(&[&name]);
        let ack_h = METRICS.ingest_ack_seconds.with_label_values(&[&name]);
        let mut ids = IdWriter::new(&name);
        // Dead-letter ids go on across restarts: a sequence from the start time in µs.
        let mut dead_seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let mut report = BridgeReport::default();
        let mut in_flight = FuturesOrdered::new();
        let mut stopping = *stop.borrow();
        let mut failure = None;
        loop {
            if stopping && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let done: InFlight = done;
                    pending_g.dec();
                    if let Some(e) = done.results.iter().find_map(|r| r.as_ref().err()) {
                        failure = Some(IngestError::Delivery { bridge: name.clone(), reason: e.clone() });
                        break;
                    }
                    produce_h.observe(done.produce_seconds);
                    match done.dead {
                        Some(class) => {
                            METRICS.ingest_dead_letters.with_label_values(&[&name, class]).inc();
                            report.dead_letters += 1;
                        }
                        None => {
                            produced_c.inc_by(done.records);
                            report.produced += done.records;
                        }
                    }
                    if let Err(e) = client.ack(&done.ack).await {
                        failure = Some(IngestError::Mqtt { bridge: name.clone(), reason: e });
                        break;
                    }
                    ack_h.observe(done.received.elapsed().as_secs_f64());
                    acked_c.inc();
                    report.acked += 1;
                }
                m = rx.recv(), if !stopping && in_flight.len() < self.spec.max_unacked => {
                    let Some(m) = m else { break };
                    received_c.inc();
                    report.received += 1;
                    let f = match self.produce(m, &mut ids, &mut dead_seq, &stop).await? {
                        Some(f) => f,
                        None => continue, // stopped while the registry was away: not acked
                    };
                    pending_g.inc();
                    in_flight.push_back(f);
                }
                changed = stop.changed(), if !stopping => {
                    if changed.is_err() || *stop.borrow() {
                        stopping = true;
                        tracing::info!(bridge = %name, in_flight = in_flight.len(), "Stopping: no new messages; acknowledging what is in flight.");
                    }
                }
            }
        }
        pending_g.set(0);
        if let Some(e) = failure {
            // Nothing after the failed record is acknowledged; the broker's session keeps it.
            return Err(e);
        }
        if let Err(e) = client.disconnect().await {
            tracing::warn!(bridge = %name, error = %e, "MQTT disconnect failed; the broker keeps the session anyway.");
        }
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            tracing::warn!(bridge = %name, "The MQTT connection did not close within 10 s.");
        }
        self.connected.store(false, Ordering::Relaxed);
        Ok(report)
    }

    /// Maps one message and sends its records (or its dead letter); the returned future
    /// resolves once the Kafka broker answered for all of them. `None` when a stop came while
    /// waiting for the registry.
    async fn produce(
        &mut self,
        m: Incoming,
        ids: &mut IdWriter,
        dead_seq: &mut u64,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<impl std::future::Future<Output = InFlight>>, IngestError> {
        let received = Instant::now();
        let device = self.spec.topic.device_of(&m.topic).map(str::to_string);
        let mapped = loop {
            let r = match &device {
                None => Err(MapError::Rejected(Rejected {
                    class: BAD_TOPIC,
                    message: format!(
                        "the topic's device level ({}) is empty",
                        self.spec.topic.device_level() + 1
                    ),
                })),
                Some(d) => self.mapper.map(d, &m.payload).await,
            };
            match r {
                Err(MapError::Registry(e)) => {
                    tracing::warn!(bridge = %self.name, error = %e, "Schema registry unavailable; retrying this message.");
                    if *stop.borrow() {
                        return Ok(None);
                    }
                    // Retry backoff, not synchronisation: the registry is away.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(records) => break Ok(records),
                Err(MapError::Rejected(r)) => break Err(r),
            }
        };
        let key = device.as_deref().map(str::as_bytes);
        let mut futures = Vec::new();
        let (records, dead) = match mapped {
            Ok(records) => {
                for r in &records {
                    futures.push(
                        self.send(&self.spec.output, key, &r[..], None, true)
                            .await?,
                    );
                }
                (records.len() as u64, None)
            }
            Err(r) => {
                tracing::debug!(bridge = %self.name, topic = %m.topic, class = r.class, reason = %r.message, "Dead letter.");
                *dead_seq += 1;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let headers = dlq::headers(
                    &dlq::Reason {
                        class: r.class,
                        message: &r.message,
                        topic: &m.topic,
                        // Not from a Kafka topic: no partition or offset.
                        partition: -1,
                        offset: -1,
                        stage: &self.name,
                        failed_at: now,
                    },
                    ids.id(0, *dead_seq),
                );
                let keep = m.payload.len().min(self.spec.max_payload);
                futures.push(
                    self.send(
                        &self.spec.dead_letter,
                        key,
                        &m.payload[..keep],
                        Some(headers),
                        false,
                    )
                    .await?,
                );
                (1, Some(r.class))
            }
        };
        let ack = m.ack;
        let sent = Instant::now();
        Ok(Some(async move {
            let results = futures::future::join_all(futures)
                .await
                .into_iter()
                .collect();
            InFlight {
                ack,
                received,
                records,
                dead,
                results,
                produce_seconds: sent.elapsed().as_secs_f64(),
            }
        }))
    }

    /// Queues one record (the output to Fluvio when it lives there), waiting for room
    /// when the producer's queue is full.
    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<rdkafka::message::OwnedHeaders>,
        output: bool,
    ) -> Result<super::Ack, IngestError> {
        self.writer
            .send(topic, key, payload, headers, output)
            .await
            .map_err(|reason| IngestError::Delivery {
                bridge: self.name.clone(),
                reason,
            })
    }
}
