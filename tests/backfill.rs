//! `sluice backfill` on the durable local stack: the reference topology runs live over a
//! simulated input to its end, then a backfill of the same range into namespace `v2` must
//! give the same outputs record for record, as an outside consumer reads them (every output
//! topic after dropping repeated `sluice.id`s, the TSDB's export API, the Parquet objects).
//! A second test kills the backfill with SIGKILL part way and reruns the same command.
//! Numbers are printed on lines starting `FIGURE`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::fleet::{Instance, Scenario};
use common::*;

/// The outputs compared: every topic the reference topology writes.
const OUTPUTS: [&str; 5] = [
    "telemetry.valid",
    "telemetry.dlq",
    "iot.aggregates",
    "iot.anomalies",
    "iot.alerts",
];

/// The live pipeline over the whole input, produced before it starts (a backlog it catches
/// up on); returns the seconds it took from start to every stage committed.
fn live_run(s: &mut Scenario) -> (Instance, f64) {
    let brokers = env("SLUICE_BROKERS");
    let log = s.log("topics");
    let mut create = Sluice::spawn(&["topics", "create", &s.path()], &log);
    wait_exit(
        &mut create,
        "sluice topics create",
        &log,
        Duration::from_secs(120),
    );
    s.start_input(100_000);
    s.finish_input();
    let mut live = Instance::new(s, "live", false);
    let secs = start_until_finished(s, &mut live, "the live pipeline to commit its whole input");
    wait_for_topic(&brokers, &s.topo.topic("iot.alerts"));
    (live, secs)
}

