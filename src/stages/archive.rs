//! `s3_parquet_sink`: valid telemetry archived to S3 as Parquet, Hive-partitioned by event
//! date and hour. Objects are named by their input offset range, so rewriting a batch lands
//! on the same keys; after a crash the batches are cut exactly where the interrupted run cut
//! them (their manifests say where), so no two objects ever overlap.
//!
//! [`Batches`] is that protocol for rows of any type: the built-in archive cuts telemetry
//! rows with it, a pipeline's `s3_parquet` sink (`super::sinks`) any record.

use std::collections::VecDeque;

use bytes::Bytes;
use sluice_connectors::s3::{ArchiveBatch, RecordedCut, S3ArchiveConfig, S3ArchiveSink};
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
    /// Set while the task rebuilds after `sluice replay`: batches that end below this offset
    /// were written by the first run and are not written again. `None`: not rebuilding.
    rebuild_quiet_below: Option<i64>,
    /// Rebuilding, below the first run's batch that reaches `quiet_below`: batches are cut
    /// freely (they are dropped) and commits go through; the batch before it ends at this
    /// offset minus one.
    free_until: Option<i64>,
    /// The first run's batches and what the rebuild reads disagree (rows in a range the first
    /// run archived in no batch): the task fails with this.
    broken: Option<String>,
}

