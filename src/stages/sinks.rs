//! The sinks a pipeline stage can end in (`sink:`), at run time: what the operators hand on
//! becomes TSDB rows ([`QuestdbWriter`]) or Parquet objects ([`ParquetWriter`]) instead of
//! topic records. The mappings were checked when the topology loaded (`sluice_ops::sink`);
//! the connectors (`sluice_connectors::{questdb, s3}`) do the writing.
//!
//! Exactly once (docs/EXACTLY_ONCE.md): both make what they wrote durable in
//! `Processor::flush_external`, before the commit's marker. A replay after a crash repeats
//! the same records at the same input offsets (the operators are deterministic given their
//! restored state), so TSDB rows are written again under the same dedup keys (upserted), and
//! Parquet batches are cut at the same offsets (their manifests say where) and overwrite the
//! same objects.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_connectors::questdb::{IlpValue, QuestDbConfig, QuestDbSink};
use sluice_connectors::s3::{
    hive_segment, object_key_in, time_dir, ArchiveBatch, AvroArrow, S3ArchiveSink, TimePartition,
};
use sluice_ops::op::Record;
use sluice_ops::sink::questdb::{Cell, QuestdbPlan};
use sluice_ops::sink::s3_parquet::{Granularity, ParquetPlan};

use super::archive::Batches;
use crate::metrics::METRICS;
use crate::runtime::{shutdown, ProcessError, Rejection, RuntimeError};

/// Where a pipeline's records end when it has a sink.
pub trait RecordSink: Send {
    /// Before what input `offset` produces. The first call tells where the task starts.
    fn begin(&mut self, offset: i64) -> Result<(), ProcessError>;
    /// One record the operators handed on, produced from input `offset` (`None`: by an idle
    /// advance, with no input record). `Ok(Some(_))`: the record's fault (it cannot be
    /// written); the input becomes a dead letter with that reason.
    fn write(
        &mut self,
        offset: Option<i64>,
        rec: &Record,
    ) -> Result<Option<Rejection>, ProcessError>;
    /// After everything input `offset` produced (nothing, for a dead letter or an input the
    /// runner skipped as already applied).
    fn end(&mut self, offset: i64) -> Result<(), ProcessError>;
    /// Makes everything written durable (before the commit); `Ok(false)` holds the commit
    /// back.
    fn flush(&mut self) -> Result<bool, ProcessError>;
}

