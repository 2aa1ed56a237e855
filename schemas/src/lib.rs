//! Avro schemas, the Confluent wire format, the codec, and the schema registry.

#[cfg(feature = "registry")]
mod cli;
#[cfg(feature = "registry")]
pub mod client;
pub mod codec;
pub mod compat;
mod kinds;
pub mod records;
#[cfg(feature = "registry")]
pub mod registry;
pub mod wire;

#[cfg(feature = "registry")]
pub use cli::{check, push, SchemaFileError};
