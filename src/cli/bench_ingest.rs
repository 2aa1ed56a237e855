//! `sluice bench ingest-mqtt`: messages/s from Mosquitto through a `sluice ingest` process to
//! the raw topic, per CPU-second of that process, and its receive-to-PUBACK latency. The
//! bridge runs as a child process (its CPU is its own); the bench publishes JSON readings
//! with QoS 1, at most `--window` ahead of what reached the raw topic (Mosquitto queues at
//! most 1000 messages for a session by default and drops the rest), and reads the raw topic
//! with a plain consumer.

use std::io::{Read as _, Write as _};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages to publish (one reading each).
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// The protocol the bridge speaks to the MQTT broker (the bench publishes with the same).
    #[arg(long, default_value = "5", value_parser = ["5", "3.1.1"])]
    pub protocol: String,
    /// Most messages published and not yet in the raw topic.
    #[arg(long, default_value_t = 800)]
    pub window: u64,
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
    #[arg(long, env = "SLUICE_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
    pub mqtt: String,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let url = sluice_topology::ingest::MqttUrl::parse(&a.mqtt).map_err(|e| anyhow::anyhow!(e))?;
    let (tag, dir, schema) = bench_dir("ingest")?;
    let raw = format!("bench-ingest-{tag}.raw");
    let port = free_port()?;
    let prefix = format!("bench-{tag}");
    let topology = format!(
        "apiVersion: sluice/v1\nkind: Topology\nmetadata:\n  name: bench{tag}\nconnections:\n  brokers: {brokers}\n  registry: {registry}\nmetrics:\n  listen: 127.0.0.1:{port}\ntopic_defaults:\n  replication: 1\n  min_insync_replicas: 1\ntopics:\n  {raw}: {{ partitions: {parts}, subject: {raw}-value, schema: {schema} }}\n  {raw}.dlq: {{ partitions: 1 }}\nstages: {{}}\ningest:\n  bench:\n    kind: mqtt\n    url: {url}\n    protocol: \"{proto}\"\n    topic: {prefix}/+/telemetry\n    output: {raw}\n    dead_letter: {raw}.dlq\n    client_id: sluice-bench-{tag}\n",
        brokers = a.brokers,
        registry = a.registry,
        parts = a.partitions,
        schema = schema.display(),
        proto = a.protocol,
    );
    let mut child = spawn_ingest(&dir, &topology)?;
    let pid = child.id().to_string();
    println!(
        "# sluice bench ingest-mqtt: {} messages, MQTT {} at {url}, brokers {}, raw topic {raw} ({} partitions), window {}",
        a.messages, a.protocol, a.brokers, a.partitions, a.window
    );
    let outcome = measure(&a, &url, &prefix, &raw, port, &pid);
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait()?;
    let r = outcome
        .with_context(|| format!("the bridge's log: {}", dir.join("ingest.log").display()))?;
    println!(
        "ingest-mqtt: {} messages in {:.2}s = {:.0} msg/s to the raw topic; ingest process CPU {:.2}s = {:.0} msg per CPU-second; ack latency p50 {:.1} ms, p99 {:.1} ms; bridge exit on SIGTERM: {status}",
        a.messages, r.seconds, a.messages as f64 / r.seconds, r.cpu, a.messages as f64 / r.cpu, r.p50 * 1e3, r.p99 * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
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
}

