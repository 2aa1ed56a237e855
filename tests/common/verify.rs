//! Reads every output of a test topology back from where it landed and compares it with
//! what the simulated input determines, and counts what a plain consumer (one that does not
//! drop repeated `sluice.id`s) sees more than once: repeated topic records, duplicate TSDB
//! samples, duplicate Parquet rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use sluice::sim::expect::{expected_detections, same_aggregate, DetectRules, Expected};
use sluice::sim::generator::AnomalyKind;
use sluice::sim::SimConfig;
use sluice_connectors::kafka::{MessageId, ID_HEADER};
use sluice_connectors::s3::ArchivedRow;
use sluice_schemas::codec::Decoder;
use sluice_schemas::records::{Aggregate, Alert, Anomaly};
use sluice_topology::StageSpec;

use super::*;

/// The reference topology's output topics (names before the test's prefix).
pub const OUTPUT_TOPICS: [&str; 5] = [
    "telemetry.valid",
    "telemetry.dlq",
    "iot.aggregates",
    "iot.anomalies",
    "iot.alerts",
];

/// Which task wrote a record: its `sluice.id`'s stage and partition.
pub type Writer = (String, i32);

/// Where a copy of a record landed: topic (without the test's prefix), partition, offset.
pub type Place = (String, i32, i64);

/// A record a plain consumer read again: a later copy of an earlier record's `sluice.id`,
/// checked to be byte-identical to the first (partition, key, value, headers).
#[derive(Debug, Clone)]
pub struct Repeat {
    /// The topology's topic name (`iot.alerts`), without the test's prefix.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Where the first copy is.
    pub first_offset: i64,
    /// Where the replay this copy belongs to began landing in its partition: the offset of
    /// the writer's first record there after its output numbering went back (a restore
    /// resumed it at an earlier commit). A replay's partitions fill at different moments
    /// (one producer request per partition), so a disruption's end offsets, taken while a
    /// replay from an earlier one is still landing, can fall inside it; the replay is
    /// attributed by where it began, not copy by copy.
    pub replay_start: i64,
    pub writer: Writer,
    pub seq: u64,
}

/// What a plain consumer of every output sees beyond one copy of each record.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    /// Records in each output topic, repeats included.
    pub records: BTreeMap<String, usize>,
    /// Every repeated copy, in the order read (offset order within a partition).
    pub repeats: Vec<Repeat>,
    /// Every distinct output sequence number, by writer, with where it was written
    /// (topic, partition).
    pub ids: BTreeMap<Writer, BTreeMap<u64, (String, i32)>>,
    /// The offsets of every copy of every output, by writer and sequence number: what a
    /// failed check prints, so a post-mortem sees where each copy landed.
    pub copies: BTreeMap<Writer, BTreeMap<u64, Vec<Place>>>,
    /// TSDB samples beyond the first of their series and timestamp (all with its value).
    pub tsdb_duplicates: BTreeMap<(String, i64), usize>,
    /// Archived Parquet rows beyond the first of their input partition and offset; the
    /// check fails before this is anything but zero.
    pub parquet_duplicates: usize,
}

impl Outputs {
    /// Repeated records per output topic (every topic listed, zeros too).
    pub fn repeats_by_topic(&self) -> BTreeMap<String, usize> {
        let mut by: BTreeMap<String, usize> = self.records.keys().map(|t| (t.clone(), 0)).collect();
        for r in &self.repeats {
            *by.entry(r.topic.clone()).or_default() += 1;
        }
        by
    }

    pub fn tsdb_duplicate_samples(&self) -> usize {
        self.tsdb_duplicates.values().sum()
    }

    /// One line a person can read: records and repeats per topic, TSDB and Parquet.
    pub fn summary(&self) -> String {
        let by = self.repeats_by_topic();
        let topics: Vec<String> = self
            .records
            .iter()
            .map(|(t, n)| format!("{t}={}/{n}", by[t]))
            .collect();
        format!(
            "repeats/records per topic: {}; duplicate TSDB samples: {}; duplicate Parquet rows: {}",
            topics.join(" "),
            self.tsdb_duplicate_samples(),
            self.parquet_duplicates
        )
    }

