//! `sluice ingest`: bridges that bring device data from outside into the topology's topics,
//! one folder or file per kind (`mqtt/`), the payload mapping they share (`payload.rs`).
//! docs/INGEST.md has the guarantees.

pub mod mqtt;
pub mod payload;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rdkafka::producer::FutureProducer;
use sluice_connectors::kafka::producer_config;
use sluice_topology::{IngestBridge, IngestSpec, Loaded};

pub use mqtt::{BridgeReport, MqttBridge};

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

/// Builds a bridge: the output schema and its id from the registry (the subject's latest
/// version; the topology's `.avsc` is registered first when the subject has none), the
/// producer, the mapper.
pub async fn build(
    loaded: &Loaded,
    bridge: &IngestBridge,
    connected: Arc<AtomicBool>,
) -> Result<MqttBridge, IngestError> {
    let t = &loaded.topology;
    let IngestSpec::Mqtt(spec) = &bridge.spec;
    let setup = |reason: String| IngestError::Setup {
        bridge: bridge.name.clone(),
        reason,
    };
    let out = t
        .topics
        .get(&spec.output)
        .ok_or_else(|| setup(format!("topic {} is not declared", spec.output)))?;
    let (Some(subject), Some(file)) = (&out.subject, &out.schema) else {
        return Err(setup(format!(
            "topic {} needs `subject` and `schema`",
            spec.output
        )));
    };
    let registry = crate::connections::registry_client(&t.connections.registry)
        .map_err(|e| setup(e.to_string()))?;
    let schema_err = |reason: String| IngestError::Schema {
        bridge: bridge.name.clone(),
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
    let mapper = payload::Mapper::new(
        schema,
        id,
        &spec.device_field,
        spec.format,
        spec.max_payload,
        Some(registry),
    )
    .map_err(|e| schema_err(format!("cannot encode with it: {e}")))?;
    let opts = crate::connections::client_options(&t.connections)
        .map_err(|e| setup(e.to_string()))?;
    let producer: FutureProducer = producer_config(&opts)
        .create()
        .map_err(|e| setup(format!("Kafka producer: {e}")))?;
    Ok(MqttBridge {
        name: bridge.name.clone(),
        client_id: spec.client_id(&t.metadata.name, &bridge.name),
        spec: spec.clone(),
        mapper,
        producer,
        connected,
    })
}
