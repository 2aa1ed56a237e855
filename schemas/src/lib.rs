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

/// The `.avsc` files of this folder, by file name, compiled in so `sluice schemas push` and
/// tests have them without a checkout. Telemetry v1 comes before v2, the order to register them.
pub const BUNDLED: &[(&str, &str)] = &[
    ("telemetry-v1.avsc", include_str!("../telemetry-v1.avsc")),
    ("telemetry-v2.avsc", include_str!("../telemetry-v2.avsc")),
    ("aggregate.avsc", include_str!("../aggregate.avsc")),
    ("anomaly.avsc", include_str!("../anomaly.avsc")),
    ("alert.avsc", include_str!("../alert.avsc")),
    ("dead-letter.avsc", include_str!("../dead-letter.avsc")),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_bundled_schema_parses() {
        for (file, json) in super::BUNDLED {
            apache_avro::Schema::parse_str(json).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
