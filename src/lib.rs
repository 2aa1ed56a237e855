//! sluice: a Kafka Streams-style stream processor for IoT telemetry.
//!
//! The binary's subcommands live in `cli/`; the stage runtime in `runtime/`; the stage kinds
//! in `stages/`; the telemetry simulator in `sim/`. See docs/ARCHITECTURE.md.

pub mod cli;
pub mod connections;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod runtime;
pub mod sim;
pub mod stages;
pub mod testdriver;
