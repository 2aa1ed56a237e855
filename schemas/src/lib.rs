//! Avro schemas, the Confluent wire format, the codec, and the schema registry.

pub mod records;