/// Starts `live` and waits until every stage has committed its inputs' ends (a hang guard
/// named `what`); returns the seconds that took.
fn start_until_finished(s: &Scenario, live: &mut Instance, what: &str) -> f64 {
    let started = Instant::now();
    live.start();
    eventually_or(what, 6000, Duration::from_millis(100), || {
        live.check_alive()?;
        if s.finished() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    started.elapsed().as_secs_f64()
}

/// Waits for a child to exit (hang guard: `limit`) and checks it succeeded.
fn wait_exit(p: &mut Sluice, what: &str, log: &Path, limit: Duration) {
    let st = eventually(
        &format!("{what} to exit"),
        (limit.as_millis() / 50) as u32,
        Duration::from_millis(50),
        || p.exited(),
    );
    assert!(
        st.success(),
        "{what} exited with {st}; log {}:\n{}",
        log.display(),
        common::fleet::log_tail(log)
    );
}

fn backfill_args(s: &Scenario, port: u16) -> Vec<String> {
    version_args(s, port, "v2", &["--from", "earliest", "--to", "now"])
}

/// `sluice backfill` of the scenario into namespace `version`, with `extra` arguments.
fn version_args(s: &Scenario, port: u16, version: &str, extra: &[&str]) -> Vec<String> {
    let port = format!("127.0.0.1:{port}");
    let path = s.path();
    let mut args = vec![
        "backfill",
        &path,
        "--version",
        version,
        "--metrics-listen",
        &port,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    args.iter().map(|a| a.to_string()).collect()
}

fn spawn(args: &[String], log: &Path) -> Sluice {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sluice::spawn(&args, log)
}

/// What identifies an output record for the comparison: its key, its Avro body (without
/// the schema id, which depends on the subject it was registered under), its `sluice.id`
/// (stage, input partition, sequence: the same input gives the same ids), and for a dead
/// letter its class and stage.
type Natural = (Option<Vec<u8>>, Vec<u8>, String, String);

fn natural(r: &Read) -> Natural {
    // Dead letters hold the record read, outputs the record written; either way the schema
    // id in front depends on the subject, the body does not.
    let body = r
        .value
        .as_deref()
        .and_then(|v| v.get(5..))
        .unwrap_or_default()
        .to_vec();
    let dead = format!(
        "{}/{}",
        r.headers
            .get("sluice.dlq.error_class")
            .cloned()
            .unwrap_or_default(),
        r.headers
            .get("sluice.dlq.stage")
            .cloned()
            .unwrap_or_default()
    );
    let id = r.headers.get("sluice.id").cloned().unwrap_or_default();
    (r.key.clone(), body, id, dead)
}

/// Records of `topic` (after dropping repeated ids) counted by natural key; and how many
/// repeats a plain consumer saw.
fn by_natural_key(brokers: &str, topic: &str) -> (BTreeMap<Natural, usize>, usize) {
    let (reads, repeats) = read_deduplicated(brokers, topic);
    let mut m = BTreeMap::new();
    for r in &reads {
        *m.entry(natural(r)).or_default() += 1;
    }
    (m, repeats)
}

/// TSDB samples of this test's devices by (metric name without the version, labels,
/// timestamp), each with every value exported there (sorted bits): the live tables' and the
/// v2 tables'. An input may determine two anomalies with the same natural key; the TSDB
/// then holds two samples at one timestamp, exported in no fixed order.
type Samples = BTreeMap<(String, String, i64), Vec<u64>>;

fn tsdb_samples(prefix: &str) -> (Samples, Samples) {
    let mut by = tsdb_versions(prefix, &["v2"]);
    (
        by.remove("").unwrap_or_default(),
        by.remove("v2").unwrap_or_default(),
    )
}

/// TSDB samples of this test's devices per namespace (`""`: the live tables), the metric
/// names without the version, for the namespaces `versions`.
fn tsdb_versions(prefix: &str, versions: &[&str]) -> BTreeMap<String, Samples> {
    let series = tsdb_export(&format!(
        "{{__name__=~\"(aggregates|anomalies)_.*\",device_id=~\"{prefix}.*\"}}"
    ));
    let mut by: BTreeMap<String, Samples> = BTreeMap::new();
    for (mut labels, values, ts) in series {
        let name = labels.remove("__name__").unwrap_or_default();
        let (kind, rest) = name.split_once('_').unwrap_or((&name, ""));
        let (version, name) = versions
            .iter()
            .find_map(|v| {
                rest.strip_prefix(&format!("{v}_"))
                    .map(|r| (v.to_string(), format!("{kind}_{r}")))
            })
            .unwrap_or_else(|| (String::new(), name.clone()));
        let into = by.entry(version).or_default();
        for (v, t) in values.iter().zip(ts) {
            let at = into
                .entry((name.clone(), format!("{labels:?}"), t))
                .or_default();
            at.push(v.to_bits());
            at.sort_unstable();
        }
    }
    by
}

/// Parquet rows by (device, seq, metric, event time, value bits).
fn parquet_rows(prefix: &str) -> BTreeMap<(String, i64, String, i64, u64), usize> {
    let mut m = BTreeMap::new();
    for r in verify::read_archive(prefix) {
        *m.entry((
            r.device_id,
            r.seq,
            r.metric,
            r.event_time,
            r.value.to_bits(),
        ))
        .or_default() += 1;
    }
    m
}

/// Every output of the backfill equals the live one's; returns the plain consumer's repeats
/// in the backfill's topics.
fn assert_same_outputs(s: &Scenario) -> usize {
    let brokers = env("SLUICE_BROKERS");
    let mut repeats = 0;
    // Repeats the backfill wrote to the topics the TSDB stage reads (a killed backfill
    // repeats up to one commit of each interrupted task).
    let mut tsdb_input_repeats = BTreeMap::new();
    for name in OUTPUTS {
        let live_topic = s.topo.topic(name);
        let (live, _) = by_natural_key(&brokers, &live_topic);
        let (v2, r) = by_natural_key(&brokers, &format!("{live_topic}.v2"));
        repeats += r;
        if let Some(table) = name.strip_prefix("iot.") {
            tsdb_input_repeats.insert(table.to_string(), r);
        }
        let n_live: usize = live.values().sum();
        let n_v2: usize = v2.values().sum();
        eprintln!(
            "{name}: live {n_live} records, backfill {n_v2} (plain consumer saw {r} repeats)"
        );
        assert!(
            n_live > 0 || name == "iot.alerts",
            "{name}: the live run wrote nothing"
        );
        let missing = live.iter().filter(|(k, n)| v2.get(*k) != Some(n)).count();
        let extra = v2.iter().filter(|(k, _)| !live.contains_key(*k)).count();
        assert!(
            missing == 0 && extra == 0,
            "{name}: the backfill differs from the live run: {missing} live records missing or counted differently, {extra} extra"
        );
    }
    // The sinks write after the topics are committed; the TSDB and the objects are read
    // until they hold as much as the live run's (a hang guard, then compared exactly).
    let (live, v2) = eventually(
        "the TSDB to hold the backfill's rows",
        600,
        Duration::from_millis(200),
        || {
            let (live, v2) = tsdb_samples(&s.cfg.device_prefix);
            (v2.len() >= live.len()).then_some((live, v2))
        },
    );
    eprintln!("TSDB samples: live {}, backfill {}", live.len(), v2.len());
    assert!(!live.is_empty(), "the live run wrote no TSDB rows");
    // VictoriaMetrics keeps every sample (QuestDB would upsert by its dedup keys), so each
    // record the backfill repeated on a topic the TSDB reads is a second sample in each of
    // that row's series. The rows must be the same; the second samples are counted and
    // bounded by those repeats (none when the backfill was not interrupted).
    let distinct = |m: &Samples| -> Samples {
        m.iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                v.sort_unstable();
                v.dedup();
                (k.clone(), v)
            })
            .collect()
    };
    let copies = |m: &Samples| {
        m.values().map(Vec::len).sum::<usize>() - distinct(m).values().map(Vec::len).sum::<usize>()
    };
    assert_eq!(
        distinct(&live),
        distinct(&v2),
        "TSDB rows of the backfill (tables *_v2) against the live ones"
    );
    let extra = copies(&v2).saturating_sub(copies(&live));
    // Series per row of each table: aggregates_count, aggregates_min, ...
    let bound: usize = tsdb_input_repeats
        .iter()
        .map(|(table, r)| {
            let series: BTreeSet<&str> = live
                .keys()
                .filter(|k| k.0.starts_with(&format!("{table}_")))
                .map(|k| k.0.as_str())
                .collect();
            r * series.len()
        })
        .sum();
    eprintln!(
        "TSDB second samples of the backfill: {extra} (bound from the topics' repeats: {bound})"
    );
    assert!(
        extra <= bound,
        "the backfill's TSDB holds {extra} more second samples than the live one, more than its topics' repeats explain ({bound})"
    );
    let prefix = s.topo.archive_prefix();
    let live_rows = parquet_rows(&prefix);
    let n_live: usize = live_rows.values().sum();
    let v2_rows = eventually(
        "the archive to hold the backfill's rows",
        600,
        Duration::from_millis(200),
        || {
            let rows = parquet_rows(&format!("{prefix}-v2"));
            (rows.values().sum::<usize>() >= n_live).then_some(rows)
        },
    );
    eprintln!(
        "Parquet rows: live {n_live}, backfill {}",
        v2_rows.values().sum::<usize>()
    );
    assert!(n_live > 0, "the live run archived nothing");
    assert_eq!(
        live_rows, v2_rows,
        "Parquet rows under {prefix}-v2 against {prefix}"
    );
    repeats
}

/// The three-way proof of docs/REPLAY.md: the live run, a backfill of its whole input into
/// `v2`, and a replay of two stages of the live topology give the same outputs.
#[test]
fn live_run_backfill_and_replay_give_the_same_outputs() {
    let mut s = Scenario::new(32, 500, |t| t);
    let total = s.total();
    // The live run's own correctness against the input is what tests/restarts.rs and the
    // e2e tests check; here the backfill must give what the live run gave.
    let (mut live, live_secs) = live_run(&mut s);

    // The live pipeline keeps running beside the backfill.
    let port = free_port();
    let log = s.log("backfill");
    let args = backfill_args(&s, port);
    let started = Instant::now();
    let mut b = spawn(&args, &log);
    wait_exit(&mut b, "sluice backfill", &log, Duration::from_secs(600));
    let backfill_secs = started.elapsed().as_secs_f64();
    live.check_alive().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("backfill done"),
        "no summary in {}:\n{text}",
        log.display()
    );
    assert!(
        text.contains(&format!("stage validate: {total} input records")),
        "the summary counts every input record for validate:\n{text}"
    );
    let repeats = assert_same_outputs(&s);
    assert_eq!(repeats, 0, "a backfill without a crash repeats nothing");
    eprintln!(
        "FIGURE backfill_rate records={total} backfill_s={backfill_secs:.1} backfill_per_s={:.0} live_catch_up_s={live_secs:.1} live_per_s={:.0}",
        total as f64 / backfill_secs,
        total as f64 / live_secs
    );

    // A rerun of the finished backfill resumes the saved range, has nothing left and
    // writes nothing.
    let before = end_offsets(
        &env("SLUICE_BROKERS"),
        &format!("{}.v2", s.topo.topic("iot.aggregates")),
    );
    let mut again = spawn(&args, &log);
    wait_exit(
        &mut again,
        "a rerun of the finished backfill",
        &log,
        Duration::from_secs(300),
    );
    let after = end_offsets(
        &env("SLUICE_BROKERS"),
        &format!("{}.v2", s.topo.topic("iot.aggregates")),
    );
    assert_eq!(
        before, after,
        "a rerun of a finished backfill wrote aggregates"
    );

    // The same version with another range is refused, with what to do.
    let mut other = args.clone();
    let to = other.iter().position(|a| a == "--to").unwrap();
    other[to + 1] = "2030-01-01T00:00:00Z".into();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(&other)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a different range for v2 was accepted"
    );
    assert!(
        err.contains("--from earliest --to now") && err.contains("--version"),
        "{err}"
    );

    replay_stages(&s, &mut live);
}

