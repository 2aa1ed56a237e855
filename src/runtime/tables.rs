//! Tables for `join` (sluice-ops `op::join`): each table topic a process joins with is
//! materialised once per process in a RocksDB store, fed by a thread that reads the topic
//! with a plain assigned consumer (no group). The compacted topic is the table's changelog,
//! as with Kafka Streams' source tables: the store keeps, with every batch it applies, the
//! next offset of each partition, so a restart reads on from there instead of from the
//! start.
//!
//! A task's view is handed out only once the partitions it needs (all of them for a global
//! table, its own for a co-partitioned one) have been read up to the end they had when it
//! asked: a join never starts on a half-loaded table.
//!
//! Joins look values up *as of a position* (the join's snapshot, committed with the task:
//! sluice-ops `op::join`), so the store keeps, per key, the versions superseded within the
//! last [`HISTORY`] besides the current one, each with the partition and offset it came
//! from. A lookup older than what the store holds (versions pruned, or compacted away on the
//! topic before this store read them) answers with the oldest version held and is counted
//! in `sluice_table_stale_lookups_total`.
//!
//! Store layout (all integers big-endian):
//! - `0x00 ++ record key`: flags (1 byte; bit 0: older versions were pruned), then per
//!   version, oldest first: partition (4), offset (8), arrival ms (8), 0 for a tombstone or
//!   1, a length (4) and the value's Avro body in the table topic's schema (updates written
//!   with other schema versions are resolved into it once, on arrival);
//! - `0x01 ++ partition (4)`: the next offset to read (8);
//! - `0x02 ++ partition (4)`: the offset from which this store has seen every version (8):
//!   the topic's end when it first read the partition; lookups below it may miss versions
//!   the topic's cleaner removed first.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{consumer_config, ClientOptions};
use sluice_ops::codec::{Decoder, Encoder};
use sluice_ops::op::{Scope, TableView, Tables};
use sluice_state::{KvStore, RocksEnv, RocksStore, StateError, WriteBatch};

use crate::metrics::METRICS;
use crate::stages::{SchemaSource, WireDecoder};

/// How long a task waits for its table to load before it reports the table unavailable.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Updates applied in one store write at most.
const MAX_BATCH: usize = 10_000;
/// How long a superseded version is kept: a task restored from a commit made up to this
/// long ago joins exactly as its first run did.
pub const HISTORY: Duration = Duration::from_secs(3600);

const DATA: u8 = 0x00;
const OFFSET: u8 = 0x01;
const FIRST: u8 = 0x02;

/// What every table of a process is made with.
pub struct TableEnv {
    pub app: String,
    /// Instances sharing a state directory keep their tables apart by instance id.
    pub instance_id: Option<String>,
    pub opts: ClientOptions,
    /// Table stores live in `<state_dir>/<app>/tables/<topic>` (`tables-<instance id>` with
    /// one).
    pub state_dir: PathBuf,
    pub rocks: RocksEnv,
    /// The schema of each table topic (its `schema:`), by topic.
    pub schemas: HashMap<String, &'static Schema>,
    /// A registry client for each table's thread.
    pub registry: Box<dyn Fn() -> Box<dyn SchemaSource> + Send + Sync>,
}

