//! `sluice simulate`: produce device telemetry for a topology's raw topic.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_topology::StageSpec;

use crate::sim::{produce, SimConfig, WriterIds};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology whose validate stage's input topic, brokers and registry are used.
    #[arg(long, default_value = "topology/iot.yaml")]
    pub topology: PathBuf,
    /// Number of devices.
    #[arg(long, default_value_t = 100)]
    pub devices: u32,
    /// Metrics per device (1-4).
    #[arg(long, default_value_t = 4)]
    pub metrics: usize,
    /// Readings per series.
    #[arg(long, default_value_t = 360)]
    pub steps: u64,
    /// Event time between two readings of a series.
    #[arg(long, default_value = "10s")]
    pub step: humantime::Duration,
    /// Records per second to aim for; 0 sends as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Random seed; the same seed gives the same records.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Probability that a series gets an injected anomaly.
    #[arg(long, default_value_t = 0.3)]
    pub anomaly_prob: f64,
    /// Probability per reading of each kind of bad record.
    #[arg(long, default_value_t = 0.001)]
    pub bad_prob: f64,
    /// Write the ground truth (injected anomalies, record counts by kind) here as JSON.
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

impl Args {
    pub fn config(&self) -> SimConfig {
        SimConfig {
            devices: self.devices,
            metrics: self.metrics,
            step_ms: std::time::Duration::from(self.step).as_millis() as i64,
            steps: self.steps,
            seed: self.seed,
            anomaly_prob: self.anomaly_prob,
            bad_prob: self.bad_prob,
            ..SimConfig::default()
        }
    }
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = sluice_topology::load(&a.topology).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &loaded.topology;
    let raw = t
        .stages
        .iter()
        .find_map(|s| match &s.spec {
            StageSpec::Validate(v) => Some(v.input.clone()),
            _ => None,
        })
        .context("the topology has no validate stage whose input to simulate")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(super::run::create_topics(t))?;
    let ids = rt.block_on(register_writers(&loaded, &raw))?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} simulate [{bar:30}] {pos}/{len} records {per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    let mut progress = |sent, total| {
        bar.set_length(total);
        bar.set_position(sent);
    };
    let summary = match (t.broker_of(&raw), &t.connections.fluvio) {
        (sluice_topology::Broker::Fluvio, Some(f)) => {
            let client = rt
                .block_on(crate::connections::fluvio_client(&t.connections))?
                .context("connections.fluvio")?;
            crate::sim::produce_fluvio(
                &client,
                rt.handle(),
                &raw,
                a.config(),
                ids,
                a.rate,
                &mut progress,
            )
            .with_context(|| {
                format!("producing to {raw} on the Fluvio cluster at {}", f.endpoint)
            })?
        }
        _ => {
            let opts = crate::connections::client_options(&t.connections)?;
            produce(&opts, &raw, a.config(), ids, a.rate, &mut progress)
                .with_context(|| format!("producing to {raw} on {}", t.connections.brokers))?
        }
    };
    bar.finish_and_clear();
    eprintln!(
        "simulate: {} records to {raw} in {:.1}s ({:.0}/s); {} injected anomalies",
        summary.records,
        summary.seconds,
        summary.records as f64 / summary.seconds.max(1e-9),
        summary.injected.len()
    );
    if let Some(path) = &a.truth {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing ground truth to {}", path.display()))?;
        eprintln!("simulate: ground truth in {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Registers telemetry v1 then v2 under the raw topic's subject (v2 is BACKWARD compatible).
pub(crate) async fn register_writers(
    loaded: &sluice_topology::Loaded,
    raw: &str,
) -> anyhow::Result<WriterIds> {
    let t = &loaded.topology;
    let subject = t
        .topics
        .get(raw)
        .and_then(|s| s.subject.clone())
        .unwrap_or_else(|| format!("{raw}-value"));
    let dir = loaded.resolve(std::path::Path::new("../schemas"));
    let client = crate::connections::registry_client(&t.connections.registry)?;
    let mut ids = [0u32; 2];
    for (i, file) in ["telemetry-v1.avsc", "telemetry-v2.avsc"]
        .iter()
        .enumerate()
    {
        let text = std::fs::read_to_string(dir.join(file))
            .with_context(|| format!("reading {}", dir.join(file).display()))?;
        ids[i] = client.register(&subject, &text).await.with_context(|| {
            format!(
                "registering {file} under {subject} at {}",
                t.connections.registry
            )
        })?;
    }
    Ok(WriterIds {
        v1: ids[0],
        v2: ids[1],
    })
}
