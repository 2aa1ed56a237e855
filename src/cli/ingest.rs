//! `sluice ingest FILE`: runs the topology's `ingest:` bridges (MQTT subscriptions and HTTP
//! endpoints feeding its topics) with metrics and health endpoints, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_connectors::kafka::{ensure_topics, TopicToCreate};

use crate::http::{self, Health};
use crate::ingest;
use crate::metrics::METRICS;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub file: PathBuf,
    /// Run only this bridge; repeat for several. Default: every bridge under `ingest:`.
    #[arg(long = "bridge")]
    pub bridges: Vec<String>,
    /// Serve metrics and health here instead of the topology's `metrics.listen` (beside a
    /// `sluice run` on the same machine).
    #[arg(long, env = "SLUICE_INGEST_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT, how long the bridges get to acknowledge (answer) what is in flight
    /// before the process exits anyway (what was not acknowledged comes again from the MQTT
    /// broker at the next start; an HTTP request without an answer is resent by its device).
    #[arg(long, default_value = "30s")]
    pub shutdown_timeout: humantime::Duration,
    /// No summary on stderr.
    #[arg(long)]
    pub quiet: bool,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = super::validate::load_checked(&a.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &loaded.topology;
    anyhow::ensure!(
        !t.ingest.is_empty(),
        "{} has no `ingest:` bridges; docs/INGEST.md shows one",
        a.file.display()
    );
    for b in &a.bridges {
        anyhow::ensure!(
            t.ingest.iter().any(|x| &x.name == b),
            "no ingest bridge `{b}` in {}; bridges: {}",
            a.file.display(),
            t.ingest
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let bridges: Vec<_> = t
        .ingest
        .iter()
        .filter(|b| a.bridges.is_empty() || a.bridges.contains(&b.name))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // The bridges' own topics only: a missing one would make every record wait out its
    // delivery timeout (topics are never auto-created). Token topics are created compacted.
    let wanted: Vec<&str> = bridges
        .iter()
        .flat_map(|b| {
            b.spec
                .outputs()
                .into_iter()
                .chain(b.spec.inputs())
                .map(|(_, topic)| topic)
        })
        .collect();
    let create: Vec<TopicToCreate> = t
        .topic_plans()
        .into_iter()
        .filter(|p| wanted.contains(&p.name.as_str()))
        .map(|p| TopicToCreate {
            configs: p
                .all_configs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            name: p.name,
            partitions: p.partitions,
            replication: p.replication,
        })
        .collect();
    let opts = crate::connections::client_options(&t.connections)?;
    rt.block_on(ensure_topics(&opts, &create))
        .with_context(|| format!("creating the bridges' topics on {}", t.connections.brokers))?;
    // An output on Fluvio (docs/FLUVIO.md) is created there.
    let on_fluvio: Vec<(String, i32, i32)> = t
        .fluvio_topic_plans()
        .into_iter()
        .filter(|p| wanted.contains(&p.name.as_str()))
        .map(|p| (p.name, p.partitions, p.replication))
        .collect();
    if !on_fluvio.is_empty() {
        if let Some(client) = rt.block_on(crate::connections::fluvio_client(&t.connections))? {
            rt.block_on(client.ensure_topics(&on_fluvio))?;
        }
    }

    let health = Arc::new(Health::default());
    health.stages_total.store(bridges.len(), Ordering::Relaxed);
    let metrics_addr = a.metrics_listen.unwrap_or(t.metrics.listen);
    let h = health.clone();
    rt.spawn(async move {
        if let Err(e) = http::serve(metrics_addr, h).await {
            tracing::error!(error = %e, "Metrics endpoint failed.");
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    // Unready, then every bridge stops taking messages, acknowledges what is in flight and
    // disconnects; a second signal exits at once (nothing acknowledged that was not stored).
    let stop_signal = stop_tx.clone();
    super::run::listen_for_signals(
        &rt,
        health.clone(),
        "bridges acknowledge or answer what is in flight and stop.",
        "Unacknowledged messages come again from the MQTT broker; HTTP requests without an answer are resent by their devices.",
        move || {
            let _ = stop_signal.send(true);
        },
    )?;

    let mut tasks = Vec::new();
    let mut flags = Vec::new();
    for b in &bridges {
        let connected = Arc::new(AtomicBool::new(false));
        flags.push((b.name.clone(), connected.clone()));
        let bridge = rt
            .block_on(ingest::build(&loaded, b, connected))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !a.quiet {
            eprintln!("sluice ingest: {} {}", b.name, bridge.describe());
        }
        tasks.push((b.name.clone(), rt.spawn(bridge.run(stop_rx.clone()))));
    }
    if !a.quiet {
        eprintln!("sluice ingest: metrics on http://{metrics_addr}/metrics");
    }

    // Readiness and the connected gauge follow the sessions, until every bridge ended.
    let shutdown_timeout = Duration::from(a.shutdown_timeout);
    let mut stopping_since = None;
    while !tasks.iter().all(|(_, t)| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let mut ready = 0;
        for (name, c) in &flags {
            let up = c.load(Ordering::Relaxed);
            METRICS
                .ingest_connected
                .with_label_values(&[name])
                .set(i64::from(up));
            ready += usize::from(up);
        }
        health.stages_ready.store(ready, Ordering::Relaxed);
        if *stop_tx.borrow() {
            let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= shutdown_timeout {
                eprintln!(
                    "sluice ingest: shutdown timed out after {}; what was not acknowledged comes again from the MQTT broker",
                    a.shutdown_timeout
                );
                return Ok(ExitCode::FAILURE);
            }
        } else if tasks.iter().any(|(_, t)| t.is_finished()) {
            // One bridge failed: stop the others too, so the process restarts as a whole.
            health.failed.store(true, Ordering::Relaxed);
            let _ = stop_tx.send(true);
        }
    }
    let mut failed = false;
    for (name, task) in tasks {
        match rt.block_on(task) {
            Ok(Ok(r)) => {
                if !a.quiet {
                    let http = matches!(
                        t.ingest.iter().find(|b| b.name == name).map(|b| &b.spec),
                        Some(sluice_topology::IngestSpec::Http(_))
                    );
                    if http {
                        eprintln!(
                            "sluice ingest: {name}: {} requests received, {} records produced, {} answered 202, {} refused",
                            r.received, r.produced, r.acked, r.refused
                        );
                    } else {
                        eprintln!(
                            "sluice ingest: {name}: {} messages received, {} records produced, {} dead letters, {} acknowledged",
                            r.received, r.produced, r.dead_letters, r.acked
                        );
                    }
                }
            }
            Ok(Err(e)) => {
                failed = true;
                eprintln!("sluice ingest: {e}");
            }
            Err(e) => {
                failed = true;
                eprintln!("sluice ingest: bridge {name} panicked: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
