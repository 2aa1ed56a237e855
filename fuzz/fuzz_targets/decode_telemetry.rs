//! Bytes from a topic go through the wire header and the telemetry plans (v1 and v2 writers,
//! plus a writer with nested, repeated and union fields to skip). Any input must give a
//! record or a classified error, never a panic, a hang or an allocation blow-up.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_schemas::codec::TelemetryDecoder;
use sluice_schemas::records::Telemetry;

const WIDE: &str = r#"{"type":"record","name":"Telemetry","namespace":"io.sluice.iot","fields":[
    {"name":"tags","type":{"type":"map","values":["null","string",{"type":"array","items":"null"}]}},
    {"name":"device_id","type":["null","string"]},
    {"name":"samples","type":{"type":"array","items":{"type":"record","name":"S","fields":[
        {"name":"f","type":{"type":"fixed","name":"F","size":4}},
        {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}]}}},
    {"name":"metric","type":"bytes"},
    {"name":"event_time","type":"int"},
    {"name":"value","type":["float","long"]},
    {"name":"seq","type":"long"}]}"#;

fn decoder() -> &'static TelemetryDecoder {
    static DEC: OnceLock<TelemetryDecoder> = OnceLock::new();
    DEC.get_or_init(|| {
        let mut d = TelemetryDecoder::new();
        d.add_writer_schema_json(1, include_str!("../../schemas/telemetry-v1.avsc"))
            .unwrap();
        d.add_writer_schema_json(2, include_str!("../../schemas/telemetry-v2.avsc"))
            .unwrap();
        d.add_writer_schema_json(3, WIDE).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Telemetry::default();
    if let Err(e) = decoder().decode(data, &mut out) {
        // Every error has a class and a message.
        assert!(!e.class().is_empty());
        assert!(!e.to_string().is_empty());
    }
});
