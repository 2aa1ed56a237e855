//! The built-in stage kinds against the same work written with operators (issue 12 item 4):
//! each pair reads the simulator's records, bad ones included, and must write the same
//! bytes, keys and timestamps, and the same dead letters with the same classes. What still
//! differs is what keeps `topology/iot.yaml` on the built-in kinds.

use std::path::Path;

use sluice_ops::op::join::MemTables;
use sluice_ops::op::TaskContext;
use sluice_topology::{load_str, StageSpec, ValidateSpec};

use super::aggregate::Aggregate;
use super::detect::{Detect, DetectSchemas};
use super::pipeline::{Output, Pipeline};
use super::testkit::{Bundled, Collect, AGG, ALERT, ANOMALY, V2};
use super::validate::Validate;
use crate::runtime::{Input, Processor};
use crate::sim::{self, SimConfig, Simulator, WriterIds};

/// The built-in validate stage of topology/iot.yaml, and the same written with operators.
const TOPOLOGY: &str = r#"apiVersion: sluice/v1
kind: Topology
metadata: { name: iot }
connections:
  brokers: 127.0.0.1:9092
  registry: http://127.0.0.1:8081
topics:
  telemetry.raw:   { partitions: 4, subject: telemetry.raw-value, schema: ../schemas/telemetry-v1.avsc }
  telemetry.valid: { partitions: 4, subject: telemetry.valid-value, schema: ../schemas/telemetry-v2.avsc }
  telemetry.dlq:   { partitions: 1 }
  iot.aggregates:  { partitions: 4, subject: iot.aggregates-value, schema: ../schemas/aggregate.avsc }
  iot.anomalies:   { partitions: 4, subject: iot.anomalies-value, schema: ../schemas/anomaly.avsc }
  iot.alerts:      { partitions: 4, subject: iot.alerts-value, schema: ../schemas/alert.avsc }
stages:
  validate:
    kind: validate
    input: telemetry.raw
    output: telemetry.valid
    output_subject: telemetry.valid-value
    dead_letter: telemetry.dlq
    reader_schema: ../schemas/telemetry-v2.avsc
    ranges:
      temperature: [-40, 125]
      humidity: [0, 100]
      pressure: [300, 1100]
      vibration: [0, 50]
    unknown_metrics: reject
    dedup_window: 1024
    max_clock_skew: 15m
  validate_ops:
    kind: pipeline
    input: telemetry.raw
    reader_schema: ../schemas/telemetry-v2.avsc
    dead_letter: telemetry.dlq
    operators:
      - validate:
          ranges_by:
            field: metric
            value: value
            ranges:
              temperature: [-40, 125]
              humidity: [0, 100]
              pressure: [300, 1100]
              vibration: [0, 50]
          timestamp: event_time
          max_future_skew: 15m
          max_past_age: 15m
      - dedup: { by: device_id, sequence: seq, last: 1024 }
      - stamp: event_time
      - key_by: device_id
    output: telemetry.valid
  aggregate:
    kind: aggregate
    input: telemetry.valid
    output: iot.aggregates
    output_subject: iot.aggregates-value
    dead_letter: telemetry.dlq
    windows: [1m, 5m]
    grace: 30s
  aggregate_ops:
    kind: pipeline
    input: telemetry.valid
    dead_letter: telemetry.dlq
    operators:
      - window:
          kind: tumbling
          sizes: [1m, 5m]
          grace: 30s
          timestamp: event_time
          by: [device_id, metric]
          aggregate:
            n: count
            lo: min(value)
            hi: max(value)
            avg: mean(value)
            sd: stddev_pop(value)
      - select:
          device_id: device_id
          metric: metric
          window_start: window_start
          window_ms: window_end - window_start
          count: n
          min: coalesce(lo, 0.0)
          max: coalesce(hi, 0.0)
          mean: coalesce(avg, 0.0)
          stddev: coalesce(sd, 0.0)
      - key_by: [device_id, metric, window_ms, window_start]
    output: iot.aggregates
  detect:
    kind: detect
    input: telemetry.valid
    output: iot.anomalies
    output_subject: iot.anomalies-value
    alerts: iot.alerts
    alerts_subject: iot.alerts-value
    detector: { kind: ensemble }
    threshold: 0.455
    alert_suppression: 5m
  detect_ops:
    kind: pipeline
    input: telemetry.valid
    dead_letter: telemetry.dlq
    operators:
      - detect:
          field: value
          by: [device_id, metric]
          detector: { kind: ensemble }
          threshold: 0.455
          timestamp: event_time
          score_field: score
      - filter: anomaly
      - select:
          device_id: device_id
          metric: metric
          event_time: event_time
          value: value
          score: score
          detector: "'ensemble'"
    branches:
      - operators:
          - key_by: [device_id, metric, detector, event_time]
        output: iot.anomalies
      - operators:
          - suppress:
              by: [device_id, detector]
              for: 5m
              timestamp: event_time
              count_field: suppressed_since_last
          - select:
              device_id: device_id
              metric: metric
              rule: detector
              event_time: event_time
              value: value
              score: score
              suppressed_since_last: suppressed_since_last
          - key_by: [device_id, metric, rule, event_time]
        output: iot.alerts