/// What a stage's output topic held before a replay: every record, and the end offsets.
struct Before {
    records: Vec<Read>,
    ends: BTreeMap<i32, i64>,
}

fn before(brokers: &str, topic: &str) -> Before {
    Before {
        ends: end_offsets(brokers, topic),
        records: read_topic(brokers, topic),
    }
}

/// `<stage>/<partition>/<seq>` of a record read back.
fn id_of(r: &Read) -> (String, i32, u64) {
    let id = r.headers.get("sluice.id").expect("outputs carry sluice.id");
    let (rest, seq) = id.rsplit_once('/').expect("stage/partition/seq");
    let (stage, p) = rest.rsplit_once('/').expect("stage/partition/seq");
    (stage.to_string(), p.parse().unwrap(), seq.parse().unwrap())
}

/// The records a replay appended to `topic` (after `b.ends`) are copies of records it held
/// before (same key, body and headers), one per id, and per producing partition exactly the
/// ids from some sequence on: the outputs from the replay's `--from` on, numbered as the
/// first run numbered them. Returns how many were appended.
fn assert_replayed_tail(brokers: &str, topic: &str, b: &Before) -> usize {
    let after = read_topic(brokers, topic);
    let appended: Vec<&Read> = after
        .iter()
        .filter(|r| r.offset >= b.ends.get(&r.partition).copied().unwrap_or(0))
        .collect();
    let mut first: BTreeMap<(String, i32, u64), &Read> = BTreeMap::new();
    for r in &b.records {
        first.entry(id_of(r)).or_insert(r);
    }
    let mut again: BTreeMap<(String, i32), Vec<u64>> = BTreeMap::new();
    for r in &appended {
        let id = id_of(r);
        let orig = first.get(&id).unwrap_or_else(|| {
            panic!("{topic}: the replay wrote {id:?}, an id the first run never wrote")
        });
        assert!(
            orig.key == r.key && orig.value == r.value && orig.raw_headers == r.raw_headers,
            "{topic}: the replay's copy of {id:?} differs from the first run's"
        );
        again.entry((id.0, id.1)).or_default().push(id.2);
    }
    for ((stage, p), seqs) in &mut again {
        seqs.sort_unstable();
        let from = seqs[0];
        let want: Vec<u64> = first
            .keys()
            .filter(|(s, q, n)| s == stage && q == p && *n >= from)
            .map(|k| k.2)
            .collect();
        assert_eq!(
            *seqs, want,
            "{topic}: {stage} partition {p} wrote again ids {}.. but not exactly each id from there on, once",
            from
        );
    }
    let n = appended.len();
    eprintln!(
        "{topic}: the replay wrote {n} of {} records again, {} producing partitions",
        first.len(),
        again.len()
    );
    assert!(n > 0, "{topic}: the replay wrote nothing again");
    assert!(
        n < first.len(),
        "{topic}: the replay wrote every record again, though --from was the middle of the input"
    );
    n
}