    /// Nothing seen twice anywhere: no repeated record on any output topic, no duplicate
    /// TSDB sample, no duplicate Parquet row.
    pub fn assert_no_repeats(&self) {
        self.assert_no_topic_or_parquet_repeats();
        let dups: Vec<_> = self.tsdb_duplicates.iter().take(5).collect();
        assert!(
            self.tsdb_duplicates.is_empty(),
            "the TSDB holds {} duplicate samples; first (series, ms): {dups:?}",
            self.tsdb_duplicate_samples()
        );
    }

    fn assert_no_topic_or_parquet_repeats(&self) {
        let first: Vec<&Repeat> = self.repeats.iter().take(5).collect();
        assert!(
            self.repeats.is_empty(),
            "a plain consumer sees {} repeated records ({}); first: {first:?}",
            self.repeats.len(),
            self.summary()
        );
        assert_eq!(self.parquet_duplicates, 0, "duplicate Parquet rows");
    }

    /// No repeated record on any output topic and no duplicate Parquet row; the TSDB may
    /// hold up to `rows` duplicate samples (identical copies, which [`tsdb_duplicates`]
    /// checks): the rows of a flush the TSDB stopped in the middle of. ILP over TCP has no
    /// acknowledgement, so the server may have stored part of a flush that failed, and the
    /// stage, which did not commit it, writes it again (QuestDB upserts such rows by key;
    /// VictoriaMetrics keeps both).
    pub fn assert_no_repeats_but_one_tsdb_flush(&self, rows: usize) {
        self.assert_no_topic_or_parquet_repeats();
        assert!(
            self.tsdb_duplicate_samples() <= rows,
            "the TSDB holds {} duplicate samples, more than one flush of {rows} rows",
            self.tsdb_duplicate_samples()
        );
    }

    /// The repeats whose copy landed at or after `ends` (offsets taken earlier by
    /// [`output_ends`]): written after that moment.
    pub fn repeats_after<'a>(&'a self, ends: &Ends) -> Vec<&'a Repeat> {
        self.repeats
            .iter()
            .filter(|r| r.offset >= ends[&(r.topic.clone(), r.partition)])
            .collect()
    }
}

/// The end offset of every partition of every output topic, by (topology topic name,
/// partition): what was written before a moment.
pub type Ends = BTreeMap<(String, i32), i64>;

pub fn output_ends(topo: &TestTopology) -> Ends {
    let brokers = env("SLUICE_BROKERS");
    let loaded = sluice_topology::load(&topo.path).expect("test topology loads");
    let mut ends = Ends::new();
    // The ones on Kafka (tests/fluvio.rs renames those it puts on Fluvio).
    for t in OUTPUT_TOPICS
        .into_iter()
        .filter(|t| loaded.topology.topics.contains_key(&topo.topic(t)))
    {
        for (p, end) in end_offsets(&brokers, &topo.topic(t)) {
            ends.insert((t.to_string(), p), end);
        }
    }
    ends
}

/// Something that can make a plain consumer see records again (a kill -9, a paused
/// instance): the stages whose tasks it interrupted and the output ends just before.
#[derive(Debug, Clone)]
pub struct Disruption {
    pub what: String,
    /// Writer stages it may make repeat; empty: every stage.
    pub stages: Vec<String>,
    pub ends: Ends,
}

impl Disruption {
    /// Takes the output ends now; call it just before the disruption.
    pub fn now(topo: &TestTopology, what: &str, stages: &[&str]) -> Disruption {
        Disruption {
            what: what.to_string(),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            ends: output_ends(topo),
        }
    }

    fn covers(&self, stage: &str) -> bool {
        self.stages.is_empty() || self.stages.iter().any(|s| s == stage)
    }
}

