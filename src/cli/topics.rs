//! `sluice topics create FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create every topic and changelog the topology needs (existing ones are kept).
    Create {
        /// The topology file.
        file: PathBuf,
    },
}

pub(crate) fn run(c: Command) -> anyhow::Result<ExitCode> {
    let Command::Create { file } = c;
    let loaded = sluice_topology::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(super::run::create_topics(&loaded.topology))?;
    for p in loaded.topology.topic_plans() {
        println!("{} ({} partitions)", p.name, p.partitions);
    }
    Ok(ExitCode::SUCCESS)
}