/// Samples of series named `prefix*` in `m`, every copy counted.
fn samples_of(m: &Samples, prefix: &str) -> usize {
    m.iter()
        .filter(|((series, _, _), _)| series.starts_with(prefix))
        .map(|(_, values)| values.len())
        .sum()
}

/// Each (series, timestamp) with its distinct values: what a TSDB that upserts by key holds.
fn distinct(m: &Samples) -> Samples {
    m.iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.dedup();
            (k.clone(), v)
        })
        .collect()
}

/// Parquet objects of the archive under `prefix` (not manifests): key and when written.
fn archive_objects(prefix: &str) -> BTreeMap<String, std::time::SystemTime> {
    use futures::TryStreamExt;
    let store = s3();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listed: Vec<object_store::ObjectMeta> = rt
        .block_on(
            store
                .list(Some(&object_store::path::Path::from(prefix)))
                .try_collect(),
        )
        .expect("S3 list");
    listed
        .into_iter()
        .filter(|o| o.location.as_ref().ends_with(".parquet"))
        .map(|o| (o.location.to_string(), o.last_modified.into()))
        .collect()
}

/// `(partition, last offset)` of an archive object, from its key
/// (`...<topic>-<partition>-<first>-<last>.parquet`).
fn object_range(key: &str) -> (i32, i64) {
    let stem = key.trim_end_matches(".parquet");
    let mut parts = stem.rsplitn(4, '-');
    let last = parts.next().unwrap().parse().unwrap();
    let _first = parts.next().unwrap();
    let partition = parts.next().unwrap().parse().unwrap();
    (partition, last)
}

