//! The `sluice` command.

use clap::Parser;

/// jemalloc, also under librdkafka's and RocksDB's malloc (the crate's unprefixed build):
/// glibc's allocator spent much of exactly_once's extra CPU on librdkafka's header
/// allocations (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = sluice::cli::Cli::parse();
    sluice::cli::init_tracing(cli.verbose);
    match sluice::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
