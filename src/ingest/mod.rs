//! `sluice ingest`: bridges that bring device data from outside into the topology's topics,
//! one folder per kind (`mqtt/`, `http/`), the payload mapping they share (`payload.rs`).
//! docs/INGEST.md has the guarantees.

pub mod http;
pub mod mqtt;
pub mod payload;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rdkafka::producer::FutureProducer;
use sluice_connectors::kafka::producer_config;
use sluice_schemas::client::RegistryClient;
use sluice_topology::ingest::{PayloadFormat, TokenStore};
use sluice_topology::{IngestBridge, IngestSpec, Loaded};
use tokio::sync::watch;

pub use http::{HttpBridge, TokenSource};
pub use mqtt::MqttBridge;

/// A record's acknowledgement: resolves once the broker stored it, or says why not.
pub type Ack = futures::future::BoxFuture<'static, Result<(), String>>;

/// Where a bridge's records go. Kafka: the bridge's producer (dead letters and token topics
/// are always Kafka). Fluvio: a producer of the output topic, when the topology puts it on
/// Fluvio; its records carry no headers, and none are needed: repeats are dropped
/// downstream by (device, seq) on both (docs/INGEST.md).
pub struct Writer {
    pub kafka: FutureProducer,
    pub fluvio: Option<sluice_connectors::fluvio::Producer>,
}

impl Writer {
    /// Queues one record for `topic` (the output or, on Kafka only, the dead-letter topic),
    /// waiting for room while librdkafka's queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<rdkafka::message::OwnedHeaders>,
        to_fluvio: bool,
    ) -> Result<Ack, String> {
        use futures::FutureExt as _;
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if let (true, Some(f)) = (to_fluvio, self.fluvio.as_ref()) {
            let ack = f
                .send_acked(key.unwrap_or_default(), payload)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(ack.map(|r| r.map_err(|e| e.to_string())).boxed());
        }
        let mut rec = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        loop {
            match self.kafka.send_result(rec) {
                Ok(f) => {
                    return Ok(f
                        .map(|r| match r {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(e.to_string()),
                            Err(_) => Err("the producer went away".to_string()),
                        })
                        .boxed())
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    // The producer's thread drains the queue; give it a moment.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    }
}

/// What a bridge did, for the exit summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct BridgeReport {
    /// MQTT messages or HTTP requests received.
    pub received: u64,
    /// Records the Kafka broker acknowledged.
    pub produced: u64,
    /// MQTT messages sent to the dead-letter topic.
    pub dead_letters: u64,
    /// MQTT messages acknowledged; HTTP requests answered `202`.
    pub acked: u64,
    /// HTTP requests refused (4xx) or not stored (503): the device keeps and resends them.
    pub refused: u64,
}

/// Why a bridge stopped or could not start. None is the user's payload (those are dead
/// letters); all are external systems, and a restart retries them.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A record was not delivered to the Kafka broker: the bridge stops without
    /// acknowledging it or anything after it; the MQTT session keeps them for the restart.
    #[error("bridge {bridge}: a record was not delivered to the Kafka broker ({reason}); nothing after it was acknowledged to MQTT, the restart gets it again")]
    Delivery { bridge: String, reason: String },
    /// The MQTT client could not send an acknowledgement.
    #[error("bridge {bridge}: MQTT client failed ({reason})")]
    Mqtt { bridge: String, reason: String },
    /// The output topic's schema could not be had from the registry.
    #[error(
        "bridge {bridge}: schema for subject {subject} from the registry at {registry}: {reason}"
    )]
    Schema {
        bridge: String,
        subject: String,
        registry: String,
        reason: String,
    },
    #[error("bridge {bridge}: {reason}")]
    Setup { bridge: String, reason: String },
}

/// A bridge ready to run, of any kind.
pub enum Bridge {
    Mqtt(MqttBridge),
    Http(HttpBridge),
}

impl Bridge {
    /// Runs until `stop` turns true, then finishes what is in flight (see each kind).
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<BridgeReport, IngestError> {
        match self {
            Bridge::Mqtt(b) => b.run(stop).await,
            Bridge::Http(b) => b.run(stop).await,
        }
    }

    /// One line on where the bridge reads and writes, for the start-up message.
    pub fn describe(&self) -> String {
        match self {
            Bridge::Mqtt(b) => format!(
                "from {} ({}) topic {} as client {} to {}",
                b.spec.url,
                match b.spec.protocol {
                    sluice_topology::ingest::MqttProtocol::V311 => "MQTT 3.1.1",
                    sluice_topology::ingest::MqttProtocol::V5 => "MQTT 5",
                },
                b.spec.topic.0,
                b.client_id,
                b.spec.output
            ),
            Bridge::Http(b) => format!(
                "POST {}://{}/v1/telemetry (tokens from {}) to {}",
                if b.spec.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                b.spec.listen,
                match &b.spec.tokens {
                    TokenStore::File(f) => format!("file {}", f.display()),
                    TokenStore::Topic(t) => format!("topic {t}"),
                },
                b.spec.output
            ),
        }
    }
}