/// The tables of one process, loaded on first use.
pub struct TableHost {
    env: TableEnv,
    tables: Mutex<HashMap<String, Arc<Table>>>,
    readers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl TableHost {
    pub fn new(env: TableEnv) -> Self {
        TableHost {
            env,
            tables: Mutex::new(HashMap::new()),
            readers: Mutex::new(Vec::new()),
        }
    }

    /// Stops every table's reader and waits until it has flushed its store.
    pub fn shutdown(&self) {
        for t in self.tables.lock().expect("tables lock").values() {
            t.stop.store(true, Ordering::Relaxed);
            t.changed.notify_all();
        }
        for h in self.readers.lock().expect("readers lock").drain(..) {
            let _ = h.join();
        }
    }

    fn table(&self, topic: &str) -> Result<Arc<Table>, StateError> {
        let mut tables = self.tables.lock().expect("tables lock");
        if let Some(t) = tables.get(topic) {
            return Ok(t.clone());
        }
        let schema = *self.env.schemas.get(topic).ok_or_else(|| {
            StateError::Unavailable(format!("table topic `{topic}` has no schema"))
        })?;
        let tables_dir = match &self.env.instance_id {
            Some(id) => format!("tables-{id}"),
            None => "tables".to_string(),
        };
        let dir = self
            .env
            .state_dir
            .join(&self.env.app)
            .join(tables_dir)
            .join(topic);
        std::fs::create_dir_all(&dir).map_err(|e| {
            StateError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let store = RocksStore::open(&self.env.rocks, &dir, topic)?;
        let consumer: BaseConsumer =
            consumer_config(&self.env.opts, &format!("{}-tables", self.env.app))
                .set("enable.partition.eof", "true")
                .create()
                .map_err(|e| kafka_unavailable(topic, &self.env.opts, e))?;
        let meta = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| kafka_unavailable(topic, &self.env.opts, e))?;
        let partitions = meta
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(StateError::Unavailable(format!(
                "table topic `{topic}` does not exist on {} (create it with `sluice topics create`)",
                self.env.opts.brokers
            )));
        }
        let table = Arc::new(Table::open(topic, schema, partitions, store)?);
        let feeder = Feeder {
            table: table.clone(),
            consumer,
            decoder: WireDecoder::new(schema, (self.env.registry)()),
            encoder: Encoder::new(schema)
                .map_err(|e| StateError::Unavailable(format!("table `{topic}`: {e}")))?,
            assigned: BTreeSet::new(),
            started: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("table-{topic}"))
            .spawn(move || feeder.run())
            .map_err(|e| StateError::Unavailable(format!("cannot start table thread: {e}")))?;
        self.readers.lock().expect("readers lock").push(handle);
        tables.insert(topic.to_string(), table.clone());
        Ok(table)
    }
}

impl Drop for TableHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn kafka_unavailable(topic: &str, opts: &ClientOptions, e: KafkaError) -> StateError {
    StateError::Unavailable(format!(
        "table topic `{topic}`: broker at {} failed: {e}",
        opts.brokers
    ))
}

impl Tables for TableHost {
    fn view(
        &self,
        topic: &str,
        scope: Scope,
        partition: i32,
    ) -> Result<Arc<dyn TableView>, StateError> {
        let table = self.table(topic)?;
        let needed: Vec<i32> = match scope {
            Scope::Global => (0..table.partitions).collect(),
            Scope::CoPartitioned => vec![partition],
        };
        table.wait_loaded(&needed)?;
        Table::view(&table)
    }
}

/// Tables loaded straight from values into RocksDB stores, without a broker: what
/// `sluice bench engine` measures lookups against. Each table has one partition, and the
/// n-th value given is its version at offset n.
pub struct LocalTables {
    tables: HashMap<String, Arc<Table>>,
}

impl LocalTables {
    pub fn new() -> Self {
        LocalTables {
            tables: HashMap::new(),
        }
    }

