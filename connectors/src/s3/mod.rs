//! S3 archive: valid raw telemetry as Hive-partitioned Parquet, one object per input batch
//! and event-time hour, named by the batch's offset range so a rewrite overwrites.
//!
//! Exactly-once needs the batch boundaries to survive a crash: see
//! [`S3ArchiveSink::recover_cuts`] and `docs/CONNECTORS.md`.

mod batch;
mod config;
mod encode;
mod layout;
mod metrics;
mod sink;

pub use batch::ArchiveBatch;
pub use config::S3ArchiveConfig;
pub use encode::{decode_parquet, ArchivedRow, ParquetEncoder};
pub use layout::{manifest_key, object_key};
pub use metrics::S3Metrics;
pub use sink::{S3ArchiveSink, S3Error, WriteReport};