"#;

/// What a stage wrote: outputs (port, key, value, timestamp) and dead letters (input
/// offset, class).
type Written = (
    Vec<(usize, Vec<u8>, Vec<u8>, i64)>,
    Vec<(i64, &'static str)>,
);

/// The simulator's records as the raw topic holds them: value, key (the device id) and the
/// gateway's timestamp. Half the fleet writes v1 (id 1), half v2 (id 2), as `Bundled` has
/// them.
fn raw_records(cfg: SimConfig) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let mut sim = Simulator::new(cfg);
    let ids = WriterIds { v1: 1, v2: V2 };
    let (mut batch, mut out) = (Vec::new(), Vec::new());
    while !sim.done() {
        batch.clear();
        sim.step(&mut batch);
        for rec in &batch {
            let mut value = Vec::new();
            sim::encode(rec, ids, &mut value);
            out.push((
                value,
                rec.telemetry.device_id.as_bytes().to_vec(),
                rec.kafka_ts,
            ));
        }
    }
    out
}

/// The pipeline stage `name` of the test topology, writing `output` (its branches with the
/// schema ids `branch_ids`).
fn pipeline(
    loaded: &sluice_topology::Loaded,
    name: &str,
    output: Output,
    branch_ids: &[u32],
) -> Pipeline {
    let Some(StageSpec::Pipeline(p)) = loaded.topology.stage(name) else {
        panic!("{name} is a pipeline");
    };
    let tables = MemTables::default();
    let task = TaskContext {
        partition: 0,
        tables: &tables,
    };
    Pipeline::new(
        name,
        p.plan.clone().expect("planned"),
        output,
        branch_ids,
        Box::new(Bundled),
        &task,
    )
    .unwrap()
}