fn measure(
    a: &Args,
    url: &sluice_topology::ingest::MqttUrl,
    prefix: &str,
    raw: &str,
    port: u16,
    pid: &str,
) -> anyhow::Result<Outcome> {
    // The bridge is ready once its subscription stands.
    let up = Instant::now();
    while scrape(port, "sluice_ingest_connected") != Some(1.0) {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(60),
            "`sluice ingest` did not connect to {url} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("group.id", format!("bench-{prefix}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions {
        tpl.add_partition_offset(raw, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let landed = Arc::new(AtomicU64::new(0));
    let cpu0 = super::bench::cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let mut publishing = Some(rt.spawn(publish(
        a.protocol.clone(),
        url.clone(),
        prefix.to_string(),
        a.messages,
        a.window,
        landed.clone(),
    )));
    let mut n = 0u64;
    let mut last_progress = Instant::now();
    while n < a.messages {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            n += 1;
            landed.store(n, Ordering::Relaxed);
            last_progress = Instant::now();
        }
        if let Some(h) = publishing.take_if(|h| h.is_finished()) {
            rt.block_on(h).context("the publisher panicked")??;
        }
        anyhow::ensure!(
            last_progress.elapsed() < Duration::from_secs(60),
            "nothing reached {raw} for 60 s ({n} so far)"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = super::bench::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let buckets = histogram(port, "sluice_ingest_ack_seconds_bucket");
    Ok(Outcome {
        seconds,
        cpu,
        p50: quantile(&buckets, 0.50),
        p99: quantile(&buckets, 0.99),
    })
}

/// Publishes `total` JSON readings with QoS 1, never more than `window` ahead of `landed`
/// (what reached the raw topic); the connection is driven by a task of its own.
async fn publish(
    protocol: String,
    url: sluice_topology::ingest::MqttUrl,
    prefix: String,
    total: u64,
    window: u64,
    landed: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let id = format!("{prefix}-pub");
    let body = |i: u64| {
        format!(
            r#"{{"metric":"temperature","ts":{},"value":{:.1},"seq":{}}}"#,
            1_700_000_000_000u64 + i,
            20.0 + (i % 10) as f64,
            i / 100 + 1
        )
    };
    let topic = |i: u64| format!("{prefix}/d{}/telemetry", i % 100);
    let wait_for_room = |i: u64| {
        let landed = landed.clone();
        async move {
            while i.saturating_sub(landed.load(Ordering::Relaxed)) >= window {
                // Pacing against the consumer, polled every millisecond.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    if protocol == "3.1.1" {
        let o = rumqttc::MqttOptions::new(id, &url.host, url.port);
        let (c, mut el) = rumqttc::AsyncClient::new(o, 1000);
        let driver = tokio::spawn(async move {
            loop {
                if let Err(e) = el.poll().await {
                    tracing::warn!(error = %e, "Bench publisher connection error.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        for i in 0..total {
            wait_for_room(i).await;
            c.publish(topic(i), rumqttc::QoS::AtLeastOnce, false, body(i))
                .await?;
        }
        // Detached, not stopped: the last messages still go out until the runtime ends.
        drop(driver);
    } else {
        let o = rumqttc::v5::MqttOptions::new(id, &url.host, url.port);
        let (c, mut el) = rumqttc::v5::AsyncClient::new(o, 1000);
        let driver = tokio::spawn(async move {
            loop {
                if let Err(e) = el.poll().await {
                    tracing::warn!(error = %e, "Bench publisher connection error.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        for i in 0..total {
            wait_for_room(i).await;
            c.publish(
                topic(i),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                body(i),
            )
            .await?;
        }
        drop(driver);
    }
    Ok(())
}

/// A fresh temporary folder for one bench run, named with a random tag, holding the bundled
/// `telemetry-v1.avsc`: (tag, folder, schema file).
pub(super) fn bench_dir(
    kind: &str,
) -> anyhow::Result<(String, std::path::PathBuf, std::path::PathBuf)> {
    let tag = format!("{:08x}", rand::random::<u32>());
    let dir = std::env::temp_dir().join(format!("sluice-bench-{kind}-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let schema = dir.join("telemetry-v1.avsc");
    let bundled = sluice_schemas::BUNDLED
        .iter()
        .find(|(f, _)| *f == "telemetry-v1.avsc")
        .map(|(_, s)| *s)
        .context("the bundled telemetry-v1.avsc")?;
    std::fs::write(&schema, bundled)?;
    Ok((tag, dir, schema))
}

/// A free port on 127.0.0.1.
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes `topology` to `dir/bench.yaml` and starts `sluice ingest` on it as a child
/// process (its CPU is its own), logging to `dir/ingest.log`.
pub(super) fn spawn_ingest(
    dir: &std::path::Path,
    topology: &str,
) -> anyhow::Result<std::process::Child> {
    let path = dir.join("bench.yaml");
    std::fs::write(&path, topology)?;
    let log = std::fs::File::create(dir.join("ingest.log"))?;
    Command::new(std::env::current_exe()?)
        .args(["ingest", path.to_str().context("utf-8 path")?, "--quiet"])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting `sluice ingest`")
}

/// One series of a Prometheus text page at 127.0.0.1:`port`, summed over labels.
pub(super) fn scrape(port: u16, name: &str) -> Option<f64> {
    let page = get_metrics(port)?;
    let mut sum = None;
    for l in page.lines().filter(|l| l.starts_with(name)) {
        let rest = &l[name.len()..];
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
        *sum.get_or_insert(0.0) += v;
    }
    sum
}

fn get_metrics(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// (upper bound, cumulative count) of a histogram's buckets, `+Inf` last.
fn histogram(port: u16, name: &str) -> Vec<(f64, f64)> {
    let page = get_metrics(port).unwrap_or_default();
    let mut out: Vec<(f64, f64)> = page
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `q` quantile, interpolated linearly inside its bucket (Prometheus' `histogram_quantile`).
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let span = n - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, n);
    }
    prev.0
}

/// The `q` quantile of sorted samples (nearest rank).
pub(super) fn quantile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::{quantile, quantile_of_sorted};

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile_of_sorted(&v, 0.5), 50.0);
        assert_eq!(quantile_of_sorted(&v, 0.99), 99.0);
        assert_eq!(quantile_of_sorted(&v[..1], 0.99), 1.0);
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let b = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5) - 0.001).abs() < 1e-12);
        assert!((quantile(&b, 0.7) - 0.0015).abs() < 1e-12);
        assert!((quantile(&b, 0.99) - 0.0038).abs() < 1e-9);
    }
}
