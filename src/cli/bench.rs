//! `sluice bench pipeline`: sustained events/s of the reference topology against the raw
//! consume rate of the same broker (the ceiling), both measured in one run; exactly-once
//! against at-least-once; input-to-output latency at half the measured throughput.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_connectors::kafka::ClientOptions;
use sluice_topology::{Guarantee, StageSpec};

use super::run::{create_topics, stage_def, Shared};
use crate::metrics::METRICS;
use crate::runtime::run_supervised;
use crate::sim::{produce, SimConfig};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The reference topology's throughput against the broker's plain consume rate.
    Pipeline(PipelineArgs),
    /// The pipeline engine in-process, no broker: decode, operators and encode of one
    /// stage's `Processor`, with where the time goes and the state per open window.
    Engine(super::bench_engine::Args),
    /// Messages/s from Mosquitto through `sluice ingest` to the raw topic, per CPU-second of
    /// the ingest process, and its ack latency.
    IngestMqtt(super::bench_ingest::Args),
    /// Requests/s and records/s through an HTTP ingest bridge to the raw topic, per
    /// CPU-second of the ingest process, and the latency to `202`.
    IngestHttp(super::bench_ingest_http::Args),
}

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    #[arg(long, default_value = "topology/iot.yaml")]
    pub topology: PathBuf,
    /// Brokers to measure against; default the stack's in-memory bench broker.
    #[arg(long, env = "SLUICE_BENCH_BROKERS", default_value = "127.0.0.1:19093")]
    pub brokers: String,
    #[arg(long, default_value_t = 500)]
    pub devices: u32,
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    /// Stages to run (default: validate, aggregate, detect).
    #[arg(long = "stage")]
    pub stages: Vec<String>,
    /// Skip the latency run.
    #[arg(long)]
    pub no_latency: bool,
    /// Pairs of exactly_once and at_least_once runs, alternating which goes first; the cost
    /// reported is the median of the pairs' costs (one pair on this shared machine swings
    /// by 20 points).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Run one guarantee only (`exactly_once` or `at_least_once`), e.g. under a profiler; no
    /// cost is reported then.
    #[arg(long, value_parser = ["exactly_once", "at_least_once"])]
    pub only: Option<String>,
    /// Put the raw topic on the Fluvio cluster (docs/FLUVIO.md): the input is produced
    /// there, the ceiling is a plain Fluvio consumer reading every partition at once, and
    /// the validate stage reads Fluvio. No latency run.
    #[arg(long)]
    pub raw_on_fluvio: bool,
    /// Put the valid topic on the Fluvio cluster: validate writes it there, exactly once
    /// without headers (docs/FLUVIO.md, "Stages writing Fluvio"). Best with `--stage
    /// validate`.
    #[arg(long)]
    pub valid_on_fluvio: bool,
    /// The Fluvio SC for `--raw-on-fluvio`.
    #[arg(
        long,
        env = "SLUICE_FLUVIO_ENDPOINT",
        default_value = "127.0.0.1:19003"
    )]
    pub fluvio: String,
}