/// `sluice replay` of aggregate, detect and the archive in the live topology, from the
/// middle of the input: refused while the pipeline runs; once it is stopped, rewound, and
/// after a restart the stages rebuild their state from the input's beginning and write again
/// exactly their outputs from the middle on, as copies of the first run's (same ids). The
/// TSDB sink writes those rows again with their values (QuestDB upserts them by key;
/// VictoriaMetrics keeps both samples, so they are counted). The archive writes again
/// exactly its objects that reach the middle, under the same keys. Every output still equals
/// the backfill's.
fn replay_stages(s: &Scenario, live: &mut Instance) {
    let brokers = env("SLUICE_BROKERS");
    let valid = read_topic(&brokers, &s.topo.topic("telemetry.valid"));
    let lo = valid.iter().filter_map(|r| r.timestamp).min().unwrap();
    let hi = valid.iter().filter_map(|r| r.timestamp).max().unwrap();
    let secs = ((lo + (hi - lo) / 2) / 1000) as u64;
    let from = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string();
    let path = s.path();
    let replay = |stage: &str, extra: &[&str]| {
        let mut args = vec!["replay", path.as_str(), "--stage", stage, "--from", &from];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .output()
            .unwrap()
    };

    // Refused while the pipeline runs, naming the group's members.
    let out = replay("aggregate", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a replay of a running stage was accepted"
    );
    assert!(
        err.contains("still running") && err.contains("member"),
        "the refusal does not say the stage runs and who runs it:\n{err}"
    );

    let topics = ["iot.aggregates", "iot.anomalies", "iot.alerts"].map(|t| s.topo.topic(t));
    let st = live.terminate();
    assert!(
        st.success(),
        "the live pipeline exited with {st} on SIGTERM"
    );
    let b: Vec<Before> = topics.iter().map(|t| before(&brokers, t)).collect();
    let samples_before = tsdb_samples(&s.cfg.device_prefix).0;

    // A dry run says what it would do and changes nothing.
    let group = format!("{}-aggregate", s.topo.app);
    let committed = committed_offsets(&brokers, &group, &s.topo.topic("telemetry.valid"));
    let out = replay("aggregate", &["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("partition 0") && text.contains("nothing changed"),
        "{text}"
    );
    assert_eq!(
        committed,
        committed_offsets(&brokers, &group, &s.topo.topic("telemetry.valid")),
        "a dry run moved the group"
    );

    let prefix = s.topo.archive_prefix();
    let objects_before = archive_objects(&prefix);
    // Objects written from here on are the replay's (the first run's are seconds older).
    let replayed_at = std::time::SystemTime::now() - Duration::from_secs(1);
    let started = Instant::now();
    for stage in ["aggregate", "detect", "archive"] {
        let out = replay(stage, &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "replay of {stage}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(text.contains("state cleared"), "{text}");
    }
    let rewind_secs = started.elapsed().as_secs_f64();
    assert!(
        !s.finished(),
        "the rewound groups still stand at the input's end"
    );
    let rebuild_secs = start_until_finished(s, live, "the replayed stages to catch up again");
    let written: Vec<usize> = topics
        .iter()
        .zip(&b)
        .map(|(t, b)| assert_replayed_tail(&brokers, t, b))
        .collect();

    // The TSDB sink wrote the replayed rows again, with the values they had: as many samples
    // per record as the first run wrote per record, and no value that was not there.
    let per = |name: &str, records: usize| {
        let n = samples_of(&samples_before, name);
        assert!(
            records > 0 && n % records == 0,
            "{n} {name}* samples for {records} records"
        );
        n / records
    };
    let (agg_records, _) = by_natural_key(&brokers, &topics[0]);
    let (anomaly_records, _) = by_natural_key(&brokers, &topics[1]);
    let want = (
        written[0] * per("aggregates_", agg_records.values().sum()),
        written[1] * per("anomalies_", anomaly_records.values().sum()),
    );
    let (got, live_now, v2) = eventually(
        "the TSDB to hold the replayed rows",
        600,
        Duration::from_millis(200),
        || {
            let (live_now, v2) = tsdb_samples(&s.cfg.device_prefix);
            let got = (
                samples_of(&live_now, "aggregates_") - samples_of(&samples_before, "aggregates_"),
                samples_of(&live_now, "anomalies_") - samples_of(&samples_before, "anomalies_"),
            );
            (got.0 >= want.0 && got.1 >= want.1).then_some((got, live_now, v2))
        },
    );
    assert_eq!(
        got, want,
        "TSDB samples written again (aggregates, anomalies)"
    );
    assert_eq!(
        distinct(&live_now),
        distinct(&samples_before),
        "the replay wrote TSDB values the first run had not"
    );
    assert_eq!(
        distinct(&live_now),
        distinct(&v2),
        "TSDB rows after the replay against the backfill's"
    );
    assert_same_stage_outputs(s, "", "v2");
    // The archive wrote again exactly the objects that reach the first record stamped at or
    // after --from in their partition, under the same keys; the lake holds the same rows.
    let from_ms = (secs * 1000) as i64;
    let mut quiet_below: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &valid {
        if r.timestamp.is_some_and(|t| t >= from_ms) {
            let q = quiet_below.entry(r.partition).or_insert(r.offset);
            *q = (*q).min(r.offset);
        }
    }
    let objects_after = eventually(
        "the archive to write its objects again",
        600,
        Duration::from_millis(200),
        || {
            let now = archive_objects(&prefix);
            let rewritten = now.values().filter(|t| **t >= replayed_at).count();
            let want = now
                .keys()
                .filter(|k| {
                    let (p, last) = object_range(k);
                    quiet_below.get(&p).is_some_and(|q| last >= *q)
                })
                .count();
            (rewritten >= want).then_some(now)
        },
    );
    assert_eq!(
        objects_after.keys().collect::<Vec<_>>(),
        objects_before.keys().collect::<Vec<_>>(),
        "the replay changed the archive's object keys"
    );
    let mut rewritten = 0;
    for (key, at) in &objects_after {
        let (p, last) = object_range(key);
        let want = quiet_below.get(&p).is_some_and(|q| last >= *q);
        assert_eq!(
            *at >= replayed_at,
            want,
            "{key} (partition {p}, last offset {last}, --from at offset {:?}): rewritten {}, expected {want}",
            quiet_below.get(&p),
            *at >= replayed_at
        );
        rewritten += usize::from(want);
    }
    eprintln!(
        "archive: the replay wrote {rewritten} of {} objects again",
        objects_after.len()
    );
    assert!(
        rewritten > 0 && rewritten < objects_after.len(),
        "the archive's replay from the middle rewrote {rewritten} of {} objects",
        objects_after.len()
    );
    assert_eq!(
        parquet_rows(&prefix),
        parquet_rows(&format!("{prefix}-v2")),
        "Parquet rows after the replay against the backfill's"
    );
    eprintln!(
        "FIGURE replay stages=aggregate,detect,archive from={from} rewind_s={rewind_secs:.1} rebuild_s={rebuild_secs:.1} written_again={written:?} objects_again={rewritten}"
    );
}

#[test]
fn backfill_killed_part_way_and_rerun_gives_the_same_outputs() {
    let mut s = Scenario::new(32, 500, |t| t);
    let total = s.total() as f64;
    let (mut live, _) = live_run(&mut s);
    let port = free_port();
    let log = s.log("backfill");
    let args = backfill_args(&s, port);
    let mut b = spawn(&args, &log);
    let at = eventually(
        "the backfill to process 30% of the input",
        6000,
        Duration::from_millis(20),
        || {
            assert!(
                b.exited().is_none(),
                "the backfill ended before it was killed: make the input longer\n{}",
                common::fleet::log_tail(&log)
            );
            let n = metric_where(port, "sluice_backfill_records_total", "stage=\"validate\"")?;
            (n >= 0.3 * total).then_some(n)
        },
    );
    let remaining = metric(port, "sluice_backfill_remaining").unwrap_or(-1.0);
    b.kill9();
    eprintln!("SIGKILL of the backfill at {at} of {total} validate records ({remaining} remaining over all stages)");
    assert!(
        remaining > 0.0,
        "sluice_backfill_remaining was not set while the backfill ran"
    );
    let mut rerun = spawn(&args, &log);
    wait_exit(
        &mut rerun,
        "the rerun of the killed backfill",
        &log,
        Duration::from_secs(600),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("resumed"),
        "the rerun did not resume the saved range:\n{text}"
    );
    live.check_alive().unwrap_or_else(|e| panic!("{e}"));
    let repeats = assert_same_outputs(&s);
    eprintln!(
        "FIGURE backfill_kill_rerun killed_at={at} of={total} plain_consumer_repeats={repeats}"
    );
}

/// A record of a topic as stored: partition, key and Avro body (without the schema id).
type Stored = (i32, Option<Vec<u8>>, Vec<u8>);

/// Runs `sluice backfill` with `args` to its end; returns its log and the seconds it took.
fn backfill_to_end(s: &Scenario, args: &[String], name: &str) -> (String, f64) {
    let log = s.log(name);
    let started = Instant::now();
    let mut b = spawn(args, &log);
    wait_exit(&mut b, name, &log, Duration::from_secs(600));
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("backfill done"),
        "{name}: no summary in {}:\n{text}",
        log.display()
    );
    (text, secs)
}

/// The records of the stage outputs `a` and `b` (topic suffixes, `""` for the live ones)
/// must be the same record for record, and a plain consumer of `b` (a run with no crash)
/// must see each once; returns how many.
fn assert_same_stage_outputs(s: &Scenario, a: &str, b: &str) -> usize {
    let brokers = env("SLUICE_BROKERS");
    let name = |topic: &str, v: &str| {
        if v.is_empty() {
            topic.to_string()
        } else {
            format!("{topic}.{v}")
        }
    };
    let mut total = 0;
    for out in ["iot.aggregates", "iot.anomalies", "iot.alerts"] {
        let topic = s.topo.topic(out);
        let (x, _) = by_natural_key(&brokers, &name(&topic, a));
        let (y, repeats) = by_natural_key(&brokers, &name(&topic, b));
        let (nx, ny): (usize, usize) = (x.values().sum(), y.values().sum());
        eprintln!("{out}: `{a}` {nx} records, `{b}` {ny} (a plain consumer saw {repeats} repeats)");
        assert_eq!(
            repeats, 0,
            "{out}: a plain consumer of `{b}` saw records twice, though nothing crashed"
        );
        assert!(nx > 0 || out == "iot.alerts", "{out}: `{a}` wrote nothing");
        let missing = x.iter().filter(|(k, n)| y.get(*k) != Some(n)).count();
        let extra = y.iter().filter(|(k, _)| !x.contains_key(*k)).count();
        assert!(
            missing == 0 && extra == 0,
            "{out}: `{b}` differs from `{a}`: {missing} records of `{a}` missing or counted differently, {extra} extra"
        );
        total += nx;
    }
    total
}

/// The TSDB rows of namespaces `a` and `b` (`""`: live) are the same, once `b` has as many.
fn assert_same_tsdb(s: &Scenario, a: &str, b: &str, versions: &[&str]) {
    let (x, y) = eventually(
        "the TSDB to hold the backfill's rows",
        600,
        Duration::from_millis(200),
        || {
            let mut by = tsdb_versions(&s.cfg.device_prefix, versions);
            let x = by.remove(a).unwrap_or_default();
            let y = by.remove(b).unwrap_or_default();
            (y.len() >= x.len()).then_some((x, y))
        },
    );
    eprintln!("TSDB samples: `{a}` {}, `{b}` {}", x.len(), y.len());
    assert!(!x.is_empty(), "`{a}` wrote no TSDB rows");
    assert_eq!(x, y, "TSDB rows of `{b}` against `{a}`");
}

/// `--source archive`: the stages downstream of the archived topic run over the archive's
/// records, restored into the namespace's copy of that topic. Over the whole archive they
/// give the live outputs; over a time range, what a backfill of the same stages from the
/// topic gives (both select the first record stamped at or after each end, per partition).
#[test]
fn backfill_from_the_archive_gives_what_the_topics_give() {
    let mut s = Scenario::new(32, 500, |t| t);
    let brokers = env("SLUICE_BROKERS");
    let (mut live, live_secs) = live_run(&mut s);
    let prefix = s.topo.archive_prefix();
    let archived = verify::read_archive(&prefix);
    assert!(!archived.is_empty(), "the live run archived nothing");

    // The whole archive.
    let args = version_args(
        &s,
        free_port(),
        "a1",
        &["--source", "archive", "--from", "earliest", "--to", "now"],
    );
    let (text, secs) = backfill_to_end(&s, &args, "backfill-a1");
    live.check_alive().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.contains(&format!("archive restored: {} records", archived.len())),
        "the summary counts every archived record as restored:\n{text}"
    );
    assert!(
        !text.contains("stage validate:"),
        "validate ran though the archive stands in for it:\n{text}"
    );
    let n = assert_same_stage_outputs(&s, "", "a1");
    assert_same_tsdb(&s, "", "a1", &["a1"]);
    // The restored copy holds what the live topic held: each record once, same key and body.
    let valid = s.topo.topic("telemetry.valid");
    let bodies = |topic: &str| {
        let (reads, _) = read_deduplicated(&brokers, topic);
        let mut m: BTreeMap<Stored, usize> = BTreeMap::new();
        for r in reads {
            let body = r
                .value
                .as_deref()
                .and_then(|v| v.get(5..))
                .unwrap_or_default();
            *m.entry((r.partition, r.key.clone(), body.to_vec()))
                .or_default() += 1;
        }
        m
    };
    let (live_valid, restored) = (bodies(&valid), bodies(&format!("{valid}.a1")));
    assert_eq!(
        restored.values().sum::<usize>(),
        archived.len(),
        "records restored against rows archived"
    );
    assert!(
        live_valid == restored,
        "the restored {valid}.a1 differs from {valid} (partition, key, Avro body)"
    );
    assert!(
        verify::read_archive(&format!("{prefix}-a1")).is_empty(),
        "the archive stage ran and wrote the lake's copy again"
    );
    let restore_line = text
        .lines()
        .find(|l| l.contains("archive restored:"))
        .unwrap_or_default();
    eprintln!("FIGURE backfill_archive_restore {}", restore_line.trim());
    eprintln!(
        "FIGURE backfill_archive_rate records={} archive_backfill_s={secs:.1} archive_per_s={:.0} live_catch_up_s={live_secs:.1} outputs={n}",
        archived.len(),
        archived.len() as f64 / secs,
    );

    // A rerun whose restore marker is gone finds every record restored (by the `sluice.id`
    // of the last one per partition) and writes nothing again.
    let state = s.topo.path.parent().unwrap().join("state");
    let marker = state
        .join(format!("{}-a1", s.topo.app))
        .join("archive-restored");
    std::fs::remove_file(&marker).unwrap_or_else(|e| panic!("{}: {e}", marker.display()));
    let before = end_offsets(&brokers, &format!("{valid}.a1"));
    let (text, _) = backfill_to_end(&s, &args, "backfill-a1-again");
    assert!(
        text.contains("resumed")
            && text.contains(&format!("{} of them by an earlier run", archived.len())),
        "the rerun did not find the restored records:\n{text}"
    );
    assert_eq!(
        before,
        end_offsets(&brokers, &format!("{valid}.a1")),
        "the rerun restored records again"
    );

    // A time range: the middle third of the event times, backfilled for the stages reading
    // the archived topic from the live topic (t1) and from the archive (a2).
    let lo = archived.iter().map(|r| r.event_time).min().unwrap();
    let hi = archived.iter().map(|r| r.event_time).max().unwrap();
    let at = |ms: i64| {
        let secs = (ms / 1000) as u64;
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .to_string()
    };
    let (from, to) = (at(lo + (hi - lo) / 3), at(lo + 2 * (hi - lo) / 3));
    let range = ["--from", from.as_str(), "--to", to.as_str()];
    let stages = [
        "--stage",
        "aggregate",
        "--stage",
        "detect",
        "--stage",
        "tsdb",
    ];
    let mut t1: Vec<&str> = range.to_vec();
    t1.extend(stages);
    let mut a2 = t1.clone();
    a2.extend(["--source", "archive"]);
    let (_, t1_secs) =
        backfill_to_end(&s, &version_args(&s, free_port(), "t1", &t1), "backfill-t1");
    let (_, a2_secs) =
        backfill_to_end(&s, &version_args(&s, free_port(), "a2", &a2), "backfill-a2");
    let n = assert_same_stage_outputs(&s, "t1", "a2");
    assert_same_tsdb(&s, "t1", "a2", &["t1", "a2"]);
    let (all, _) = by_natural_key(&brokers, &s.topo.topic("iot.aggregates"));
    let (part, _) = by_natural_key(&brokers, &format!("{}.t1", s.topo.topic("iot.aggregates")));
    assert!(
        part.values().sum::<usize>() < all.values().sum::<usize>(),
        "the range {from} .. {to} covered the whole input"
    );
    eprintln!(
        "FIGURE backfill_range {from}..{to} outputs={n} topic_s={t1_secs:.1} archive_s={a2_secs:.1}"
    );
}