/// Where ILP rows go: the QuestDB connector, or a recorder in `sluice test`.
pub trait IlpTarget: Send {
    /// Buffers one row; `Err` is the row's fault (e.g. a timestamp before 1970).
    fn push_row(
        &mut self,
        table: &str,
        symbols: &[(&str, Option<&str>)],
        columns: &[(&str, Option<IlpValue<'_>>)],
        timestamp_nanos: i64,
    ) -> Result<(), String>;
    fn should_flush(&self) -> bool;
    fn flush(&mut self) -> Result<(), ProcessError>;
}

/// ILP to a server, through the QuestDB connector.
pub struct Ilp {
    stage: String,
    sink: QuestDbSink,
    rt: tokio::runtime::Handle,
}

impl Ilp {
    pub fn new(
        stage: &str,
        addr: &str,
        flush_rows: usize,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, RuntimeError> {
        let mut config = QuestDbConfig::new(addr);
        config.flush_rows = flush_rows;
        let sink = QuestDbSink::new(config, METRICS.questdb.clone())
            .map_err(|e| RuntimeError::Config(format!("questdb sink of stage {stage}: {e}")))?;
        Ok(Ilp {
            stage: stage.to_string(),
            sink,
            rt,
        })
    }

    fn name(&self) -> String {
        format!(
            "{} (ILP at {})",
            self.stage,
            self.sink.config().display_addr()
        )
    }
}

impl IlpTarget for Ilp {
    fn push_row(
        &mut self,
        table: &str,
        symbols: &[(&str, Option<&str>)],
        columns: &[(&str, Option<IlpValue<'_>>)],
        timestamp_nanos: i64,
    ) -> Result<(), String> {
        self.sink
            .push_row(table, symbols, columns, timestamp_nanos)
            .map_err(|e| e.to_string())
    }

    fn should_flush(&self) -> bool {
        self.sink.should_flush()
    }

    /// Writes the buffered rows, retrying while the server is unreachable, unless a shutdown
    /// comes first.
    fn flush(&mut self) -> Result<(), ProcessError> {
        let rt = self.rt.clone();
        match shutdown::block_on_unless_stopped(&rt, self.sink.flush()) {
            Some(r) => r.map(|_| ()).map_err(|e| ProcessError::Sink {
                sink: self.name(),
                message: e.to_string(),
            }),
            None => Err(ProcessError::Interrupted { sink: self.name() }),
        }
    }
}

/// A pipeline's `questdb` sink: each record one row of the mapped table.
pub struct QuestdbWriter {
    stage: String,
    plan: QuestdbPlan,
    target: Box<dyn IlpTarget>,
}

impl QuestdbWriter {
    pub fn new(stage: &str, plan: QuestdbPlan, target: Box<dyn IlpTarget>) -> Self {
        QuestdbWriter {
            stage: stage.to_string(),
            plan,
            target,
        }
    }
}

impl RecordSink for QuestdbWriter {
    fn begin(&mut self, _offset: i64) -> Result<(), ProcessError> {
        Ok(())
    }

    fn write(
        &mut self,
        _offset: Option<i64>,
        rec: &Record,
    ) -> Result<Option<Rejection>, ProcessError> {
        let micros = match self.plan.timestamp_micros(rec) {
            Ok(t) => t,
            Err(sluice_ops::op::OpError::Reject { class, message }) => {
                return Ok(Some(Rejection::new(class, message)))
            }
            Err(sluice_ops::op::OpError::State(e)) => return Err(e.into()),
        };
        let cells: Vec<Option<Cell<'_>>> = self
            .plan
            .columns
            .iter()
            .map(|c| self.plan.cell(c, &rec.value))
            .collect();
        let mut symbols = Vec::new();
        let mut columns = Vec::new();
        for (col, cell) in self.plan.columns.iter().zip(&cells) {
            let name = col.name.as_str();
            match (col.kind, cell) {
                (sluice_ops::sink::questdb::ColumnKind::Symbol, c) => symbols.push((
                    name,
                    match c {
                        Some(Cell::Str(s)) => Some(s.as_ref()),
                        _ => None,
                    },
                )),
                (_, c) => columns.push((
                    name,
                    c.as_ref().map(|c| match c {
                        Cell::Str(s) => IlpValue::Str(s.as_ref()),
                        Cell::Bool(b) => IlpValue::Bool(*b),
                        Cell::Long(n) => IlpValue::Long(*n),
                        Cell::Double(x) => IlpValue::Double(*x),
                        Cell::TimestampMicros(t) => IlpValue::TimestampMicros(*t),
                    }),
                )),
            }
        }
        if let Err(e) = self.target.push_row(
            &self.plan.table,
            &symbols,
            &columns,
            micros.saturating_mul(1000),
        ) {
            return Ok(Some(Rejection::new("unwritable_row", e)));
        }
        METRICS
            .sink_rows
            .with_label_values(&[&self.stage, "questdb"])
            .inc();
        if self.target.should_flush() {
            self.target.flush()?;
        }
        Ok(None)
    }

    fn end(&mut self, _offset: i64) -> Result<(), ProcessError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<bool, ProcessError> {
        self.target.flush()?;
        Ok(true)
    }
}

/// A pipeline's `s3_parquet` sink: records batched by input offsets, each batch one Parquet
/// object per directory.
pub struct ParquetWriter {
    plan: ParquetPlan,
    arrow: AvroArrow,
    batches: Batches<(String, apache_avro::types::Value)>,
    /// Records an idle advance produced, waiting for the next input offset to be attached
    /// to (see [`RecordSink::flush`] below).
    idle: Vec<(String, apache_avro::types::Value)>,
}

impl ParquetWriter {
    /// The sink of task `partition` of a stage reading `input`, writing through `sink`
    /// (whose config carries the prefix); `schema` is the records' Avro schema.
    pub fn new(
        stage: &str,
        input: &str,
        partition: i32,
        plan: ParquetPlan,
        schema: &apache_avro::Schema,
        sink: S3ArchiveSink,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, RuntimeError> {
        let arrow = AvroArrow::new(schema).map_err(|e| {
            RuntimeError::Config(format!(
                "stage {stage}: its records have no Parquet form: {e}"
            ))
        })?;
        Ok(ParquetWriter {
            plan,
            arrow,
            batches: Batches::new(stage, input, partition, sink, rt),
            idle: Vec::new(),
        })
    }

    /// `rec`'s directory: the time directories, then `column=value` per partition column.
    fn dir(&self, rec: &Record) -> String {
        let granularity = match self.plan.granularity {
            Granularity::None => TimePartition::None,
            Granularity::Year => TimePartition::Year,
            Granularity::Month => TimePartition::Month,
            Granularity::Day => TimePartition::Day,
            Granularity::Hour => TimePartition::Hour,
        };
        let mut dir = time_dir(granularity, self.plan.time_ms(rec));
        for (col, v) in self.plan.partition_values(rec) {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&hive_segment(col, v.as_deref()));
        }
        dir
    }

    /// A batch's objects: its rows grouped by directory, each group one Parquet file.
    fn objects(
        arrow: &AvroArrow,
        prefix: &str,
        batch: &ArchiveBatch<(String, apache_avro::types::Value)>,
    ) -> Result<Vec<(String, Bytes, usize)>, String> {
        let Some((first, last)) = batch.offset_range() else {
            return Ok(Vec::new());
        };
        let mut groups: BTreeMap<&str, Vec<&apache_avro::types::Value>> = BTreeMap::new();
        for (dir, v) in batch.rows() {
            groups.entry(dir.as_str()).or_default().push(v);
        }
        groups
            .into_iter()
            .map(|(dir, rows)| {
                let key = object_key_in(prefix, dir, batch.topic(), batch.partition(), first, last);
                let body = arrow.parquet(&rows)?;
                Ok((key, Bytes::from(body), rows.len()))
            })
            .collect()
    }
}

impl RecordSink for ParquetWriter {
    fn begin(&mut self, offset: i64) -> Result<(), ProcessError> {
        self.batches.recover(offset)?;
        // What an idle advance produced belongs with the next input offset: a task restored
        // from the commit that recorded the tick produces it right before that record too.
        for row in std::mem::take(&mut self.idle) {
            self.batches.batch().push_produced(offset, row);
        }
        Ok(())
    }

    fn write(
        &mut self,
        offset: Option<i64>,
        rec: &Record,
    ) -> Result<Option<Rejection>, ProcessError> {
        let row = (self.dir(rec), rec.value.clone());
        match offset {
            Some(o) => {
                self.batches.batch().push_produced(o, row);
            }
            None => self.idle.push(row),
        }
        Ok(None)
    }

    fn end(&mut self, offset: i64) -> Result<(), ProcessError> {
        // Extends the range over an input that produced nothing (a no-op when it did).
        self.batches.batch().skip(offset);
        self.batches.after(offset);
        Ok(())
    }

    /// Holds the commit back while records of an idle advance wait for an input offset to
    /// be named by: committed without them, a crash would lose them (the windows they come
    /// from are closed in the committed state).
    fn flush(&mut self) -> Result<bool, ProcessError> {
        if !self.idle.is_empty() {
            return Ok(false);
        }
        let (arrow, prefix) = (&self.arrow, self.plan.prefix.as_str());
        self.batches
            .flush("s3", |_, batch| Self::objects(arrow, prefix, batch))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use apache_avro::types::Value;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt};
    use sluice_connectors::s3::{parquet_json, S3ArchiveConfig, S3Metrics};
    use sluice_ops::types::RecordType;

    use super::*;

    const SCHEMA: &str = r#"{"type": "record", "name": "Trip", "namespace": "t", "fields": [
        {"name": "id", "type": "long"},
        {"name": "vehicle", "type": "string"},
        {"name": "start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "km", "type": ["null", "double"], "default": null}]}"#;

    fn schema() -> apache_avro::Schema {
        apache_avro::Schema::parse_str(SCHEMA).unwrap()
    }

    fn parquet_plan(yaml: &str) -> ParquetPlan {
        let record = RecordType::from_schema(&schema()).unwrap();
        sluice_ops::sink::s3_parquet::check(&serde_yaml::from_str(yaml).unwrap(), &record).unwrap()
    }

    fn writer(store: &Arc<InMemory>, rt: &tokio::runtime::Runtime) -> ParquetWriter {
        let plan = parquet_plan(
            "{ prefix: lake/trips, time: start, granularity: hour, partition_by: [vehicle], rows_per_file: 4 }",
        );
        let mut config = S3ArchiveConfig::new("b");
        config.prefix = plan.prefix.clone();
        config.target_rows_per_file = plan.rows_per_file;
        let store: Arc<dyn ObjectStore> = store.clone();
        let sink = S3ArchiveSink::with_store(config, store, S3Metrics::unregistered());
        ParquetWriter::new("trips", "in", 0, plan, &schema(), sink, rt.handle().clone()).unwrap()
    }

    /// What input offset `o` produces: nothing for every fifth, two records for every
    /// seventh (as a record closing two windows does), else one; ids are unique.
    fn produced(o: i64) -> Vec<Record> {
        let n = if o % 5 == 3 {
            0
        } else if o % 7 == 0 {
            2
        } else {
            1
        };
        (0..n)
            .map(|k| Record {
                key: None,
                timestamp: 0,
                value: Value::Record(vec![
                    ("id".into(), Value::Long(o * 10 + k)),
                    ("vehicle".into(), Value::String(format!("v{}", o % 3))),
                    (
                        "start".into(),
                        Value::TimestampMillis(1_700_000_000_000 + o * 900_000),
                    ),
                    ("km".into(), Value::Union(0, Box::new(Value::Null))),
                ]),
            })
            .collect()
    }

    /// Feeds `from..to`, flushing (a commit) after each offset in `commits`; returns where
    /// the last successful commit resumes.
    fn run(w: &mut ParquetWriter, from: i64, to: i64, commits: &[i64]) -> i64 {
        let mut resume = from;
        for o in from..to {
            w.begin(o).unwrap();
            for r in produced(o) {
                assert!(w.write(Some(o), &r).unwrap().is_none());
            }
            w.end(o).unwrap();
            if commits.contains(&o) && w.flush().unwrap() {
                resume = o + 1;
            }
        }
        resume
    }

    /// Every id in the objects, with how many times it is there, and the folders used.
    fn archived(
        store: &Arc<InMemory>,
        rt: &tokio::runtime::Runtime,
    ) -> (BTreeMap<i64, usize>, Vec<String>) {
        rt.block_on(async {
            let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
            let mut seen = BTreeMap::new();
            let mut dirs = Vec::new();
            for o in objects
                .iter()
                .filter(|o| o.location.as_ref().ends_with(".parquet"))
            {
                let key = o.location.as_ref().to_string();
                dirs.push(key.rsplit_once('/').unwrap().0.to_string());
                let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
                for row in parquet_json(bytes).unwrap() {
                    *seen.entry(row["id"].as_i64().unwrap()).or_insert(0) += 1;
                }
            }
            dirs.sort();
            dirs.dedup();
            (seen, dirs)
        })
    }

    fn every_row_once(to: i64) -> BTreeMap<i64, usize> {
        (0..to)
            .flat_map(produced)
            .map(|r| match &r.value {
                Value::Record(f) => (sluice_ops::types::as_i64(&f[0].1).unwrap(), 1),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_replay_after_a_crash_writes_every_parquet_row_exactly_once() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        let mut first = writer(&store, &rt);
        let committed = run(&mut first, 0, 30, &[6, 29]);
        assert_eq!(committed, 30);
        // Uploads several batches (cut at 4 rows) in one commit, then dies before it.
        run(&mut first, 30, 47, &[46]);
        drop(first);
        // The restart resumes at the last commit and commits elsewhere.
        let mut second = writer(&store, &rt);
        let resume = run(&mut second, committed, 60, &[33, 40, 50, 59]);
        assert_eq!(resume, 60);
        let (rows, dirs) = archived(&store, &rt);
        assert_eq!(rows, every_row_once(60));
        assert!(
            dirs.iter()
                .any(|d| d == "lake/trips/date=2023-11-14/hour=22/vehicle=v1"),
            "{dirs:?}"
        );
    }

    #[test]
    fn results_of_an_idle_advance_wait_for_the_next_offset_and_hold_the_commit() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        let mut w = writer(&store, &rt);
        assert_eq!(run(&mut w, 0, 3, &[2]), 3);
        let idle = produced(1000).remove(0);
        assert!(w.write(None, &idle).unwrap().is_none());
        assert!(
            !w.flush().unwrap(),
            "no commit while idle results have no offset"
        );
        w.begin(3).unwrap();
        w.end(3).unwrap();
        assert!(w.flush().unwrap());
        let (rows, _) = archived(&store, &rt);
        assert_eq!(rows.get(&10_000), Some(&1));
    }

    /// Rows as the target got them.
    #[derive(Clone, Default)]
    struct Rows(Arc<Mutex<Vec<String>>>);

    impl IlpTarget for Rows {
        fn push_row(
            &mut self,
            table: &str,
            symbols: &[(&str, Option<&str>)],
            columns: &[(&str, Option<IlpValue<'_>>)],
            timestamp_nanos: i64,
        ) -> Result<(), String> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{table} {symbols:?} {columns:?} {timestamp_nanos}"));
            Ok(())
        }
        fn should_flush(&self) -> bool {
            false
        }
        fn flush(&mut self) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    #[test]
    fn a_questdb_row_maps_symbols_columns_and_the_designated_timestamp() {
        let record = RecordType::from_schema(&schema()).unwrap();
        let plan = sluice_ops::sink::questdb::check(
            &serde_yaml::from_str(
                "{ table: trips, symbols: [vehicle], columns: [id, { distance: km }], timestamp: start }",
            )
            .unwrap(),
            &record,
        )
        .unwrap();
        let rows = Rows::default();
        let mut w = QuestdbWriter::new("s", plan, Box::new(rows.clone()));
        let rec = produced(1).remove(0);
        assert!(w.write(Some(1), &rec).unwrap().is_none());
        assert_eq!(
            rows.0.lock().unwrap().as_slice(),
            ["trips [(\"vehicle\", Some(\"v1\"))] [(\"id\", Some(Long(10))), (\"distance\", None)] 1700000900000000000"]
        );
        // A NULL designated timestamp is the record's fault: a dead letter.
        let mut bad = produced(2).remove(0);
        if let Value::Record(f) = &mut bad.value {
            f[2].1 = Value::Null;
        }
        let plan = sluice_ops::sink::questdb::check(
            &serde_yaml::from_str("{ table: trips, columns: [id], timestamp: start }").unwrap(),
            &record,
        )
        .unwrap();
        let mut w = QuestdbWriter::new("s", plan, Box::new(rows.clone()));
        let why = w.write(Some(2), &bad).unwrap().expect("rejected");
        assert_eq!(why.class, "null_timestamp");
    }
}
