//! A data engineer's mistakes in a topology file get the file, line, key and a fix.

use std::path::{Path, PathBuf};

use sluice_topology::{load, load_str, TopologyError};

fn iot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("iot.yaml")
}

fn iot_text() -> String {
    std::fs::read_to_string(iot_path()).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Loads the reference file with one edit and returns the rendered error.
fn error_after(edit: impl Fn(&str) -> String) -> (TopologyError, String) {
    let text = edit(&iot_text());
    let err = load_str(&iot_path(), &text, &no_env).expect_err("the edit must be rejected");
    let shown = err.to_string();
    (err, shown)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_reference_topology_is_valid() {
    let loaded = load(&iot_path()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    assert_eq!(t.metadata.name, "iot");
    let names: Vec<&str> = t.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["validate", "aggregate", "detect", "tsdb", "archive"]
    );
    let plans = t.topic_plans();
    assert!(plans
        .iter()
        .any(|p| p.name == "iot-aggregate-windows-changelog"
            && p.partitions == 4
            && p.configs
                .iter()
                .any(|(k, v)| *k == "cleanup.policy" && v == "compact")));
}

#[test]
fn a_typo_in_a_stage_key_names_line_key_and_fix() {
    let (err, shown) = error_after(|t| t.replace("    windows: [1m, 5m]", "    windwos: [1m, 5m]"));
    let line = line_of(&iot_text(), "windows: [1m, 5m]");
    let p = &err.problems()[0];
    assert_eq!(p.line, line, "{shown}");
    assert_eq!(p.key, "stages.aggregate.windwos");
    assert!(p.fix.contains("did you mean `windows`"), "{shown}");
    assert!(shown.contains(&format!("iot.yaml:{line}:")), "{shown}");
}

#[test]
fn a_typo_at_top_level_is_located() {
    let (err, shown) = error_after(|t| t.replace("processing:", "procesing:"));
    let p = &err.problems()[0];
    assert_eq!(p.line, line_of(&iot_text(), "processing:"), "{shown}");
    assert!(p.fix.contains("`processing`"), "{shown}");
}

#[test]
fn an_unknown_stage_kind_suggests_the_right_one() {
    let (err, shown) = error_after(|t| t.replace("kind: aggregate", "kind: agregate"));
    let p = &err.problems()[0];
    assert_eq!(p.line, line_of(&iot_text(), "kind: aggregate"), "{shown}");
    assert!(p.fix.contains("`aggregate`"), "{shown}");
}

#[test]
fn an_undeclared_topic_is_reported_with_the_closest_name() {
    let (err, shown) =
        error_after(|t| t.replace("output: iot.aggregates", "output: iot.aggregate"));
    let p = &err.problems()[0];
    assert_eq!(p.key, "stages.aggregate.output");
    assert_eq!(
        p.line,
        line_of(&iot_text(), "output: iot.aggregates"),
        "{shown}"
    );
    assert!(p.fix.contains("did you mean `iot.aggregates`"), "{shown}");
}

#[test]
fn a_stage_name_unusable_in_topic_names_is_rejected() {
    let (err, shown) = error_after(|t| t.replace("  detect:", "  Detect Anomalies:"));
    let p = &err.problems()[0];
    assert_eq!(p.key, "stages.Detect Anomalies", "{shown}");
    assert_eq!(p.line, line_of(&iot_text(), "  detect:"), "{shown}");
    assert!(p.fix.contains("lowercase letters, digits"), "{shown}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let (err, shown) = error_after(|t| {
        t.replace("threshold: 0.455", "threshold: 1.5")
            .replace("grace: 30s", "grace: thirty")
            .replace("input: telemetry.raw", "input: telemetry.rw")
    });
    assert_eq!(err.problems().len(), 3, "{shown}");
    assert!(shown.contains("is not a duration"), "{shown}");
    assert!(shown.contains("outside (0, 1]"), "{shown}");
}

#[test]
fn a_dedup_window_of_zero_is_refused_at_its_line() {
    let (err, shown) = error_after(|t| t.replace("dedup_window: 1024", "dedup_window: 0"));
    let p = &err.problems()[0];
    assert_eq!(p.key, "stages.validate.dedup_window", "{shown}");
    assert_eq!(
        p.line,
        line_of(&iot_text(), "dedup_window: 1024"),
        "{shown}"
    );
    assert!(p.message.contains("not from 1 to 1048576"), "{shown}");
}

#[test]
fn a_bad_duration_names_its_line() {
    let (err, shown) = error_after(|t| t.replace("commit_interval: 1s", "commit_interval: often"));
    let p = &err.problems()[0];
    assert_eq!(
        p.line,
        line_of(&iot_text(), "commit_interval: 1s"),
        "{shown}"
    );
    assert!(p.fix.contains("30s"), "{shown}");
}

#[test]
fn a_missing_schema_file_is_reported() {
    let (err, shown) = error_after(|t| {
        t.replace(
            "reader_schema: ../schemas/telemetry-v2.avsc",
            "reader_schema: ../schemas/nope.avsc",
        )
    });
    assert_eq!(
        err.problems()[0].key,
        "stages.validate.reader_schema",
        "{shown}"
    );
}

#[test]
fn an_unset_variable_without_default_is_named() {
    let text = iot_text().replace("${SLUICE_BROKERS:-127.0.0.1:19092}", "${SLUICE_NO_SUCH}");
    let err = load_str(&iot_path(), &text, &no_env).unwrap_err();
    assert!(err.to_string().contains("SLUICE_NO_SUCH"), "{err}");
}

#[test]
fn min_insync_replicas_above_the_replication_factor_is_rejected() {
    let (err, shown) = error_after(|t| {
        t.replace(
            "${SLUICE_MIN_INSYNC_REPLICAS:-2}",
            "${SLUICE_MIN_INSYNC_REPLICAS:-4}",
        )
    });
    let p = &err.problems()[0];
    assert_eq!(p.key, "topic_defaults.min_insync_replicas", "{shown}");
    assert_eq!(
        p.line,
        line_of(
            &iot_text(),
            "min_insync_replicas: ${SLUICE_MIN_INSYNC_REPLICAS"
        ),
        "{shown}"
    );
    assert!(
        p.message
            .contains("min_insync_replicas 4 with replication 3"),
        "{shown}"
    );
    assert!(
        p.fix.contains("between 1 and the replication factor (3)"),
        "{shown}"
    );
    assert!(shown.contains(&format!("iot.yaml:{}:", p.line)), "{shown}");
}

#[test]
fn a_topic_overriding_min_insync_replicas_is_checked_against_its_own_replication() {
    let (err, shown) = error_after(|t| {
        t.replace(
            "telemetry.dlq:   { partitions: 1 }",
            "telemetry.dlq:   { partitions: 1, replication: 1, min_insync_replicas: 0 }",
        )
    });
    assert_eq!(err.problems().len(), 1, "{shown}");
    let p = &err.problems()[0];
    assert_eq!(p.key, "topics.telemetry.dlq.min_insync_replicas", "{shown}");
    assert_eq!(p.line, line_of(&iot_text(), "telemetry.dlq:"), "{shown}");
    assert!(
        p.message
            .contains("min_insync_replicas 0 with replication 1"),
        "{shown}"
    );
}

#[test]
fn the_reference_topology_takes_durability_from_the_environment() {
    let env = |k: &str| match k {
        "SLUICE_REPLICATION" | "SLUICE_MIN_INSYNC_REPLICAS" => Some("1".to_string()),
        _ => None,
    };
    let local = load_str(&iot_path(), &iot_text(), &env).unwrap_or_else(|e| panic!("{e}"));
    let production = load_str(&iot_path(), &iot_text(), &no_env).unwrap_or_else(|e| panic!("{e}"));
    for (loaded, want) in [(local, (1, 1)), (production, (3, 2))] {
        for p in loaded.topology.topic_plans() {
            assert_eq!((p.replication, p.min_insync_replicas), want, "{}", p.name);
        }
    }
}