    /// Loads `rows` into a store under `dir` as table `topic` (values of `schema`); its views
    /// keep answers for up to `cache_keys` keys per snapshot (0: every lookup reads the store).
    pub fn load(
        &mut self,
        cache_keys: usize,
        rocks: &RocksEnv,
        dir: &std::path::Path,
        topic: &str,
        schema: &'static Schema,
        rows: impl IntoIterator<Item = (Vec<u8>, Value)>,
    ) -> Result<(), StateError> {
        let store = RocksStore::open(rocks, dir, topic)?;
        let mut table = Table::open(topic, schema, 1, store)?;
        table.cache_keys = cache_keys;
        let encoder = Encoder::new(schema)
            .map_err(|e| StateError::Unavailable(format!("table `{topic}`: {e}")))?;
        let mut touched: HashMap<Vec<u8>, Versions> = HashMap::new();
        let mut offset = *table
            .positions
            .read()
            .expect("table positions")
            .first()
            .unwrap_or(&0);
        let started = HashMap::from([(0, offset)]);
        let now_ms = wall_ms();
        for (key, value) in rows {
            let mut body = Vec::new();
            encoder
                .encode(&value, &mut body)
                .map_err(|e| StateError::Unavailable(format!("table `{topic}`: {e}")))?;
            let mut k = vec![DATA];
            k.extend_from_slice(&key);
            touched.entry(k).or_default().push(
                Version {
                    partition: 0,
                    offset,
                    arrived_ms: now_ms,
                    body: Some(body),
                },
                now_ms - HISTORY.as_millis() as i64,
            );
            offset += 1;
            if touched.len() >= MAX_BATCH {
                table.apply(&mut touched, &mut HashMap::from([(0, offset)]), &started)?;
            }
        }
        table.apply(&mut touched, &mut HashMap::from([(0, offset)]), &started)?;
        self.tables.insert(topic.to_string(), Arc::new(table));
        Ok(())
    }
}

impl Default for LocalTables {
    fn default() -> Self {
        Self::new()
    }
}

impl Tables for LocalTables {
    fn view(
        &self,
        topic: &str,
        _scope: Scope,
        _partition: i32,
    ) -> Result<Arc<dyn TableView>, StateError> {
        let table = self
            .tables
            .get(topic)
            .ok_or_else(|| StateError::Unavailable(format!("no table `{topic}` loaded")))?;
        Table::view(table)
    }
}

#[derive(Default)]
struct LoadState {
    /// Partitions some task needs.
    wanted: BTreeSet<i32>,
    /// Partitions read up to the end they had when first wanted.
    loaded: BTreeSet<i32>,
    /// Updates applied so far, for progress.
    applied: u64,
    /// Why the feeder cannot go on, once it cannot.
    failed: Option<String>,
}

/// One materialised table topic.
struct Table {
    topic: String,
    schema: &'static Schema,
    partitions: i32,
    /// Per partition, the next offset to apply (what has been written to the store).
    positions: RwLock<Vec<i64>>,
    /// Per partition, the first offset this store read, once it read one.
    first: RwLock<Vec<Option<i64>>>,
    store: RwLock<RocksStore>,
    state: Mutex<LoadState>,
    changed: Condvar,
    stop: AtomicBool,
    /// Keys each view keeps answers for per snapshot (0: none).
    cache_keys: usize,
}

impl Table {
    /// A table over `store`, read on from the positions the store kept.
    fn open(
        topic: &str,
        schema: &'static Schema,
        partitions: i32,
        store: RocksStore,
    ) -> Result<Table, StateError> {
        let mut positions = vec![0; partitions as usize];
        let mut first = vec![None; partitions as usize];
        for p in 0..partitions {
            positions[p as usize] = read_i64(&store, &meta_key(OFFSET, p))?.unwrap_or(0);
            first[p as usize] = read_i64(&store, &meta_key(FIRST, p))?;
        }
        Ok(Table {
            topic: topic.to_string(),
            schema,
            partitions,
            positions: RwLock::new(positions),
            first: RwLock::new(first),
            store: RwLock::new(store),
            state: Mutex::new(LoadState::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            cache_keys: CACHE_KEYS,
        })
    }

    /// A task's view, with its own decoder and lookup cache.
    fn view(table: &Arc<Table>) -> Result<Arc<dyn TableView>, StateError> {
        let decoder = Decoder::new(table.schema, None)
            .map_err(|e| StateError::Unavailable(format!("table `{}`: {e}", table.topic)))?;
        Ok(Arc::new(View {
            stale: METRICS
                .table_stale_lookups
                .with_label_values(&[&table.topic]),
            table: table.clone(),
            lookup: Mutex::new(Lookup {
                decoder,
                key: Vec::new(),
                at: Vec::new(),
                cache: HashMap::new(),
            }),
        }))
    }

    /// Writes the touched keys and the partitions' next offsets in one batch, then moves the
    /// positions lookups may use. `started`: per partition read from its start, the
    /// offset from which every version is seen.
    fn apply(
        &self,
        touched: &mut HashMap<Vec<u8>, Versions>,
        next: &mut HashMap<i32, i64>,
        started: &HashMap<i32, i64>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::with_capacity(touched.len() + 2 * next.len());
        for (key, versions) in touched.drain() {
            batch.put(key, versions.encode());
        }
        let mut first = self.first.write().expect("table first");
        for (&p, &o) in next.iter() {
            batch.put(meta_key(OFFSET, p), o.to_be_bytes().to_vec());
            if let Some(slot) = first.get_mut(p as usize).filter(|f| f.is_none()) {
                // Where the history held here is complete from.
                let read_from = started.get(&p).copied().unwrap_or(o - 1);
                *slot = Some(read_from);
                batch.put(meta_key(FIRST, p), read_from.to_be_bytes().to_vec());
            }
        }
        drop(first);
        self.store
            .write()
            .expect("table store")
            .write(batch, None)?;
        let mut positions = self.positions.write().expect("table positions");
        for (p, o) in next.drain() {
            if let Some(slot) = positions.get_mut(p as usize) {
                *slot = o;
            }
        }
        Ok(())
    }

    /// Asks for `partitions` and waits until each is loaded, logging progress.
    fn wait_loaded(&self, partitions: &[i32]) -> Result<(), StateError> {
        let started = Instant::now();
        let mut st = self.state.lock().expect("table state");
        st.wanted.extend(partitions.iter().copied());
        self.changed.notify_all();
        let mut last_log = Instant::now();
        loop {
            if let Some(why) = &st.failed {
                return Err(StateError::Unavailable(why.clone()));
            }
            if partitions.iter().all(|p| st.loaded.contains(p)) {
                return Ok(());
            }
            if started.elapsed() > LOAD_TIMEOUT {
                return Err(StateError::Unavailable(format!(
                    "table `{}` did not load within {} s ({} updates read)",
                    self.topic,
                    LOAD_TIMEOUT.as_secs(),
                    st.applied
                )));
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                tracing::info!(table = %self.topic, updates = st.applied, "Loading table.");
                last_log = Instant::now();
            }
            st = self
                .changed
                .wait_timeout(st, Duration::from_secs(1))
                .expect("table state")
                .0;
        }
    }
}

/// Reads a table topic into its store.
struct Feeder {
    table: Arc<Table>,
    consumer: BaseConsumer,
    decoder: WireDecoder,
    encoder: Encoder,
    assigned: BTreeSet<i32>,
    /// Per partition read from its start, the topic's end then: from there on every version
    /// is seen.
    started: HashMap<i32, i64>,
}

impl Feeder {
    fn run(mut self) {
        let topic = self.table.topic.clone();
        if let Err(e) = self.feed() {
            let why = format!("table `{topic}`: {e}");
            tracing::error!(table = %topic, error = %e, "Table stopped loading.");
            let mut st = self.table.state.lock().expect("table state");
            st.failed = Some(why);
            self.table.changed.notify_all();
        }
    }

