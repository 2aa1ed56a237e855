//! `s3_parquet_sink`: valid telemetry archived to S3 as Parquet, Hive-partitioned by event
//! date and hour. Objects are named by their input offset range, so rewriting a batch lands
//! on the same keys; after a crash the first batch is cut exactly where the interrupted one
//! was (its manifest says where), so no two objects ever overlap.

use sluice_connectors::s3::{ArchiveBatch, S3ArchiveConfig, S3ArchiveSink};
use sluice_schemas::codec::TelemetryDecoder;
use sluice_schemas::records::Telemetry;
use sluice_topology::{S3Connection, S3ParquetSinkSpec};

use super::schemas::{decode_with, SchemaSource};
use crate::metrics::METRICS;
use crate::runtime::{AnyTable, Emit, Input, ProcessError, Processor, Rejection, RuntimeError};

/// One task (input partition) of an archive sink.
pub struct Archive {
    stage: String,
    topic: String,
    sink: S3ArchiveSink,
    rt: tokio::runtime::Handle,
    decoder: TelemetryDecoder,
    schemas: Box<dyn SchemaSource>,
    batch: ArchiveBatch,
    /// Batches cut and waiting for the next flush.
    ready: Vec<ArchiveBatch>,
    /// After a restore: the last offset of the batch that was being written at the crash.
    forced_cut: Option<i64>,
    record: Telemetry,
}

impl Archive {
    pub fn new(
        stage: &str,
        spec: &S3ParquetSinkSpec,
        conn: &S3Connection,
        partition: i32,
        schemas: Box<dyn SchemaSource>,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, RuntimeError> {
        let mut config = S3ArchiveConfig::new(&conn.bucket);
        config.endpoint = (!conn.endpoint.is_empty()).then(|| conn.endpoint.clone());
        config.region = conn.region.clone();
        config.access_key_id = (!conn.access_key_id.is_empty()).then(|| conn.access_key_id.clone());
        config.secret_access_key =
            (!conn.secret_access_key.is_empty()).then(|| conn.secret_access_key.clone());
        config.allow_http = conn.allow_http;
        config.prefix = spec.prefix.clone();
        config.target_rows_per_file = spec.rows_per_file;
        let sink = S3ArchiveSink::new(config, crate::metrics::METRICS.s3.clone())
            .map_err(|e| RuntimeError::Config(format!("S3 archive of stage {stage}: {e}")))?;
        Ok(Archive {
            stage: stage.to_string(),
            topic: spec.input.clone(),
            sink,
            rt,
            decoder: TelemetryDecoder::new(),
            schemas,
            batch: ArchiveBatch::new(&spec.input, partition),
            ready: Vec::new(),
            forced_cut: None,
            record: Telemetry::default(),
        })
    }

    fn after(&mut self, offset: i64) {
        let cut = match self.forced_cut {
            Some(last) => offset >= last,
            None => self.sink.should_cut(&self.batch),
        };
        if cut {
            self.forced_cut = None;
            let next = ArchiveBatch::new(self.topic.clone(), self.batch.partition());
            self.ready.push(std::mem::replace(&mut self.batch, next));
        }
    }

    fn sink_error(&self, e: impl std::fmt::Display) -> ProcessError {
        ProcessError::Sink {
            sink: format!("{} (S3 archive)", self.stage),
            message: e.to_string(),
        }
    }
}

impl Processor for Archive {
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError> {
        let Some(bytes) = input.value else {
            return Ok(());
        };
        match decode_with(
            &mut self.decoder,
            self.schemas.as_mut(),
            bytes,
            &mut self.record,
        )? {
            Ok(()) => {
                self.batch.push(input.offset, self.record.clone());
            }
            Err(e) => {
                self.batch.skip(input.offset);
                out.dead_letter(input, &Rejection::new(e.class(), e.to_string()));
            }
        }
        self.after(input.offset);
        Ok(())
    }

    fn skipped(&mut self, input: &Input<'_>) {
        self.batch.skip(input.offset);
        self.after(input.offset);
    }

    fn on_restored(&mut self, partition: i32, resume: Option<i64>) -> Result<(), ProcessError> {
        if let Some(committed) = resume {
            let topic = self.topic.clone();
            self.forced_cut = self
                .rt
                .block_on(self.sink.recover_cut(&topic, partition, committed))
                .map_err(|e| self.sink_error(e))?;
            if let Some(last) = self.forced_cut {
                tracing::info!(stage = %self.stage, partition, first = committed, last, "Re-cutting the batch a crash interrupted.");
            }
        }
        Ok(())
    }

    fn flush_external(&mut self) -> Result<bool, ProcessError> {
        if self.forced_cut.is_some() {
            // The interrupted batch is not complete yet; commit nothing past its start.
            return Ok(false);
        }
        if !self.batch.is_empty() || self.batch.offset_range().is_some() {
            let next = ArchiveBatch::new(self.topic.clone(), self.batch.partition());
            self.ready.push(std::mem::replace(&mut self.batch, next));
        }
        for batch in std::mem::take(&mut self.ready) {
            let report = self
                .rt
                .block_on(self.sink.write(&batch))
                .map_err(|e| self.sink_error(e))?;
            METRICS
                .sink_rows
                .with_label_values(&[&self.stage, "s3"])
                .inc_by(report.rows as u64);
        }
        Ok(true)
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        Vec::new()
    }
}
