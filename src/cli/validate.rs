//! `sluice validate FILE`: every problem of a topology file, with lines and fixes.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_topology::{Problem, StageSpec, TopologyError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub file: PathBuf,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    match load_checked(&a.file) {
        Ok(loaded) => {
            let t = &loaded.topology;
            println!(
                "{}: ok (application `{}`, {} stages, {} topics, {} changelogs)",
                a.file.display(),
                t.metadata.name,
                t.stages.len(),
                t.topics.len(),
                t.topic_plans().len() - t.topics.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// [`load_checked`] for a subcommand: its problems printed, and exit code 2, when it fails.
pub(crate) fn load_or_exit(path: &std::path::Path) -> Result<sluice_topology::Loaded, ExitCode> {
    load_checked(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

/// Loads the topology and checks what the topology crate cannot: detector parameters.
pub(crate) fn load_checked(
    path: &std::path::Path,
) -> Result<sluice_topology::Loaded, TopologyError> {
    checked(sluice_topology::load(path)?)
}

/// As [`load_checked`], renamed into a backfill's namespace.
pub(crate) fn load_checked_namespaced(
    path: &std::path::Path,
    ns: &sluice_topology::Namespace,
) -> Result<sluice_topology::Loaded, TopologyError> {
    checked(sluice_topology::load_namespaced(path, ns)?)
}

fn checked(loaded: sluice_topology::Loaded) -> Result<sluice_topology::Loaded, TopologyError> {
    let mut problems = Vec::new();
    for stage in &loaded.topology.stages {
        if let StageSpec::Detect(d) = &stage.spec {
            if let Err(e) = detector_spec(&d.detector) {
                let key = format!("stages.{}.detector", stage.name);
                let (line, column) = loaded.position(&key);
                problems.push(Problem {
                    line,
                    column,
                    key,
                    message: e.to_string(),
                    fix: format!(
                        "see docs/DETECTORS.md; detectors: {}",
                        sluice_detectors::DetectorSpec::all()
                            .iter()
                            .map(|s| s.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(TopologyError::Invalid {
            path: loaded.path.clone(),
            problems,
        })
    }
}

pub(crate) fn detector_spec(
    v: &serde_yaml::Value,
) -> Result<sluice_detectors::DetectorSpec, serde_yaml::Error> {
    serde_yaml::from_value(v.clone())
}
