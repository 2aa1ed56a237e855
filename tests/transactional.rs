//! `processing.guarantee: exactly_once_transactional` driven through the runner against
//! librdkafka's mock broker (`rdkafka::mocking::MockCluster`, librdkafka 2.12.1); no local
//! stack needed. The stage under test counts records per key in a changelogged table,
//! writes one output per record, dead-letters bad records and drops replayed upstream ids.
//! Every assertion reads back what landed on the mock's topics.
//!
//! What these tests CANNOT prove, because the mock does not implement it (read in
//! librdkafka's `rdkafka_mock_handlers.c`):
//! - **Aborted records are invisible downstream.** The mock's Fetch answers with the last
//!   stable offset equal to the high watermark and no aborted-transaction list, and EndTxn
//!   writes no control records: a read_committed consumer sees aborted records, and a
//!   restore sees an aborted commit's changelog records and marker. Here the results still
//!   come out right after an abort because the replay is deterministic and outputs are
//!   de-duplicated by `sluice.id`; on a real broker they come out right because the aborted
//!   batch is never seen. Only a broker with transactions (Kafka, Redpanda) can show that.
//! - **Offsets committed through the transaction.** The mock's TxnOffsetCommit answers
//!   without storing anything, so `committed_offsets` cannot read them back. The tests show
//!   instead that the commit sends them (an error injected on TxnOffsetCommit aborts the
//!   batch) and that no offset is committed outside the transaction.
//! - **Fencing by a newer producer with the same transactional.id.** The mock's
//!   InitProducerId hands out a new producer id instead of bumping the epoch of the old one,
//!   so the tests inject the broker's fencing error instead.
//!
//! Tansu 0.6.0 (no EndTxn) and Nisshi (no transactional InitProducerId) cannot run this
//! mode at all; the last two tests show the error a user gets from such a broker.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, FutureProducer, Producer,
};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::runtime::{
    run_supervised, transactional_id, AnyTable, CachedTable, Codec, Emit, Encode, Input, LogEnv,
    ProcessError, Processor, Rejection, RuntimeError, StageDef,
};
use sluice_connectors::kafka::{producer_config, ClientOptions, MessageId, ID_HEADER};
use sluice_state::{Entry, Marker, MarkerKind, RocksConfig, RocksEnv, StateError};
use sluice_topology::Guarantee;

const PARTITIONS: i32 = 2;
const STAGE: &str = "count";
/// Polls of 100 ms the tests wait at most for an outcome before failing with what they saw.
const MAX_POLLS: usize = 1800;

// ---------------------------------------------------------------------------------------
// The stage under test.

struct Count(u64);

impl Encode for Count {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}

impl Codec for Count {
    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let b: [u8; 8] = bytes
            .try_into()
            .map_err(|_| StateError::decode("count", "not 8 bytes"))?;
        Ok(Count(u64::from_be_bytes(b)))
    }
}

/// Counts records per key; outputs `<count>:<value>`; values starting with `bad` are dead
/// letters.
struct Counter {
    counts: CachedTable<Count>,
}

impl Processor for Counter {
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError> {
        let value = input.value.unwrap_or_default();
        if value.starts_with(b"bad") {
            out.dead_letter(
                input,
                &Rejection::new("bad_value", "value starts with `bad`"),
            );
            return Ok(());
        }
        let key = input.key.unwrap_or_default();
        let count = self.counts.get_mut(key, || Count(0))?;
        count.0 += 1;
        let v = format!("{}:{}", count.0, String::from_utf8_lossy(value));
        out.emit(0, key, v.as_bytes(), input.timestamp);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.counts]
    }
}

// ---------------------------------------------------------------------------------------
// The input and what it determines.

/// One input record: upstream id `up/<partition>/<seq>`; a replayed record repeats its id.
#[derive(Clone)]
struct In {
    partition: i32,
    key: String,
    value: String,
    up_seq: u64,
}

