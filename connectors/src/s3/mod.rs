//! S3 archive: records as Hive-partitioned Parquet, one object per input batch and
//! directory (the built-in archive: valid raw telemetry by event-time hour; a pipeline's
//! `s3_parquet` sink: any record, through Arrow, by any time field and columns), named by
//! the batch's offset range so a rewrite overwrites.
//!
//! Exactly-once needs the batch boundaries to survive a crash: see
//! [`S3ArchiveSink::recover_cuts`] and `docs/CONNECTORS.md`.

mod arrow;
mod batch;
mod config;
mod encode;
mod layout;
mod metrics;
mod sink;

pub use arrow::{parquet_json, AvroArrow};
pub use batch::ArchiveBatch;
pub use config::S3ArchiveConfig;
pub use encode::{decode_parquet, ArchivedRow, ParquetEncoder};
pub use layout::{
    hive_segment, manifest_key, object_key, object_key_in, time_dir, TimePartition, HIVE_NULL,
};
pub use metrics::S3Metrics;
pub use sink::{RecordedCut, S3ArchiveSink, S3Error, WriteReport};
