//! The runtime's decode path against `sluice registry`: writer schemas fetched by id on first
//! sight, and every kind of bad record classified for the dead-letter topic.

mod common;

use sluice_schemas::client::{decode_fetching, FetchDecodeError, RegistryClient};
use sluice_schemas::codec::{AvroRecord, TelemetryDecoder};
use sluice_schemas::records::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_schemas_are_fetched_once_and_bad_records_are_classified() {
    let url = common::start_registry(&common::random_topic("schemas-runtime")).await;
    let client = RegistryClient::new(&url);
    let subject = common::random_topic("telemetry-value");
    let v2_id = client
        .register(&subject, include_str!("../telemetry-v2.avsc"))
        .await
        .unwrap();
    let incompatible_id = client
        .register(
            &common::random_topic("other-value"),
            r#"{"type":"record","name":"Telemetry","namespace":"io.sluice.iot","fields":[{"name":"device_id","type":"long"}]}"#,
        )
        .await
        .unwrap();

    let record = Telemetry {
        device_id: "d".into(),
        metric: "m".into(),
        event_time: 1,
        value: 2.5,
        seq: 3,
        quality: 4,
    };
    let mut good = Vec::new();
    record.encode_wire(v2_id, &mut good);

    let mut dec = TelemetryDecoder::new();
    let mut out = Telemetry::default();
    decode_fetching(&mut dec, &client, &good, &mut out)
        .await
        .unwrap();
    assert_eq!(out, record);
    assert!(dec.knows(v2_id));

    let class = |r: Result<(), FetchDecodeError>| match r {
        Err(FetchDecodeError::Record(e)) => e.class(),
        other => panic!("expected a record error, got {other:?}"),
    };
    let mut unknown = good.clone();
    unknown[1..5].copy_from_slice(&987_654u32.to_be_bytes());
    assert_eq!(
        class(decode_fetching(&mut dec, &client, &unknown, &mut out).await),
        "unknown_schema_id"
    );
    let mut other = good.clone();
    other[1..5].copy_from_slice(&incompatible_id.to_be_bytes());
    assert_eq!(
        class(decode_fetching(&mut dec, &client, &other, &mut out).await),
        "incompatible_schema"
    );
    assert_eq!(
        class(decode_fetching(&mut dec, &client, &good[..7], &mut out).await),
        "truncated"
    );
    assert_eq!(
        class(decode_fetching(&mut dec, &client, b"{\"json\":1}", &mut out).await),
        "wrong_magic"
    );
    let mut corrupt = good.clone();
    corrupt[5] = 0x01; // device_id length -1
    assert_eq!(
        class(decode_fetching(&mut dec, &client, &corrupt, &mut out).await),
        "invalid_body"
    );

    // Processing continues: the good record still decodes.
    decode_fetching(&mut dec, &client, &good, &mut out)
        .await
        .unwrap();
    assert_eq!(out, record);
}