pub(crate) fn run(c: Command) -> anyhow::Result<ExitCode> {
    let a = match c {
        Command::Pipeline(a) => a,
        Command::Engine(a) => return super::bench_engine::run(a),
        Command::IngestMqtt(a) => return super::bench_ingest::run(a),
        Command::IngestHttp(a) => return super::bench_ingest_http::run(a),
    };
    let stages = if a.stages.is_empty() {
        vec!["validate".to_string(), "aggregate".into(), "detect".into()]
    } else {
        a.stages.clone()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "# sluice bench pipeline: {} devices x 4 metrics x {} steps, brokers {}, stages {}{}",
        a.devices,
        a.steps,
        a.brokers,
        stages.join(","),
        match (a.raw_on_fluvio, a.valid_on_fluvio) {
            (false, false) => String::new(),
            (true, false) => format!("; raw topic on the Fluvio cluster at {}", a.fluvio),
            (false, true) => format!("; valid topic on the Fluvio cluster at {}", a.fluvio),
            (true, true) => format!(
                "; raw and valid topics on the Fluvio cluster at {}",
                a.fluvio
            ),
        }
    );
    let mut costs = Vec::new();
    let mut eo_rates = Vec::new();
    for round in 0..a.rounds.max(1) {
        let order = match a.only.as_deref() {
            Some("exactly_once") => vec![Guarantee::ExactlyOnce],
            Some(_) => vec![Guarantee::AtLeastOnce],
            None if round % 2 == 0 => vec![Guarantee::ExactlyOnce, Guarantee::AtLeastOnce],
            None => vec![Guarantee::AtLeastOnce, Guarantee::ExactlyOnce],
        };
        let mut pair = Vec::new();
        for guarantee in order {
            let r = one_run(&a, &stages, guarantee, &rt)?;
            println!(
                "round {}: {guarantee:?}: produced {} in {:.1}s; raw consume ceiling {:.0} rec/s; topology {:.0} rec/s sustained ({:.1}% of ceiling) after {:.1}s of group joins and restores; peak RSS {} MiB",
                round + 1, r.records, r.produce_s, r.ceiling, r.topology, 100.0 * r.topology / r.ceiling, r.startup_s, r.rss_mib
            );
            println!(
                "  {guarantee:?}: {} commits over the stages, {:.2}s inside them ({:.1} ms each)",
                r.commits,
                r.commit_s,
                1000.0 * r.commit_s / r.commits.max(1) as f64
            );
            println!(
                "  {guarantee:?}: CPU per input record: sluice {:.2} us, broker {}",
                r.cpu_us_ours,
                r.cpu_us_broker
                    .map_or("not a local process".to_string(), |b| format!("{b:.2} us"))
            );
            println!(
                "  {guarantee:?}: sluice's CPU per input record by thread: {}",
                r.by_thread
                    .iter()
                    .map(|(n, us)| format!("{n} {us:.2} us"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            pair.push((guarantee, r));
        }
        let rate = |g| {
            pair.iter()
                .find(|(x, _)| *x == g)
                .map_or(0.0, |(_, r)| r.topology)
        };
        let (eo, alo) = (rate(Guarantee::ExactlyOnce), rate(Guarantee::AtLeastOnce));
        if eo > 0.0 {
            eo_rates.push(eo);
        }
        if a.only.is_some() {
            continue;
        }
        let cost = 100.0 * (1.0 - eo / alo);
        println!(
            "round {}: exactly_once costs {cost:.1}% throughput against at_least_once",
            round + 1
        );
        let run = |g| pair.iter().find(|(x, _)| *x == g).map(|(_, r)| r);
        if let (Some(e), Some(l)) = (run(Guarantee::ExactlyOnce), run(Guarantee::AtLeastOnce)) {
            let extra =
                |e: f64, l: f64| format!("{:+.2} us ({:+.1}%)", e - l, 100.0 * (e / l - 1.0));
            println!(
                "round {}: exactly_once's extra CPU per input record: sluice {}, broker {}",
                round + 1,
                extra(e.cpu_us_ours, l.cpu_us_ours),
                e.cpu_us_broker
                    .zip(l.cpu_us_broker)
                    .map_or("unknown".to_string(), |(e, l)| extra(e, l))
            );
        }
        costs.push(cost);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    if costs.len() > 1 {
        let mid = median(&mut costs);
        println!(
            "exactly_once costs {mid:.1}% throughput against at_least_once (median of {} rounds; each: {})",
            costs.len(),
            costs
                .iter()
                .map(|c| format!("{c:.1}%"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !a.no_latency && !a.raw_on_fluvio && !eo_rates.is_empty() {
        let eo_rate = median(&mut eo_rates);
        let rate = (eo_rate / 2.0).max(1.0) as u64;
        let l = latency_run(&a, &stages, rate, &rt)?;
        println!(
            "latency at {rate} rec/s (half the exactly_once throughput), exactly_once, {} s of input: \
             raw -> telemetry.valid p50 {} p95 {} p99 {} max {} ms ({} records); \
             raw -> iot.anomalies p50 {} p95 {} p99 {} max {} ms ({} anomalies)",
            l.seconds,
            l.valid.q(0.50),
            l.valid.q(0.95),
            l.valid.q(0.99),
            l.valid.q(1.0),
            l.valid.0.len(),
            l.anomalies.q(0.50),
            l.anomalies.q(0.95),
            l.anomalies.q(0.99),
            l.anomalies.q(1.0),
            l.anomalies.0.len(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Latencies in milliseconds, sorted by [`Latencies::q`] on first use.
#[derive(Default)]
struct Latencies(Vec<i64>);

impl Latencies {
    fn q(&self, q: f64) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i].to_string()
    }
}

struct LatencyResult {
    seconds: u64,
    valid: Latencies,
    anomalies: Latencies,
}

/// Input-to-output latency at `rate` records/s: the simulation's clock is the wall clock (a
/// step every `series / rate` seconds, each record stamped with its step's time and sent at
/// that time), so an output's Kafka timestamp (the event time the stages carry through) is
/// when its input was sent, and `now - timestamp` when it is read is the latency through
/// validate (telemetry.valid) and through validate and detect (iot.anomalies).
fn latency_run(
    a: &PipelineArgs,
    stages: &[String],
    rate: u64,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<LatencyResult> {
    use rdkafka::producer::BaseRecord;
    use sluice_connectors::kafka::TrackedProducer;

    let suffix = format!("l{:08x}", rand::random::<u32>());
    let Prepared {
        loaded,
        shared,
        raw,
        ids,
    } = prepare(a, &suffix, Guarantee::ExactlyOnce, rt)?;
    let t = &loaded.topology;
    let valid = stage_output(t, "validate").context("no validate output")?;
    let anomalies = t
        .stages
        .iter()
        .find_map(|s| match &s.spec {
            StageSpec::Detect(d) => Some(d.output.clone()),
            _ => None,
        })
        .context("no detect stage")?;

    let series = u64::from(a.devices) * 4;
    let step_ms = ((series * 1000) / rate.max(1)).max(1) as i64;
    let steps = (30_000 / step_ms).max(200) as u64; // at least 30 s, and enough to learn
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, ready) = spawn_stages(&shared, stages, &stop);
    // The reader: both output topics from the start, latency on arrival.
    let reader = client(&a.brokers)?;
    let mut tpl = TopicPartitionList::new();
    for topic in [&valid, &anomalies] {
        for p in partitions(&reader, topic)? {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    reader.assign(&tpl)?;
    // Measure from the moment every stage owns its partitions.
    wait_ready(&ready, &threads)?;
    let start_ms = now_ms() + 200;
    let cfg = SimConfig {
        devices: a.devices,
        steps,
        start_ms,
        step_ms,
        bad_prob: 0.0,
        warmup_steps: steps / 3,
        device_prefix: format!("{suffix}-"),
        ..SimConfig::default()
    };
    let records_total = steps * series;
    let opts = ClientOptions::new(&a.brokers);
    let raw2 = raw.clone();
    let producer = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut producer = TrackedProducer::new(&opts)?;
        let mut sim = crate::sim::generator::Simulator::new(cfg);
        let (mut batch, mut buf) = (Vec::new(), Vec::with_capacity(128));
        let mut k = 0i64;
        while !sim.done() {
            let due = start_ms + k * step_ms;
            let wait = due - now_ms();
            if wait > 0 {
                std::thread::sleep(Duration::from_millis(wait as u64));
            }
            batch.clear();
            sim.step(&mut batch);
            for rec in &batch {
                crate::sim::encode(rec, ids, &mut buf);
                producer.send(
                    BaseRecord::to(&raw2)
                        .key(rec.telemetry.device_id.as_bytes())
                        .payload(&buf[..])
                        .timestamp(rec.kafka_ts),
                )?;
            }
            k += 1;
        }
        producer.flush(Duration::from_secs(300))?;
        Ok(())
    });
    let bar = ProgressBar::new(records_total).with_style(
        ProgressStyle::with_template("{spinner} latency run [{bar:30}] {pos}/{len} {per_sec}")
            .expect("template"),
    );
    let mut result = LatencyResult {
        seconds: (steps as i64 * step_ms / 1000) as u64,
        valid: Latencies::default(),
        anomalies: Latencies::default(),
    };
    let mut quiet = Instant::now();
    loop {
        let Some(m) = reader.poll(Duration::from_millis(100)) else {
            // Done when the input is all sent and nothing new came out for 3 s.
            if producer.is_finished() && quiet.elapsed() > Duration::from_secs(3) {
                break;
            }
            continue;
        };
        let m = m?;
        quiet = Instant::now();
        let Some(ts) = m.timestamp().to_millis() else {
            continue;
        };
        let lat = now_ms() - ts;
        if m.topic() == valid {
            result.valid.0.push(lat);
            bar.inc(1);
        } else {
            result.anomalies.0.push(lat);
        }
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("stage panicked"))??;
    }
    Ok(result)
}

struct RunResult {
    records: u64,
    produce_s: f64,
    ceiling: f64,
    topology: f64,
    /// Group joins and restores before every stage owned its partitions.
    startup_s: f64,
    /// Commits of all stages, and the time spent in them (the stage's thread waits).
    commits: u64,
    commit_s: f64,
    rss_mib: u64,
    /// CPU microseconds per input record over the sustained part: this process (the
    /// stages; the producer and the ceiling read are done by then) and the broker, when it
    /// is a local process we can see.
    cpu_us_ours: f64,
    cpu_us_broker: Option<f64>,
    /// The same for this process's threads, grouped by name (`sluice` = the stages' loops).
    by_thread: Vec<(String, f64)>,
}

fn one_run(
    a: &PipelineArgs,
    stages: &[String],
    guarantee: Guarantee,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<RunResult> {
    let suffix = format!("b{:08x}", rand::random::<u32>());
    let Prepared {
        loaded,
        shared,
        raw,
        ids,
    } = prepare(a, &suffix, guarantee, rt)?;
    let t = &loaded.topology;

    let cfg = SimConfig {
        devices: a.devices,
        steps: a.steps,
        warmup_steps: a.steps / 4,
        device_prefix: format!("{suffix}-"),
        ..SimConfig::default()
    };
    let opts = ClientOptions::new(&a.brokers);
    let started = Instant::now();
    let (records, produce_s, ceiling) = match &shared.fluvio {
        Some(client) if a.raw_on_fluvio => {
            // Fluvio stamps its own times: no skewed-clock readings (docs/FLUVIO.md).
            let cfg = SimConfig {
                skewed: false,
                ..cfg
            };
            let summary =
                crate::sim::produce_fluvio(client, rt.handle(), &raw, cfg, ids, 0, &mut |_, _| {})?;
            let produce_s = started.elapsed().as_secs_f64();
            // The ceiling: a plain Fluvio consumer reading every partition to its end.
            let ceiling = rt.block_on(fluvio_consume_rate(client, &raw, summary.records))?;
            (summary.records, produce_s, ceiling)
        }
        _ => {
            let summary = produce(&opts, &raw, cfg, ids, 0, &mut |_, _| {})?;
            let produce_s = started.elapsed().as_secs_f64();
            // The ceiling: one plain consumer reading the raw topic to its end.
            let ceiling = consume_rate(&a.brokers, &raw, summary.records)?;
            (summary.records, produce_s, ceiling)
        }
    };

    let base: Vec<u64> = stages
        .iter()
        .map(|s| METRICS.records_in.with_label_values(&[s]).get())
        .collect();
    let commits_before = commit_totals(stages);
    let stop = Arc::new(AtomicBool::new(false));
    let launched = Instant::now();
    let (threads, ready) = spawn_stages(&shared, stages, &stop);
    // Sustained rate: from the moment every stage owns its partitions (group joins and
    // restores are start-up, reported apart) to the last record read.
    wait_ready(&ready, &threads)?;
    let startup_s = launched.elapsed().as_secs_f64();
    let broker_pid = local_broker_port(&a.brokers).and_then(listener_pid);
    let cpu_before = CpuReading::now(broker_pid.as_deref());
    let threads_before = thread_cpu();
    let started = Instant::now();
    let read_before_ready = METRICS.records_in.with_label_values(&[&stages[0]]).get() - base[0];
    let bar = ProgressBar::new(records).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {per_sec}")
            .expect("template"),
    );
    bar.set_message(format!("{guarantee:?}"));
    // Done when validate read every raw record and every other stage read every record
    // validate wrote (from the metrics: tansu's high watermarks cannot be trusted).
    let valid = stage_output(t, "validate").unwrap_or_default();
    let valid_base = METRICS
        .records_out
        .with_label_values(&["validate", &valid])
        .get();
    // On Fluvio, validate writes at its commits: done once they wrote every valid record.
    let on_fluvio = METRICS
        .fluvio_output_records
        .with_label_values(&["validate", &valid]);
    let on_fluvio_base = on_fluvio.get();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let seen: Vec<u64> = stages
            .iter()
            .zip(&base)
            .map(|(s, b)| METRICS.records_in.with_label_values(&[s]).get() - b)
            .collect();
        bar.set_position(seen[0]);
        let valid_total = METRICS
            .records_out
            .with_label_values(&["validate", &valid])
            .get()
            - valid_base;
        let written = !a.valid_on_fluvio || on_fluvio.get() - on_fluvio_base >= valid_total;
        let done = seen[0] >= records
            && written
            && stages
                .iter()
                .zip(&seen)
                .all(|(s, n)| s == "validate" || *n >= valid_total);
        if done || threads.iter().any(|t| t.is_finished()) {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = CpuReading::now(broker_pid.as_deref());
    let threads_after = thread_cpu();
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("stage panicked"))??;
    }
    let commits_after = commit_totals(stages);
    let sustained = records.saturating_sub(read_before_ready);
    let per_record = |before: f64, after: f64| 1e6 * (after - before) / sustained.max(1) as f64;
    let mut by_thread: Vec<(String, f64)> = threads_after
        .iter()
        .map(|(name, after)| {
            let before = threads_before.get(name).copied().unwrap_or(0.0);
            (name.clone(), per_record(before, *after))
        })
        .filter(|(_, us)| *us >= 0.05)
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(RunResult {
        by_thread,
        records,
        cpu_us_ours: per_record(cpu_before.ours, cpu_after.ours),
        cpu_us_broker: cpu_before
            .broker
            .zip(cpu_after.broker)
            .map(|(b, a)| per_record(b, a)),
        produce_s,
        ceiling,
        topology: sustained as f64 / elapsed,
        startup_s,
        commits: commits_after.0 - commits_before.0,
        commit_s: commits_after.1 - commits_before.1,
        rss_mib: peak_rss_mib(),
    })
}

type StageThread = std::thread::JoinHandle<Result<(), crate::runtime::RuntimeError>>;

/// Commits so far and seconds spent committing, over `stages`.
fn commit_totals(stages: &[String]) -> (u64, f64) {
    stages.iter().fold((0, 0.0), |(n, t), s| {
        let h = METRICS.commit_seconds.with_label_values(&[s]);
        (n + h.get_sample_count(), t + h.get_sample_sum())
    })
}

/// Starts each stage on its own thread (as `sluice run` does); returns their ready flags.
fn spawn_stages(
    shared: &Arc<Shared>,
    stages: &[String],
    stop: &Arc<AtomicBool>,
) -> (Vec<StageThread>, Vec<Arc<AtomicBool>>) {
    let ready: Vec<Arc<AtomicBool>> = stages
        .iter()
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let threads = stages
        .iter()
        .zip(&ready)
        .map(|(name, ready)| {
            let (shared, stop, name, ready) =
                (shared.clone(), stop.clone(), name.clone(), ready.clone());
            std::thread::spawn(move || {
                run_supervised(|| stage_def(&shared, &name, ready.clone()), &stop)
            })
        })
        .collect();
    (threads, ready)
}

/// Waits until every stage owns its partitions (restored), or fails if one stopped.
fn wait_ready(ready: &[Arc<AtomicBool>], threads: &[StageThread]) -> anyhow::Result<()> {
    while !ready.iter().all(|r| r.load(Ordering::Relaxed)) {
        if threads.iter().any(|t| t.is_finished()) {
            anyhow::bail!("a stage stopped before it was ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One benchmark run's private copy of the topology, its topics and schemas in place.
struct Prepared {
    loaded: sluice_topology::Loaded,
    /// What the stages share, as `sluice run` builds it.
    shared: Arc<Shared>,
    raw: String,
    ids: crate::sim::WriterIds,
}

fn prepare(
    a: &PipelineArgs,
    suffix: &str,
    guarantee: Guarantee,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Prepared> {
    let text = std::fs::read_to_string(&a.topology)
        .with_context(|| format!("reading {}", a.topology.display()))?;
    let text = isolate(&text, suffix, guarantee);
    let text = if a.raw_on_fluvio {
        raw_on_fluvio(&text, suffix)
    } else {
        text
    };
    let text = if a.valid_on_fluvio {
        valid_on_fluvio(&text, suffix)
    } else {
        text
    };
    let env = |k: &str| match k {
        "SLUICE_FLUVIO_ENDPOINT" => Some(a.fluvio.clone()),
        "SLUICE_BROKERS" => Some(a.brokers.clone()),
        // The bench brokers are single local ones: one copy of each topic unless told otherwise.
        "SLUICE_REPLICATION" | "SLUICE_MIN_INSYNC_REPLICAS" => {
            Some(std::env::var(k).unwrap_or_else(|_| "1".into()))
        }
        _ => std::env::var(k).ok(),
    };
    let loaded =
        sluice_topology::load_str(&a.topology, &text, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    rt.block_on(create_topics(&loaded.topology))?;
    let schema_ids = rt.block_on(super::schemas::push_topology(&loaded))?;
    let raw = stage_input(&loaded.topology, "validate").context("no validate stage")?;
    let ids = rt.block_on(super::simulate::register_writers(&loaded, &raw))?;
    let shared = Arc::new(Shared::new(
        &loaded,
        schema_ids,
        rt.handle().clone(),
        None,
        false,
    )?);
    Ok(Prepared {
        loaded,
        shared,
        raw,
        ids,
    })
}

/// Gives the topology's topics and application id a fresh suffix and sets the guarantee.
pub(crate) fn isolate(text: &str, suffix: &str, guarantee: Guarantee) -> String {
    let g = match guarantee {
        Guarantee::ExactlyOnce => "exactly_once",
        Guarantee::AtLeastOnce => "at_least_once",
        Guarantee::ExactlyOnceTransactional => "exactly_once_transactional",
    };
    let mut text = text
        .replace("name: iot ", &format!("name: iot{suffix} "))
        .replace("guarantee: exactly_once ", &format!("guarantee: {g} "));
    for topic in [
        "telemetry.raw",
        "telemetry.valid",
        "telemetry.dlq",
        "iot.aggregates",
        "iot.anomalies",
        "iot.alerts",
    ] {
        text = text.replace(topic, &format!("{suffix}.{topic}"));
    }
    text.replace("${SLUICE_METRICS_LISTEN:-127.0.0.1:9464}", "127.0.0.1:0")
}

/// Moves an [`isolate`]d topology's raw topic to Fluvio (`<suffix>-telemetry-raw`: Fluvio
/// names take no dots), without the ingest bridges (Kafka producers) and with no clock-skew
/// re-stamping (Fluvio's timestamps are produce times, not the simulated ones).
pub(crate) fn raw_on_fluvio(text: &str, suffix: &str) -> String {
    let raw = format!("{suffix}-telemetry-raw");
    let text = text.replace(&format!("{suffix}.telemetry.raw"), &raw);
    let text = match text.split_once("\ningest:") {
        Some((head, rest)) => match rest.split_once("\nstages:") {
            Some((_, stages)) => format!("{head}\nstages:{stages}"),
            None => text.clone(),
        },
        None => text.clone(),
    };
    text.replace(
        &format!("  {raw}:   {{ partitions:"),
        &format!("  {raw}:   {{ broker: fluvio, partitions:"),
    )
    .replace(
        "connections:\n",
        "connections:\n  fluvio: { endpoint: ${SLUICE_FLUVIO_ENDPOINT} }\n",
    )
    .replace("max_clock_skew: 15m", "max_clock_skew: 1000d")
}

/// Moves an [`isolate`]d topology's valid topic to Fluvio (`<suffix>-telemetry-valid`).
pub(crate) fn valid_on_fluvio(text: &str, suffix: &str) -> String {
    let valid = format!("{suffix}-telemetry-valid");
    let text = text
        .replace(&format!("{suffix}.telemetry.valid"), &valid)
        .replace(
            &format!("  {valid}: {{ partitions:"),
            &format!("  {valid}: {{ broker: fluvio, partitions:"),
        );
    if text.contains("  fluvio: { endpoint:") {
        text
    } else {
        text.replace(
            "connections:\n",
            "connections:\n  fluvio: { endpoint: ${SLUICE_FLUVIO_ENDPOINT} }\n",
        )
    }
}

/// How long a Fluvio partition may send nothing while records are owed before the bench
/// gives up naming it (a stalled stream, not a slow one).
const STALL: Duration = Duration::from_secs(30);

/// Records/s of a plain Fluvio consumer reading the `total` records of `topic` from the
/// start, every partition at once (the SC's view of the ends is awaited first).
async fn fluvio_consume_rate(
    client: &Arc<sluice_connectors::fluvio::FluvioClient>,
    topic: &str,
    total: u64,
) -> anyhow::Result<f64> {
    let waited = Instant::now();
    let ends = loop {
        let ends = client.ends(topic).await?;
        if ends.values().sum::<i64>() as u64 >= total {
            break ends;
        }
        anyhow::ensure!(
            waited.elapsed() < Duration::from_secs(60),
            "Fluvio's {topic} holds {} of {total} records after 60 s",
            ends.values().sum::<i64>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let started = Instant::now();
    // One task per partition, as the stage runtime reads them.
    let reads: Vec<_> = ends
        .iter()
        .map(|(&p, &end)| {
            let (client, topic) = (client.clone(), topic.to_string());
            tokio::spawn(async move {
                let mut reader = client.reader(&topic, p, None, 1000).await?;
                let mut n = 0i64;
                while n < end {
                    let batch = match tokio::time::timeout(STALL, reader.next_batch()).await {
                        Ok(b) => b?,
                        Err(_) => anyhow::bail!(
                            "Fluvio's {topic}/{p} sent nothing for {} s at offset {n} of {end}",
                            STALL.as_secs()
                        ),
                    };
                    n += batch.len() as i64;
                    std::hint::black_box(&batch);
                }
                Ok::<i64, anyhow::Error>(n)
            })
        })
        .collect();
    let mut read = 0i64;
    for r in reads {
        read += r.await??;
    }
    Ok(read as f64 / started.elapsed().as_secs_f64())
}

fn stage_input(t: &sluice_topology::Topology, kind: &str) -> Option<String> {
    t.stages
        .iter()
        .find(|s| s.spec.kind() == kind)
        .and_then(|s| s.spec.inputs().first().map(|(_, t)| t.to_string()))
}

fn stage_output(t: &sluice_topology::Topology, kind: &str) -> Option<String> {
    t.stages.iter().find_map(|s| match &s.spec {
        StageSpec::Validate(v) if kind == "validate" => Some(v.output.clone()),
        _ => None,
    })
}

fn client(brokers: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{:08x}", rand::random::<u32>()))
        .set("enable.auto.commit", "false")
        .set("queued.min.messages", "200000")
        .create()?)
}

fn partitions(c: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Records/s of one plain consumer reading the `total` records of `topic` from the start.
fn consume_rate(brokers: &str, topic: &str, total: u64) -> anyhow::Result<f64> {
    let c = client(brokers)?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&c, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let started = Instant::now();
    let mut n = 0u64;
    while n < total {
        if let Some(m) = c.poll(Duration::from_secs(5)) {
            let m = m?;
            std::hint::black_box(m.payload());
            n += 1;
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Peak resident set size of this process (Linux), MiB.
pub(crate) fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub(super) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace();
    // utime and stime are fields 14 and 15 of the line: 12th and 13th after the name.
    let utime: f64 = f.nth(11)?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds of this process's threads so far, summed by thread name (`/proc/self/task`;
/// names are cut to 15 bytes by the kernel, and trailing digits are dropped so that e.g.
/// every `rdk:broker1..` counts as one).
fn thread_cpu() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let id = t.file_name().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name = comm
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        if let Some(cpu) = cpu_seconds(&format!("self/task/{id}")) {
            *out.entry(name.to_string()).or_insert(0.0) += cpu;
        }
    }
    out
}

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The port of the first broker address when it is on this host.
fn local_broker_port(brokers: &str) -> Option<u16> {
    let first = brokers.split(',').next()?.trim();
    let (host, port) = first.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        .then(|| port.parse().ok())
        .flatten()
}

/// The local process listening on TCP `port` (the bench broker), found through
/// `/proc/net/tcp{,6}` and the socket inodes in `/proc/*/fd`; None when it is not local
/// or not visible to us.
fn listener_pid(port: u16) -> Option<String> {
    let want = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            if f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = proc_dir.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(name);
                }
            }
        }
    }
    None
}

/// CPU used by this process and by the broker between two readings.
#[derive(Clone, Copy)]
struct CpuReading {
    ours: f64,
    broker: Option<f64>,
}

impl CpuReading {
    fn now(broker_pid: Option<&str>) -> Self {
        CpuReading {
            ours: cpu_seconds("self").unwrap_or(0.0),
            broker: broker_pid.and_then(cpu_seconds),
        }
    }
}
