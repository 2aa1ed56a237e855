//! Decode throughput for the telemetry schema: our compiled plan against apache-avro's
//! generic `Value` path and its serde path. Run: `cargo bench -p sluice-schemas --bench decode`.
//!
//! apache-avro 0.22 cannot resolve v1 to v2 (it ignores the `ts` alias), so for v1 writers
//! its figures are for decoding with the writer schema alone: a lower bound on its cost.

// from_avro_datum is deprecated in 0.22 but is still its generic Value path.
#![allow(deprecated)]

use apache_avro::{from_avro_datum, from_value, Schema};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_schemas::codec::{AvroRecord, TelemetryDecoder};
use sluice_schemas::records::Telemetry;
use sluice_schemas::wire;

const V1: &str = include_str!("../telemetry-v1.avsc");
const V2: &str = include_str!("../telemetry-v2.avsc");
const N: usize = 1024;

/// The same shape as `Telemetry`, for apache-avro's serde path.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct SerdeTelemetry {
    device_id: String,
    metric: String,
    event_time: i64,
    value: f64,
    seq: i64,
    quality: i32,
}

fn records_v2() -> Vec<Vec<u8>> {
    (0..N)
        .map(|i| {
            let t = Telemetry {
                device_id: format!("device-{:05}", i % 5000),
                metric: "temperature".into(),
                event_time: 1_700_000_000_000 + i as i64 * 1000,
                value: 20.0 + (i % 17) as f64 * 0.25,
                seq: i as i64,
                quality: 90,
            };
            let mut buf = Vec::new();
            t.encode_wire(2, &mut buf);
            buf
        })
        .collect()
}

fn records_v1(v1: &Schema) -> Vec<Vec<u8>> {
    use apache_avro::types::Value;
    (0..N)
        .map(|i| {
            let v = Value::Record(vec![
                (
                    "device_id".into(),
                    Value::String(format!("device-{:05}", i % 5000)),
                ),
                ("metric".into(), Value::String("temperature".into())),
                (
                    "ts".into(),
                    Value::TimestampMillis(1_700_000_000_000 + i as i64 * 1000),
                ),
                ("value".into(), Value::Float(20.0 + (i % 17) as f32 * 0.25)),
                ("seq".into(), Value::Long(i as i64)),
                ("firmware".into(), Value::String("1.4.2".into())),
            ]);
            let mut buf = Vec::new();
            wire::write_header(1, &mut buf);
            buf.extend(apache_avro::to_avro_datum(v1, v).unwrap());
            buf
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let v1 = Schema::parse_str(V1).unwrap();
    let v2 = Schema::parse_str(V2).unwrap();
    let mut dec = TelemetryDecoder::new();
    dec.add_writer_schema(1, &v1).unwrap();
    dec.add_writer_schema(2, &v2).unwrap();
    let recs_v2 = records_v2();
    let recs_v1 = records_v1(&v1);

    let mut g = c.benchmark_group("telemetry_decode");
    g.throughput(Throughput::Elements(N as u64));
    for (name, recs, writer, reader) in [
        ("v2_writer", &recs_v2, &v2, Some(&v2)),
        ("v1_writer", &recs_v1, &v1, None),
    ] {
        g.bench_function(format!("sluice_plan/{name}"), |b| {
            let mut out = Telemetry::default();
            b.iter(|| {
                for r in recs.iter() {
                    dec.decode(r, &mut out).unwrap();
                }
                out.seq
            })
        });
        g.bench_function(format!("apache_avro_value/{name}"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for r in recs.iter() {
                    let (_, mut body) = wire::parse(r).unwrap();
                    let v = from_avro_datum(writer, &mut body, reader).unwrap();
                    n += matches!(v, apache_avro::types::Value::Record(_)) as usize;
                }
                n
            })
        });
        if reader.is_none() {
            continue;
        }
        g.bench_function(format!("apache_avro_serde/{name}"), |b| {
            b.iter(|| {
                let mut sum = 0i64;
                for r in recs.iter() {
                    let (_, mut body) = wire::parse(r).unwrap();
                    let v = from_avro_datum(writer, &mut body, reader).unwrap();
                    let t: SerdeTelemetry = from_value(&v).unwrap();
                    sum += t.seq;
                }
                sum
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