    fn feed(&mut self) -> Result<(), StateError> {
        let topic = self.table.topic.clone();
        let updates = |result: &str| METRICS.table_updates.with_label_values(&[&topic, result]);
        let (applied, deleted, rejected) =
            (updates("applied"), updates("deleted"), updates("rejected"));
        // Keys touched by the batch being read, with their versions.
        let mut touched: HashMap<Vec<u8>, Versions> = HashMap::new();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut eof = Vec::new();
        let mut body = Vec::new();
        while !self.table.stop.load(Ordering::Relaxed) {
            self.assign_wanted()?;
            if self.assigned.is_empty() {
                let st = self.table.state.lock().expect("table state");
                let _ = self
                    .table
                    .changed
                    .wait_timeout(st, Duration::from_millis(200));
                continue;
            }
            // Drain what has arrived into one batch.
            let mut timeout = Duration::from_millis(200);
            let mut n = 0;
            let now_ms = wall_ms();
            while n < MAX_BATCH {
                let Some(m) = self.consumer.poll(timeout) else {
                    break;
                };
                timeout = Duration::ZERO;
                let m = match m {
                    Ok(m) => m,
                    Err(KafkaError::PartitionEOF(p)) => {
                        eof.push(p);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(table = %topic, error = %e, "Reading the table topic failed; retrying.");
                        break;
                    }
                };
                n += 1;
                next.insert(m.partition(), m.offset() + 1);
                let value = match m.payload() {
                    None => {
                        deleted.inc();
                        None
                    }
                    Some(bytes) => match self.decoder.decode(bytes) {
                        Ok(Ok(v)) => {
                            body.clear();
                            match self.encoder.encode(&v, &mut body) {
                                Ok(()) => {
                                    applied.inc();
                                    Some(body.clone())
                                }
                                Err(e) => {
                                    rejected.inc();
                                    tracing::warn!(table = %topic, partition = m.partition(), offset = m.offset(), error = %e, "Skipped a table update that does not fit the table's schema.");
                                    continue;
                                }
                            }
                        }
                        Ok(Err(r)) => {
                            rejected.inc();
                            tracing::warn!(table = %topic, partition = m.partition(), offset = m.offset(), class = r.class, reason = %r.message, "Skipped a table update that does not decode.");
                            continue;
                        }
                        Err(e) => return Err(StateError::Unavailable(e.to_string())),
                    },
                };
                let mut key = vec![DATA];
                key.extend_from_slice(m.key().unwrap_or_default());
                let versions = match touched.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let old = self.table.store.read().expect("table store").get(e.key())?;
                        e.insert(match old {
                            Some(b) => Versions::decode(&b)?,
                            None => Versions::default(),
                        })
                    }
                };
                versions.push(
                    Version {
                        partition: m.partition(),
                        offset: m.offset(),
                        arrived_ms: now_ms,
                        body: value,
                    },
                    now_ms - HISTORY.as_millis() as i64,
                );
            }
            if !next.is_empty() {
                self.table.apply(&mut touched, &mut next, &self.started)?;
            }
            let mut st = self.table.state.lock().expect("table state");
            st.applied += n as u64;
            let before = st.loaded.len();
            st.loaded.extend(eof.drain(..));
            if st.loaded.len() != before {
                METRICS
                    .table_partitions_loaded
                    .with_label_values(&[&topic])
                    .set(st.loaded.len() as i64);
                tracing::info!(table = %topic, partitions = st.loaded.len(), updates = st.applied, "Table partitions loaded.");
            }
            if n > 0 || st.loaded.len() != before {
                self.table.changed.notify_all();
            }
        }
        self.table.store.read().expect("table store").flush()
    }