/// Checks the repeats against the documented bound for a crash: a plain consumer may see
/// again, as identical copies, what the interrupted tasks wrote since their last completed
/// commit. Every repeat is attributed to the last disruption (in `ds`, in the order they
/// happened) of its writer's stage before its replay began landing in that partition
/// ([`Repeat::replay_start`]); none may come without one. Per
/// disruption and writer task, the repeats are one replay from one commit point: in each
/// output partition, the task's repeated records are one contiguous run of its records
/// there (a kill -9 loses what the producer had not sent yet, so each partition holds a
/// prefix of the interrupted run), and every partition's run starts after the same point of
/// the task's output sequence (no older commit replayed, no second replay). Returns the
/// repeats per disruption.
pub fn repeats_per_disruption(out: &Outputs, ds: &[Disruption]) -> Vec<usize> {
    let mut per: Vec<BTreeMap<Writer, Vec<&Repeat>>> = vec![BTreeMap::new(); ds.len()];
    let mut counts = vec![0; ds.len()];
    for r in &out.repeats {
        let key = (r.topic.clone(), r.partition);
        let Some(i) = ds
            .iter()
            .rposition(|d| d.covers(&r.writer.0) && r.replay_start >= d.ends[&key])
        else {
            panic!("a plain consumer sees {r:?} repeated with no crash or pause of its stage before it landed");
        };
        counts[i] += 1;
        per[i].entry(r.writer.clone()).or_default().push(r);
    }
    for (d, writers) in ds.iter().zip(&per) {
        for (w, reps) in writers {
            let written = &out.ids[w];
            let mut by_place: BTreeMap<(String, i32), BTreeSet<u64>> = BTreeMap::new();
            for r in reps {
                by_place
                    .entry((r.topic.clone(), r.partition))
                    .or_default()
                    .insert(r.seq);
            }
            // Per output partition: (first repeated, last repeated, repeats, the task's
            // record there just before the run).
            let mut runs = Vec::new();
            for (place, seqs) in &by_place {
                let (lo, hi) = (*seqs.first().unwrap(), *seqs.last().unwrap());
                let here = |(_, at): &(&u64, &(String, i32))| *at == place;
                let gaps: Vec<u64> = written
                    .range(lo..=hi)
                    .filter(here)
                    .map(|(s, _)| *s)
                    .filter(|s| !seqs.contains(s))
                    .take(10)
                    .collect();
                assert!(
                    gaps.is_empty(),
                    "after {}, task {w:?} repeated {} of its records in {place:?} ({lo}..={hi}), not one contiguous run: not {gaps:?}",
                    d.what,
                    seqs.len()
                );
                let before = written.range(..lo).rev().find(here).map(|(s, _)| *s);
                runs.push((place, lo, hi, seqs.len(), before));
            }
            let start = runs.iter().map(|r| r.1).min().unwrap();
            let latest_before = runs.iter().filter_map(|r| r.4).max();
            assert!(
                latest_before.is_none_or(|b| b < start),
                "after {}, task {w:?} repeated records from more than one point of its output: {start} is repeated but {latest_before:?} is not; runs (partition, first, last, repeats, record before): {runs:?}; ends before it: {:?}; copies (seq: [(topic, partition, offset)]) around it:\n{}",
                d.what,
                d.ends,
                copies_around(out, w, start, runs.iter().map(|r| r.2).max().unwrap_or(start))
            );
        }
    }
    counts
}

