//! `sluice bench engine`: the pipeline engine in-process, no broker. It writes a small
//! topology of its own (a telemetry record; one `kind: pipeline` stage per scenario), loads
//! it with `sluice_topology::load` and builds each stage's `Pipeline` processor as
//! `sluice run` does, then times `Processor::process` over pre-encoded wire records (one
//! writer schema id) with an `Emit` that only counts. Commits are stood in for by draining
//! the tables' dirty entries (what a commit writes to the changelog) every `--commit-every`
//! records.
//!
//! Per scenario it prints the median rate of the rounds, a breakdown of where the time goes
//! (the same decoder, operator chain and encoder driven one phase at a time, over chunks of
//! records), and the state: encoded bytes per open window and peak RSS.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::codec::{leak, Decoder, Encoder};
use sluice_ops::op::join::MemTables;
use sluice_ops::op::{Record, Rejection as OpRejection, Tables, TaskContext};
use sluice_schemas::wire;
use sluice_state::{RocksConfig, RocksEnv};
use sluice_topology::{PipelinePlan, StageSpec};

use crate::runtime::tables::LocalTables;
use crate::runtime::{Emit, Input, ProcessError, Processor, Rejection};
use crate::stages::pipeline::Pipeline;
use crate::stages::SchemaSource;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input records per round.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Devices (the window groups); each sends one reading per second of event time.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Timed runs per scenario, each on fresh state; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Drain the tables' dirty entries (a commit's changelog records) every this many
    /// records.
    #[arg(long, default_value_t = 100_000)]
    pub commit_every: usize,
    /// Run only these scenarios (decode_only, tumbling, hopping, hopping_sketches, join,
    /// join_rocksdb_uncached, join_rocksdb), e.g.
    /// under a profiler.
    #[arg(long)]
    pub only: Vec<String>,
}

/// Schema id of the input records' writer schema (the only one).
const WRITER_ID: u32 = 1;
/// Schema id written in front of the outputs (never looked up).
const OUTPUT_ID: u32 = 2;
/// 2026-01-01T00:00:00Z: event time of the first reading.
const T0: i64 = 1_767_225_600_000;
/// Records per phase in the breakdown: small enough that the decoded values stay in cache.
const CHUNK: usize = 1024;
/// The window table's meta entry (`ops/src/window/state.rs`): not a window.
const META_PREFIX: [u8; 8] = [0xff; 8];

const SCHEMA: &str = r#"{
  "type": "record",
  "name": "Reading",
  "namespace": "io.sluice.bench",
  "fields": [
    {"name": "device_id", "type": "string"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "temperature", "type": "double"},
    {"name": "humidity", "type": "double"},
    {"name": "seq", "type": "long"}
  ]
}
"#;

