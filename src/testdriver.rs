//! Runs a topology's pipeline stages in-process, without a broker, the way Kafka Streams'
//! TopologyTestDriver does: `sluice test` and the example tests use it. Each stage runs the
//! same `Processor` as under `sluice run` (decode, operators, encode), with the schemas of
//! the topology's `.avsc` files and the derived output schemas in a registry of its own.
//! Every topic is one partition here; records flow through the stages in the order they are
//! produced, so a record written to a topic another stage reads is processed next. A record
//! written to a topic a `join` reads as a table updates the table at once (a record without
//! a value, `value: null` in a case, deletes its key).
//!
//! A stage ending in a sink writes its rows where the case can read them by name:
//! `questdb:<table>` (the rows the ILP writer was given, one JSON object each: the designated
//! timestamp column in ms, the symbols and the columns) and `s3_parquet:<prefix>` (the Parquet
//! objects the real writer put in an in-memory object store, read back row by row, in object
//! key order; each row's `key` is its directory under the prefix). Sinks flush at every
//! commit, and the driver commits after each input record.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use apache_avro::types::Value;
use apache_avro::Schema;
use serde::Deserialize;
use sluice_ops::op::join::MemTables;
use sluice_ops::op::TaskContext;
use sluice_topology::{Loaded, StageSpec};

use crate::runtime::{Emit, Input, ProcessError, Processor, Rejection};
use crate::stages::pipeline::{Output, Pipeline};
use crate::stages::sinks::{IlpTarget, ParquetWriter, QuestdbWriter};
use crate::stages::SchemaSource;
use sluice_connectors::questdb::IlpValue;
use sluice_ops::sink::SinkPlan;

/// A record as the driver keeps it: on a topic, in wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: i64,
    /// For dead letters: the reason's class and message.
    pub dead: Option<(String, String)>,
}

/// Why the driver could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("topic `{0}` is not declared in the topology")]
    UnknownTopic(String),
    #[error("topic `{0}` has no schema: give it `schema:` (an .avsc file) to write records to it")]
    NoSchema(String),
    #[error("cannot read schema {path}: {message}")]
    Schema { path: String, message: String },
    #[error("record for `{topic}` does not fit its schema: {message}")]
    BadRecord { topic: String, message: String },
    #[error("stage {stage}: {source}")]
    Process {
        stage: String,
        #[source]
        source: ProcessError,
    },
}

/// Schemas by id, shared by every stage of one driver.
#[derive(Default)]
struct Registry {
    by_id: Vec<String>,
}

impl Registry {
    fn add(&mut self, json: String) -> u32 {
        if let Some(i) = self.by_id.iter().position(|s| *s == json) {
            return i as u32 + 1;
        }
        self.by_id.push(json);
        self.by_id.len() as u32
    }
}

#[derive(Clone)]
struct Local(Arc<Mutex<Registry>>);

impl SchemaSource for Local {
    fn fetch(&mut self, id: u32) -> Result<Option<String>, ProcessError> {
        let r = self.0.lock().expect("registry lock");
        Ok(r.by_id.get((id as usize).wrapping_sub(1)).cloned())
    }
}

struct StageTask {
    /// Wall clock passed (`advance`) since the stage's last input record or tick.
    idle: std::time::Duration,
    name: String,
    input: String,
    /// The topics written, by port: the output topic (unless the stage ends in a sink),
    /// then each branch's.
    outputs: Vec<String>,
    dead_letter: Option<String>,
    processor: Pipeline,
    store_names: Vec<String>,
}

/// The topology, ready to take records.
pub struct Driver {
    registry: Arc<Mutex<Registry>>,
    /// Writer schema and its id per topic with a schema (inputs from files, outputs derived).
    topic_schemas: HashMap<String, (Schema, u32)>,
    stages: Vec<StageTask>,
    /// The tables joins read, and the topics they are read from.
    tables: MemTables,
    table_topics: BTreeSet<String>,
    /// Everything written to each topic, in order (a record without a value: an empty one).
    pub topics: BTreeMap<String, Vec<TopicRecord>>,
    /// Rows the `questdb` sinks wrote, per table (as [`record_json`] shows them).
    tsdb: Arc<Mutex<BTreeMap<String, Vec<serde_json::Value>>>>,
    /// The object store the `s3_parquet` sinks write to, and their prefixes.
    store: Arc<object_store::memory::InMemory>,
    prefixes: BTreeSet<String>,
    rt: tokio::runtime::Runtime,
}