    /// Starts reading partitions newly wanted, from the offset the store kept.
    fn assign_wanted(&mut self) -> Result<(), StateError> {
        let wanted = self.table.state.lock().expect("table state").wanted.clone();
        let new: Vec<i32> = wanted.difference(&self.assigned).copied().collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        {
            let store = self.table.store.read().expect("table store");
            for &p in &new {
                let offset = match read_i64(&store, &meta_key(OFFSET, p))? {
                    Some(o) => Offset::Offset(o),
                    None => {
                        // Read from the start. The topic is compacted: older versions of a key
                        // may be gone, so the history is complete only from its end now on.
                        let (_, high) = self
                            .consumer
                            .fetch_watermarks(&self.table.topic, p, Duration::from_secs(30))
                            .map_err(|e| {
                                StateError::Unavailable(format!(
                                    "cannot read table topic `{}`: {e}",
                                    self.table.topic
                                ))
                            })?;
                        self.started.insert(p, high);
                        Offset::Beginning
                    }
                };
                tpl.add_partition_offset(&self.table.topic, p, offset)
                    .map_err(|e| StateError::Unavailable(e.to_string()))?;
            }
        }
        self.consumer.incremental_assign(&tpl).map_err(|e| {
            StateError::Unavailable(format!(
                "cannot read table topic `{}`: {e}",
                self.table.topic
            ))
        })?;
        self.assigned.extend(new);
        Ok(())
    }
}

fn meta_key(kind: u8, partition: i32) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn read_i64(store: &RocksStore, key: &[u8]) -> Result<Option<i64>, StateError> {
    store
        .get(key)?
        .map(|b| {
            b.as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| StateError::decode("table offset", "expected 8 bytes"))
        })
        .transpose()
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One task's view of a table.
struct View {
    table: Arc<Table>,
    lookup: Mutex<Lookup>,
    stale: prometheus::IntCounter,
}

/// Lookups at most this many keys a view remembers for one snapshot; past it, the cache
/// starts over.
pub const CACHE_KEYS: usize = 100_000;

/// A view's lookup state. A join asks for every record at the same snapshot until its task
/// commits, and what a key had at a snapshot never changes (every version below it was
/// applied before the snapshot was taken; later updates land above it), so the answers are
/// kept, decoded, until the snapshot moves.
struct Lookup {
    decoder: Decoder,
    key: Vec<u8>,
    /// The snapshot the cached answers are for.
    at: Vec<i64>,
    /// Per key: its value at `at`, and whether that answer was stale (counted at each use).
    cache: HashMap<Vec<u8>, (Option<Value>, bool)>,
}

impl TableView for View {
    fn position(&self) -> Vec<i64> {
        self.table
            .positions
            .read()
            .expect("table positions")
            .clone()
    }