/// Records `from..to` of each partition: keys `p<p>k<0..3>` (a key lives in one partition),
/// every 7th a bad value, every 10th followed by a replay of itself (same upstream id).
fn input(from: u64, to: u64) -> Vec<In> {
    let mut v = Vec::new();
    for p in 0..PARTITIONS {
        for r in from..to {
            let value = if r % 7 == 3 {
                format!("bad{p}-{r}")
            } else {
                format!("v{p}-{r}")
            };
            let rec = In {
                partition: p,
                key: format!("p{p}k{}", r % 3),
                value,
                up_seq: r + 1,
            };
            if r % 10 == 5 {
                v.push(rec.clone());
            }
            v.push(rec);
        }
    }
    v
}

/// A record the stage writes, as a downstream reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    key: String,
    value: String,
}

/// What the stage must have written for `records` (all input so far), by output id.
fn expected(stage: &str, records: &[In]) -> (BTreeMap<String, Out>, BTreeMap<String, Out>) {
    let mut outputs = BTreeMap::new();
    let mut dead = BTreeMap::new();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut hwm: HashMap<i32, u64> = HashMap::new();
    let mut seq: HashMap<i32, u64> = HashMap::new();
    for r in records {
        let h = hwm.entry(r.partition).or_default();
        if r.up_seq <= *h {
            continue;
        }
        *h = r.up_seq;
        let s = seq.entry(r.partition).or_default();
        *s += 1;
        let id = format!("{stage}/{}/{}", r.partition, s);
        if r.value.starts_with("bad") {
            dead.insert(
                id,
                Out {
                    key: r.key.clone(),
                    value: r.value.clone(),
                },
            );
        } else {
            let c = counts.entry(r.key.clone()).or_default();
            *c += 1;
            outputs.insert(
                id,
                Out {
                    key: r.key.clone(),
                    value: format!("{c}:{}", r.value),
                },
            );
        }
    }
    (outputs, dead)
}

// ---------------------------------------------------------------------------------------
// A mock cluster with the stage's topics, and the stage running on it.

/// Names and addresses the stage needs (cloned onto the stage's thread).
#[derive(Clone)]
struct Topics {
    brokers: String,
    app: String,
    rt: tokio::runtime::Handle,
    input: String,
    output: String,
    dlq: String,
    /// (store, changelog topic), in the order of the task's tables: `ids`, then `counts`.
    stores: Vec<(String, String)>,
}

struct Fixture {
    mock: MockCluster<'static, DefaultProducerContext>,
    t: Topics,
    _rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new(app: &str) -> Fixture {
        let mock = MockCluster::new(1).expect("mock cluster");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let t = Topics {
            brokers: mock.bootstrap_servers(),
            app: app.to_string(),
            rt: rt.handle().clone(),
            input: format!("{app}.in"),
            output: format!("{app}.out"),
            dlq: format!("{app}.dlq"),
            stores: ["ids", "counts"]
                .into_iter()
                .map(|s| (s.to_string(), sluice_state::changelog_topic(app, STAGE, s)))
                .collect(),
        };
        for topic in [&t.input, &t.output, &t.dlq]
            .into_iter()
            .chain(t.stores.iter().map(|(_, c)| c))
        {
            mock.create_topic(topic, PARTITIONS, 1)
                .expect("create topic");
        }
        Fixture { mock, t, _rt: rt }
    }

    /// Writes `records` to the input topic with a plain (non-transactional) producer.
    fn produce(&self, records: &[In]) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.t.brokers)
            .create()
            .unwrap();
        for r in records {
            // The text form sluice wrote before its ids went binary: still read and de-duplicated.
            let id = format!("up/{}/{}", r.partition, r.up_seq);
            let rec = BaseRecord::to(&self.t.input)
                .partition(r.partition)
                .key(r.key.as_bytes())
                .payload(r.value.as_bytes())
                .headers(OwnedHeaders::new().insert(Header {
                    key: ID_HEADER,
                    value: Some(id.as_bytes()),
                }));
            p.send(rec).map_err(|(e, _)| e).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// Runs the stage under `run_supervised` (restarts included) on its own thread, with its
    /// stores under `state_dir`.
    fn start(&self, state_dir: &Path) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let (t, dir, s2) = (self.t.clone(), state_dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || run_supervised(|| Ok(t.stage_def(&dir)), &s2));
        Running { stop, thread }
    }

    fn tail(&self, topic: &str) -> Tail {
        Tail::new(&self.t.brokers, topic)
    }
}

