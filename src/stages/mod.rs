//! The stage kinds of a topology, each a `Processor` (see `runtime::processor`).

pub mod aggregate;
pub mod archive;
pub mod detect;
mod schemas;
#[cfg(test)]
mod testkit;
pub mod tsdb;
pub mod validate;

pub use schemas::{RegistrySchemas, SchemaSource};
