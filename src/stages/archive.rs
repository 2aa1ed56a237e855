//! `s3_parquet_sink`: valid telemetry archived to S3 as Parquet, Hive-partitioned by event
//! date and hour. Objects are named by their input offset range, so rewriting a batch lands
//! on the same keys; after a crash the batches are cut exactly where the interrupted run cut
//! them (their manifests say where), so no two objects ever overlap.
//!
//! [`Batches`] is that protocol for rows of any type: the built-in archive cuts telemetry
//! rows with it, a pipeline's `s3_parquet` sink (`super::sinks`) any record.

use std::collections::VecDeque;

use bytes::Bytes;
use sluice_connectors::s3::{ArchiveBatch, S3ArchiveConfig, S3ArchiveSink};
use sluice_schemas::codec::TelemetryDecoder;
use sluice_schemas::records::Telemetry;
use sluice_topology::{S3Connection, S3ParquetSinkSpec};

use super::schemas::{decode_with, SchemaSource};
use crate::metrics::METRICS;
use crate::runtime::{
    shutdown, AnyTable, Emit, Input, ProcessError, Processor, Rejection, RuntimeError,
};

/// The S3 client settings of `connections.s3`, with `prefix` and rows per file.
pub fn s3_config(conn: &S3Connection, prefix: &str, rows_per_file: usize) -> S3ArchiveConfig {
    let mut config = S3ArchiveConfig::new(&conn.bucket);
    config.endpoint = (!conn.endpoint.is_empty()).then(|| conn.endpoint.clone());
    config.region = conn.region.clone();
    config.access_key_id = (!conn.access_key_id.is_empty()).then(|| conn.access_key_id.clone());
    config.secret_access_key =
        (!conn.secret_access_key.is_empty()).then(|| conn.secret_access_key.clone());
    config.allow_http = conn.allow_http;
    config.ca = conn.ca.clone();
    config.prefix = prefix.to_string();
    config.target_rows_per_file = rows_per_file;
    config
}

/// One task's batches of rows on their way to S3: the open batch, the batches cut and
/// waiting for the next flush, and where a crashed run cut.
pub struct Batches<T> {
    stage: String,
    topic: String,
    pub(crate) sink: S3ArchiveSink,
    rt: tokio::runtime::Handle,
    batch: ArchiveBatch<T>,
    /// Batches cut and waiting for the next flush.
    ready: Vec<ArchiveBatch<T>>,
    recovery: Recovery,
}

/// Where this task must cut its first batches so they land on the keys a crashed run may
/// have written (`S3ArchiveSink::recover_cuts`).
enum Recovery {
    /// Not looked up yet: it is, at the first offset the task reads. That is the restored
    /// position, or the log's start when the partition never committed (a crash inside the
    /// first commit leaves objects too).
    Unchecked,
    /// The last offsets of the crashed run's batches still to re-cut, in order; empty once
    /// replayed, and from then on batches are cut by size.
    Cuts(VecDeque<i64>),
}

impl<T> Batches<T> {
    pub fn new(
        stage: &str,
        input: &str,
        partition: i32,
        sink: S3ArchiveSink,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Batches {
            stage: stage.to_string(),
            topic: input.to_string(),
            sink,
            rt,
            batch: ArchiveBatch::new(input, partition),
            ready: Vec::new(),
            recovery: Recovery::Unchecked,
        }
    }

    /// Before the task's first record: the cuts a crashed run made from `offset` on.
    pub fn recover(&mut self, offset: i64) -> Result<(), ProcessError> {
        if let Recovery::Unchecked = self.recovery {
            let (topic, partition) = (self.topic.clone(), self.batch.partition());
            let cuts = self
                .rt
                .block_on(self.sink.recover_cuts(&topic, partition, offset))
                .map_err(|e| self.sink_error(e))?;
            if let (Some(first), Some(last)) = (cuts.first(), cuts.last()) {
                tracing::info!(stage = %self.stage, partition, from = offset, batches = cuts.len(), first_cut = first, last_cut = last, "Re-cutting the batches a crash interrupted.");
            }
            self.recovery = Recovery::Cuts(cuts.into());
        }
        Ok(())
    }

    /// The open batch.
    pub fn batch(&mut self) -> &mut ArchiveBatch<T> {
        &mut self.batch
    }

