//! `sluice fluvio`: what the local stack needs of a Fluvio cluster without the `fluvio` CLI
//! (`scripts/stack` registers its SPU with it), and a look at a topic's partition ends.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use sluice_connectors::fluvio::FluvioClient;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register a custom SPU with the SC (what `fluvio cluster spu register` does); a no-op
    /// when an SPU with this id is registered already.
    RegisterSpu {
        /// The SC's public address.
        #[arg(long, env = "SLUICE_FLUVIO_ENDPOINT", default_value = "127.0.0.1:9003")]
        endpoint: String,
        /// The SPU's id (as given to `fluvio-run spu -i`).
        #[arg(long)]
        id: i32,
        /// The SPU's public address, `host:port`.
        #[arg(long)]
        public: String,
        /// The SPU's private address, `host:port`.
        #[arg(long)]
        private: String,
    },
    /// Exit 0 when the SPU is registered and online, 1 otherwise.
    SpuOnline {
        #[arg(long, env = "SLUICE_FLUVIO_ENDPOINT", default_value = "127.0.0.1:9003")]
        endpoint: String,
        #[arg(long)]
        id: i32,
    },
    /// Print each partition's end (high watermark) of a topic on the cluster.
    Ends {
        #[arg(long, env = "SLUICE_FLUVIO_ENDPOINT", default_value = "127.0.0.1:9003")]
        endpoint: String,
        topic: String,
    },
}

fn host_port(what: &str, s: &str) -> anyhow::Result<(String, u16)> {
    let (h, p) = s
        .rsplit_once(':')
        .with_context(|| format!("{what} `{s}` is not host:port"))?;
    let p = p
        .parse()
        .with_context(|| format!("{what} `{s}`: the port is not a number"))?;
    Ok((h.to_string(), p))
}

pub(crate) fn run(c: Command) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let connect =
        |endpoint: &str| rt.block_on(FluvioClient::connect(endpoint, Duration::from_secs(20)));
    match c {
        Command::RegisterSpu {
            endpoint,
            id,
            public,
            private,
        } => {
            let public = host_port("--public", &public)?;
            let private = host_port("--private", &private)?;
            let client = connect(&endpoint)?;
            let added = rt.block_on(client.register_spu(
                id,
                (&public.0, public.1),
                (&private.0, private.1),
            ))?;
            println!(
                "SPU {id} {} with the SC at {endpoint}",
                if added {
                    "registered"
                } else {
                    "was registered already"
                }
            );
        }
        Command::SpuOnline { endpoint, id } => {
            let client = connect(&endpoint)?;
            if !rt.block_on(client.spu_online(id))? {
                println!("SPU {id} is not online at {endpoint}");
                return Ok(ExitCode::FAILURE);
            }
            println!("SPU {id} is online at {endpoint}");
        }
        Command::Ends { endpoint, topic } => {
            let client = connect(&endpoint)?;
            for (p, end) in rt.block_on(client.ends(&topic))? {
                println!("{topic}\t{p}\t{end}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
