//! A pipeline ending in a sink (`sink: questdb` / `sink: s3_parquet`) is checked offline
//! against the records flowing in: every mistake at once, with its line, key and a fix.

use std::path::{Path, PathBuf};

use sluice_ops::sink::SinkPlan;
use sluice_topology::{load, load_str, Problem, StageSpec, TopologyError};

fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sinks.yaml")
}

const HEAD: &str = r#"apiVersion: sluice/v1
kind: Topology
metadata: { name: sinks }
connections:
  brokers: 127.0.0.1:9092
  registry: http://127.0.0.1:8081
  ilp: http::addr=127.0.0.1:9000;protocol_version=2;
  s3: { endpoint: "http://127.0.0.1:9000", bucket: lake, allow_http: true }
topics:
  readings: { partitions: 2, schema: site-reading.avsc }
  by_site:  { partitions: 2 }
stages:
"#;

fn check(stages: &str) -> Result<sluice_topology::Loaded, Vec<Problem>> {
    let text = format!("{HEAD}{stages}");
    match load_str(&path(), &text, &|_| None) {
        Ok(l) => Ok(l),
        Err(TopologyError::Invalid { problems, .. }) => Err(problems),
        Err(e) => panic!("{e}"),
    }
}

fn problems(stages: &str) -> Vec<Problem> {
    match check(stages) {
        Ok(_) => panic!("accepted:\n{stages}"),
        Err(p) => p,
    }
}

