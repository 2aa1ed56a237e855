//! QuestDB sink: aggregates and anomalies to a time-series DB over ILP (HTTP or TCP).
//!
//! Rows are idempotent by (designated timestamp, `device_id`, `metric`[, `window`]), so the
//! tables must be created with `DEDUP UPSERT KEYS(...)` (DDL in `docs/CONNECTORS.md`):
//! replaying a batch after a crash then overwrites instead of duplicating. The caller commits
//! its input offsets only after [`QuestDbSink::flush`] returned `Ok`.

mod config;
mod encode;
mod metrics;
mod sink;

pub use config::QuestDbConfig;
pub use encode::{window_label, IlpEncoder};
pub use metrics::QuestDbMetrics;
pub use sink::{QuestDbError, QuestDbSink};
