//! `sluice registry`: a Confluent-compatible schema registry on a `_schemas` topic.

use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve the REST API on.
    #[arg(
        long,
        default_value = "127.0.0.1:18081",
        env = "SLUICE_REGISTRY_LISTEN"
    )]
    pub listen: SocketAddr,
    /// Kafka bootstrap servers holding the schemas topic.
    #[arg(long, env = "SLUICE_BROKERS")]
    pub brokers: String,
    /// The compacted topic schemas are stored in.
    #[arg(long, default_value = "_schemas")]
    pub topic: String,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cfg = sluice_schemas::registry::RegistryConfig {
        listen: a.listen,
        brokers: a.brokers.clone(),
        topic: a.topic.clone(),
    };
    rt.block_on(async move {
        tokio::select! {
            r = sluice_schemas::registry::run(cfg) => r.map_err(|e| anyhow::anyhow!("schema registry (brokers {}): {e}", a.brokers)),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