/// The 1-based line of the stage text (after HEAD) that contains `needle`.
fn line_of(stages: &str, needle: &str) -> usize {
    HEAD.lines().count()
        + 1
        + stages
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}`"))
}

#[test]
fn a_questdb_mapping_over_nested_optional_and_logical_fields_is_planned() {
    let loaded = check(
        r#"
  tsdb:
    kind: pipeline
    input: readings
    sink:
      questdb:
        table: site_power
        symbols: [site, meter.id, { model: meter.model }, phase]
        columns: [power.watts, { volts: power.volts }, count, ok, price, day]
        timestamp: ts
"#,
    )
    .unwrap_or_else(|p| panic!("{p:?}"));
    let StageSpec::Pipeline(p) = loaded.topology.stage("tsdb").unwrap() else {
        panic!()
    };
    assert_eq!(p.writes(), None);
    let Some(SinkPlan::Questdb(q)) = p.sink_plan() else {
        panic!("{:?}", p.sink_plan())
    };
    let cols: Vec<(&str, &str)> = q
        .table_columns()
        .into_iter()
        .map(|(n, k)| (n, k.sql()))
        .collect();
    assert_eq!(
        cols,
        [
            ("ts", "TIMESTAMP"),
            ("site", "SYMBOL"),
            ("meter_id", "SYMBOL"),
            ("model", "SYMBOL"),
            ("phase", "SYMBOL"),
            ("power_watts", "DOUBLE"),
            ("volts", "DOUBLE"),
            ("count", "LONG"),
            ("ok", "BOOLEAN"),
            ("price", "DOUBLE"),
            ("day", "TIMESTAMP"),
        ]
    );
    assert_eq!(q.dedup_keys, ["ts", "site", "meter_id", "model", "phase"]);
    // A sink stage keeps the runner's ids store and creates no output topic.
    assert_eq!(loaded.topology.stage("tsdb").unwrap().stores(), ["ids"]);
    assert!(loaded.topology.stage("tsdb").unwrap().outputs().is_empty());
}

#[test]
fn every_questdb_mistake_is_reported_at_once_with_line_key_and_fix() {
    let stages = r#"
  tsdb:
    kind: pipeline
    input: readings
    sink:
      questdb:
        table: site_power
        symbols: [sitee, count]
        columns: [samples, meter, labels, raw, power.watts]
        timestamp: power
        dedup_keys: [site_power_key]
        flush_rows: 0
        tabel: x
"#;
    let ps = problems(stages);
    let got: Vec<(&str, &str)> = ps
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    let find = |key: &str| {
        ps.iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem at {key}: {got:#?}"))
    };
    let base = "stages.tsdb.sink.questdb";
    let typo = find(&format!("{base}.symbols[0]"));
    assert!(typo.message.contains("no field `sitee`"), "{typo:?}");
    assert!(typo.fix.contains("did you mean `site`?"), "{typo:?}");
    assert_eq!(typo.line, line_of(stages, "symbols:"));
    let long_symbol = find(&format!("{base}.symbols[1]"));
    assert!(
        long_symbol.message.contains("SYMBOL column holds strings"),
        "{long_symbol:?}"
    );
    let array = find(&format!("{base}.columns[0]"));
    assert!(
        array.message.contains("ILP has no arrays or maps"),
        "{array:?}"
    );
    let record = find(&format!("{base}.columns[1]"));
    assert!(record.message.contains("is a record"), "{record:?}");
    assert!(record.fix.contains("meter.id"), "{record:?}");
    assert!(find(&format!("{base}.columns[2]")).message.contains("maps"));
    assert!(find(&format!("{base}.columns[3]"))
        .message
        .contains("bytes"));
    let ts = find(&format!("{base}.timestamp"));
    assert!(ts.message.contains("not a timestamp"), "{ts:?}");
    assert!(ts.fix.contains("ts"), "{ts:?}");
    let key = find(&format!("{base}.dedup_keys[0]"));
    assert!(key.message.contains("not a column"), "{key:?}");
    let no_ts = find(&format!("{base}.dedup_keys"));
    assert!(no_ts.message.contains("designated timestamp"), "{no_ts:?}");
    assert!(
        no_ts.fix.contains("dedup_keys: [ts, site_power_key]"),
        "{no_ts:?}"
    );
    assert!(find(&format!("{base}.flush_rows"))
        .fix
        .contains("at least 1"));
    let unknown = find(&format!("{base}.tabel"));
    assert!(unknown.fix.contains("did you mean `table`?"), "{unknown:?}");
    assert_eq!(unknown.line, line_of(stages, "tabel:"));
    assert_eq!(ps.len(), 11, "{got:#?}");
}

#[test]
fn every_s3_parquet_mistake_is_reported_at_once() {
    let stages = r#"
  lake:
    kind: pipeline
    input: readings
    sink:
      s3_parquet:
        prefix: ../lake
        time: site
        granularity: weekly
        partition_by: [power, phse]
        rows_per_file: 0
"#;
    let ps = problems(stages);
    let got: Vec<(&str, &str, &str)> = ps
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str(), p.fix.as_str()))
        .collect();
    let has = |key: &str, text: &str| {
        assert!(
            got.iter()
                .any(|(k, m, f)| *k == key && (m.contains(text) || f.contains(text))),
            "no problem at {key} saying `{text}`: {got:#?}"
        )
    };
    let base = "stages.lake.sink.s3_parquet";
    has(&format!("{base}.granularity"), "weekly");
    // One serde problem stops the rest of the spec; fix it and the others show.
    let stages = stages.replace("granularity: weekly", "granularity: day");
    let ps = problems(&stages);
    let got: Vec<(&str, &str, &str)> = ps
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str(), p.fix.as_str()))
        .collect();
    let has = |key: &str, text: &str| {
        assert!(
            got.iter()
                .any(|(k, m, f)| *k == key && (m.contains(text) || f.contains(text))),
            "no problem at {key} saying `{text}`: {got:#?}"
        )
    };
    has(&format!("{base}.prefix"), "not a plain path");
    has(&format!("{base}.time"), "not a timestamp");
    has(
        &format!("{base}.partition_by[0]"),
        "does not make a directory name",
    );
    has(&format!("{base}.partition_by[1]"), "did you mean `phase`?");
    has(&format!("{base}.rows_per_file"), "at least 1");
    assert_eq!(got.len(), 5, "{got:#?}");
}

#[test]
fn a_stage_has_output_or_sink_and_its_sink_needs_its_connection() {
    let ps = problems(
        r#"
  both:
    kind: pipeline
    input: readings
    output: by_site
    sink: { questdb: { table: t, columns: [count] } }
  neither:
    kind: pipeline
    input: readings
  unknown:
    kind: pipeline
    input: readings
    sink: { questbd: { table: t } }
"#,
    );
    let got: Vec<(&str, &str, &str)> = ps
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str(), p.fix.as_str()))
        .collect();
    assert!(
        got.iter()
            .any(|(k, m, _)| *k == "stages.both.sink" && m.contains("not both")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|(k, m, _)| *k == "stages.neither" && m.contains("needs `output`")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|(k, _, f)| *k == "stages.unknown.sink.questbd"
                && f.contains("did you mean `questdb`?")),
        "{got:#?}"
    );
    // Without connections.ilp / connections.s3 the sinks cannot write.
    let text = format!(
        "{HEAD}{}",
        r#"
  tsdb:
    kind: pipeline
    input: readings
    sink: { questdb: { table: t, columns: [count] } }
  lake:
    kind: pipeline
    input: readings
    sink: { s3_parquet: { prefix: lake } }
"#
    )
    .replace("  ilp: http::addr=127.0.0.1:9000;protocol_version=2;\n", "")
    .replace(
        "  s3: { endpoint: \"http://127.0.0.1:9000\", bucket: lake, allow_http: true }\n",
        "",
    );
    let Err(TopologyError::Invalid { problems, .. }) = load_str(&path(), &text, &|_| None) else {
        panic!("accepted without connections");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["stages.tsdb.sink.questdb", "stages.lake.sink.s3_parquet"],
        "{problems:?}"
    );
}

#[test]
fn a_sink_reads_a_topic_another_pipeline_writes_with_its_derived_schema() {
    let stages = r#"
  # Declared before the stage writing its input: planned after it all the same.
  tsdb:
    kind: pipeline
    input: by_site
    sink: { questdb: { table: site_power, symbols: [site], columns: [watts], timestamp: window_start } }
  rollup:
    kind: pipeline
    input: readings
    operators:
      - window: { kind: tumbling, size: 1m, timestamp: ts, by: [site], aggregate: { watts: mean(power.watts) } }
    output: by_site
"#;
    check(stages).unwrap_or_else(|p| panic!("{p:#?}"));
    // A typo in the derived field names is found against the derived schema.
    let ps = problems(&stages.replace("columns: [watts]", "columns: [wats]"));
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0].key, "stages.tsdb.sink.questdb.columns[0]");
    assert!(ps[0].fix.contains("did you mean `watts`?"), "{:?}", ps[0]);
    // A mistake upstream is reported there only, not again as a missing schema downstream.
    let ps = problems(&stages.replace("mean(power.watts)", "mean(power.wats)"));
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(
        ps[0].key.starts_with("stages.rollup.operators[0]"),
        "{:?}",
        ps[0]
    );
}

#[test]
fn the_examples_end_in_questdb_and_parquet() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let energy = load(&root.join("energy/energy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let tables: Vec<&str> = energy
        .topology
        .stages
        .iter()
        .filter_map(|s| match &s.spec {
            StageSpec::Pipeline(p) => match p.sink_plan() {
                Some(SinkPlan::Questdb(q)) => Some(q.table.as_str()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(tables, ["site_energy", "site_demand"]);
    let fleet = load(&root.join("fleet/fleet.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let StageSpec::Pipeline(p) = fleet.topology.stage("trips_lake").unwrap() else {
        panic!()
    };
    let Some(SinkPlan::S3Parquet(pq)) = p.sink_plan() else {
        panic!()
    };
    assert_eq!(pq.prefix, "fleet/trips");
    assert_eq!(pq.partition_by[0].0, "vehicle_id");
}