    /// After everything input `offset` produced: cuts the open batch where a crashed run
    /// cut, or once it is full.
    pub fn after(&mut self, offset: i64) {
        let cut = match &mut self.recovery {
            Recovery::Cuts(cuts) if !cuts.is_empty() => {
                let due = cuts.front().is_some_and(|&last| offset >= last);
                if due {
                    cuts.pop_front();
                }
                due
            }
            _ => self.sink.should_cut(&self.batch),
        };
        if cut {
            self.cut();
        }
    }

    /// Ends the open batch; it waits in `ready` for the next flush.
    fn cut(&mut self) {
        let next = ArchiveBatch::new(self.topic.clone(), self.batch.partition());
        self.ready.push(std::mem::replace(&mut self.batch, next));
    }

    /// True while batches of a crashed run remain to be re-cut.
    fn recutting(&self) -> bool {
        matches!(&self.recovery, Recovery::Cuts(cuts) if !cuts.is_empty())
    }

    /// Writes every batch cut, and the open one: `objects` makes each batch's objects
    /// (`(key, Parquet bytes, rows)`). `Ok(false)`, writing nothing, while a crashed run's
    /// batch is not complete yet (nothing past its start may be committed).
    pub fn flush(
        &mut self,
        kind: &str,
        mut objects: impl FnMut(
            &mut S3ArchiveSink,
            &ArchiveBatch<T>,
        ) -> Result<Vec<(String, Bytes, usize)>, String>,
    ) -> Result<bool, ProcessError> {
        if self.recutting() {
            return Ok(false);
        }
        // A batch of skipped offsets only is cut too, so their range gets committed.
        if self.batch.offset_range().is_some() {
            self.cut();
        }
        for batch in std::mem::take(&mut self.ready) {
            let Some(range) = batch.offset_range() else {
                continue;
            };
            let files = objects(&mut self.sink, &batch).map_err(|e| self.sink_error(e))?;
            let rt = self.rt.clone();
            let write = self
                .sink
                .write_objects(batch.topic(), batch.partition(), range, files);
            let report = shutdown::block_on_unless_stopped(&rt, write)
                .ok_or_else(|| ProcessError::Interrupted {
                    sink: format!("{} (S3)", self.stage),
                })?
                .map_err(|e| self.sink_error(e))?;
            METRICS
                .sink_rows
                .with_label_values(&[&self.stage, kind])
                .inc_by(report.rows as u64);
        }
        Ok(true)
    }

    fn sink_error(&self, e: impl std::fmt::Display) -> ProcessError {
        ProcessError::Sink {
            sink: format!("{} (S3)", self.stage),
            message: e.to_string(),
        }
    }
}

/// One task (input partition) of an archive sink.
pub struct Archive {
    batches: Batches<Telemetry>,
    decoder: TelemetryDecoder,
    schemas: Box<dyn SchemaSource>,
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
        let config = s3_config(conn, &spec.prefix, spec.rows_per_file);
        let sink = S3ArchiveSink::new(config, crate::metrics::METRICS.s3.clone())
            .map_err(|e| RuntimeError::Config(format!("S3 archive of stage {stage}: {e}")))?;
        Ok(Self::with_sink(
            stage,
            &spec.input,
            partition,
            sink,
            schemas,
            rt,
        ))
    }

    /// An archive task of `input`'s `partition` writing through `sink`.
    pub fn with_sink(
        stage: &str,
        input: &str,
        partition: i32,
        sink: S3ArchiveSink,
        schemas: Box<dyn SchemaSource>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Archive {
            batches: Batches::new(stage, input, partition, sink, rt),
            decoder: TelemetryDecoder::new(),
            schemas,
            record: Telemetry::default(),
        }
    }
}

impl Processor for Archive {
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError> {
        self.batches.recover(input.offset)?;
        let Some(bytes) = input.value else {
            self.batches.batch().skip(input.offset);
            self.batches.after(input.offset);
            return Ok(());
        };
        match decode_with(
            &mut self.decoder,
            self.schemas.as_mut(),
            bytes,
            &mut self.record,
        )? {
            Ok(()) => {
                let row = self.record.clone();
                self.batches.batch().push(input.offset, row);
            }
            Err(e) => {
                self.batches.batch().skip(input.offset);
                out.dead_letter(input, &Rejection::new(e.class(), e.to_string()));
            }
        }
        self.batches.after(input.offset);
        Ok(())
    }

    fn skipped(&mut self, input: &Input<'_>) -> Result<(), ProcessError> {
        self.batches.recover(input.offset)?;
        self.batches.batch().skip(input.offset);
        self.batches.after(input.offset);
        Ok(())
    }