fn loaded() -> sluice_topology::Loaded {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/equivalence.yaml");
    load_str(&path, TOPOLOGY, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn run(p: &mut dyn Processor, records: &[(Vec<u8>, Vec<u8>, i64)]) -> Written {
    let mut out = Collect::default();
    for (offset, (value, key, ts)) in records.iter().enumerate() {
        let input = Input {
            topic: "telemetry.raw",
            partition: 0,
            offset: offset as i64,
            timestamp: *ts,
            key: Some(key),
            value: Some(value),
        };
        p.process(&input, &mut out).unwrap();
    }
    let dead = out.dead.iter().map(|d| (d.0, d.1)).collect();
    (out.out, dead)
}

#[test]
fn validate_written_with_operators_writes_what_the_built_in_stage_writes() {
    let loaded = loaded();
    let Some(StageSpec::Validate(spec)) = loaded.topology.stage("validate") else {
        panic!("the built-in stage");
    };
    let spec: ValidateSpec = spec.clone();
    let records = raw_records(sim_config());
    let built_in = run(
        &mut Validate::new("validate", spec, V2, Box::new(Bundled)),
        &records,
    );
    let mut pipeline = pipeline(
        &loaded,
        "validate_ops",
        Output::Topic { schema_id: V2 },
        &[],
    );
    let ops = run(&mut pipeline, &records);

    // Every kind of bad record is there to be judged.
    let classes: std::collections::BTreeSet<&str> = built_in.1.iter().map(|d| d.1).collect();
    for class in [
        "out_of_range",
        "unknown_metric",
        "wrong_magic",
        "truncated",
        "unknown_schema_id",
        "invalid_body",
    ] {
        assert!(classes.contains(class), "no {class} in {classes:?}");
    }
    eprintln!(
        "validate: {} records, {} valid, {} dead letters",
        records.len(),
        built_in.0.len(),
        built_in.1.len()
    );
    assert!(built_in.0.len() > 30_000, "{} valid", built_in.0.len());
    same(&ops, &built_in, "valid records");
}

fn sim_config() -> SimConfig {
    SimConfig {
        devices: 40,
        steps: 200,
        bad_prob: 0.01,
        ..SimConfig::default()
    }
}

fn same(ops: &Written, built_in: &Written, what: &str) {
    assert_eq!(ops.1, built_in.1, "dead letters (offset, class)");
    assert_eq!(ops.0.len(), built_in.0.len(), "{what}");
    for (i, (a, b)) in ops.0.iter().zip(&built_in.0).enumerate() {
        assert_eq!(
            a,
            b,
            "{what} {i}: (port, key, value, timestamp); keys {} and {}",
            String::from_utf8_lossy(&a.1),
            String::from_utf8_lossy(&b.1)
        );
    }
}

#[test]
fn aggregate_written_with_operators_writes_what_the_built_in_stage_writes() {
    let loaded = loaded();
    let Some(StageSpec::Aggregate(spec)) = loaded.topology.stage("aggregate") else {
        panic!("the built-in stage");
    };
    // Its input: what the built-in validate wrote, late readings included.
    let valid = valid_records(&loaded);
    let built_in = run(
        &mut Aggregate::new("aggregate", spec, AGG, Box::new(Bundled)),
        &valid,
    );
    eprintln!(
        "aggregate: {} valid readings, {} aggregates, {} dead letters",
        valid.len(),
        built_in.0.len(),
        built_in.1.len()
    );
    assert!(built_in.0.len() > 1_000, "{} aggregates", built_in.0.len());
    assert!(
        built_in.1.iter().any(|d| d.1 == "late_record"),
        "late readings are judged"
    );
    let mut ops = run(
        &mut pipeline(
            &loaded,
            "aggregate_ops",
            Output::Topic { schema_id: AGG },
            &[],
        ),
        &valid,
    );
    // Windows closing together come out in another order: the built-in stage's by
    // (length, device, metric), the window operator's by its group key. Compared in the
    // order of the built-in stage's.
    let order = |o: &(usize, Vec<u8>, Vec<u8>, i64)| (o.3, o.1.clone());
    let mut sorted = built_in.clone();
    sorted.0.sort_by_key(order);
    ops.0.sort_by_key(order);
    same(&ops, &sorted, "aggregates");
}

/// What the built-in validate writes of the simulator's records: the input of the stages
/// after it, as (value, key, timestamp).
fn valid_records(loaded: &sluice_topology::Loaded) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let Some(StageSpec::Validate(v)) = loaded.topology.stage("validate") else {
        panic!("the built-in stage");
    };
    let raw = raw_records(sim_config());
    run(
        &mut Validate::new("validate", v.clone(), V2, Box::new(Bundled)),
        &raw,
    )
    .0
    .into_iter()
    .map(|(_, key, value, ts)| (value, key, ts))
    .collect()
}

#[test]
fn detect_written_with_operators_writes_what_the_built_in_stage_writes() {
    let loaded = loaded();
    let Some(StageSpec::Detect(spec)) = loaded.topology.stage("detect") else {
        panic!("the built-in stage");
    };
    let valid = valid_records(&loaded);
    let detector: sluice_detectors::DetectorSpec =
        serde_yaml::from_value(spec.detector.clone()).unwrap();
    let built_in = run(
        &mut Detect::new(
            "detect",
            spec,
            detector,
            DetectSchemas {
                anomaly: ANOMALY,
                alert: ALERT,
            },
            Box::new(Bundled),
        ),
        &valid,
    );
    let anomalies = built_in.0.iter().filter(|o| o.0 == 0).count();
    let alerts = built_in.0.len() - anomalies;
    eprintln!(
        "detect: {} valid readings, {anomalies} anomalies, {alerts} alerts",
        valid.len()
    );
    assert!(anomalies > 100, "{anomalies} anomalies");
    assert!(alerts > 20 && alerts < anomalies, "{alerts} alerts");
    let ops = run(
        &mut pipeline(&loaded, "detect_ops", Output::Branches, &[ANOMALY, ALERT]),
        &valid,
    );
    same(&ops, &built_in, "anomalies and alerts");
}
