//! `sluice nab`: runs a detector over the NAB corpus, writes NAB-layout results and prints
//! the scores as the last line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_detectors::nab::{run as run_nab, NabOptions};
use sluice_detectors::DetectorSpec;
use sluice_topology::StageSpec;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The corpus: NAB's folder holding `data/` and `labels/` (or its `data/` folder itself).
    #[arg(long, default_value = "../shared/bench/nab")]
    pub data: PathBuf,
    /// The labels file; default: `labels/combined_windows.json` beside `data/`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Where to write results in NAB's layout.
    #[arg(long)]
    pub out: PathBuf,
    /// Detector name; default: the detect stage's detector in the topology.
    #[arg(long)]
    pub detector: Option<String>,
    /// The topology the default detector is read from.
    #[arg(long, default_value = "topology/iot.yaml")]
    pub topology: PathBuf,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let spec = match &a.detector {
        Some(name) => DetectorSpec::from_name(name).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => default_detector(&a.topology)?,
    };
    let root = if a.data.join("data").is_dir() {
        a.data.clone()
    } else {
        a.data.join("..")
    };
    let mut opts = NabOptions::for_corpus(&root, a.out.clone(), spec);
    if let Some(l) = &a.labels {
        opts.labels = l.clone();
    }
    anyhow::ensure!(
        opts.data_dir.is_dir(),
        "no NAB corpus at {}: pass --data with the folder holding data/ and labels/",
        a.data.display()
    );
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} nab [{bar:30}] {pos}/{len} files eta {eta}")
            .expect("valid template"),
    );
    let report = run_nab(&opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn default_detector(topology: &std::path::Path) -> anyhow::Result<DetectorSpec> {
    let loaded = super::validate::load_checked(topology).map_err(|e| anyhow::anyhow!("{e}"))?;
    let value = loaded
        .topology
        .stages
        .iter()
        .find_map(|s| match &s.spec {
            StageSpec::Detect(d) => Some(d.detector.clone()),
            _ => None,
        })
        .with_context(|| {
            format!(
                "{} has no detect stage; pass --detector",
                topology.display()
            )
        })?;
    super::validate::detector_spec(&value).map_err(|e| anyhow::anyhow!("{e}"))
}