impl Topics {
    /// The stage as `sluice run` defines it in transactional mode.
    fn stage_def(&self, state_dir: &Path) -> StageDef {
        let mut opts = ClientOptions::new(&self.brokers);
        opts.read_committed = true;
        opts.idempotence = true;
        let marker_producer: FutureProducer = producer_config(&opts).create().unwrap();
        StageDef {
            fluvio: None,
            fluvio_outputs: None,
            app: self.app.clone(),
            name: STAGE.into(),
            inputs: vec![self.input.clone()],
            outputs: vec![self.output.clone()],
            dead_letter: Some(self.dlq.clone()),
            guarantee: Guarantee::ExactlyOnceTransactional,
            transactional_id: Some(transactional_id(&self.app, STAGE, Some("test-0"))),
            commit_interval: Duration::from_millis(200),
            // Several commits per phase of input.
            max_batch: 9,
            standby_replicas: 0,
            dedup_ids: true,
            opts: opts.clone(),
            log: Some(LogEnv {
                app: self.app.clone(),
                stage: STAGE.into(),
                stores: self.stores.clone(),
                opts,
                state_dir: state_dir.to_path_buf(),
                rocks: RocksEnv::new(&RocksConfig::default()),
                marker_producer,
                rt: self.rt.clone(),
                nonce: rand::random(),
            }),
            factory: Box::new(|_| {
                Ok(Box::new(Counter {
                    counts: CachedTable::new(1000),
                }) as Box<dyn Processor>)
            }),
            on_restore: None,
            ready: Arc::new(AtomicBool::new(false)),
            leave_group: false,
            bounds: None,
        }
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), RuntimeError>>,
}

impl Running {
    /// Panics with the stage's error if it ended on its own.
    fn check_alive(&self) {
        assert!(
            !self.thread.is_finished(),
            "the stage ended early (join it to see its error)"
        );
    }

    /// Stops the stage (a final commit) and returns how it ended.
    fn stop(self) -> Result<(), RuntimeError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("stage thread panicked")
    }

    /// Waits for the stage to end on its own (a fatal error), at most `MAX_POLLS` checks.
    fn ended(self, tail: &mut Tail) -> Result<(), RuntimeError> {
        for _ in 0..MAX_POLLS {
            if self.thread.is_finished() {
                return self.thread.join().expect("stage thread panicked");
            }
            // Paces the checks (and keeps the tail current) without sleeping.
            tail.pump();
        }
        panic!("the stage did not stop on its own");
    }
}

// ---------------------------------------------------------------------------------------
// Reading back what landed.

