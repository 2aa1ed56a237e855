//! QuestDB sink: aggregates and anomalies to a time-series DB over ILP (HTTP or TCP).
//!
//! Rows are idempotent by (designated timestamp, every symbol), so the tables must be created
//! with `DEDUP UPSERT KEYS(...)` (the DDL is in `ddl.rs`, run by `sluice tsdb init`):
//! replaying a batch after a crash then overwrites instead of duplicating. The caller commits
//! its input offsets only after [`QuestDbSink::flush`] returned `Ok`.

mod config;
mod ddl;
mod encode;
mod metrics;
mod sink;

pub use config::QuestDbConfig;
pub use ddl::{
    create_table, table_ddl, ColumnType, TableDdl, AGGREGATE_COLUMNS, ANOMALY_COLUMNS,
    TIMESTAMP_COLUMN,
};
pub use encode::{window_label, IlpEncoder, IlpValue};
pub use metrics::QuestDbMetrics;
pub use sink::{QuestDbError, QuestDbSink};
