//! The subcommands, one module each. `anyhow` lives here, at the edge, and nowhere else.

mod backfill;
mod bench;
mod bench_engine;
mod bench_ingest;
mod bench_ingest_http;
mod dlq;
mod fluvio;
pub mod graph;
mod ingest;
mod lag;
mod nab;
mod registry;
mod replay;
mod report;
mod run;
mod schemas;
mod simulate;
mod test;
mod top;
mod topics;
mod tsdb;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sluice: a Kafka Streams-style stream processor for IoT telemetry.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// More logging (-v info, -vv debug). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a topology file without touching the network.
    Validate(validate::Args),
    /// Run a topology (all stages, or the ones named with --stage).
    Run(run::Args),
    /// Run the topology's `ingest:` bridges: device messages from MQTT into its topics.
    Ingest(ingest::Args),
    /// Run a topology over a bounded past range of its input, into a namespace of its own
    /// (`--version`), beside the live pipeline; stops by itself with a summary.
    Backfill(backfill::Args),
    /// Rewind a stopped stage of the live topology: its state is rebuilt from the input's
    /// beginning and its outputs from `--from` on are written again, with the ids they had.
    Replay(replay::Args),
    /// Produce simulated device telemetry with injected anomalies and bad records.
    Simulate(simulate::Args),
    /// Serve a Confluent-compatible schema registry backed by a `_schemas` topic.
    Registry(registry::Args),
    /// Register or check the topology's Avro schemas.
    #[command(subcommand)]
    Schemas(schemas::Command),
    /// Work with dead letters.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Create the topics a topology needs (its own and its changelogs).
    #[command(subcommand)]
    Topics(topics::Command),
    /// Create the QuestDB tables the topology writes, with their dedup keys.
    #[command(subcommand)]
    Tsdb(tsdb::Command),
    /// How far each stage is behind its input, from the broker; `--wait` until drained.
    Lag(lag::Args),
    /// Run anomaly detectors over the NAB corpus and score them.
    Nab(nab::Args),
    /// What a run left behind: records per topic, TSDB and Parquet rows, the detector against
    /// the simulator's ground truth.
    Report(report::Args),
    /// Run a topology's pipeline stages in-process over test cases, without a broker.
    Test(test::Args),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Draw the topology (stages, topics, stores, changelogs, tables, sinks) as Mermaid or DOT.
    Graph(graph::Args),
    /// A live view of a running topology's stages, from every instance's `/metrics`.
    Top(top::Args),
    /// A Fluvio cluster: register an SPU (the local stack), see a topic's partition ends.
    #[command(subcommand)]
    Fluvio(fluvio::Command),
}

pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,sluice=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Run(a) => run::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Backfill(a) => backfill::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Registry(a) => registry::run(a),
        Command::Schemas(c) => schemas::run(c),
        Command::Dlq(c) => dlq::run(c),
        Command::Topics(c) => topics::run(c),
        Command::Tsdb(c) => tsdb::run(c),
        Command::Lag(a) => lag::run(a),
        Command::Nab(a) => nab::run(a),
        Command::Report(a) => report::run(a),
        Command::Test(a) => test::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Graph(a) => graph::run(a),
        Command::Top(a) => top::run(a),
        Command::Fluvio(c) => fluvio::run(c),
    }
}