#[derive(Debug, Clone)]
struct Rec {
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Reads a topic from the beginning, read_committed, keeping everything it has seen.
struct Tail {
    consumer: BaseConsumer,
    recs: Vec<Rec>,
}

impl Tail {
    fn new(brokers: &str, topic: &str) -> Tail {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("reader-{}", rand::random::<u32>()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Tail {
            consumer,
            recs: Vec::new(),
        }
    }

    /// Takes what arrived within one 100 ms poll, and everything queued behind it.
    fn pump(&mut self) {
        let mut wait = Duration::from_millis(100);
        while let Some(m) = self.consumer.poll(wait) {
            wait = Duration::ZERO;
            let m = match m {
                Ok(m) => m,
                Err(RdError::PartitionEOF(_)) => continue,
                Err(e) => panic!("reading back failed: {e}"),
            };
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            self.recs.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
}

/// Records by `sluice.id`; panics if one id came with two different records (a replay must
/// regenerate the same record).
fn by_id(recs: &[Rec]) -> BTreeMap<String, Out> {
    let mut m: BTreeMap<String, Out> = BTreeMap::new();
    for r in recs {
        let id = r
            .headers
            .iter()
            .find(|(k, _)| k == ID_HEADER)
            .and_then(|(_, v)| MessageId::decode(v.as_deref()?).ok())
            .expect("every output has a sluice.id")
            .to_string();
        let out = Out {
            key: String::from_utf8(r.key.clone()).unwrap(),
            value: String::from_utf8(r.value.clone().unwrap_or_default()).unwrap(),
        };
        if let Some(prev) = m.insert(id.to_string(), out.clone()) {
            assert_eq!(prev, out, "id {id} was written with two different records");
        }
    }
    m
}

/// Polls the output and dead-letter tails until, de-duplicated by id, they hold what
/// `records` determines; also asserts nothing else is there.
fn wait_for_results(run: &Running, out: &mut Tail, dlq: &mut Tail, records: &[In]) {
    let (want_out, want_dead) = expected(STAGE, records);
    for _ in 0..MAX_POLLS {
        run.check_alive();
        out.pump();
        dlq.pump();
        if by_id(&out.recs).len() >= want_out.len() && by_id(&dlq.recs).len() >= want_dead.len() {
            break;
        }
    }
    assert_eq!(by_id(&out.recs), want_out, "outputs, de-duplicated by id");
    let dead = by_id(&dlq.recs);
    assert_eq!(dead, want_dead, "dead letters, de-duplicated by id");
    for r in &dlq.recs {
        assert_eq!(r.header("sluice.dlq.error_class"), Some("bad_value"));
    }
}

/// One changelog partition, decoded.
struct Log {
    markers: Vec<Marker>,
    /// Latest value per key of the data records.
    latest: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

fn decode_log(recs: &[Rec], partition: i32) -> Log {
    let mut log = Log {
        markers: Vec::new(),
        latest: BTreeMap::new(),
    };
    for r in recs.iter().filter(|r| r.partition == partition) {
        let hs = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
        match Entry::decode(0, r.offset, hs, &r.key, r.value.as_deref()).expect("changelog entry") {
            Entry::Marker(m) => log.markers.push(m),
            Entry::Data { key, value, .. } => {
                log.latest.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            }
        }
    }
    log
}

impl Log {
    fn fences(&self) -> usize {
        self.markers
            .iter()
            .filter(|m| m.kind == MarkerKind::Fence)
            .count()
    }

    fn last_commit(&self) -> Marker {
        *self
            .markers
            .iter()
            .rev()
            .find(|m| m.kind == MarkerKind::Commit)
            .expect("a commit marker")
    }
}

/// The changelogs' state after `records`: the last commit marker of every partition points
/// past its last input record and its last output id, and the `counts` changelog holds
/// every key's count.
fn check_changelogs(f: &Fixture, records: &[In]) -> Vec<Vec<Log>> {
    let (outs, dead) = expected(STAGE, records);
    let mut logs = Vec::new();
    for (store, topic) in &f.t.stores {
        let mut tail = f.tail(topic);
        let mut per_partition = Vec::new();
        for p in 0..PARTITIONS {
            let input_end = records.iter().filter(|r| r.partition == p).count() as i64;
            let last_id = outs
                .keys()
                .chain(dead.keys())
                .filter(|id| id.starts_with(&format!("{STAGE}/{p}/")))
                .count() as u64;
            // The newest marker may be one the stop wrote after the last batch.
            let mut log = decode_log(&tail.recs, p);
            for _ in 0..MAX_POLLS {
                if log
                    .markers
                    .iter()
                    .any(|m| m.kind == MarkerKind::Commit && m.input_offset == input_end)
                {
                    break;
                }
                tail.pump();
                log = decode_log(&tail.recs, p);
            }
            let m = log.last_commit();
            assert_eq!(
                (m.input_offset, m.output_seq),
                (input_end, last_id),
                "last commit marker of {store} partition {p}"
            );
            per_partition.push(log);
        }
        if *store == "counts" {
            let mut want: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for o in outs.values() {
                let n: u64 = o.value.split(':').next().unwrap().parse().unwrap();
                let e = want.entry(o.key.clone().into_bytes()).or_insert(None);
                if e.as_ref()
                    .is_none_or(|v| u64::from_be_bytes(v[..].try_into().unwrap()) < n)
                {
                    *e = Some(n.to_be_bytes().to_vec());
                }
            }
            let mut got = BTreeMap::new();
            for log in &per_partition {
                got.extend(log.latest.clone());
            }
            assert_eq!(got, want, "counts changelog: latest value per key");
        }
        logs.push(per_partition);
    }
    logs
}

/// Offsets the stage's group committed outside any transaction.
fn plain_committed_offsets(f: &Fixture) -> Vec<Offset> {
    let group = format!("{}-{STAGE}", f.t.app);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &f.t.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&f.t.input, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(30))
        .expect("OffsetFetch");
    got.elements().iter().map(|e| e.offset()).collect()
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn commits_land_outputs_changelogs_and_markers_and_a_restart_resumes_at_the_marker_offsets_unreadable_on_the_mock(
) {
    let f = Fixture::new(&format!("txa{}", rand::random::<u32>()));
    let (mut out, mut dlq) = (f.tail(&f.t.output), f.tail(&f.t.dlq));

    // Run 1 processes the first part of the input.
    let part1 = input(0, 40);
    f.produce(&part1);
    let dir1 = tempfile::tempdir().unwrap();
    let run = f.start(dir1.path());
    wait_for_results(&run, &mut out, &mut dlq, &part1);
    run.stop().expect("run 1 ends cleanly");
    let logs = check_changelogs(&f, &part1);
    for store in &logs {
        for log in store {
            assert_eq!(log.fences(), 1, "one restore, one fence");
        }
    }
    // A clean run replays nothing: every id was written once.
    assert_eq!(out.recs.len(), by_id(&out.recs).len(), "duplicate outputs");
    // The mock's TxnOffsetCommit stores nothing, so the offsets committed in the
    // transactions cannot be read back here; none may have been committed outside them.
    assert!(
        plain_committed_offsets(&f)
            .iter()
            .all(|o| *o == Offset::Invalid),
        "offsets were committed outside the transaction"
    );

    // Run 2 starts with empty local stores: its state comes from the changelogs alone, and
    // its input and output numbering from the last marker.
    let part2 = input(40, 70);
    f.produce(&part2);
    let all: Vec<In> = part1.iter().chain(&part2).cloned().collect();
    let dir2 = tempfile::tempdir().unwrap();
    let run = f.start(dir2.path());
    wait_for_results(&run, &mut out, &mut dlq, &all);
    run.stop().expect("run 2 ends cleanly");
    check_changelogs(&f, &all);
    // Counts continued from the restored state (checked in `expected`), and nothing of
    // part 1 was processed again.
    assert_eq!(out.recs.len(), by_id(&out.recs).len(), "duplicate outputs");
    assert_eq!(
        dlq.recs.len(),
        by_id(&dlq.recs).len(),
        "duplicate dead letters"
    );
}

/// Errors a broker can answer at each step of a commit, each making the transaction abort:
/// a stale group generation on TxnOffsetCommit (what a zombie that lost its partitions
/// gets), AddOffsetsToTxn refused, EndTxn failed.
#[test]
fn an_aborted_commit_restarts_the_stage_and_results_match_the_input_though_the_mock_shows_aborted_records(
) {
    let f = Fixture::new(&format!("txb{}", rand::random::<u32>()));
    let (mut out, mut dlq) = (f.tail(&f.t.output), f.tail(&f.t.dlq));
    let mut ids_log = f.tail(&f.t.stores[0].1);
    let dir = tempfile::tempdir().unwrap();
    let mut all = input(0, 30);
    f.produce(&all);
    let run = f.start(dir.path());
    wait_for_results(&run, &mut out, &mut dlq, &all);

    let injected: [(RDKafkaApiKey, RDKafkaRespErr); 3] = [
        (
            RDKafkaApiKey::TxnOffsetCommit,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
        ),
        (
            RDKafkaApiKey::AddOffsetsToTxn,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
        ),
        (
            RDKafkaApiKey::EndTxn,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ),
    ];
    for (round, (api, err)) in injected.into_iter().enumerate() {
        // The next commit (the first with new input) fails once.
        f.mock.request_errors(api, &[err]);
        let from = 30 + 20 * round as u64;
        let more = input(from, from + 20);
        f.produce(&more);
        all.extend(more);
        // Every restart restores, and every restore fences every changelog partition.
        let restores = round + 2;
        for _ in 0..MAX_POLLS {
            run.check_alive();
            ids_log.pump();
            if (0..PARTITIONS).all(|p| decode_log(&ids_log.recs, p).fences() >= restores) {
                break;
            }
        }
        for p in 0..PARTITIONS {
            assert_eq!(
                decode_log(&ids_log.recs, p).fences(),
                restores,
                "restores of partition {p} after injecting {err:?} on {api:?}"
            );
        }
        wait_for_results(&run, &mut out, &mut dlq, &all);
    }
    run.stop()
        .expect("the stage ends cleanly after its restarts");
    check_changelogs(&f, &all);
}

#[test]
fn an_injected_fencing_error_stops_the_stage_naming_its_transactional_id() {
    let f = Fixture::new(&format!("txc{}", rand::random::<u32>()));
    let (mut out, mut dlq) = (f.tail(&f.t.output), f.tail(&f.t.dlq));
    let mut ids_log = f.tail(&f.t.stores[0].1);
    let part1 = input(0, 30);
    f.produce(&part1);
    let dir = tempfile::tempdir().unwrap();
    let run = f.start(dir.path());
    wait_for_results(&run, &mut out, &mut dlq, &part1);

    // What a producer gets once a newer one with its transactional.id registered.
    f.mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let part2 = input(30, 50);
    f.produce(&part2);
    let err = run
        .ended(&mut ids_log)
        .expect_err("a fenced stage stops with an error");
    let msg = err.to_string();
    assert!(
        matches!(err, RuntimeError::Fenced { .. }),
        "not reported as fenced: {msg}"
    );
    let id = transactional_id(&f.t.app, STAGE, Some("test-0"));
    assert!(msg.contains(&id) && msg.contains("fenced"), "{msg}");
    // Not restarted in this process: one restore, one fence per partition.
    ids_log.pump();
    for p in 0..PARTITIONS {
        assert_eq!(decode_log(&ids_log.recs, p).fences(), 1);
    }

    // The instance that took over (here: a new run) finishes the input exactly once.
    let all: Vec<In> = part1.iter().chain(&part2).cloned().collect();
    let run = f.start(dir.path());
    wait_for_results(&run, &mut out, &mut dlq, &all);
    run.stop().expect("the new run ends cleanly");
    check_changelogs(&f, &all);
}

/// Tansu 0.6.0 serves InitProducerId but not EndTxn: librdkafka finds out at the first
/// commit. The mock is told to leave EndTxn out of its ApiVersions, like tansu.
#[test]
fn a_broker_without_end_txn_fails_the_first_commit_with_a_clear_error() {
    let f = Fixture::new(&format!("txd{}", rand::random::<u32>()));
    f.mock
        .apiversion(RDKafkaApiKey::EndTxn, None, None)
        .unwrap();
    f.produce(&input(0, 5));
    let dir = tempfile::tempdir().unwrap();
    let run = f.start(dir.path());
    let mut out = f.tail(&f.t.output);
    let err = run
        .ended(&mut out)
        .expect_err("no transactions without EndTxn");
    let msg = err.to_string();
    assert!(
        matches!(err, RuntimeError::TransactionsUnsupported { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&f.t.brokers) && msg.contains("use `exactly_once`"),
        "the error names the broker and the remedy: {msg}"
    );
}

/// A broker that refuses a transactional InitProducerId (Nisshi): the stage fails at start,
/// before reading anything.
#[test]
fn a_broker_without_transactional_producer_ids_fails_at_start() {
    let f = Fixture::new(&format!("txe{}", rand::random::<u32>()));
    f.mock
        .apiversion(RDKafkaApiKey::InitProducerId, None, None)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = f.start(dir.path());
    let mut out = f.tail(&f.t.output);
    let err = run
        .ended(&mut out)
        .expect_err("no transactions without InitProducerId");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            RuntimeError::TransactionsUnsupported {
                during: "init_transactions",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&f.t.brokers) && msg.contains("use `exactly_once`"),
        "{msg}"
    );
}