/// Bad input is refused before anything runs, each with its reason.
#[test]
fn bad_backfill_and_replay_arguments_are_refused_with_a_reason() {
    let topo = TestTopology::new(|t| t);
    let path = topo.path.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "--from",
                "2026-12-06T10:00:00Z",
                "--to",
                "2026-12-06T09:00:00Z",
            ],
            "is after --to",
        ),
        (&["--from", "yesterday"], "RFC 3339"),
        (
            &["--from", "earliest", "--stage", "nosuch"],
            "no stage `nosuch`",
        ),
        (&["--from", "earliest", "--to", "earliest"], "`now`"),
        (&["--from", "3000-01-01T00:00:00Z"], "is after --to"),
        // The archive stands in for the stages upstream of the archived topic.
        (
            &[
                "--from", "earliest", "--source", "archive", "--stage", "validate",
            ],
            "only the stages downstream of the archived topic",
        ),
        (
            &["--from", "earliest", "--archive", "archive"],
            "with --source archive",
        ),
        (
            &[
                "--from",
                "earliest",
                "--source",
                "archive",
                "--archive",
                "nosuch",
            ],
            "no `s3_parquet_sink` stage `nosuch`",
        ),
    ];
    for (extra, want) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["backfill", path, "--version", "v2"])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(err.contains(want), "{extra:?}: want `{want}` in:\n{err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["backfill", path, "--from", "earliest", "--version", "v-2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot name a namespace"));

    // `sluice replay`: refused before it touches the broker.
    let replays: [(&[&str], &str); 3] = [
        (
            &["--stage", "nosuch", "--from", "earliest"],
            "no stage `nosuch`",
        ),
        (
            &["--stage", "tsdb", "--stage", "detect", "--from", "earliest"],
            "cannot be used multiple times",
        ),
        (&["--stage", "aggregate", "--from", "noon"], "RFC 3339"),
    ];
    for (extra, want) in replays {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["replay", path])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "replay {extra:?} was accepted");
        assert!(
            err.contains(want),
            "replay {extra:?}: want `{want}` in:\n{err}"
        );
    }
}