impl Driver {
    /// A driver for every pipeline stage of `loaded`; other kinds are listed in the error.
    pub fn new(loaded: &Loaded) -> Result<Driver, DriverError> {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let mut topic_schemas = HashMap::new();
        let t = &loaded.topology;
        for (name, spec) in &t.topics {
            if let Some(p) = &spec.schema {
                let path = loaded.resolve(p);
                let text = std::fs::read_to_string(&path).map_err(|e| DriverError::Schema {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                let schema = Schema::parse_str(&text).map_err(|e| DriverError::Schema {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                let id = registry
                    .lock()
                    .expect("registry lock")
                    .add(schema_json(&schema));
                topic_schemas.insert(name.clone(), (schema, id));
            }
        }
        let tables = MemTables::default();
        let task = TaskContext {
            partition: 0,
            tables: &tables,
        };
        let mut stages = Vec::new();
        let tsdb = Arc::new(Mutex::new(BTreeMap::new()));
        let store = Arc::new(object_store::memory::InMemory::new());
        let mut prefixes = BTreeSet::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DriverError::Process {
                stage: "-".into(),
                source: ProcessError::Sink {
                    sink: "tokio".into(),
                    message: e.to_string(),
                },
            })?;
        for stage in &t.stages {
            let StageSpec::Pipeline(p) = &stage.spec else {
                continue;
            };
            let plan = p.plan.clone().expect("pipelines are planned when loading");
            let schema = plan.output_schema.clone();
            let id = registry
                .lock()
                .expect("registry lock")
                .add(schema_json(&schema));
            let fail = |source| DriverError::Process {
                stage: stage.name.clone(),
                source,
            };
            let output = match (&plan.sink, p.writes()) {
                (None, None) => Output::Branches,
                (None, Some(w)) => {
                    // The derived schema is what the output topic carries.
                    topic_schemas.insert(w.to_string(), (schema, id));
                    Output::Topic { schema_id: id }
                }
                (Some(SinkPlan::Questdb(q)), _) => Output::Sink(Box::new(QuestdbWriter::new(
                    &stage.name,
                    q.clone(),
                    Box::new(Recorder {
                        rows: tsdb.clone(),
                        timestamp_column: q.timestamp_column.clone(),
                    }),
                ))),
                (Some(SinkPlan::S3Parquet(pq)), _) => {
                    prefixes.insert(pq.prefix.clone());
                    let mut config = sluice_connectors::s3::S3ArchiveConfig::new("test");
                    config.prefix = pq.prefix.clone();
                    config.target_rows_per_file = pq.rows_per_file;
                    let sink = sluice_connectors::s3::S3ArchiveSink::with_store(
                        config,
                        store.clone(),
                        sluice_connectors::s3::S3Metrics::unregistered(),
                    );
                    let writer = ParquetWriter::new(
                        &stage.name,
                        &p.input,
                        0,
                        pq.clone(),
                        plan.output_schema,
                        sink,
                        rt.handle().clone(),
                    )
                    .map_err(|e| {
                        fail(ProcessError::Schema {
                            message: e.to_string(),
                        })
                    })?;
                    Output::Sink(Box::new(writer))
                }
            };
            let mut branch_ids = Vec::new();
            for b in &plan.branches {
                let id = registry
                    .lock()
                    .expect("registry lock")
                    .add(schema_json(b.output_schema));
                topic_schemas.insert(b.output.clone(), (b.output_schema.clone(), id));
                branch_ids.push(id);
            }
            let outputs = p.port_topics();
            let processor = Pipeline::new(
                &stage.name,
                plan,
                output,
                &branch_ids,
                Box::new(Local(registry.clone())),
                &task,
            )
            .map_err(|source| DriverError::Process {
                stage: stage.name.clone(),
                source,
            })?;
            stages.push(StageTask {
                idle: std::time::Duration::ZERO,
                name: stage.name.clone(),
                input: p.input.clone(),
                outputs,
                dead_letter: p.dead_letter.clone(),
                processor,
                store_names: stage.spec.stores(),
            });
        }
        Ok(Driver {
            registry,
            topic_schemas,
            stages,
            tables,
            table_topics: t.table_topics(),
            topics: BTreeMap::new(),
            tsdb,
            store,
            prefixes,
            rt,
        })
    }

    /// Whether `name` is something a case can expect records at: a declared topic, a table
    /// a `questdb` sink writes (`questdb:<table>`) or an `s3_parquet` sink's prefix
    /// (`s3_parquet:<prefix>`); otherwise what it could be instead.
    pub fn check_target(&self, name: &str, loaded: &Loaded) -> Result<(), String> {
        let mut sinks: Vec<String> = Vec::new();
        for s in &loaded.topology.stages {
            if let StageSpec::Pipeline(p) = &s.spec {
                match p.sink_plan() {
                    Some(SinkPlan::Questdb(q)) => sinks.push(format!("questdb:{}", q.table)),
                    Some(SinkPlan::S3Parquet(pq)) => {
                        sinks.push(format!("s3_parquet:{}", pq.prefix))
                    }
                    None => {}
                }
            }
        }
        if loaded.topology.topics.contains_key(name) || sinks.iter().any(|s| s == name) {
            return Ok(());
        }
        let all = loaded
            .topology
            .topics
            .keys()
            .cloned()
            .chain(sinks)
            .collect::<Vec<_>>();
        let hint = match sluice_ops::types::did_you_mean(name, all.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? "),
            None => String::new(),
        };
        Err(format!(
            "expect: `{name}` is neither a topic nor a sink; {hint}(topics and sinks: {})",
            all.join(", ")
        ))
    }

    /// Names of the stages that run (every pipeline stage).
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// Writes a record given as JSON to `topic` (encoded with the topic's schema) and runs
    /// every stage it reaches.
    pub fn send(
        &mut self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: &serde_json::Value,
        timestamp: i64,
    ) -> Result<(), DriverError> {
        let (schema, id) = self
            .topic_schemas
            .get(topic)
            .ok_or_else(|| DriverError::NoSchema(topic.to_string()))?;
        if value.is_null() && self.table_topics.contains(topic) {
            // A tombstone: deletes the key from the table.
            return self.send_raw(topic, key, Vec::new(), timestamp);
        }
        let avro = json_to_avro(value, schema).map_err(|message| DriverError::BadRecord {
            topic: topic.to_string(),
            message,
        })?;
        let body =
            sluice_ops::codec::encode_once(schema, &avro).map_err(|e| DriverError::BadRecord {
                topic: topic.to_string(),
                message: e.to_string(),
            })?;
        let mut bytes = Vec::with_capacity(body.len() + 5);
        sluice_schemas::wire::write_header(*id, &mut bytes);
        bytes.extend_from_slice(&body);
        self.send_raw(topic, key, bytes, timestamp)
    }

    /// Writes raw bytes (e.g. a record that is not Avro) to `topic` and runs the stages.
    pub fn send_raw(
        &mut self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        timestamp: i64,
    ) -> Result<(), DriverError> {
        let mut queue = VecDeque::new();
        queue.push_back((
            topic.to_string(),
            TopicRecord {
                key,
                value,
                timestamp,
                dead: None,
            },
        ));
        self.run_queue(queue)?;
        self.commit()
    }

    /// What the runner does for a stage holding something only a commit takes in (a join
    /// whose table moved): commits it, here by draining its tables as a commit writes them
    /// to the changelog. The driver checks after each input record, so a table update a join
    /// reads applies from the next record on.
    fn commit(&mut self) -> Result<(), DriverError> {
        for s in &mut self.stages {
            // Sinks make their rows durable before every commit.
            s.processor
                .flush_external()
                .map_err(|source| DriverError::Process {
                    stage: s.name.clone(),
                    source,
                })?;
        }
        let mut changelog = Vec::new();
        for s in &mut self.stages {
            if s.processor.wants_commit() {
                for t in s.processor.tables() {
                    t.drain_dirty(&mut changelog);
                }
                changelog.clear();
            }
        }
        Ok(())
    }

    /// `by` of wall clock passes with no input: every stage is offered its idle time (since
    /// its last record or tick), as the runner does. A window with `idle_timeout` records a
    /// tick; the driver then does what a commit does to the tables (drains them to the
    /// changelog) and offers the idle time again, when the tick takes effect and closes
    /// windows.
    pub fn advance(&mut self, by: std::time::Duration) -> Result<(), DriverError> {
        let mut queue = VecDeque::new();
        for s in self.stages.iter_mut() {
            let mut emit = Collect {
                outputs: &s.outputs,
                dead_letter: s.dead_letter.as_deref(),
                out: Vec::new(),
            };
            let fail = |source| DriverError::Process {
                stage: s.name.clone(),
                source,
            };
            s.idle += by;
            if s.processor.idle(s.idle, &mut emit).map_err(fail)? {
                s.idle = std::time::Duration::ZERO;
                // The tick takes effect once committed.
                let mut changelog = Vec::new();
                for t in s.processor.tables() {
                    t.drain_dirty(&mut changelog);
                }
                s.processor
                    .idle(std::time::Duration::ZERO, &mut emit)
                    .map_err(fail)?;
            }
            queue.extend(emit.out);
        }
        // What the ticks emitted is written to its topics and read by the stages after.
        self.run_queue(queue)?;
        self.commit()
    }

    /// Writes each queued record to its topic and runs every stage reading that topic,
    /// queueing what they write, until nothing is left.
    fn run_queue(&mut self, mut queue: VecDeque<(String, TopicRecord)>) -> Result<(), DriverError> {
        while let Some((topic, rec)) = queue.pop_front() {
            let list = self.topics.entry(topic.clone()).or_default();
            let offset = list.len() as i64;
            list.push(rec.clone());
            if self.table_topics.contains(&topic) {
                self.update_table(&topic, &rec)?;
            }
            for s in self.stages.iter_mut().filter(|s| s.input == topic) {
                s.idle = std::time::Duration::ZERO;
                let input = Input {
                    topic: &topic,
                    partition: 0,
                    offset,
                    timestamp: rec.timestamp,
                    key: rec.key.as_deref(),
                    value: (!rec.value.is_empty()).then_some(rec.value.as_slice()),
                };
                let mut emit = Collect {
                    outputs: &s.outputs,
                    dead_letter: s.dead_letter.as_deref(),
                    out: Vec::new(),
                };
                s.processor
                    .process(&input, &mut emit)
                    .map_err(|source| DriverError::Process {
                        stage: s.name.clone(),
                        source,
                    })?;
                queue.extend(emit.out);
            }
        }
        Ok(())
    }

    /// Applies a record written to a table topic to its table, decoded (from whichever
    /// schema wrote it) into the table topic's schema.
    fn update_table(&mut self, topic: &str, rec: &TopicRecord) -> Result<(), DriverError> {
        let key = rec.key.as_deref().unwrap_or_default();
        if rec.value.is_empty() {
            self.tables.apply(topic, key, None);
            return Ok(());
        }
        let bad = |message: String| DriverError::BadRecord {
            topic: topic.to_string(),
            message,
        };
        let (reader, _) = self
            .topic_schemas
            .get(topic)
            .ok_or_else(|| DriverError::NoSchema(topic.to_string()))?;
        let (id, body) = sluice_schemas::wire::parse(&rec.value).map_err(|e| bad(e.to_string()))?;
        let writer = {
            let reg = self.registry.lock().expect("registry lock");
            let json = reg
                .by_id
                .get((id as usize).wrapping_sub(1))
                .cloned()
                .ok_or_else(|| bad(format!("schema id {id} is unknown")))?;
            Schema::parse_str(&json).map_err(|e| bad(e.to_string()))?
        };
        let value = sluice_ops::codec::decode_once(&writer, Some(reader), body)
            .map_err(|e| bad(e.to_string()))?;
        self.tables.apply(topic, key, Some(value));
        Ok(())
    }

    /// Entries of the table read from `topic`.
    pub fn table_len(&self, topic: &str) -> usize {
        self.tables.len(topic)
    }

    /// The records written to `topic`, decoded to JSON (`key`, `value`, `timestamp`; dead
    /// letters also `class` and `message`, and their value undecoded as `raw` bytes length).
    pub fn read(&self, topic: &str) -> Vec<serde_json::Value> {
        if let Some(table) = topic.strip_prefix("questdb:") {
            let rows = self.tsdb.lock().expect("tsdb lock");
            return rows.get(table).cloned().unwrap_or_default();
        }
        if let Some(prefix) = topic.strip_prefix("s3_parquet:") {
            return self.read_parquet(prefix);
        }
        let Some(records) = self.topics.get(topic) else {
            return Vec::new();
        };
        let reg = self.registry.lock().expect("registry lock");
        records
            .iter()
            .map(|r| {
                record_json(
                    r.key.as_deref(),
                    r.timestamp,
                    r.dead.as_ref().map(|(c, m)| (c.as_str(), m.as_str())),
                    decode_json(&reg, &r.value),
                )
            })
            .collect()
    }

    /// The rows of every Parquet object under `prefix`, in object key order; `key` is the
    /// object's directory under the prefix.
    fn read_parquet(&self, prefix: &str) -> Vec<serde_json::Value> {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        if !self.prefixes.contains(prefix) {
            return Vec::new();
        }
        let store = self.store.clone();
        let path = object_store::path::Path::from(prefix);
        self.rt.block_on(async move {
            let mut objects: Vec<_> = store
                .list(Some(&path))
                .try_collect()
                .await
                .unwrap_or_default();
            objects.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
            let mut rows = Vec::new();
            for o in objects {
                let key = o.location.as_ref().to_string();
                if !key.ends_with(".parquet") {
                    continue; // manifests
                }
                let rel = key
                    .strip_prefix(&format!("{prefix}/"))
                    .unwrap_or(&key)
                    .to_string();
                let dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                let bytes = match store.get(&o.location).await {
                    Ok(g) => g.bytes().await.unwrap_or_default(),
                    Err(_) => continue,
                };
                match sluice_connectors::s3::parquet_json(bytes) {
                    Ok(values) => rows.extend(
                        values
                            .into_iter()
                            .map(|v| record_json(Some(dir.as_bytes()), 0, None, v)),
                    ),
                    Err(e) => rows.push(record_json(
                        Some(dir.as_bytes()),
                        0,
                        None,
                        format!("<{rel}: not Parquet: {e}>").into(),
                    )),
                }
            }
            rows
        })
    }

    /// Entries held per store of `stage` after the records so far (what a commit would write
    /// to the changelogs, counted from the tables in memory).
    pub fn store_sizes(&mut self, stage: &str) -> Option<BTreeMap<String, usize>> {
        let s = self.stages.iter_mut().find(|s| s.name == stage)?;
        // `ids` is the runner's, not the processor's; the processor's tables follow it.
        let names = s.store_names.iter().skip(1);
        Some(
            names
                .zip(s.processor.tables())
                .map(|(n, t)| (n.clone(), t.len()))
                .collect(),
        )
    }
}

/// A record as [`compare_topic`] takes it: `key` (UTF-8, lossily; absent without one),
/// `timestamp` (ms), for dead letters `class` and `message`, and `value` (decoded JSON).
pub fn record_json(
    key: Option<&[u8]>,
    timestamp: i64,
    dead: Option<(&str, &str)>,
    value: serde_json::Value,
) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    if let Some(k) = key {
        o.insert(
            "key".into(),
            serde_json::Value::String(String::from_utf8_lossy(k).into_owned()),
        );
    }
    o.insert("timestamp".into(), timestamp.into());
    if let Some((class, message)) = dead {
        o.insert("class".into(), class.into());
        o.insert("message".into(), message.into());
    }
    o.insert("value".into(), value);
    serde_json::Value::Object(o)
}

fn schema_json(s: &Schema) -> String {
    serde_json::to_string(s).expect("a parsed schema serialises")
}

/// A wire-format record as JSON, decoded with its writer schema; what cannot be decoded is
/// shown as a string saying so.
fn decode_json(reg: &Registry, bytes: &[u8]) -> serde_json::Value {
    let Ok((id, body)) = sluice_schemas::wire::parse(bytes) else {
        return format!("<{} bytes, not Avro>", bytes.len()).into();
    };
    let Some(schema) = reg
        .by_id
        .get((id as usize).wrapping_sub(1))
        .and_then(|j| Schema::parse_str(j).ok())
    else {
        return format!("<schema id {id} unknown>").into();
    };
    match sluice_ops::codec::decode_once(&schema, None, body) {
        Ok(v) => avro_to_json(v),
        Err(e) => format!("<undecodable: {e}>").into(),
    }
}

/// An Avro value as plain JSON: unions as their value, enums as their symbol, logical times
/// as numbers, decimals as strings of their unscaled bytes' value.
pub fn avro_to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => n.into(),
        Value::Long(n)
        | Value::TimeMicros(n)
        | Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimestampNanos(n)
        | Value::LocalTimestampMillis(n)
        | Value::LocalTimestampMicros(n)
        | Value::LocalTimestampNanos(n) => n.into(),
        Value::Float(x) => serde_json::Number::from_f64(f64::from(x)).map_or(J::Null, J::Number),
        Value::Double(x) => serde_json::Number::from_f64(x).map_or(J::Null, J::Number),
        Value::String(s) | Value::Enum(_, s) => J::String(s),
        Value::Uuid(u) => J::String(u.to_string()),
        Value::Union(_, inner) => avro_to_json(*inner),
        Value::Array(items) => J::Array(items.into_iter().map(avro_to_json).collect()),
        Value::Map(m) => J::Object(m.into_iter().map(|(k, v)| (k, avro_to_json(v))).collect()),
        Value::Record(fields) => J::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_to_json(v)))
                .collect(),
        ),
        Value::Bytes(b) | Value::Fixed(_, b) => J::Array(b.into_iter().map(J::from).collect()),
        other => J::String(format!("{other:?}")),
    }
}

