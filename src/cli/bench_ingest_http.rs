//! `sluice bench ingest-http`: requests/s and records/s through an HTTP ingest bridge (a
//! `sluice ingest` child process, whose CPU is its own) to the raw topic, per CPU-second of
//! that process, and the request latency its clients see (send to `202`, which waits for the
//! Kafka broker's acknowledgement). Clients run in the bench process, `--concurrency` of
//! them, each sending its requests one after the other like a device; the raw topic's end
//! offsets are checked against what was accepted.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::bench_ingest::{bench_dir, free_port, quantile_of_sorted, scrape, spawn_ingest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests to send.
    #[arg(long, default_value_t = 2_000)]
    pub requests: u64,
    /// Readings per request (a JSON array).
    #[arg(long, default_value_t = 100)]
    pub records: u64,
    /// Clients sending at once, each one request at a time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u64,
    /// Devices (one token each); requests go round-robin over them.
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
    /// Partitions of the bench's raw topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    #[arg(long, env = "SLUICE_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,
    #[arg(
        long,
        env = "SLUICE_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081"
    )]
    pub registry: String,
}

fn token(i: u64) -> String {
    format!("bench-token-{i}")
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.requests > 0 && a.records > 0 && a.concurrency > 0 && a.devices > 0,
        "--requests, --records, --concurrency and --devices must be positive"
    );
    let (tag, dir, schema) = bench_dir("ingest-http")?;
    let mut tokens = String::new();
    for i in 0..a.devices {
        let h = crate::ingest::http::tokens::hash(&token(i));
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        tokens.push_str(&format!("d{i}: {hex}\n"));
    }
    std::fs::write(dir.join("tokens.yaml"), tokens)?;
    let raw = format!("bench-ingest-http-{tag}.raw");
    let (metrics_port, http_port) = (free_port()?, free_port()?);
    let topology = format!(
        "apiVersion: sluice/v1\nkind: Topology\nmetadata:\n  name: bench{tag}\nconnections:\n  brokers: {brokers}\n  registry: {registry}\nmetrics:\n  listen: 127.0.0.1:{metrics_port}\ntopic_defaults:\n  replication: 1\n  min_insync_replicas: 1\ntopics:\n  {raw}: {{ partitions: {parts}, subject: {raw}-value, schema: {schema} }}\nstages: {{}}\ningest:\n  bench:\n    kind: http\n    listen: 127.0.0.1:{http_port}\n    tokens: {{ file: tokens.yaml }}\n    output: {raw}\n    max_records: {records}\n    max_pending: {pending}\n",
        brokers = a.brokers,
        registry = a.registry,
        parts = a.partitions,
        schema = schema.display(),
        records = a.records,
        pending = a.records * a.concurrency,
    );
    let mut child = spawn_ingest(&dir, &topology)?;
    let pid = child.id().to_string();
    println!(
        "# sluice bench ingest-http: {} requests x {} readings (JSON), {} clients, {} devices, brokers {}, raw topic {raw} ({} partitions)",
        a.requests, a.records, a.concurrency, a.devices, a.brokers, a.partitions
    );
    let outcome = measure(&a, metrics_port, http_port, &raw, &pid);
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait()?;
    let r = outcome
        .with_context(|| format!("the bridge's log: {}", dir.join("ingest.log").display()))?;
    let records = a.requests * a.records;
    println!(
        "ingest-http: {} requests in {:.2}s = {:.0} requests/s, {:.0} records/s; ingest process CPU {:.2}s = {:.0} records per CPU-second; request latency p50 {:.1} ms, p99 {:.1} ms; 429s resent {}; raw topic holds {} records; bridge exit on SIGTERM: {status}",
        a.requests,
        r.seconds,
        a.requests as f64 / r.seconds,
        records as f64 / r.seconds,
        r.cpu,
        records as f64 / r.cpu,
        r.p50 * 1e3,
        r.p99 * 1e3,
        r.busy,
        r.landed
    );
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        r.landed == records,
        "the raw topic holds {} records, {records} were accepted",
        r.landed
    );
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct Outcome {
    seconds: f64,
    cpu: f64,
    p50: f64,
    p99: f64,
    busy: u64,
    landed: u64,
}

fn measure(
    a: &Args,
    metrics_port: u16,
    http_port: u16,
    raw: &str,
    pid: &str,
) -> anyhow::Result<Outcome> {
    let up = Instant::now();
    while scrape(metrics_port, "sluice_ingest_connected") != Some(1.0) {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(60),
            "`sluice ingest` did not serve on 127.0.0.1:{http_port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("http://127.0.0.1:{http_port}/v1/telemetry");
    let cpu0 = super::bench::cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let per_client = a.requests.div_ceil(a.concurrency);
    let mut tasks = Vec::new();
    for c in 0..a.concurrency {
        let (client, url) = (client.clone(), url.clone());
        let (records, devices, total) = (a.records, a.devices, a.requests);
        tasks.push(rt.spawn(async move {
            let mut latencies = Vec::new();
            let mut busy = 0u64;
            for k in 0..per_client {
                let i = c * per_client + k;
                if i >= total {
                    break;
                }
                let device = i % devices;
                let seq0 = (i / devices) * records;
                let body: String = {
                    let items: Vec<String> = (0..records)
                        .map(|j| {
                            format!(
                                r#"{{"metric":"temperature","ts":{},"value":{:.1},"seq":{}}}"#,
                                1_700_000_000_000u64 + seq0 + j,
                                20.0 + (j % 10) as f64,
                                seq0 + j
                            )
                        })
                        .collect();
                    format!("[{}]", items.join(","))
                };
                loop {
                    let sent = Instant::now();
                    let resp = client
                        .post(&url)
                        .bearer_auth(token(device))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    match resp.status().as_u16() {
                        202 => {
                            latencies.push(sent.elapsed().as_secs_f64());
                            break;
                        }
                        429 => {
                            busy += 1;
                            // The bridge's Retry-After is a second; a bench client backs off less.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        s => anyhow::bail!("request {i} answered {s}: {}", resp.text().await?),
                    }
                }
            }
            Ok::<_, anyhow::Error>((latencies, busy))
        }));
    }
    let mut latencies = Vec::new();
    let mut busy = 0;
    for t in tasks {
        let (l, b) = rt.block_on(t).context("a client panicked")??;
        latencies.extend(l);
        busy += b;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = super::bench::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    latencies.sort_by(f64::total_cmp);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .create()?;
    let mut landed = 0;
    for p in 0..a.partitions {
        let (low, high) = consumer.fetch_watermarks(raw, p, Duration::from_secs(30))?;
        landed += (high - low) as u64;
    }
    Ok(Outcome {
        seconds,
        cpu,
        p50: quantile_of_sorted(&latencies, 0.50),
        p99: quantile_of_sorted(&latencies, 0.99),
        busy,
        landed,
    })
}