/// Scenario name, what it runs (for the header line), its operators (YAML, indented for the
/// stage) and the issue's target in records/s, if any.
const SCENARIOS: &[(&str, &str, &str, Option<f64>)] = &[
    (
        "decode_only",
        "no operators: decode + encode",
        "    operators: []\n",
        None,
    ),
    (
        "tumbling",
        "filter + tumbling 1m (count, sum, mean, max)",
        r#"    operators:
      - filter: "humidity >= 0 AND humidity <= 100"
      - window:
          kind: tumbling
          size: 1m
          grace: 5s
          timestamp: ts
          by: [device_id]
          aggregate:
            readings: count
            temp_sum: sum(temperature)
            temp_mean: mean(temperature)
            temp_max: max(temperature)
"#,
        Some(2_000_000.0),
    ),
    (
        "hopping",
        "filter + hopping 5m/1m (5 windows per record; count, sum, mean, max)",
        r#"    operators:
      - filter: "humidity >= 0 AND humidity <= 100"
      - window:
          kind: hopping
          size: 5m
          advance: 1m
          grace: 5s
          timestamp: ts
          by: [device_id]
          aggregate:
            readings: count
            temp_sum: sum(temperature)
            temp_mean: mean(temperature)
            temp_max: max(temperature)
"#,
        Some(1_000_000.0),
    ),
    (
        "hopping_sketches",
        "hopping 5m/1m + p95 and count_distinct",
        r#"    operators:
      - filter: "humidity >= 0 AND humidity <= 100"
      - window:
          kind: hopping
          size: 5m
          advance: 1m
          grace: 5s
          timestamp: ts
          by: [device_id]
          aggregate:
            readings: count
            temp_sum: sum(temperature)
            temp_mean: mean(temperature)
            temp_max: max(temperature)
            temp_p95: p95(temperature)
            humidity_levels: count_distinct(humidity)
"#,
        None,
    ),
    (
        "join",
        "join with a device table (in memory) + filter on a joined field",
        r#"    operators:
      - join: { table: bench.devices, on: device_id, fields: [site, max_temp] }
      - filter: "temperature <= max_temp"
"#,
        None,
    ),
    (
        "join_rocksdb_uncached",
        "the same join with the table in RocksDB, every lookup read from the store and decoded",
        r#"    operators:
      - join: { table: bench.devices, on: device_id, fields: [site, max_temp] }
      - filter: "temperature <= max_temp"
"#,
        None,
    ),
    (
        "join_rocksdb",
        "the same join with the table in RocksDB, as `sluice run` holds it (lookups cached per snapshot)",
        r#"    operators:
      - join: { table: bench.devices, on: device_id, fields: [site, max_temp] }
      - filter: "temperature <= max_temp"
"#,
        None,
    ),
];

/// The device table the `join` scenario reads: one entry per device.
const DEVICE_SCHEMA: &str = r#"{
  "type": "record",
  "name": "Device",
  "namespace": "io.sluice.bench",
  "fields": [
    {"name": "device_id", "type": "string"},
    {"name": "site", "type": "string"},
    {"name": "max_temp", "type": "double"}
  ]
}
"#;

/// The `join` scenarios' table: every device, on site `site-<n mod 50>`, with a limit no
/// reading reaches.
fn device_rows(devices: usize) -> impl Iterator<Item = (Vec<u8>, Value)> {
    (0..devices).map(|d| {
        let id = format!("dev-{d:05}");
        let value = Value::Record(vec![
            ("device_id".into(), Value::String(id.clone())),
            ("site".into(), Value::String(format!("site-{}", d % 50))),
            ("max_temp".into(), Value::Double(1000.0)),
        ]);
        (id.into_bytes(), value)
    })
}