/// JSON as an Avro value of `schema`, the way a data engineer writes records by hand:
/// objects for records (missing fields take their defaults), strings for enums, `null` or the
/// value itself for optional fields, numbers or RFC 3339 strings for timestamps.
pub fn json_to_avro(v: &serde_json::Value, schema: &Schema) -> Result<Value, String> {
    let rs = apache_avro::schema::ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
    to_avro(v, schema, rs.get_names(), "")
}

type Names<'a> = std::collections::HashMap<apache_avro::schema::Name, &'a Schema>;

fn to_avro(
    v: &serde_json::Value,
    schema: &Schema,
    names: &Names<'_>,
    at: &str,
) -> Result<Value, String> {
    use serde_json::Value as J;
    let here = if at.is_empty() { "the record" } else { at };
    let wrong = |want: &str| Err(format!("{here}: expected {want}, got {v}"));
    let int = |v: &J| v.as_i64();
    let time = |v: &J, scale: i64| -> Option<i64> {
        match v {
            J::String(s) => humantime::parse_rfc3339_weak(s)
                .ok()
                .map(|t| millis(t) * scale),
            _ => v.as_i64(),
        }
    };
    Ok(match schema {
        Schema::Ref { name } => match names.get(name) {
            Some(s) => return to_avro(v, s, names, at),
            None => return Err(format!("{here}: unknown named type {name}")),
        },
        Schema::Null => match v {
            J::Null => Value::Null,
            _ => return wrong("null"),
        },
        Schema::Boolean => match v.as_bool() {
            Some(b) => Value::Boolean(b),
            None => return wrong("a boolean"),
        },
        Schema::Int => match int(v).and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Value::Int(n),
            None => return wrong("an int"),
        },
        Schema::Long => match int(v) {
            Some(n) => Value::Long(n),
            None => return wrong("a long"),
        },
        Schema::Float => match v.as_f64() {
            Some(x) => Value::Float(x as f32),
            None => return wrong("a number"),
        },
        Schema::Double => match v.as_f64() {
            Some(x) => Value::Double(x),
            None => return wrong("a number"),
        },
        Schema::String => match v.as_str() {
            Some(s) => Value::String(s.to_string()),
            None => return wrong("a string"),
        },
        Schema::Uuid(_) => match v.as_str().and_then(|s| s.parse().ok()) {
            Some(u) => Value::Uuid(u),
            None => return wrong("a UUID string"),
        },
        Schema::Bytes => match v.as_str() {
            Some(s) => Value::Bytes(s.as_bytes().to_vec()),
            None => return wrong("a string of bytes"),
        },
        Schema::Date => match int(v).and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Value::Date(n),
            None => return wrong("days since the epoch"),
        },
        Schema::TimestampMillis => match time(v, 1) {
            Some(t) => Value::TimestampMillis(t),
            None => return wrong("ms since the epoch or an RFC 3339 time"),
        },
        Schema::TimestampMicros => match time(v, 1000) {
            Some(t) => Value::TimestampMicros(t),
            None => return wrong("µs since the epoch or an RFC 3339 time"),
        },
        Schema::LocalTimestampMillis => match time(v, 1) {
            Some(t) => Value::LocalTimestampMillis(t),
            None => return wrong("ms since the epoch or an RFC 3339 time"),
        },
        Schema::Enum(e) => match v
            .as_str()
            .and_then(|s| e.symbols.iter().position(|x| x == s))
        {
            Some(i) => Value::Enum(i as u32, e.symbols[i].clone()),
            None => return wrong(&format!("one of {}", e.symbols.join(", "))),
        },
        Schema::Array(a) => match v {
            J::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| to_avro(x, &a.items, names, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return wrong("an array"),
        },
        Schema::Map(m) => match v {
            J::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, x)| {
                        Ok((
                            k.clone(),
                            to_avro(x, &m.types, names, &format!("{at}.{k}"))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            _ => return wrong("an object"),
        },
        Schema::Union(u) => {
            let variants = u.variants();
            if v.is_null() {
                match variants.iter().position(|s| matches!(s, Schema::Null)) {
                    Some(i) => Value::Union(i as u32, Box::new(Value::Null)),
                    None => return wrong("a value (the field is not optional)"),
                }
            } else {
                let mut last = String::new();
                let mut found = None;
                for (i, s) in variants
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !matches!(s, Schema::Null))
                {
                    match to_avro(v, s, names, at) {
                        Ok(x) => {
                            found = Some(Value::Union(i as u32, Box::new(x)));
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                match found {
                    Some(x) => x,
                    None => return Err(last),
                }
            }
        }
        Schema::Record(r) => {
            let J::Object(o) = v else {
                return wrong("an object");
            };
            for k in o.keys() {
                if !r.lookup.contains_key(k) {
                    return Err(format!(
                        "{here}: {} has no field `{k}` (fields: {})",
                        r.name,
                        r.fields
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let path = if at.is_empty() {
                    f.name.clone()
                } else {
                    format!("{at}.{}", f.name)
                };
                let x = match (o.get(&f.name), &f.default) {
                    (Some(x), _) => to_avro(x, &f.schema, names, &path)?,
                    (None, Some(d)) => to_avro(d, &f.schema, names, &path)?,
                    (None, None) => {
                        return Err(format!("{path}: missing, and the field has no default"))
                    }
                };
                fields.push((f.name.clone(), x));
            }
            Value::Record(fields)
        }
        other => {
            return Err(format!(
                "{here}: the type {other:?} is not supported in test cases yet"
            ))
        }
    })
}

fn millis(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Records the rows a `questdb` sink writes, per table, as [`record_json`] shows them: the
/// designated timestamp as `timestamp` and as its column (ms), symbols and columns in
/// `value` (timestamps in ms, a NULL as `null`).
struct Recorder {
    rows: Arc<Mutex<BTreeMap<String, Vec<serde_json::Value>>>>,
    timestamp_column: String,
}

impl IlpTarget for Recorder {
    fn push_row(
        &mut self,
        table: &str,
        symbols: &[(&str, Option<&str>)],
        columns: &[(&str, Option<IlpValue<'_>>)],
        timestamp_nanos: i64,
    ) -> Result<(), String> {
        if timestamp_nanos < 0 {
            // What the ILP encoder refuses.
            return Err("timestamp before 1970-01-01".into());
        }
        let ms = |micros: i64| -> serde_json::Value {
            if micros % 1000 == 0 {
                (micros / 1000).into()
            } else {
                serde_json::Number::from_f64(micros as f64 / 1000.0)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        };
        let ts_ms = timestamp_nanos.div_euclid(1_000_000);
        let mut row = serde_json::Map::new();
        row.insert(self.timestamp_column.clone(), ts_ms.into());
        for (name, v) in symbols {
            row.insert(
                name.to_string(),
                v.map_or(serde_json::Value::Null, Into::into),
            );
        }
        for (name, v) in columns {
            let j = match v {
                None => serde_json::Value::Null,
                Some(IlpValue::Bool(b)) => (*b).into(),
                Some(IlpValue::Long(n)) => (*n).into(),
                Some(IlpValue::Double(x)) => serde_json::Number::from_f64(*x)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                Some(IlpValue::Str(s)) => (*s).into(),
                Some(IlpValue::TimestampMicros(t)) => ms(*t),
            };
            row.insert(name.to_string(), j);
        }
        self.rows
            .lock()
            .expect("tsdb lock")
            .entry(table.to_string())
            .or_default()
            .push(record_json(
                None,
                ts_ms,
                None,
                serde_json::Value::Object(row),
            ));
        Ok(())
    }

    fn should_flush(&self) -> bool {
        false
    }

    fn flush(&mut self) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// Collects a stage's outputs as topic records.
struct Collect<'a> {
    outputs: &'a [String],
    dead_letter: Option<&'a str>,
    out: Vec<(String, TopicRecord)>,
}

impl Emit for Collect<'_> {
    fn emit(&mut self, port: usize, key: &[u8], value: &[u8], timestamp: i64) {
        let Some(output) = self.outputs.get(port) else {
            unreachable!("a pipeline emits only on the ports of its topics: {port}");
        };
        self.out.push((
            output.to_string(),
            TopicRecord {
                key: (!key.is_empty()).then(|| key.to_vec()),
                value: value.to_vec(),
                timestamp,
                dead: None,
            },
        ));
    }

    fn dead_letter(&mut self, input: &Input<'_>, why: &Rejection) {
        let Some(topic) = self.dead_letter else {
            return;
        };
        self.out.push((
            topic.to_string(),
            TopicRecord {
                key: input.key.map(<[u8]>::to_vec),
                value: input.value.unwrap_or_default().to_vec(),
                timestamp: input.timestamp,
                dead: Some((why.class.to_string(), why.message.clone())),
            },
        ));
    }
}

/// A case file of `sluice test` (format: `src/cli/test.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

/// One case: input records in order, and what each named topic must hold afterwards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub input: Vec<InputItem>,
    #[serde(default)]
    pub expect: BTreeMap<String, Vec<Expected>>,
    #[serde(default)]
    pub state: BTreeMap<String, BTreeMap<String, usize>>,
}

/// One step of a case's input: a record, or wall clock passing (`advance: 5m`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InputItem {
    Advance(Advance),
    Record(InputRecord),
}

/// Wall clock passing with no input (for windows with `idle_timeout`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advance {
    /// How long, e.g. `5m`.
    pub advance: String,
}

/// An input record; without `timestamp` it takes the previous record's (0 for the first).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    pub topic: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    pub value: serde_json::Value,
}

/// A timestamp: ms since the epoch, or RFC 3339 text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    Millis(i64),
    Text(String),
}

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(&self) -> anyhow::Result<i64> {
        match self {
            Timestamp::Millis(m) => Ok(*m),
            Timestamp::Text(s) => {
                let t = humantime::parse_rfc3339_weak(s).with_context(|| {
                    format!("timestamp `{s}` is not RFC 3339 (e.g. 2026-03-01T10:00:00Z)")
                })?;
                Ok(t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0))
            }
        }
    }
}

/// An expected record: only what is given is compared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The differences between what a case expects on `topic` and the records that landed there
/// (as [`record_json`] shows them), one readable line each; empty when they match. Records
/// in order; keys, timestamps, dead-letter class and message only where expected; numbers
/// within 1e-9 relative, `"~x"` within 1%. `sluice test` and the end-to-end tests of the
/// examples both compare with this, so a case means the same in-process and on a broker.
pub fn compare_topic(
    topic: &str,
    expected: &[Expected],
    actual: &[serde_json::Value],
) -> anyhow::Result<Vec<String>> {
    let mut diffs = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        let Some(a) = actual.get(i) else {
            diffs.push(format!(
                "{topic}[{i}]: expected a record, none arrived: {}",
                show_expected(e)
            ));
            continue;
        };
        let at = format!("{topic}[{i}]");
        if let Some(k) = &e.key {
            let got = a.get("key").and_then(|v| v.as_str()).unwrap_or("<no key>");
            if got != k {
                diffs.push(format!("{at}.key: expected {k:?}, got {got:?}"));
            }
        }
        if let Some(t) = &e.timestamp {
            let want = t.millis()?;
            let got = a.get("timestamp").and_then(|v| v.as_i64()).unwrap_or(0);
            if got != want {
                diffs.push(format!("{at}.timestamp: expected {want}, got {got}"));
            }
        }
        if let Some(c) = &e.class {
            let got = a.get("class").and_then(|v| v.as_str());
            if got != Some(c.as_str()) {
                diffs.push(format!(
                    "{at}.class: expected dead letter class {c:?}, got {}",
                    got.map_or("<not a dead letter>".to_string(), |g| format!("{g:?}"))
                ));
            }
        }
        if let Some(m) = &e.message {
            let got = a.get("message").and_then(|v| v.as_str()).unwrap_or("");
            if !got.contains(m.as_str()) {
                diffs.push(format!(
                    "{at}.message: expected it to contain {m:?}, got {got:?}"
                ));
            }
        }
        if let Some(v) = &e.value {
            let got = a.get("value").unwrap_or(&serde_json::Value::Null);
            json_diff(&format!("{at}.value"), v, got, &mut diffs);
        }
    }
    for (i, a) in actual.iter().enumerate().skip(expected.len()) {
        diffs.push(format!("{topic}[{i}]: unexpected record {a}"));
    }
    Ok(diffs)
}

fn show_expected(e: &Expected) -> String {
    let mut parts = Vec::new();
    if let Some(k) = &e.key {
        parts.push(format!("key {k:?}"));
    }
    if let Some(c) = &e.class {
        parts.push(format!("class {c:?}"));
    }
    if let Some(v) = &e.value {
        parts.push(format!("value {v}"));
    }
    parts.join(", ")
}

/// Field-by-field differences; numbers equal within 1e-9 relative (float arithmetic).
fn json_diff(at: &str, want: &serde_json::Value, got: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value as J;
    match (want, got) {
        (J::Object(w), J::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => json_diff(&format!("{at}.{k}"), wv, gv, out),
                    None => out.push(format!(
                        "{at}.{k}: expected {wv}, the record has no such field"
                    )),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{at}.{k}: unexpected field (= {})", g[k]));
            }
        }
        (J::Array(w), J::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                json_diff(&format!("{at}[{i}]"), wv, gv, out);
            }
        }
        // "~1800": within 1% (approximate results: quantiles, distinct counts).
        (J::String(w), J::Number(g)) if w.starts_with('~') => {
            let g = g.as_f64().unwrap_or(f64::NAN);
            match w[1..].trim().parse::<f64>() {
                Ok(w) if (w - g).abs() <= 0.01 * w.abs().max(g.abs()) => {}
                Ok(w) => out.push(format!("{at}: expected {w} within 1%, got {g}")),
                Err(_) => out.push(format!("{at}: `{w}` is not `~<number>`")),
            }
        }
        (J::Number(w), J::Number(g)) => {
            let (w, g) = (
                w.as_f64().unwrap_or(f64::NAN),
                g.as_f64().unwrap_or(f64::NAN),
            );
            let close = w == g || (w - g).abs() <= 1e-9 * w.abs().max(g.abs());
            if !close {
                out.push(format!("{at}: expected {w}, got {g}"));
            }
        }
        (w, g) if w == g => {}
        (w, g) => out.push(format!("{at}: expected {w}, got {g}")),
    }
}
