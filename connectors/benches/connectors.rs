//! Encoding throughput of the sinks' hot paths, no network: rows into ILP buffers, and rows
//! into Parquet files (also prints bytes per row).
//!
//! `cargo bench -p sluice-connectors --bench connectors`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use questdb::ingress::ProtocolVersion;
use sluice_connectors::questdb::IlpEncoder;
use sluice_connectors::s3::{ArchiveBatch, ParquetEncoder};
use sluice_schemas::records::{Aggregate, Anomaly, Telemetry};

const ROWS: usize = 10_000;

fn aggregates() -> Vec<Aggregate> {
    (0..ROWS)
        .map(|i| Aggregate {
            device_id: format!("device-{:05}", i % 1000),
            metric: ["temperature", "humidity", "pressure"][i % 3].into(),
            window_start: 1_700_000_000_000 + (i as i64 / 1000) * 60_000,
            window_ms: 60_000,
            count: 60,
            min: 20.0 + (i % 7) as f64,
            max: 30.5 + (i % 5) as f64,
            mean: 25.123456 + i as f64 * 1e-3,
            stddev: 1.75,
        })
        .collect()
}

fn telemetry_batch(rows: usize) -> ArchiveBatch {
    let mut batch = ArchiveBatch::new("telemetry-raw", 0);
    for i in 0..rows {
        let t = Telemetry {
            device_id: format!("device-{:05}", i % 1000),
            metric: ["temperature", "humidity", "pressure"][i % 3].into(),
            // Readings every 10 ms, so a 10k batch stays in one hour.
            event_time: 1_700_000_000_000 + i as i64 * 10,
            value: 20.0 + ((i * 7919) % 1000) as f64 / 100.0,
            seq: i as i64,
            quality: 100 - (i % 3) as i32,
        };
        batch.push(1_000_000 + i as i64, t);
    }
    batch
}

fn ilp(c: &mut Criterion) {
    let aggs = aggregates();
    let anomaly = Anomaly {
        device_id: "device-00042".into(),
        metric: "temperature".into(),
        event_time: 1_700_000_000_000,
        value: 97.5,
        score: 5.25,
        detector: "zscore".into(),
    };
    let mut g = c.benchmark_group("ilp_encode");
    g.throughput(Throughput::Elements(ROWS as u64));
    let mut enc = IlpEncoder::new(ProtocolVersion::V1, "aggregates", "anomalies");
    g.bench_function("aggregates_v1", |b| {
        b.iter(|| {
            enc.clear();
            for a in &aggs {
                enc.push_aggregate(black_box(a)).unwrap();
            }
            black_box(enc.len_bytes())
        })
    });
    let mut enc2 = IlpEncoder::new(ProtocolVersion::V2, "aggregates", "anomalies");
    g.bench_function("aggregates_v2_binary_f64", |b| {
        b.iter(|| {
            enc2.clear();
            for a in &aggs {
                enc2.push_aggregate(black_box(a)).unwrap();
            }
            black_box(enc2.len_bytes())
        })
    });
    g.bench_function("anomalies_v1", |b| {
        b.iter(|| {
            enc.clear();
            for _ in 0..ROWS {
                enc.push_anomaly(black_box(&anomaly)).unwrap();
            }
            black_box(enc.len_bytes())
        })
    });
    g.finish();
    enc.clear();
    for a in &aggs {
        enc.push_aggregate(a).unwrap();
    }
    println!(
        "ilp v1 aggregate row: {:.1} bytes",
        enc.len_bytes() as f64 / ROWS as f64
    );
}

fn parquet(c: &mut Criterion) {
    let mut g = c.benchmark_group("parquet_encode");
    for rows in [10_000usize, 100_000] {
        let batch = telemetry_batch(rows);
        let indices: Vec<usize> = (0..rows).collect();
        let mut enc = ParquetEncoder::new();
        let size = enc.encode(&batch, &indices).unwrap().len();
        println!(
            "parquet {rows} rows: {size} bytes, {:.2} bytes/row",
            size as f64 / rows as f64
        );
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(format!("telemetry_{rows}_rows_one_core"), |b| {
            b.iter(|| black_box(enc.encode(black_box(&batch), &indices).unwrap().len()))
        });
    }
    g.finish();
}

/// A pipeline's `s3_parquet` sink: Avro records of a schema with a nested record, an
/// optional field, an enum and a timestamp, through Arrow into Parquet (`AvroArrow`).
fn parquet_avro(c: &mut Criterion) {
    use apache_avro::types::Value;
    let schema = apache_avro::Schema::parse_str(
        r#"{"type": "record", "name": "Reading", "namespace": "bench", "fields": [
            {"name": "device_id", "type": "string"},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "phase", "type": {"type": "enum", "name": "Phase", "symbols": ["L1", "L2", "L3"]}},
            {"name": "power", "type": {"type": "record", "name": "Power", "fields": [
                {"name": "watts", "type": "double"},
                {"name": "volts", "type": ["null", "double"], "default": null}]}},
            {"name": "seq", "type": "long"}]}"#,
    )
    .unwrap();
    let arrow = sluice_connectors::s3::AvroArrow::new(&schema).unwrap();
    let mut g = c.benchmark_group("parquet_encode");
    for rows in [10_000usize, 100_000] {
        let values: Vec<Value> = (0..rows)
            .map(|i| {
                Value::Record(vec![
                    (
                        "device_id".into(),
                        Value::String(format!("device-{:05}", i % 1000)),
                    ),
                    (
                        "ts".into(),
                        Value::TimestampMillis(1_700_000_000_000 + i as i64 * 10),
                    ),
                    (
                        "phase".into(),
                        Value::Enum((i % 3) as u32, ["L1", "L2", "L3"][i % 3].into()),
                    ),
                    (
                        "power".into(),
                        Value::Record(vec![
                            (
                                "watts".into(),
                                Value::Double(((i * 7919) % 100_000) as f64 / 10.0),
                            ),
                            (
                                "volts".into(),
                                if i % 4 == 0 {
                                    Value::Union(0, Box::new(Value::Null))
                                } else {
                                    Value::Union(
                                        1,
                                        Box::new(Value::Double(230.0 + (i % 10) as f64)),
                                    )
                                },
                            ),
                        ]),
                    ),
                    ("seq".into(), Value::Long(i as i64)),
                ])
            })
            .collect();
        let refs: Vec<&Value> = values.iter().collect();
        let size = arrow.parquet(&refs).unwrap().len();
        println!(
            "parquet (Avro through Arrow) {rows} rows: {size} bytes, {:.2} bytes/row",
            size as f64 / rows as f64
        );
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(format!("avro_nested_{rows}_rows_one_core"), |b| {
            b.iter(|| black_box(arrow.parquet(black_box(&refs)).unwrap().len()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = ilp, parquet, parquet_avro
}
criterion_main!(benches);
