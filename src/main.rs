//! The `sluice` command.

use clap::Parser;

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
