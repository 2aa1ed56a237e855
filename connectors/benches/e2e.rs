//! End-to-end sink throughput against the local stack (one machine, loopback): aggregates to
//! VictoriaMetrics over ILP/HTTP and ILP/TCP, telemetry batches to moto as Parquet.
//!
//! `eval "$(scripts/stack up)"; cargo bench -p sluice-connectors --bench e2e`
//! Rows are sized and counted up front; every loop is bounded.

use std::time::Instant;

use sluice_connectors::questdb::{QuestDbConfig, QuestDbMetrics, QuestDbSink};
use sluice_connectors::s3::{ArchiveBatch, S3ArchiveConfig, S3ArchiveSink, S3Metrics};
use sluice_schemas::records::{Aggregate, Telemetry};

const TSDB_ROWS: usize = 200_000;
const TSDB_BATCH: usize = 10_000;
const S3_BATCHES: i64 = 10;
const S3_BATCH_ROWS: i64 = 100_000;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: start the stack: scripts/stack up"))
}

async fn tsdb(label: &str, addr: String) {
    let run = format!("bench{}", std::process::id());
    let mut c = QuestDbConfig::new(addr);
    c.aggregates_table = format!("{run}_agg");
    let mut sink = QuestDbSink::new(c, QuestDbMetrics::unregistered()).unwrap();
    let start = Instant::now();
    for i in 0..TSDB_ROWS {
        let a = Aggregate {
            device_id: format!("device-{:05}", i % 1000),
            metric: ["temperature", "humidity", "pressure"][i % 3].into(),
            window_start: 1_700_000_000_000 + (i as i64 / 3000) * 60_000,
            window_ms: 60_000,
            count: 60,
            min: 20.25,
            max: 31.5,
            mean: 25.125,
            stddev: 1.75,
        };
        sink.push_aggregate(&a).unwrap();
        if sink.pending_rows() >= TSDB_BATCH {
            sink.flush().await.unwrap();
        }
    }
    sink.flush().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!("tsdb {label}: {TSDB_ROWS} aggregate rows in {secs:.2}s = {:.0} rows/s (flush every {TSDB_BATCH})", TSDB_ROWS as f64 / secs);
}

async fn s3() {
    let endpoint = env("SLUICE_S3_ENDPOINT");
    let mut c = S3ArchiveConfig::new(env("SLUICE_S3_BUCKET"));
    c.allow_http = endpoint.starts_with("http://");
    c.endpoint = Some(endpoint);
    c.prefix = format!("bench{}", std::process::id());
    let mut sink = S3ArchiveSink::new(c, S3Metrics::unregistered()).unwrap();
    let mut batch = ArchiveBatch::new("telemetry-raw", 0);
    let (mut rows, mut bytes, mut objects) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    for b in 0..S3_BATCHES {
        batch.clear();
        for i in 0..S3_BATCH_ROWS {
            let off = b * S3_BATCH_ROWS + i;
            let t = Telemetry {
                device_id: format!("device-{:05}", off % 1000),
                metric: ["temperature", "humidity", "pressure"][(off % 3) as usize].into(),
                event_time: 1_700_000_000_000 + off * 20,
                value: 20.0 + ((off * 7919) % 1000) as f64 / 100.0,
                seq: off,
                quality: 100,
            };
            batch.push(off, t);
        }
        let report = sink.write(&batch).await.unwrap();
        rows += report.rows;
        bytes += report.bytes;
        objects += report.objects.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "s3 parquet: {rows} rows, {objects} objects, {bytes} bytes ({:.1} B/row) in {secs:.2}s = {:.0} rows/s (batch building + encode + upload)",
        bytes as f64 / rows as f64,
        rows as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let query = env("SLUICE_TSDB_QUERY_URL");
    let host_port = query
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    tsdb(
        "ilp/http (acknowledged)",
        format!("http::addr={host_port};protocol_version=1;"),
    )
    .await;
    tsdb("ilp/tcp (socket only)", env("SLUICE_ILP_ADDR")).await;
    s3().await;
}