    fn get_at(&self, key: &[u8], at: &[i64]) -> Result<Option<Value>, StateError> {
        let mut lookup = self.lookup.lock().expect("view lookup");
        let lookup = &mut *lookup;
        if lookup.at != at {
            lookup.cache.clear();
            lookup.at.clear();
            lookup.at.extend_from_slice(at);
        }
        if let Some((value, stale)) = lookup.cache.get(key) {
            if *stale {
                self.stale.inc();
            }
            return Ok(value.clone());
        }
        let (value, stale) = self.read_at(lookup, key, at)?;
        if stale {
            self.stale.inc();
        }
        if self.table.cache_keys > 0 {
            if lookup.cache.len() >= self.table.cache_keys {
                lookup.cache.clear();
            }
            lookup.cache.insert(key.to_vec(), (value.clone(), stale));
        }
        Ok(value)
    }
}

impl View {
    /// `key`'s value at `at` from the store, and whether the answer is stale (older than
    /// what the store holds).
    fn read_at(
        &self,
        lookup: &mut Lookup,
        key: &[u8],
        at: &[i64],
    ) -> Result<(Option<Value>, bool), StateError> {
        lookup.key.clear();
        lookup.key.push(DATA);
        lookup.key.extend_from_slice(key);
        let bytes = self
            .table
            .store
            .read()
            .expect("table store")
            .get(&lookup.key)?;
        let Some(bytes) = bytes else {
            return Ok((None, false));
        };
        let versions = Versions::decode(&bytes)?;
        let before =
            |v: &Version| v.offset < at.get(v.partition as usize).copied().unwrap_or(i64::MAX);
        // Every version at or after `first` was seen here; before it the topic's cleaner may
        // have removed some (it keeps at least the latest of each key, which was read).
        // So with `at` at or after `first` the newest version held below `at` is the one the
        // key had, and none held means none it had, unless this store pruned older versions.
        let seen_all = {
            let first = self.table.first.read().expect("table first");
            versions.list.iter().all(|v| {
                let at = at.get(v.partition as usize).copied().unwrap_or(i64::MAX);
                first
                    .get(v.partition as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|f| at >= f)
            })
        };
        let (body, stale) = match versions.list.iter().rev().find(|v| before(v)) {
            Some(v) => (v.body.as_deref(), !seen_all),
            None if seen_all && !versions.pruned => (None, false),
            // Older than anything held: the oldest version held stands in.
            None => (versions.list.first().and_then(|v| v.body.as_deref()), true),
        };
        let Some(mut body) = body else {
            return Ok((None, stale));
        };
        let value = lookup
            .decoder
            .decode(&mut body)
            .map_err(|e| StateError::decode("table value", e.to_string()))?;
        Ok((Some(value), stale))
    }
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    partition: i32,
    offset: i64,
    arrived_ms: i64,
    /// `None`: deleted by a tombstone.
    body: Option<Vec<u8>>,
}

/// A key's versions, oldest first.
#[derive(Debug, Default, PartialEq)]
struct Versions {
    /// Older versions were dropped (superseded more than [`HISTORY`] ago).
    pruned: bool,
    list: Vec<Version>,
}

