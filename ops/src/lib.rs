//! sluice's operator library: what a topology's operators need, independent of brokers and
//! state engines.
//!
//! - [`types`]: the type of every field of an Avro record schema, addressed by name or dotted
//!   path, with "did you mean" suggestions for typos.
//! - [`expr`]: SQL expressions (`sqlparser`'s dialect), type-checked against a record type
//!   and compiled once into a tree evaluated per record.
//! - [`window`]: window assignment (tumbling, hopping, sliding, session) and aggregations
//!   (count, sum, min, max, mean, stddev, first, last, quantiles, distinct count) as
//!   mergeable accumulators with a compact binary encoding for state stores.
//!
//! Records are `apache_avro::types::Value::Record`s decoded with the topic's schema.

pub mod codec;
pub mod expr;
pub mod op;
pub mod problem;
pub mod sink;
pub mod types;
pub mod window;

pub use problem::Problem;
