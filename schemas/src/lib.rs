//! Avro schemas, the Confluent wire format, the codec, and the schema registry.

pub mod codec;
pub mod compat;
mod kinds;
pub mod records;
pub mod wire;