    fn flush_external(&mut self) -> Result<bool, ProcessError> {
        self.batches.flush("s3", |sink, batch| {
            sink.telemetry_objects(batch).map_err(|e| e.to_string())
        })
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt};
    use sluice_connectors::s3::{decode_parquet, S3Metrics};

    use super::*;
    use crate::stages::testkit::{input, telemetry, Bundled, Collect};

    const ROWS_PER_FILE: usize = 8;

    fn task(store: &Arc<InMemory>, rt: &tokio::runtime::Runtime) -> Archive {
        let mut config = S3ArchiveConfig::new("archive");
        config.prefix = "telemetry".into();
        config.target_rows_per_file = ROWS_PER_FILE;
        let store: Arc<dyn ObjectStore> = store.clone();
        let sink = S3ArchiveSink::with_store(config, store, S3Metrics::unregistered());
        Archive::with_sink(
            "archive",
            "in",
            0,
            sink,
            Box::new(Bundled),
            rt.handle().clone(),
        )
    }

    /// Record `offset` of the input: one reading per offset, an hour apart every 7 offsets
    /// so batches span hours; offset 5 is not telemetry (a dead letter, skipped in the range).
    fn record(offset: i64) -> Vec<u8> {
        if offset == 5 {
            return b"not avro".to_vec();
        }
        let t = 1_700_000_000_000 + offset / 7 * 3_600_000 + offset;
        telemetry("d1", "temp", t, offset as f64, offset)
    }

    /// Feeds `from..to`, committing (`flush_external`) after each offset in `commits`;
    /// returns the offset the last successful commit would resume at.
    fn run(archive: &mut Archive, from: i64, to: i64, commits: &[i64]) -> i64 {
        let mut resume = from;
        let mut out = Collect::default();
        for offset in from..to {
            let bytes = record(offset);
            archive
                .process(&input(offset, 0, &bytes), &mut out)
                .unwrap();
            if commits.contains(&offset) && archive.flush_external().unwrap() {
                resume = offset + 1;
            }
        }
        resume
    }

    /// Every archived row's seq, with how many objects hold it.
    fn archived(store: &Arc<InMemory>, rt: &tokio::runtime::Runtime) -> BTreeMap<i64, usize> {
        rt.block_on(async {
            let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
            let mut seen = BTreeMap::new();
            for o in objects
                .iter()
                .filter(|o| o.location.as_ref().ends_with(".parquet"))
            {
                let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
                for row in decode_parquet(bytes).unwrap() {
                    *seen.entry(row.seq).or_insert(0) += 1;
                }
            }
            seen
        })
    }

    fn every_valid_row_once(to: i64) -> BTreeMap<i64, usize> {
        (0..to).filter(|&o| o != 5).map(|o| (o, 1)).collect()
    }

    #[test]
    fn a_crash_inside_the_first_commit_is_recut_where_it_was_cut() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        // The first commit (after offset 20) uploads [0,8], [9,16] (by size) and [17,20],
        // then the process dies before its marker: nothing was ever committed.
        let mut first = task(&store, &rt);
        run(&mut first, 0, 21, &[20]);
        drop(first);
        // The next run reads from the log's start and commits at other offsets.
        let mut second = task(&store, &rt);
        let resume = run(&mut second, 0, 40, &[12, 18, 25, 39]);
        assert_eq!(resume, 40);
        assert_eq!(archived(&store, &rt), every_valid_row_once(40));
    }

    #[test]
    fn a_crash_after_a_commit_recuts_every_batch_of_the_lost_one() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        let mut first = task(&store, &rt);
        let committed = run(&mut first, 0, 30, &[3, 29]);
        assert_eq!(committed, 30, "the second commit went through");
        // Uploads [30,37], [38,45] and [46,50], then dies before the marker of 51.
        run(&mut first, 30, 51, &[50]);
        drop(first);
        let mut second = task(&store, &rt);
        // Commits inside the re-cut range are held back until it is complete.
        let resume = run(&mut second, committed, 60, &[33, 40, 47, 59]);
        assert_eq!(resume, 60);
        assert_eq!(archived(&store, &rt), every_valid_row_once(60));
    }

    #[test]
    fn without_the_recut_the_same_crash_archives_rows_twice() {
        // The check above can fail: cutting the replay freely duplicates rows.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        let mut first = task(&store, &rt);
        run(&mut first, 0, 21, &[20]);
        let mut second = task(&store, &rt);
        second.batches.recovery = Recovery::Cuts(VecDeque::new());
        run(&mut second, 0, 40, &[12, 18, 25, 39]);
        assert!(archived(&store, &rt).values().any(|&n| n > 1));
    }
}
