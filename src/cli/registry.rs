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
    /// Serve HTTPS with this PEM certificate chain (needs --key).
    #[arg(long, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Require HTTP basic auth from the users in this file, one `user:password` per line.
    #[arg(long)]
    pub basic_auth_file: Option<std::path::PathBuf>,
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
        tls: match (a.cert.clone(), a.key.clone()) {
            (Some(cert), Some(key)) => Some(sluice_schemas::registry::TlsFiles { cert, key }),
            _ => None,
        },
        basic_auth_file: a.basic_auth_file.clone(),
    };
    rt.block_on(async move {
        tokio::select! {
            r = sluice_schemas::registry::run(cfg) => r.map_err(|e| anyhow::anyhow!("schema registry (brokers {}): {e}", a.brokers)),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