/// Where this task must cut its first batches so they land on the keys a crashed run may
/// have written (`S3ArchiveSink::recover_cuts`), or a replayed run wrote
/// (`S3ArchiveSink::replay_cuts`).
enum Recovery {
    /// Not looked up yet: it is, at the first offset the task reads. That is the restored
    /// position, or the log's start when the partition never committed (a crash inside the
    /// first commit leaves objects too).
    Unchecked,
    /// The last offsets of the earlier run's batches still to re-cut, in order, each marked
    /// when it ends a range with no manifest (which must hold no row); empty once replayed,
    /// and from then on batches are cut by size.
    Cuts(VecDeque<RecordedCut>),
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
            rebuild_quiet_below: None,
            free_until: None,
            broken: None,
        }
    }

    /// The task rebuilds from the input's beginning after `sluice replay`: it cuts where the
    /// first run cut from its batch that reaches `quiet_below` on, writes those batches
    /// again under the same keys, and drops the ones before.
    pub fn rebuild(&mut self, quiet_below: i64) {
        self.rebuild_quiet_below = Some(quiet_below);
    }

    /// Before each record, at `offset`: the first time, looks up the cuts an earlier run
    /// made from `offset` on; then cuts where a recorded cut was passed without a record at
    /// its offset (offsets need not be contiguous) or the free part of a rebuild ends.
    pub fn recover(&mut self, offset: i64) -> Result<(), ProcessError> {
        if let Recovery::Unchecked = self.recovery {
            let (topic, partition) = (self.topic.clone(), self.batch.partition());
            let cuts = match self.rebuild_quiet_below {
                Some(q) => {
                    let (free_until, cuts) = self
                        .rt
                        .block_on(self.sink.replay_cuts(&topic, partition, q))
                        .map_err(|e| self.sink_error(e))?;
                    self.free_until = (free_until > offset).then_some(free_until);
                    cuts
                }
                None => self
                    .rt
                    .block_on(self.sink.recover_cuts(&topic, partition, offset))
                    .map_err(|e| self.sink_error(e))?
                    .into_iter()
                    .map(|last| RecordedCut { last, gap: false })
                    .collect(),
            };
            if let (Some(first), Some(last)) = (cuts.first(), cuts.last()) {
                let why = if self.rebuild_quiet_below.is_some() {
                    "Re-cutting the first run's batches: a rebuild after sluice replay."
                } else {
                    "Re-cutting the batches a crash interrupted."
                };
                tracing::info!(stage = %self.stage, partition, from = offset, batches = cuts.len(), first_cut = first.last, last_cut = last.last, free_until = ?self.free_until, "{why}");
            }
            self.recovery = Recovery::Cuts(cuts.into());
        }
        if self.free_until.is_some_and(|f| offset >= f) {
            self.free_until = None;
            self.cut_open();
        }
        while let Recovery::Cuts(cuts) = &mut self.recovery {
            match cuts.front() {
                Some(c) if c.last < offset && self.free_until.is_none() => {
                    let c = cuts.pop_front().expect("front");
                    self.cut_recorded(c);
                }
                _ => break,
            }
        }
        match self.broken.take() {
            Some(why) => Err(self.sink_error(why)),
            None => Ok(()),
        }
    }

    /// The open batch.
    pub fn batch(&mut self) -> &mut ArchiveBatch<T> {
        &mut self.batch
    }

    /// After everything input `offset` produced: cuts the open batch where an earlier run
    /// cut, or once it is full.
    pub fn after(&mut self, offset: i64) {
        if let Some(f) = self.free_until {
            // Rebuilding below the first run's batch that reaches quiet_below.
            if offset + 1 >= f {
                self.free_until = None;
                self.cut_open();
            } else if self.sink.should_cut(&self.batch) {
                self.cut();
            }
            return;
        }
        let due = match &mut self.recovery {
            Recovery::Cuts(cuts) if !cuts.is_empty() => {
                if cuts.front().is_some_and(|c| offset >= c.last) {
                    cuts.pop_front()
                } else {
                    return;
                }
            }
            _ => {
                if self.sink.should_cut(&self.batch) {
                    self.cut();
                }
                return;
            }
        };
        if let Some(c) = due {
            self.cut_recorded(c);
        }
    }

    /// Cuts at a recorded cut; a range the earlier run archived in no batch must hold no row.
    fn cut_recorded(&mut self, c: RecordedCut) {
        if c.gap && !self.batch.is_empty() {
            let range = self.batch.offset_range();
            self.broken.get_or_insert(format!(
                "offsets {range:?} of {} [{}] hold {} rows, but the first run archived none of them (no manifest covers them): the input or the manifests changed since; the archive cannot be rebuilt under the same keys",
                self.topic,
                self.batch.partition(),
                self.batch.len()
            ));
        }
        self.cut_open();
    }

    /// Cuts the open batch if anything was read into it.
    fn cut_open(&mut self) {
        if self.batch.offset_range().is_some() {
            self.cut();
        }
    }

    /// Ends the open batch; it waits in `ready` for the next flush (or, rebuilding, is
    /// dropped if the first run wrote it and it ends below the rebuild's `quiet_below`).
    fn cut(&mut self) {
        let next = ArchiveBatch::new(self.topic.clone(), self.batch.partition());
        let batch = std::mem::replace(&mut self.batch, next);
        let quiet = match (self.rebuild_quiet_below, batch.offset_range()) {
            (Some(q), Some((_, last))) => last < q,
            _ => false,
        };
        if !quiet {
            self.ready.push(batch);
        }
    }

    /// True while batches of an earlier run remain to be re-cut (not in a rebuild's free
    /// part, where anything cut is dropped and commits go through).
    fn recutting(&self) -> bool {
        self.free_until.is_none()
            && matches!(&self.recovery, Recovery::Cuts(cuts) if !cuts.is_empty())
    }

    /// Writes every batch cut, and the open one: `objects` makes each batch's objects
    /// (`(key, Parquet bytes, rows)`). While a crashed (or replayed) run's batches are being
    /// cut again, writes only the batches cut so far (each lands on the keys it had) and
    /// returns `Ok(false)`: the open batch is not complete yet, so nothing past its start
    /// may be committed.
    pub fn flush(
        &mut self,
        kind: &str,
        objects: impl FnMut(
            &mut S3ArchiveSink,
            &ArchiveBatch<T>,
        ) -> Result<Vec<(String, Bytes, usize)>, String>,
    ) -> Result<bool, ProcessError> {
        if let Some(why) = self.broken.take() {
            return Err(self.sink_error(why));
        }
        if self.recutting() {
            self.write_ready(kind, objects)?;
            return Ok(false);
        }
        // A batch of skipped offsets only is cut too, so their range gets committed.
        if self.batch.offset_range().is_some() {
            self.cut();
        }
        self.write_ready(kind, objects)?;
        Ok(true)
    }

    fn write_ready(
        &mut self,
        kind: &str,
        mut objects: impl FnMut(
            &mut S3ArchiveSink,
            &ArchiveBatch<T>,
        ) -> Result<Vec<(String, Bytes, usize)>, String>,
    ) -> Result<(), ProcessError> {
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
        Ok(())
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

    fn rebuild(&mut self, quiet_below: i64) {
        self.batches.rebuild(quiet_below);
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

    /// Data object keys in the store.
    fn object_keys(store: &Arc<InMemory>, rt: &tokio::runtime::Runtime) -> Vec<String> {
        rt.block_on(async {
            let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
            objects
                .iter()
                .map(|o| o.location.to_string())
                .filter(|k| k.ends_with(".parquet"))
                .collect()
        })
    }

    #[test]
    fn a_rebuild_writes_again_exactly_the_batches_that_reach_quiet_below_under_their_keys() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        let mut first = task(&store, &rt);
        // Batches [0,3], [4,4], [5,5] (offset 5 is no row: no manifest, a gap), then cuts by
        // size and at commits.
        assert_eq!(run(&mut first, 0, 60, &[3, 4, 5, 12, 29, 44, 59]), 60);
        drop(first);
        let keys = object_keys(&store, &rt);
        // Remove the data objects (the manifests stay): what the rebuild writes is then in
        // the store, and nothing else.
        rt.block_on(async {
            for k in &keys {
                store
                    .delete(&object_store::path::Path::from(k.as_str()))
                    .await
                    .unwrap();
            }
        });
        let quiet_below = 4;
        let mut rebuild = task(&store, &rt);
        rebuild.rebuild(quiet_below);
        // Below the first run's batch that reaches quiet_below (it starts at 4) commits go
        // through; from there they wait until the first run's batches are all re-cut, which
        // land on their keys though the rebuild commits at other offsets.
        let committed = run(&mut rebuild, 0, 60, &[2, 10, 20, 35, 50]);
        assert_eq!(committed, 3);
        assert!(rebuild.flush_external().unwrap());
        // `...-<first>-<last>.parquet`
        let range = |k: &String| -> (i64, i64) {
            let mut it = k.trim_end_matches(".parquet").rsplit('-');
            let last = it.next().unwrap().parse().unwrap();
            (it.next().unwrap().parse().unwrap(), last)
        };
        let want: Vec<String> = keys
            .iter()
            .filter(|k| range(k).1 >= quiet_below)
            .cloned()
            .collect();
        assert!(!want.is_empty() && want.len() < keys.len(), "{keys:?}");
        assert_eq!(object_keys(&store, &rt), want);
        let want_rows: BTreeMap<i64, usize> = want
            .iter()
            .flat_map(|k| {
                let (first, last) = range(k);
                first..=last
            })
            .filter(|&o| o != 5)
            .map(|o| (o, 1))
            .collect();
        assert_eq!(archived(&store, &rt), want_rows);
    }

    #[test]
    fn a_rebuild_refuses_rows_where_the_first_run_archived_none() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        let mut first = task(&store, &rt);
        assert_eq!(run(&mut first, 0, 30, &[3, 12, 29]), 30);
        drop(first);
        // A manifest in the middle is gone: its rows now sit in what looks like a gap.
        rt.block_on(async {
            let manifests: Vec<_> = store.list(None).try_collect().await.unwrap();
            let mut m: Vec<_> = manifests
                .iter()
                .map(|o| o.location.clone())
                .filter(|l| l.as_ref().contains("_manifest"))
                .collect();
            m.sort();
            assert!(m.len() >= 3, "{m:?}");
            store.delete(&m[1]).await.unwrap();
        });
        let mut rebuild = task(&store, &rt);
        rebuild.rebuild(0);
        let mut out = Collect::default();
        let mut failed = None;
        for offset in 0..30 {
            let bytes = record(offset);
            if let Err(e) = rebuild.process(&input(offset, 0, &bytes), &mut out) {
                failed = Some(e.to_string());
                break;
            }
        }
        let failed = failed.or_else(|| rebuild.flush_external().err().map(|e| e.to_string()));
        let why = failed.expect("the rebuild went on over rows the first run never archived");
        assert!(why.contains("archived none of them"), "{why}");
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