impl Versions {
    /// Appends `v` and drops the versions superseded before `horizon_ms` (never the newest).
    fn push(&mut self, v: Version, horizon_ms: i64) {
        self.list.push(v);
        // Version i is superseded when version i + 1 arrived.
        let keep_from = self
            .list
            .windows(2)
            .take_while(|w| w[1].arrived_ms < horizon_ms)
            .count();
        if keep_from > 0 {
            self.list.drain(..keep_from);
            self.pruned = true;
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.pruned)];
        for v in &self.list {
            out.extend_from_slice(&v.partition.to_be_bytes());
            out.extend_from_slice(&v.offset.to_be_bytes());
            out.extend_from_slice(&v.arrived_ms.to_be_bytes());
            match &v.body {
                None => out.push(0),
                Some(b) => {
                    out.push(1);
                    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }

    fn decode(mut b: &[u8]) -> Result<Versions, StateError> {
        let bad = || StateError::decode("table versions", "truncated");
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (b.get(..n)?, b.get(n..)?);
            *b = rest;
            Some(head)
        }
        let flags = *take(&mut b, 1).ok_or_else(bad)?.first().ok_or_else(bad)?;
        let mut list = Vec::new();
        while !b.is_empty() {
            let partition = i32::from_be_bytes(
                take(&mut b, 4)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let offset = i64::from_be_bytes(
                take(&mut b, 8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let arrived_ms = i64::from_be_bytes(
                take(&mut b, 8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let body = match take(&mut b, 1).ok_or_else(bad)?[0] {
                0 => None,
                _ => {
                    let len = u32::from_be_bytes(
                        take(&mut b, 4)
                            .ok_or_else(bad)?
                            .try_into()
                            .map_err(|_| bad())?,
                    );
                    Some(take(&mut b, len as usize).ok_or_else(bad)?.to_vec())
                }
            };
            list.push(Version {
                partition,
                offset,
                arrived_ms,
                body,
            });
        }
        Ok(Versions {
            pruned: flags & 1 == 1,
            list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(offset: i64, arrived_ms: i64, body: Option<&[u8]>) -> Version {
        Version {
            partition: 0,
            offset,
            arrived_ms,
            body: body.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn versions_round_trip_and_prune_what_was_superseded_long_ago() {
        let mut vs = Versions::default();
        vs.push(v(3, 1_000, Some(b"a")), 0);
        vs.push(v(7, 2_000, None), 0);
        vs.push(v(9, 5_000, Some(b"ccc")), 0);
        assert_eq!(Versions::decode(&vs.encode()).unwrap(), vs);
        assert!(!vs.pruned);
        // Horizon 4,000: version 3 was superseded at 2,000, version 7 at 5,000.
        vs.push(v(12, 6_000, Some(b"d")), 4_000);
        assert_eq!(
            vs.list.iter().map(|v| v.offset).collect::<Vec<_>>(),
            [7, 9, 12]
        );
        assert!(vs.pruned);
        assert_eq!(Versions::decode(&vs.encode()).unwrap(), vs);
        assert!(Versions::decode(&vs.encode()[..10]).is_err());
    }

    fn device(site: &str) -> Value {
        Value::Record(vec![("site".into(), Value::String(site.into()))])
    }

    #[test]
    fn a_view_answers_at_each_snapshot_from_the_store_or_its_cache_alike() {
        let schema = sluice_ops::codec::leak(
            Schema::parse_str(
                r#"{"type":"record","name":"D","fields":[{"name":"site","type":"string"}]}"#,
            )
            .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let rocks = RocksEnv::new(&sluice_state::RocksConfig::default());
        // Offsets 0..3: d1 on s1, d2 on s2, d1 moved to s3.
        let rows = || {
            vec![
                (b"d1".to_vec(), device("s1")),
                (b"d2".to_vec(), device("s2")),
                (b"d1".to_vec(), device("s3")),
            ]
        };
        let mut answers = Vec::new();
        for (cache_keys, sub) in [(0, "uncached"), (CACHE_KEYS, "cached")] {
            let mut tables = LocalTables::new();
            tables
                .load(
                    cache_keys,
                    &rocks,
                    &dir.path().join(sub),
                    "t",
                    schema,
                    rows(),
                )
                .unwrap();
            let view = tables.view("t", Scope::Global, 0).unwrap();
            assert_eq!(view.position(), [3]);
            let mut got = Vec::new();
            // Snapshots move back and forth, as a task restored from an older commit does.
            for at in [1, 3, 3, 2, 1, 3, 0] {
                for key in [&b"d1"[..], b"d2", b"d9"] {
                    got.push((at, key, view.get_at(key, &[at]).unwrap()));
                }
            }
            answers.push(got);
        }
        assert_eq!(answers[0], answers[1]);
        let at = |snapshot: i64, key: &[u8]| {
            answers[1]
                .iter()
                .find(|(a, k, _)| *a == snapshot && *k == key)
                .unwrap()
                .2
                .clone()
        };
        assert_eq!(at(1, b"d1"), Some(device("s1")));
        assert_eq!(at(1, b"d2"), None);
        assert_eq!(at(2, b"d2"), Some(device("s2")));
        assert_eq!(at(3, b"d1"), Some(device("s3")));
        assert_eq!(at(0, b"d1"), None);
        assert_eq!(at(3, b"d9"), None);
    }
}