/// The device table of scenario `name`: in RocksDB under `dir` for `join_rocksdb*`, else in
/// memory.
fn device_table(name: &str, devices: usize, dir: &Path) -> anyhow::Result<Box<dyn Tables>> {
    if name.starts_with("join_rocksdb") {
        let cache_keys = if name.ends_with("_uncached") {
            0
        } else {
            crate::runtime::tables::CACHE_KEYS
        };
        let schema = leak(Schema::parse_str(DEVICE_SCHEMA)?);
        let rocks = RocksEnv::new(&RocksConfig::default());
        let mut tables = LocalTables::new();
        let dir = dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        tables.load(
            cache_keys,
            &rocks,
            &dir,
            "bench.devices",
            schema,
            device_rows(devices),
        )?;
        return Ok(Box::new(tables));
    }
    let tables = MemTables::default();
    for (key, value) in device_rows(devices) {
        tables.apply("bench.devices", &key, Some(value));
    }
    Ok(Box::new(tables))
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.records > 0, "--records must be at least 1");
    anyhow::ensure!(a.devices > 0, "--devices must be at least 1");
    for o in &a.only {
        anyhow::ensure!(
            SCENARIOS.iter().any(|s| s.0 == o),
            "unknown scenario `{o}`: use {}",
            SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        );
    }
    let rounds = a.rounds.max(1);
    let commit_every = a.commit_every.max(1);
    let dir = std::env::temp_dir().join(format!("sluice-bench-engine-{}", std::process::id()));
    let plans = write_and_load(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let plans = plans?;

    let input_schema = Schema::parse_str(SCHEMA).context("the bench schema")?;
    let inputs = Inputs::make(a.records, a.devices, &input_schema)?;
    // As a producer registers it: the full schema (the canonical form drops logical types).
    let writer_json = serde_json::to_string(&input_schema)?;
    let seconds = a.records.div_ceil(a.devices);
    println!(
        "# sluice bench engine: {} records ({} devices, one reading each per event-time second: {} s), {} B/record on the wire, {rounds} round(s), commit every {} records, one thread",
        group(a.records as f64),
        a.devices,
        seconds,
        inputs.blob.len() / a.records,
        group(commit_every as f64),
    );
    println!(
        "# input buffer {:.1} MiB (held throughout: part of every peak RSS); ~1% of readings fail the filter",
        (inputs.blob.len() + inputs.ends.len() * 4 + inputs.keys.iter().map(Vec::len).sum::<usize>()) as f64
            / (1 << 20) as f64
    );
    let mut summary = Vec::new();
    for (name, what, _, target) in SCENARIOS {
        if !a.only.is_empty() && !a.only.iter().any(|o| o == name) {
            continue;
        }
        let plan = plans
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .expect("every scenario is a stage");
        let tables = device_table(name, a.devices, &dir)?;
        let tables = &*tables;
        let processor = || -> Result<Pipeline, ProcessError> {
            Pipeline::new(
                name,
                plan.clone(),
                crate::stages::pipeline::Output::Topic {
                    schema_id: OUTPUT_ID,
                },
                &vec![OUTPUT_ID; plan.branches.len()],
                Box::new(OneSchema(writer_json.clone())),
                &TaskContext {
                    partition: 0,
                    tables,
                },
            )
        };
        reset_peak_rss();
        let mut rates = Vec::new();
        let mut last = Counted::default();
        for _ in 0..rounds {
            let mut p = processor()?;
            let (elapsed, c) = timed(&mut p, &inputs, commit_every)?;
            rates.push(a.records as f64 / elapsed.as_secs_f64());
            last = c;
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        let ns = 1e9 / median;
        println!(
            "{name}: {} rec/s (median of {rounds}; {} .. {}), {ns:.0} ns/record, {} outputs (last {} B), {} dead letters, {} changelog entries drained; {what}",
            group(median),
            group(rates[0]),
            group(rates[rates.len() - 1]),
            group(last.outputs as f64),
            last.last_len,
            group(last.dead as f64),
            group(last.drained as f64),
        );

        let b = breakdown(&plan, &writer_json, &inputs, commit_every, tables)?;
        let parts = [
            ("decode", b.decode),
            ("chain", b.chain),
            ("encode", b.encode),
            ("state drain", b.drain),
        ];
        let sum: Duration = parts.iter().map(|p| p.1).sum();
        let per = |d: Duration| d.as_nanos() as f64 / a.records as f64;
        let mut line = format!("{name}: breakdown (ns/record, share of their sum):");
        for (label, d) in parts {
            let _ = write!(
                line,
                " {label} {:.0} ({:.0}%),",
                per(d),
                100.0 * d.as_secs_f64() / sum.as_secs_f64()
            );
        }
        let _ = write!(
            line,
            " sum {:.0} vs {ns:.0} end to end ({:+.0} ns: Emit calls, what no phase covers, and noise between the passes)",
            per(sum),
            ns - per(sum),
        );
        println!("{line}");
        println!(
            "{name}: of decode, resolving into the reader schema: {:.0} ns/record (decoding with the writer schema alone takes {:.0}; the two schemas are the same here)",
            per(b.decode.saturating_sub(b.decode_writer_only)),
            per(b.decode_writer_only),
        );

        let s = state(processor()?, &inputs)?;
        let rss = peak_rss_kib();
        if s.tables > 0 {
            println!(
                "{name}: state: {} open windows ({:.1} per device) at the end, {:.0} B per open window encoded (key {:.0} + value {:.0}), {} B of table meta; peak RSS {:.1} MiB",
                group(s.windows as f64),
                s.windows as f64 / a.devices as f64,
                (s.key_bytes + s.value_bytes) as f64 / s.windows.max(1) as f64,
                s.key_bytes as f64 / s.windows.max(1) as f64,
                s.value_bytes as f64 / s.windows.max(1) as f64,
                s.meta_bytes,
                rss as f64 / 1024.0,
            );
        } else {
            println!(
                "{name}: state: no tables; peak RSS {:.1} MiB",
                rss as f64 / 1024.0
            );
        }
        summary.push((*name, median, *target));
    }
    for (name, rate, target) in summary {
        if let Some(t) = target {
            let verdict = if rate >= t {
                "met".to_string()
            } else {
                format!("{:.1}x short", t / rate)
            };
            println!(
                "target {name}: {} rec/s wanted, {} measured: {:.1}% of it ({verdict})",
                group(t),
                group(rate),
                100.0 * rate / t,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// Writes the topology and its schema into `dir` and loads it; the plan of every stage.
fn write_and_load(dir: &Path) -> anyhow::Result<Vec<(String, Arc<PipelinePlan>)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("reading.avsc"), SCHEMA)?;
    std::fs::write(dir.join("device.avsc"), DEVICE_SCHEMA)?;
    let mut yaml = String::from(
        "apiVersion: sluice/v1
kind: Topology
metadata:
  name: bench-engine
processing:
  guarantee: exactly_once
  commit_interval: 1s
connections:
  brokers: 127.0.0.1:9
  registry: http://127.0.0.1:9
state_dir: state
metrics:
  listen: 127.0.0.1:0
topic_defaults:
  replication: 1
  min_insync_replicas: 1
topics:
  bench.readings: { partitions: 1, schema: reading.avsc }
  bench.devices: { partitions: 1, schema: device.avsc }
",
    );
    for (name, ..) in SCENARIOS {
        let _ = writeln!(yaml, "  bench.{name}: {{ partitions: 1 }}");
    }
    yaml.push_str("stages:\n");
    for (name, _, ops, _) in SCENARIOS {
        let _ = write!(
            yaml,
            "  {name}:\n    kind: pipeline\n    input: bench.readings\n    output: bench.{name}\n{ops}"
        );
    }
    let path: PathBuf = dir.join("bench.yaml");
    std::fs::write(&path, &yaml)?;
    let loaded = sluice_topology::load(&path)
        .map_err(|e| anyhow::anyhow!("the bench topology does not load: {e}"))?;
    let mut plans = Vec::new();
    for stage in &loaded.topology.stages {
        if let StageSpec::Pipeline(p) = &stage.spec {
            let plan = p
                .plan
                .clone()
                .context("pipelines are planned when loading")?;
            plans.push((stage.name.clone(), plan));
        }
    }
    Ok(plans)
}

/// The input records in wire format, back to back, with what `Input` needs.
struct Inputs {
    blob: Vec<u8>,
    /// End of each record in `blob`.
    ends: Vec<u32>,
    /// Kafka key per device (its id).
    keys: Vec<Vec<u8>>,
    devices: usize,
}

impl Inputs {
    /// `n` readings: device `i % devices` at second `i / devices`, spread over the second so
    /// event time only grows; about one in 100 has an impossible humidity (filtered out).
    fn make(n: usize, devices: usize, schema: &Schema) -> anyhow::Result<Inputs> {
        let encoder = Encoder::new(leak(schema.clone()))?;
        let keys: Vec<Vec<u8>> = (0..devices)
            .map(|d| format!("dev-{d:05}").into_bytes())
            .collect();
        let mut blob = Vec::with_capacity(n * 48);
        let mut ends = Vec::with_capacity(n);
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..n {
            let (d, second) = (i % devices, (i / devices) as i64);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let temperature = 20.0
                + 5.0 * ((second as f64 / 600.0) + d as f64).sin()
                + (rng % 100) as f64 / 100.0;
            let humidity = if rng % 100 == 7 {
                150.0
            } else {
                30.0 + ((rng >> 8) % 400) as f64 / 10.0
            };
            let value = Value::Record(vec![
                (
                    "device_id".into(),
                    Value::String(String::from_utf8_lossy(&keys[d]).into_owned()),
                ),
                ("ts".into(), Value::TimestampMillis(ts(i, devices))),
                ("temperature".into(), Value::Double(temperature)),
                ("humidity".into(), Value::Double(humidity)),
                ("seq".into(), Value::Long(second)),
            ]);
            wire::write_header(WRITER_ID, &mut blob);
            encoder.encode(&value, &mut blob)?;
            ends.push(u32::try_from(blob.len()).context("input over 4 GiB: use fewer --records")?);
        }
        Ok(Inputs {
            blob,
            ends,
            keys,
            devices,
        })
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn bytes(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.blob[start..self.ends[i] as usize]
    }

    fn input(&self, i: usize) -> Input<'_> {
        Input {
            topic: "bench.readings",
            partition: 0,
            offset: i as i64,
            timestamp: ts(i, self.devices),
            key: Some(&self.keys[i % self.devices]),
            value: Some(self.bytes(i)),
        }
    }
}

/// Event time of reading `i`.
fn ts(i: usize, devices: usize) -> i64 {
    let (d, second) = ((i % devices) as i64, (i / devices) as i64);
    T0 + second * 1000 + d * 1000 / devices as i64
}

/// The writer schema under [`WRITER_ID`].
struct OneSchema(String);

impl SchemaSource for OneSchema {
    fn fetch(&mut self, id: u32) -> Result<Option<String>, ProcessError> {
        Ok((id == WRITER_ID).then(|| self.0.clone()))
    }
}

/// An `Emit` that counts, and keeps the last output's length so nothing is optimised away.
#[derive(Default)]
struct Counted {
    outputs: u64,
    bytes: u64,
    last_len: usize,
    dead: u64,
    drained: u64,
}

impl Emit for Counted {
    fn emit(&mut self, _port: usize, _key: &[u8], value: &[u8], _timestamp: i64) {
        self.outputs += 1;
        self.bytes += value.len() as u64;
        self.last_len = std::hint::black_box(value.len());
    }

    fn dead_letter(&mut self, _input: &Input<'_>, _why: &Rejection) {
        self.dead += 1;
    }
}

/// Drains every table's dirty entries (what a commit writes); their count.
fn drain(
    tables: Vec<&mut dyn crate::runtime::AnyTable>,
    buf: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> u64 {
    for t in tables {
        t.drain_dirty(buf);
    }
    let n = buf.len() as u64;
    std::hint::black_box(&buf);
    buf.clear();
    n
}

/// One timed round: every record through `p.process`, a drain every `commit_every` and at
/// the end.
fn timed(
    p: &mut Pipeline,
    inputs: &Inputs,
    commit_every: usize,
) -> Result<(Duration, Counted), ProcessError> {
    let mut c = Counted::default();
    let mut buf = Vec::new();
    let started = Instant::now();
    for i in 0..inputs.len() {
        p.process(&inputs.input(i), &mut c)?;
        if (i + 1) % commit_every == 0 {
            c.drained += drain(p.tables(), &mut buf);
        }
    }
    c.drained += drain(p.tables(), &mut buf);
    Ok((started.elapsed(), c))
}

#[derive(Default)]
struct Breakdown {
    decode: Duration,
    /// What-if: the same bytes decoded with the writer schema alone (no resolution into the
    /// reader schema; equivalent when the two are the same schema, as here).
    decode_writer_only: Duration,
    chain: Duration,
    encode: Duration,
    drain: Duration,
}

/// The phases of `Pipeline::process` one at a time, each over a chunk of records: decode
/// (wire header + `Decoder::decode`), the operator chain (`Running::process` on the decoded
/// values), encode (header + `Encoder::encode` of what came out), and the commit drains.
/// Built from the same plan as the processor, with the same codec types.
fn breakdown(
    plan: &PipelinePlan,
    writer_json: &str,
    inputs: &Inputs,
    commit_every: usize,
    tables: &dyn Tables,
) -> anyhow::Result<Breakdown> {
    let writer = leak(Schema::parse_str(writer_json)?);
    let decoder = Decoder::new(writer, Some(plan.input_schema))?;
    let writer_only = Decoder::new(writer, None)?;
    let encoder = Encoder::new(plan.output_schema)?;
    let mut running = plan.chain.build_for(&TaskContext {
        partition: 0,
        tables,
    })?;
    let mut b = Breakdown::default();
    let mut values = Vec::with_capacity(CHUNK);
    let mut spare = Vec::with_capacity(CHUNK);
    let mut out: Vec<Record> = Vec::new();
    let mut rejected: Vec<OpRejection> = Vec::new();
    let mut buf = Vec::with_capacity(256);
    let mut dirty = Vec::new();
    let mut last_len = 0;
    let mut start = 0;
    while start < inputs.len() {
        let end = (start + CHUNK).min(inputs.len());
        let t = Instant::now();
        for i in start..end {
            let (_, mut body) = wire::parse(inputs.bytes(i))?;
            values.push(decoder.decode(&mut body)?);
        }
        b.decode += t.elapsed();

        let t = Instant::now();
        for i in start..end {
            let (_, mut body) = wire::parse(inputs.bytes(i))?;
            spare.push(writer_only.decode(&mut body)?);
        }
        b.decode_writer_only += t.elapsed();
        spare.clear(); // dropped outside the timing, as the decode phase's values are

        let t = Instant::now();
        for (i, value) in (start..end).zip(values.drain(..)) {
            let input = inputs.input(i);
            let rec = Record {
                key: input.key.map(<[u8]>::to_vec),
                value,
                timestamp: input.timestamp,
            };
            running.process(rec, &mut out, &mut rejected)?;
            rejected.clear();
        }
        b.chain += t.elapsed();

        let t = Instant::now();
        for r in out.drain(..) {
            buf.clear();
            wire::write_header(OUTPUT_ID, &mut buf);
            encoder.encode(&r.value, &mut buf)?;
            last_len = std::hint::black_box(buf.len());
        }
        b.encode += t.elapsed();

        // A drain wherever the timed rounds drain (chunks straddle the boundaries).
        if end / commit_every > start / commit_every || end == inputs.len() {
            let t = Instant::now();
            drain(running.tables(), &mut dirty);
            b.drain += t.elapsed();
        }
        start = end;
    }
    std::hint::black_box(last_len);
    Ok(b)
}

#[derive(Default)]
struct State {
    tables: usize,
    windows: u64,
    key_bytes: u64,
    value_bytes: u64,
    meta_bytes: u64,
}

/// Runs every record through a fresh processor without commits, then drains once: every
/// window still open is dirty then (it was created since the start), every closed one a
/// tombstone.
fn state(mut p: Pipeline, inputs: &Inputs) -> Result<State, ProcessError> {
    let mut c = Counted::default();
    for i in 0..inputs.len() {
        p.process(&inputs.input(i), &mut c)?;
    }
    let mut entries = Vec::new();
    let mut s = State::default();
    for t in p.tables() {
        t.drain_dirty(&mut entries);
        s.tables += 1;
    }
    for (k, v) in &entries {
        let Some(v) = v else { continue };
        if k.starts_with(&META_PREFIX) {
            s.meta_bytes += (k.len() + v.len()) as u64;
        } else {
            s.windows += 1;
            s.key_bytes += k.len() as u64;
            s.value_bytes += v.len() as u64;
        }
    }
    Ok(s)
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (Linux 4.0+; ignored
/// elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse().ok())
        })
        .unwrap_or(0)
}

/// `1234567.8` as `1,234,568`.
fn group(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