/// Where every copy of `w`'s outputs numbered `lo - 3..=hi` landed, one line per output.
fn copies_around(out: &Outputs, w: &Writer, lo: u64, hi: u64) -> String {
    out.copies
        .get(w)
        .map(|by_seq| {
            by_seq
                .range(lo.saturating_sub(3)..=hi)
                .map(|(seq, at)| format!("  {seq}: {at:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Every record of output topic `name` as a plain consumer reads it; every repeated
/// `sluice.id` is checked to be a byte-identical copy of its first occurrence. Returns the
/// records with one copy of each id, and adds the repeats and ids to `out`.
fn read_plain(brokers: &str, topo: &TestTopology, name: &str, out: &mut Outputs) -> Vec<Read> {
    let all = read_topic(brokers, &topo.topic(name));
    out.records.insert(name.to_string(), all.len());
    let mut first: HashMap<Vec<u8>, usize> = HashMap::new();
    // Per (writer, partition): the last sequence number read and where its replay began.
    let mut replays: HashMap<(Writer, i32), (u64, i64)> = HashMap::new();
    let mut unique = Vec::with_capacity(all.len());
    for (i, r) in all.iter().enumerate() {
        let raw = r
            .raw_headers
            .iter()
            .find(|(k, _)| k == ID_HEADER)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name}: a record without {ID_HEADER}: {r:?}"));
        let id = MessageId::decode(&raw).unwrap();
        let writer = (id.stage.to_string(), id.partition);
        let seq = id.seq;
        // A writer numbers its outputs upwards; a number not above the last one read from
        // it here starts a replay.
        let replay_start = match replays.get_mut(&(writer.clone(), r.partition)) {
            None => {
                replays.insert((writer.clone(), r.partition), (seq, r.offset));
                r.offset
            }
            Some((last, start)) => {
                if seq <= *last {
                    *start = r.offset;
                }
                *last = seq;
                *start
            }
        };
        out.copies
            .entry(writer.clone())
            .or_default()
            .entry(seq)
            .or_default()
            .push((name.to_string(), r.partition, r.offset));
        match first.get(&raw) {
            None => {
                first.insert(raw.clone(), i);
                out.ids
                    .entry(writer)
                    .or_default()
                    .insert(seq, (name.to_string(), r.partition));
                unique.push(r.clone());
            }
            Some(&j) => {
                let f = &all[j];
                assert!(
                    f.partition == r.partition
                        && f.key == r.key
                        && f.value == r.value
                        && f.raw_headers == r.raw_headers,
                    "{name}: id {id} repeated with different content: first {f:?}, then {r:?}"
                );
                out.repeats.push(Repeat {
                    topic: name.to_string(),
                    partition: r.partition,
                    offset: r.offset,
                    first_offset: f.offset,
                    replay_start,
                    writer,
                    seq,
                });
            }
        }
    }
    unique
}

/// TSDB samples of this test's devices beyond the first per (series, timestamp), checking
/// that every duplicate carries the first one's value.
pub fn tsdb_duplicates(cfg: &SimConfig) -> BTreeMap<(String, i64), usize> {
    let prefix = &cfg.device_prefix;
    let series = tsdb_export(&format!(
        "{{__name__=~\"(aggregates|anomalies)_.*\",device_id=~\"{prefix}.*\"}}"
    ));
    let mut dups = BTreeMap::new();
    for (labels, values, ts) in &series {
        let name = format!("{labels:?}");
        let mut seen: HashMap<i64, f64> = HashMap::new();
        for (v, t) in values.iter().zip(ts) {
            match seen.get(t) {
                None => {
                    seen.insert(*t, *v);
                }
                Some(first) => {
                    assert!(
                        first.to_bits() == v.to_bits() || (first.is_nan() && v.is_nan()),
                        "TSDB series {name} at {t}: duplicate samples {first} and {v} differ"
                    );
                    *dups.entry((name.clone(), *t)).or_default() += 1;
                }
            }
        }
    }
    dups
}

fn decode_all<T: sluice_schemas::codec::AvroRecord + Clone>(reads: &[Read]) -> Vec<T> {
    let client = sluice_schemas::client::RegistryClient::new(&env("SLUICE_REGISTRY_URL"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut dec: Decoder<T> = Decoder::new();
    reads
        .iter()
        .map(|r| {
            let bytes = r.value.as_deref().expect("value");
            let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
            if !dec.knows(id) {
                let json = rt.block_on(client.schema_by_id(id)).expect("schema by id");
                dec.add_writer_schema_json(id, &json).unwrap();
            }
            let mut out = T::default();
            dec.decode(bytes, &mut out).expect("outputs decode");
            out
        })
        .collect()
}

/// Every check of the reference topology's outputs, each read back as a plain consumer
/// would and compared after dropping repeated ids; returns what that consumer saw more than
/// once (the caller decides what may repeat). `alive` is asked while waiting, so a pipeline
/// that died fails fast with its log.
pub fn check_outputs(
    topo: &TestTopology,
    cfg: &SimConfig,
    exp: &Expected,
    alive: &mut dyn FnMut() -> Result<(), String>,
) -> Outputs {
    let brokers = env("SLUICE_BROKERS");
    let mut out = Outputs::default();
    // Aggregates: every expected window exactly once (after id dedup), with its values.
    let aggregates_topic = topo.topic("iot.aggregates");
    let want = exp.aggregates.len();
    eventually_or(
        "every window aggregate",
        240,
        Duration::from_millis(500),
        || {
            if let Err(e) = alive() {
                panic!("{e}");
            }
            let (r, _) = read_deduplicated(&brokers, &aggregates_topic);
            if r.len() >= want {
                return Ok(());
            }
            let got: HashSet<_> = decode_all::<Aggregate>(&r)
                .into_iter()
                .map(|a| (a.device_id, a.metric, a.window_ms, a.window_start))
                .collect();
            let missing: Vec<_> = exp
                .aggregates
                .keys()
                .filter(|k| !got.contains(*k))
                .collect();
            Err(format!(
                "{} of {want} windows read, {} missing (first: {:?})",
                r.len(),
                missing.len(),
                &missing[..missing.len().min(8)]
            ))
        },
    );
    let reads = read_plain(&brokers, topo, "iot.aggregates", &mut out);
    let got: Vec<Aggregate> = decode_all(&reads);
    assert_eq!(got.len(), want, "unexpected extra aggregates");
    let mut seen = HashSet::new();
    for a in &got {
        let key = (
            a.device_id.clone(),
            a.metric.clone(),
            a.window_ms,
            a.window_start,
        );
        assert!(
            seen.insert(key.clone()),
            "window {key:?} emitted twice with different ids"
        );
        let e = exp
            .aggregates
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected window {key:?}"));
        assert!(
            same_aggregate(a, e),
            "window {key:?}: got {a:?}, want {e:?}"
        );
    }

    // Dead letters: every bad record with its reason, once after id dedup, nothing else.
    // They are waited for like the windows: a stage's dead letters go to another topic than
    // its outputs, and the producer may deliver the two in either order, so the last
    // window being readable says nothing about the last late record's dead letter.
    let dlq_topic = topo.topic("telemetry.dlq");
    let want_dead: u64 = exp.dead_letters.values().sum();
    eventually_or("every dead letter", 240, Duration::from_millis(500), || {
        if let Err(e) = alive() {
            panic!("{e}");
        }
        let (r, _) = read_deduplicated(&brokers, &dlq_topic);
        if r.len() as u64 >= want_dead {
            return Ok(());
        }
        Err(format!("{} of {want_dead} dead letters read", r.len()))
    });
    let dlq = read_plain(&brokers, topo, "telemetry.dlq", &mut out);
    let mut dead: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &dlq {
        let class = r
            .headers
            .get("sluice.dlq.error_class")
            .expect("class header")
            .clone();
        for h in [
            "sluice.dlq.error_message",
            "sluice.dlq.source_topic",
            "sluice.dlq.source_partition",
            "sluice.dlq.source_offset",
            "sluice.dlq.stage",
        ] {
            assert!(
                r.headers.contains_key(h),
                "dead letter without {h}: {:?}",
                r.headers
            );
        }
        let device = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
        *dead.entry((device, class)).or_default() += 1;
    }
    assert_eq!(dead, exp.dead_letters, "dead letters by (device, class)");

    // Anomalies and alerts: exactly those a fresh detector per series computes from the
    // valid input (score bit for bit), each once after id dedup, and every injected spike and
    // level shift among them within five readings.
    let rules = detect_rules(topo);
    let det = expected_detections(&exp.valid, &rules);
    let anomaly_key = |a: &Anomaly| (a.device_id.clone(), a.metric.clone(), a.event_time);
    let want_anomalies: BTreeMap<_, &Anomaly> =
        det.anomalies.iter().map(|a| (anomaly_key(a), a)).collect();
    if want_anomalies.len() != det.anomalies.len() {
        let mut seen = HashSet::new();
        let clashes: Vec<&Anomaly> = det
            .anomalies
            .iter()
            .filter(|a| !seen.insert(anomaly_key(a)))
            .take(5)
            .collect();
        panic!(
            "the input determines {} anomalies with the same natural key (device, metric, event time) as another, which a keyed topic or the TSDB cannot tell apart; e.g. {clashes:?}",
            det.anomalies.len() - want_anomalies.len()
        );
    }
    let anomalies_topic = topo.topic("iot.anomalies");
    eventually(
        "every expected anomaly",
        240,
        Duration::from_millis(500),
        || {
            if let Err(e) = alive() {
                panic!("{e}");
            }
            let (r, _) = read_deduplicated(&brokers, &anomalies_topic);
            (r.len() >= want_anomalies.len()).then_some(())
        },
    );
    let anomaly_reads = read_plain(&brokers, topo, "iot.anomalies", &mut out);
    let anomalies: Vec<Anomaly> = decode_all(&anomaly_reads);
    let mut got_anomalies = BTreeMap::new();
    for a in &anomalies {
        assert!(
            got_anomalies.insert(anomaly_key(a), a).is_none(),
            "anomaly {:?} emitted twice with different ids",
            anomaly_key(a)
        );
    }
    for (k, want) in &want_anomalies {
        let got = got_anomalies
            .get(k)
            .unwrap_or_else(|| panic!("anomaly {k:?} missing (want {want:?})"));
        assert_eq!(*got, *want, "anomaly {k:?}");
    }
    assert_eq!(
        got_anomalies.len(),
        want_anomalies.len(),
        "unexpected extra anomalies"
    );
    let step = cfg.step_ms;
    for inj in exp
        .injected
        .iter()
        .filter(|i| matches!(i.kind, AnomalyKind::Spike | AnomalyKind::LevelShift))
    {
        let found = anomalies.iter().any(|a| {
            a.device_id == inj.device_id
                && a.metric == inj.metric
                && a.event_time >= inj.start
                && a.event_time <= inj.start + 5 * step
        });
        assert!(
            found,
            "injected {:?} on {} {} at {} was not reported",
            inj.kind, inj.device_id, inj.metric, inj.start
        );
    }
    // Alerts are waited for like the dead letters: the detect stage writes them to another
    // topic than its anomalies, so every anomaly being readable says nothing about the last
    // alert (a run with the broker paused twice read the alerts before its last three).
    let alerts_topic = topo.topic("iot.alerts");
    let want_alerts_n = det.alerts.len();
    eventually_or("every alert", 240, Duration::from_millis(500), || {
        if let Err(e) = alive() {
            panic!("{e}");
        }
        let (r, _) = read_deduplicated(&brokers, &alerts_topic);
        if r.len() >= want_alerts_n {
            return Ok(());
        }
        Err(format!("{} of {want_alerts_n} alerts read", r.len()))
    });
    let alert_reads = read_plain(&brokers, topo, "iot.alerts", &mut out);
    let mut alerts: Vec<Alert> = decode_all(&alert_reads);
    let alert_key = |a: &Alert| (a.device_id.clone(), a.event_time, a.metric.clone());
    alerts.sort_by_key(alert_key);
    let mut want_alerts = det.alerts.clone();
    want_alerts.sort_by_key(alert_key);
    assert_eq!(alerts, want_alerts, "alerts after suppression");

    // TSDB: one sample per closed window and field, equal to the topic's values.
    let prefix = &cfg.device_prefix;
    let series = eventually(
        "the TSDB to hold every aggregate",
        240,
        Duration::from_millis(500),
        || {
            let s = tsdb_export(&format!(
                "{{__name__=\"aggregates_count\",device_id=~\"{prefix}.*\"}}"
            ));
            // Distinct timestamps: a duplicate sample must not pass for a missing one.
            let n: usize = s
                .iter()
                .map(|(_, _, t)| t.iter().collect::<HashSet<_>>().len())
                .sum();
            (n >= want).then_some(s)
        },
    );
    // Duplicate samples (same series and timestamp) are counted below, over every field.
    let mut tsdb_counts = HashMap::new();
    for (labels, values, ts) in &series {
        for (v, t) in values.iter().zip(ts) {
            let w = if labels["window"] == "1m" {
                60_000
            } else {
                300_000
            };
            let key = (labels["device_id"].clone(), labels["metric"].clone(), w, *t);
            tsdb_counts.insert(key, *v);
        }
    }
    assert_eq!(tsdb_counts.len(), want, "TSDB aggregate rows");
    for (key, count) in &tsdb_counts {
        let e = exp
            .aggregates
            .get(key)
            .unwrap_or_else(|| panic!("TSDB has unexpected window {key:?}"));
        assert_eq!(*count, e.count as f64, "TSDB count of {key:?}");
    }

    // TSDB: one anomaly row per expected anomaly, with its score.
    let anomaly_series = eventually(
        "the TSDB to hold every anomaly",
        240,
        Duration::from_millis(500),
        || {
            let s = tsdb_export(&format!(
                "{{__name__=\"anomalies_score\",device_id=~\"{prefix}.*\"}}"
            ));
            let n: usize = s
                .iter()
                .map(|(_, _, t)| t.iter().collect::<HashSet<_>>().len())
                .sum();
            (n >= want_anomalies.len()).then_some(s)
        },
    );
    let mut tsdb_anomalies = HashMap::new();
    for (labels, values, ts) in &anomaly_series {
        for (v, t) in values.iter().zip(ts) {
            let key = (labels["device_id"].clone(), labels["metric"].clone(), *t);
            tsdb_anomalies.insert(key, *v);
        }
    }
    assert_eq!(
        tsdb_anomalies.len(),
        want_anomalies.len(),
        "TSDB anomaly rows"
    );
    for (key, score) in &tsdb_anomalies {
        let want = want_anomalies
            .get(key)
            .unwrap_or_else(|| panic!("TSDB has unexpected anomaly {key:?}"));
        assert!(
            (score - want.score).abs() <= 1e-9,
            "TSDB score of {key:?}: {score} vs {}",
            want.score
        );
    }

    out.tsdb_duplicates = tsdb_duplicates(cfg);

    // S3: every valid reading archived exactly once, as Parquet, with its values.
    let want_rows: HashMap<(String, i64), &sluice_schemas::records::Telemetry> = exp
        .valid
        .iter()
        .map(|t| ((t.device_id.clone(), t.seq), t))
        .collect();
    let rows = eventually(
        "the archive to hold every valid reading",
        240,
        Duration::from_millis(500),
        || {
            let rows = read_archive(&topo.archive_prefix());
            (rows.len() >= want_rows.len()).then_some(rows)
        },
    );
    // The archive never overlaps objects: no input record (partition, offset) twice.
    let mut positions = HashSet::new();
    out.parquet_duplicates = rows
        .iter()
        .filter(|r| !positions.insert((r.kafka_partition, r.kafka_offset)))
        .count();
    assert_eq!(
        out.parquet_duplicates, 0,
        "Parquet rows archived twice (same telemetry.valid partition and offset)"
    );
    let mut archived = HashSet::new();
    for r in &rows {
        let key = (r.device_id.clone(), r.seq);
        assert!(archived.insert(key.clone()), "archive holds {key:?} twice");
        let e = want_rows
            .get(&key)
            .unwrap_or_else(|| panic!("archive has unexpected row {key:?}"));
        assert_eq!(
            (r.event_time, r.value, &r.metric),
            (e.event_time, e.value, &e.metric),
            "archived {key:?}"
        );
    }
    assert_eq!(archived.len(), want_rows.len());
    // The raw topic's valid records went to telemetry.valid too, each once (when it is on
    // Kafka: tests/fluvio.rs reads it on Fluvio with a plain Fluvio reader).
    let loaded = sluice_topology::load(&topo.path).expect("test topology loads");
    if loaded
        .topology
        .topics
        .contains_key(&topo.topic("telemetry.valid"))
    {
        let valid_reads = read_plain(&brokers, topo, "telemetry.valid", &mut out);
        assert_eq!(
            valid_reads.len(),
            exp.valid.len(),
            "telemetry.valid records"
        );
    }
    eprintln!("plain consumer: {}", out.summary());
    out
}

/// Every row under `prefix` in the stack's bucket.
pub fn read_archive(prefix: &str) -> Vec<ArchivedRow> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let store = s3();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let objects: Vec<_> = store
            .list(Some(&object_store::path::Path::from(prefix)))
            .try_collect()
            .await
            .expect("S3 list");
        let mut rows = Vec::new();
        for o in objects {
            if !o.location.as_ref().ends_with(".parquet") {
                continue;
            }
            let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            rows.extend(sluice_connectors::s3::decode_parquet(bytes).expect("valid parquet"));
        }
        rows
    })
}

/// The detect stage's settings, read from the test's topology file.
pub fn detect_rules(topo: &TestTopology) -> DetectRules {
    let loaded = sluice_topology::load(&topo.path).expect("test topology loads");
    for stage in &loaded.topology.stages {
        if let StageSpec::Detect(d) = &stage.spec {
            return DetectRules {
                detector: serde_yaml::from_value(d.detector.clone()).expect("detector spec"),
                threshold: d.threshold,
                suppression_ms: d.alert_suppression.as_millis() as i64,
            };
        }
    }
    panic!("the test topology has no detect stage");
}

/// The kill -9 (or pause) tests' check of what a plain consumer sees: every repeat an
/// identical copy (checked when read), attributed to a disruption of its stage, one
/// contiguous run per interrupted task ([`repeats_per_disruption`]), and for the validate
/// stage, which writes one record per input record, at most `processing.max_batch` repeats
/// per task and disruption. Prints the repeats per disruption (mean, max) against the bound
/// on a line `FIGURE <figure>`.
pub fn check_crash_repeats(
    topo: &TestTopology,
    out: &Outputs,
    ds: &[Disruption],
    figure: &str,
) -> Vec<usize> {
    let loaded = sluice_topology::load(&topo.path).expect("test topology loads");
    let processing = &loaded.topology.processing;
    let counts = repeats_per_disruption(out, ds);
    let mut per_task: BTreeMap<(usize, Writer), usize> = BTreeMap::new();
    for r in &out.repeats {
        let key = (r.topic.clone(), r.partition);
        if let Some(i) = ds
            .iter()
            .rposition(|d| d.covers(&r.writer.0) && r.replay_start >= d.ends[&key])
        {
            *per_task.entry((i, r.writer.clone())).or_default() += 1;
        }
    }
    for ((i, w), n) in &per_task {
        if w.0 == "validate" {
            assert!(
                *n <= processing.max_batch,
                "after {}, validate task {w:?} was seen to repeat {n} records, more than one commit's input (max_batch {})",
                ds[*i].what,
                processing.max_batch
            );
        }
    }
    let largest = per_task.values().copied().max().unwrap_or(0);
    let mean = counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64;
    eprintln!("repeats per disruption: {counts:?}");
    eprintln!(
        "FIGURE {figure} mean={mean:.1} max={} largest_per_task={largest} disruptions={} tsdb_duplicate_samples={} bound=\"one commit per interrupted task: max_batch {} input records or commit_interval {:?} of input\"",
        counts.iter().max().copied().unwrap_or(0),
        counts.len(),
        out.tsdb_duplicate_samples(),
        processing.max_batch,
        processing.commit_interval,
    );
    counts
}
