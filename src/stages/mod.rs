//! The stage kinds of a topology, each a `Processor` (see `runtime::processor`).

pub mod aggregate;
pub mod archive;
pub mod detect;
#[cfg(test)]
mod equivalence;
pub mod pipeline;
mod schemas;
pub mod sinks;
#[cfg(test)]
mod testkit;
pub mod tsdb;
pub mod validate;
mod wire_decoder;

pub use schemas::{RegistrySchemas, SchemaSource};
pub use wire_decoder::WireDecoder;

/// Writes the key of an output record: its natural key (what identifies the result, e.g. a
/// window's device, metric, length and start) as a compact JSON array. Keyed so, a compacted
/// topic or an upserting consumer keeps one record per result however often a replay after a
/// crash repeats it (docs/EXACTLY_ONCE.md, "What a plain consumer sees").
pub(crate) fn natural_key(out: &mut Vec<u8>, parts: &impl serde::Serialize) {
    // Writing JSON of strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(out, parts);
}