/// The output topic's schema and its registry id (the subject's latest version; the
/// topology's `.avsc` is registered first when the subject has none), and the registry.
async fn output_schema(
    loaded: &Loaded,
    bridge: &str,
    output: &str,
) -> Result<(apache_avro::Schema, u32, RegistryClient), IngestError> {
    let t = &loaded.topology;
    let setup = |reason: String| IngestError::Setup {
        bridge: bridge.to_string(),
        reason,
    };
    let out = t
        .topics
        .get(output)
        .ok_or_else(|| setup(format!("topic {output} is not declared")))?;
    let (Some(subject), Some(file)) = (&out.subject, &out.schema) else {
        return Err(setup(format!(
            "topic {output} needs `subject` and `schema`"
        )));
    };
    let registry = crate::connections::registry_client(&t.connections.registry)
        .map_err(|e| setup(e.to_string()))?;
    let schema_err = |reason: String| IngestError::Schema {
        bridge: bridge.to_string(),
        subject: subject.clone(),
        registry: t.connections.registry.url.clone(),
        reason,
    };
    let (id, text) = match registry.latest(subject).await {
        Ok(v) => (v.id, v.schema),
        Err(e) if e.code() == Some(40401) => {
            let path = loaded.resolve(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| setup(format!("cannot read {}: {e}", path.display())))?;
            let id = registry
                .register(subject, &text)
                .await
                .map_err(|e| schema_err(e.to_string()))?;
            (id, text)
        }
        Err(e) => return Err(schema_err(e.to_string())),
    };
    let schema = apache_avro::Schema::parse_str(&text)
        .map_err(|e| schema_err(format!("not an Avro schema: {e}")))?;
    Ok((schema, id, registry))
}

/// Builds a bridge: the output schema and its id from the registry, the producer, the
/// mapper, and what its kind needs besides (the HTTP bridge's certificate and tokens).
pub async fn build(
    loaded: &Loaded,
    bridge: &IngestBridge,
    connected: Arc<AtomicBool>,
) -> Result<Bridge, IngestError> {
    let t = &loaded.topology;
    let setup = |reason: String| IngestError::Setup {
        bridge: bridge.name.clone(),
        reason,
    };
    let (output, device_field) = bridge.spec.output_and_device_field();
    let (schema, id, registry) = output_schema(loaded, &bridge.name, output).await?;
    let schema_err = |reason: String| IngestError::Setup {
        bridge: bridge.name.clone(),
        reason: format!("the schema of {output}: {reason}"),
    };
    let opts =
        crate::connections::client_options(&t.connections).map_err(|e| setup(e.to_string()))?;
    let kafka: FutureProducer = producer_config(&opts)
        .create()
        .map_err(|e| setup(format!("Kafka producer: {e}")))?;
    let fluvio = match t.broker_of(output) {
        sluice_topology::Broker::Kafka => None,
        sluice_topology::Broker::Fluvio => {
            // `sluice validate` refuses a Fluvio topic without `connections.fluvio`.
            let client = crate::connections::fluvio_client(&t.connections)
                .await
                .map_err(|e| setup(e.to_string()))?
                .ok_or_else(|| {
                    setup(format!(
                        "{output} is on Fluvio and `connections.fluvio` is not set"
                    ))
                })?;
            Some(
                client
                    .producer(output)
                    .await
                    .map_err(|e| setup(e.to_string()))?,
            )
        }
    };
    let writer = Writer { kafka, fluvio };
    match &bridge.spec {
        IngestSpec::Mqtt(spec) => {
            let mapper = payload::Mapper::new(
                schema,
                id,
                device_field,
                spec.format,
                spec.max_payload,
                Some(registry),
            )
            .map_err(|e| schema_err(format!("cannot encode with it: {e}")))?;
            Ok(Bridge::Mqtt(MqttBridge {
                name: bridge.name.clone(),
                client_id: spec.client_id(&t.metadata.name, &bridge.name),
                spec: spec.clone(),
                mapper,
                writer,
                connected,
            }))
        }
        IngestSpec::Http(spec) => {
            let mapper = payload::Mapper::new(
                schema,
                id,
                device_field,
                PayloadFormat::Json,
                spec.max_body,
                Some(registry),
            )
            .map_err(|e| schema_err(format!("cannot encode with it: {e}")))?
            .for_source("token", true);
            let tls = match &spec.tls {
                None => None,
                Some(tls) => Some(
                    http::tls_config(&loaded.resolve(&tls.cert), &loaded.resolve(&tls.key))
                        .map_err(setup)?,
                ),
            };
            let tokens = match &spec.tokens {
                TokenStore::File(f) => TokenSource::File(loaded.resolve(f)),
                TokenStore::Topic(topic) => TokenSource::Topic {
                    topic: topic.clone(),
                    opts,
                },
            };
            Ok(Bridge::Http(HttpBridge {
                name: bridge.name.clone(),
                spec: spec.clone(),
                tls,
                tokens,
                mapper,
                writer,
                connected,
            }))
        }
    }
}
