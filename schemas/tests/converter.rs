//! schema_registry_converter (the Rust client people use), unchanged, against `sluice registry`.

mod common;

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use sluice_schemas::client::RegistryClient;
use sluice_schemas::codec::{AvroRecord, DecodeError, TelemetryDecoder};
use sluice_schemas::records::Telemetry;

const V1: &str = include_str!("../telemetry-v1.avsc");
const V2: &str = include_str!("../telemetry-v2.avsc");

fn supplied(schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(
        Some("io.sluice.iot.Telemetry".into()),
        SchemaType::Avro,
        schema.into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converter_encodes_and_decodes_through_sluice_registry() {
    let url = common::start_registry(&common::random_topic("schemas-converter")).await;
    let topic = common::random_topic("telemetry");
    let settings = SrSettings::new(url.clone());
    let encoder = AvroEncoder::new(settings.clone());
    let decoder = AvroDecoder::new(settings);

    // A v1 producer using the converter registers v1 and writes wire format.
    let v1_fields = vec![
        ("device_id", Value::String("dev-1".into())),
        ("metric", Value::String("temperature".into())),
        ("ts", Value::TimestampMillis(1_700_000_000_123)),
        ("value", Value::Float(21.5)),
        ("seq", Value::Long(42)),
        ("firmware", Value::String("2.0.1".into())),
    ];
    let strategy =
        SubjectNameStrategy::TopicNameStrategyWithSchema(topic.clone(), false, supplied(V1));
    let bytes = encoder
        .encode(v1_fields, strategy)
        .await
        .expect("converter registers and encodes v1");
    assert_eq!(bytes[0], 0);

    // Our runtime path: unknown id, fetch the writer schema, resolve to v2.
    let mut dec = TelemetryDecoder::new();
    let mut out = Telemetry::default();
    let err = dec.decode(&bytes, &mut out).unwrap_err();
    let DecodeError::UnknownSchemaId(id) = err else {
        panic!("{err:?}")
    };
    let client = RegistryClient::new(&url);
    dec.add_writer_schema_json(id, &client.schema_by_id(id).await.unwrap())
        .unwrap();
    dec.decode(&bytes, &mut out).unwrap();
    assert_eq!(
        out,
        Telemetry {
            device_id: "dev-1".into(),
            metric: "temperature".into(),
            event_time: 1_700_000_000_123,
            value: 21.5,
            seq: 42,
            quality: 100,
        }
    );

    // v2 is registered by the converter too (BACKWARD-compatible), and the converter
    // decodes what our fast encoder writes under v2's id.
    let strategy =
        SubjectNameStrategy::TopicNameStrategyWithSchema(topic.clone(), false, supplied(V2));
    let v2_fields = vec![
        ("device_id", Value::String("dev-2".into())),
        ("metric", Value::String("humidity".into())),
        ("event_time", Value::TimestampMillis(5)),
        ("value", Value::Double(0.5)),
        ("seq", Value::Long(7)),
        ("quality", Value::Int(80)),
    ];
    // A fresh encoder: the converter caches the schema per subject, and this one holds v1.
    let v2_encoder = AvroEncoder::new(SrSettings::new(url.clone()));
    let v2_bytes = v2_encoder
        .encode(v2_fields, strategy)
        .await
        .expect("converter registers v2");
    let v2_id = u32::from_be_bytes([v2_bytes[1], v2_bytes[2], v2_bytes[3], v2_bytes[4]]);
    assert_ne!(v2_id, id);
    let latest = client.latest(&format!("{topic}-value")).await.unwrap();
    assert_eq!((latest.version, latest.id), (2, v2_id));

    let ours = Telemetry {
        device_id: "dev-3".into(),
        metric: "pressure".into(),
        event_time: 9,
        value: 1013.25,
        seq: 8,
        quality: 99,
    };
    let mut buf = Vec::new();
    ours.encode_wire(v2_id, &mut buf);
    let decoded = decoder
        .decode(Some(&buf))
        .await
        .expect("converter decodes our encoding");
    let Value::Record(fields) = decoded.value else {
        panic!("{:?}", decoded.value)
    };
    let get = |n: &str| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("device_id"), Value::String("dev-3".into()));
    assert_eq!(get("value"), Value::Double(1013.25));
    assert_eq!(get("quality"), Value::Int(99));
    assert!(matches!(
        get("event_time"),
        Value::TimestampMillis(9) | Value::Long(9)
    ));

    // And the converter decodes the v1 bytes with the writer schema it fetches by id.
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();
    let Value::Record(fields) = decoded.value else {
        panic!()
    };
    assert!(fields
        .iter()
        .any(|(k, v)| k == "firmware" && *v == Value::String("2.0.1".into())));
}
