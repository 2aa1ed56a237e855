//! A pipeline reads with a `reader_schema` of its own and writes a topic's declared
//! `schema:` as it is, as the built-in validate stage does with telemetry v1 and v2: both
//! checked offline, with the first difference named.

use std::path::{Path, PathBuf};

use sluice_topology::{load_str, Problem, StageSpec, TopologyError};

/// Next to topology/iot.yaml, so `../schemas/*.avsc` are the repository's schemas.
fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/schemas-test.yaml")
}

const HEAD: &str = r#"apiVersion: sluice/v1
kind: Topology
metadata: { name: schemas }
connections:
  brokers: 127.0.0.1:9092
  registry: http://127.0.0.1:8081
topics:
  raw:   { partitions: 2, subject: raw-value, schema: ../schemas/telemetry-v1.avsc }
  valid: { partitions: 2, subject: valid-value, schema: ../schemas/telemetry-v2.avsc }
  plain: { partitions: 2 }
  dlq:   { partitions: 1 }
stages:
"#;

const VALIDATE: &str = r#"  validate:
    kind: pipeline
    input: raw
    reader_schema: ../schemas/telemetry-v2.avsc
    dead_letter: dlq
    operators:
      - validate:
          ranges_by:
            field: metric
            value: value
            ranges: { temperature: [-40, 125], humidity: [0, 100] }
      - dedup: { by: device_id, sequence: seq }
    output: valid
"#;

fn check(stages: &str) -> Result<sluice_topology::Loaded, Vec<Problem>> {
    let text = format!("{HEAD}{stages}");
    match load_str(&path(), &text, &|_| None) {
        Ok(l) => Ok(l),
        Err(TopologyError::Invalid { problems, .. }) => Err(problems),
        Err(e) => panic!("{e}"),
    }
}

fn problems(stages: &str) -> Vec<(String, String, String)> {
    match check(stages) {
        Ok(_) => panic!("accepted:\n{stages}"),
        Err(p) => p.into_iter().map(|p| (p.key, p.message, p.fix)).collect(),
    }
}

#[test]
fn a_v1_topic_read_as_v2_is_written_with_the_declared_v2_schema() {
    let loaded = check(VALIDATE).unwrap_or_else(|p| panic!("{p:?}"));
    let Some(StageSpec::Pipeline(p)) = loaded.topology.stage("validate") else {
        panic!("a pipeline");
    };
    let plan = p.plan();
    let v2 = apache_avro::Schema::parse_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/telemetry-v2.avsc"),
        )
        .unwrap(),
    )
    .unwrap();
    // Read as v2 (the operators saw `event_time` and `quality`), written as v2 itself: its
    // name and docs, not a derived `sluice.schemas.validate_output`.
    assert_eq!(*plan.input_schema, v2);
    assert_eq!(*plan.output_schema, v2);
    assert_eq!(plan.output_subject, "valid-value");

    // Without a reader schema the operators see v1's fields.
    let p = problems(&VALIDATE.replace("    reader_schema: ../schemas/telemetry-v2.avsc\n", ""));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "stages.validate.output");
    assert!(p[0].1.contains("telemetry-v2.avsc"), "{}", p[0].1);
    assert!(
        p[0].1.ends_with("field 3 is `ts` here, `event_time` there"),
        "{}",
        p[0].1
    );
    assert!(
        p[0].2
            .starts_with("end the operators with a `select` of exactly"),
        "{}",
        p[0].2
    );
    assert!(
        p[0].2
            .contains("(device_id, metric, event_time, value, seq, quality)"),
        "{}",
        p[0].2
    );
}

#[test]
fn a_declared_output_schema_must_be_what_the_operators_hand_on() {
    // An extra field.
    let p = problems(&VALIDATE.replace(
        "      - dedup: { by: device_id, sequence: seq }\n",
        "      - select: { device_id: device_id, metric: metric, event_time: event_time, value: value, seq: seq, quality: quality, site: \"'x'\" }\n",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].1.ends_with("field `site` is not in it"), "{}", p[0].1);
    // A type that differs: quality as a long.
    let p = problems(&VALIDATE.replace(
        "      - dedup: { by: device_id, sequence: seq }\n",
        "      - select: { device_id: device_id, metric: metric, event_time: event_time, value: value, seq: seq, quality: CAST(quality AS BIGINT) }\n",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].1
            .ends_with("field `quality` is a long here, an int there"),
        "{}",
        p[0].1
    );
    // A topic without a schema still gets the derived one.
    let loaded = check(&VALIDATE.replace("    output: valid\n", "    output: plain\n"))
        .unwrap_or_else(|p| panic!("{p:?}"));
    let Some(StageSpec::Pipeline(p)) = loaded.topology.stage("validate") else {
        panic!("a pipeline");
    };
    let apache_avro::Schema::Record(r) = p.plan().output_schema else {
        panic!("a record");
    };
    assert_eq!(r.name.fullname(None), "sluice.schemas.validate_output");
}

#[test]
fn a_reader_schema_must_read_the_topic_s_schema() {
    // v1 cannot read v2: `quality` is unknown to it, fine, but `value` is a double there
    // and a float here (a double is not demoted).
    let p = problems(
        &VALIDATE
            .replace("input: raw", "input: valid")
            .replace(
                "reader_schema: ../schemas/telemetry-v2.avsc",
                "reader_schema: ../schemas/telemetry-v1.avsc",
            )
            .replace("    output: valid\n", "    output: plain\n"),
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "stages.validate.reader_schema");
    assert!(
        p[0].1.contains("cannot read what `valid` holds"),
        "{}",
        p[0].1
    );
    // A file that is not there.
    let p =
        problems(&VALIDATE.replace("telemetry-v2.avsc\n    dead", "telemetry-v9.avsc\n    dead"));
    assert_eq!(p[0].0, "stages.validate.reader_schema");
    assert!(p[0].1.starts_with("cannot read "), "{}", p[0].1);
}

/// The built-in aggregate stage's output, aggregate.avsc, from the operators: a window of
/// two lengths and a `select` that gives its non-null fields their types.
#[test]
fn the_built_in_aggregate_s_schema_is_written_by_a_window_and_a_select() {
    let stages = r#"  aggregate:
    kind: pipeline
    input: valid
    dead_letter: dlq
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
    output: aggregates
"#;
    let head = HEAD.replace(
        "  dlq:   { partitions: 1 }\n",
        "  dlq:   { partitions: 1 }\n  aggregates: { partitions: 2, schema: ../schemas/aggregate.avsc }\n",
    );
    let text = format!("{head}{stages}");
    let loaded = load_str(&path(), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let Some(StageSpec::Pipeline(p)) = loaded.topology.stage("aggregate") else {
        panic!("a pipeline");
    };
    let apache_avro::Schema::Record(r) = p.plan().output_schema else {
        panic!("a record");
    };
    assert_eq!(r.name.fullname(None), "io.sluice.iot.Aggregate");
}
