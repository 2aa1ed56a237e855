//! A pipeline's `branches:` write more topics from one pass: checked offline like the
//! stage's own operators, numbered after them, and refused where they cannot work.

use std::path::{Path, PathBuf};

use sluice_topology::{load, load_str, StageSpec, TopologyError};

fn factory_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/factory/factory.yaml")
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The problems after the edits of the factory example: (line, key, message, fix).
fn problems_after(edits: &[(&str, &str)]) -> (String, Vec<(usize, String, String, String)>) {
    let mut text = std::fs::read_to_string(factory_path()).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "the example has `{from}`");
        text = text.replacen(from, to, 1);
    }
    let err = load_str(&factory_path(), &text, &no_env).expect_err("the edit must be rejected");
    let TopologyError::Invalid { problems, .. } = &err else {
        panic!("not a validation error: {err}");
    };
    let out = problems
        .iter()
        .map(|p| (p.line, p.key.clone(), p.message.clone(), p.fix.clone()))
        .collect();
    (text, out)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

const SUPPRESS: &str =
    "- suppress: { by: machine_id, for: 5m, timestamp: ts, count_field: suppressed }";

#[test]
fn a_branch_is_planned_after_the_stage_s_operators_with_a_schema_of_its_own() {
    let loaded = load(&factory_path()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    let StageSpec::Pipeline(p) = t.stage("machine_alerts").unwrap() else {
        panic!("a pipeline");
    };
    let outputs: Vec<(&str, &str)> = t.stage("machine_alerts").map_or(vec![], |s| s.outputs());
    assert_eq!(
        outputs,
        [
            ("output", "factory.anomalies"),
            ("branches", "factory.alerts"),
            ("dead_letter", "factory.dlq")
        ]
    );
    let plan = p.plan();
    assert_eq!(plan.branches.len(), 1);
    let b = &plan.branches[0];
    assert_eq!(b.output, "factory.alerts");
    assert_eq!(b.output_subject, "factory.alerts-value");
    assert_eq!(b.chain.first, 4, "after detect, detect, filter, select");
    // The branch's records are the stage's with the count appended.
    let stage_fields: Vec<&str> = plan
        .chain
        .output
        .value
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    let branch_fields: Vec<&str> = b
        .chain
        .output
        .value
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(branch_fields[..stage_fields.len()], stage_fields[..]);
    assert_eq!(branch_fields[stage_fields.len()..], ["suppressed"]);
    let apache_avro::Schema::Record(r) = b.output_schema else {
        panic!("a record schema");
    };
    assert_eq!(
        r.name.fullname(None),
        "sluice.factory.machine_alerts_branch1"
    );
    // Stores: the runner's, the stage's operators', then the branch's, by position.
    assert_eq!(
        t.stage("machine_alerts").unwrap().stores(),
        [
            "ids",
            "0-detect-detectors",
            "1-detect-detectors",
            "4-suppress-suppressed"
        ]
    );
    let topics: Vec<String> = t.topic_plans().into_iter().map(|p| p.name).collect();
    assert!(
        topics.contains(&"factory-machine_alerts-4-suppress-suppressed-changelog".to_string()),
        "{topics:?}"
    );
}

#[test]
fn a_branch_s_mistakes_name_its_line_and_key() {
    let (text, problems) = problems_after(&[(
        SUPPRESS,
        "- suppress: { by: machine_di, for: 5m, timestamp: ts, count_field: suppressed }",
    )]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (line, key, message, fix) = &problems[0];
    assert_eq!(*line, line_of(&text, "by: machine_di"));
    assert_eq!(
        key,
        "stages.machine_alerts.branches[0].operators[0].suppress.by"
    );
    assert!(message.contains("no field `machine_di`"), "{message}");
    assert!(fix.contains("did you mean `machine_id`?"), "{fix}");

    // The branch's output is the stage's own.
    let (text, problems) = problems_after(&[(
        "        output: factory.alerts",
        "        output: factory.anomalies",
    )]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (line, key, message, fix) = &problems[0];
    assert_eq!(key, "stages.machine_alerts.branches[0].output");
    assert_eq!(*line, line_of(&text, "        output: factory.anomalies"));
    assert_eq!(
        message,
        "`factory.anomalies` is also the stage's `output`: one stage writes a topic once, with one schema"
    );
    assert_eq!(fix, "give the branch a topic of its own");

    // A misspelt key of a branch.
    let (_, problems) = problems_after(&[(
        "        output: factory.alerts",
        "        outptu: factory.alerts",
    )]);
    let keys: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("stages.machine_alerts.branches")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.3.contains("did you mean `output`?")),
        "{problems:?}"
    );
}

#[test]
fn a_branch_cannot_repartition() {
    let (_, problems) = problems_after(&[(
        SUPPRESS,
        "- key_by: [temperature_anomaly]\n          - suppress: { for: 5m }",
    )]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (_, key, message, fix) = &problems[0];
    assert_eq!(key, "stages.machine_alerts.branches[0].operators[0].key_by");
    assert!(message.starts_with("a branch cannot re-key"), "{message}");
    assert!(fix.contains("a stage of its own"), "{fix}");
    // A key_by with nothing stateful after it only sets the key: fine.
    let text = std::fs::read_to_string(factory_path()).unwrap().replacen(
        SUPPRESS,
        "- key_by: [temperature_anomaly]",
        1,
    );
    load_str(&factory_path(), &text, &no_env).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_stage_cut_at_a_key_by_keeps_its_branches_in_its_last_part() {
    // line_temperature is cut at its key_by: give it a branch.
    let text = std::fs::read_to_string(factory_path()).unwrap().replacen(
        "    output: factory.line_temperature",
        "    output: factory.line_temperature\n    branches:\n      - operators: [{ filter: \"readings > 2\" }]\n        output: factory.busy_lines",
        1,
    );
    let text = text.replacen(
        "  factory.dlq: { partitions: 1 }",
        "  factory.dlq: { partitions: 1 }\n  factory.busy_lines: { partitions: 4 }",
        1,
    );
    let loaded = load_str(&factory_path(), &text, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    let first = t.stage("line_temperature").unwrap();
    assert!(
        !first
            .outputs()
            .iter()
            .any(|(_, o)| *o == "factory.busy_lines"),
        "{:?}",
        first.outputs()
    );
    let last = t.stage("line_temperature-rekeyed").unwrap();
    assert!(
        last.outputs().contains(&("branches", "factory.busy_lines")),
        "{:?}",
        last.outputs()
    );
    let StageSpec::Pipeline(p) = last else {
        panic!()
    };
    assert_eq!(
        p.plan().branches[0].chain.first,
        4,
        "after join, filter, key_by, window"
    );
}

#[test]
fn a_stage_may_write_only_through_its_branches() {
    // The anomalies as a branch too: the stage itself writes no topic.
    let text = std::fs::read_to_string(factory_path()).unwrap().replacen(
        "    output: factory.anomalies           # every anomalous reading\n    branches:\n",
        "    branches:\n      - operators: []\n        output: factory.anomalies\n",
        1,
    );
    let loaded = load_str(&factory_path(), &text, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let s = loaded.topology.stage("machine_alerts").unwrap();
    assert_eq!(
        s.outputs(),
        [
            ("branches", "factory.anomalies"),
            ("branches", "factory.alerts"),
            ("dead_letter", "factory.dlq")
        ]
    );
    let StageSpec::Pipeline(p) = s else { panic!() };
    assert_eq!(p.writes(), None);
    assert_eq!(p.port_topics(), ["factory.anomalies", "factory.alerts"]);
    assert_eq!(
        p.plan().branches[1].chain.first,
        4,
        "an empty branch numbers nothing"
    );

    // Without branches, output or sink, the stage writes nothing: refused.
    let text = std::fs::read_to_string(factory_path()).unwrap().replacen(
        "    output: factory.anomalies           # every anomalous reading\n    branches:\n      # One alert per machine per incident: its first anomaly, then none for 5 minutes of\n      # event time; the next alert counts the anomalies suppressed since the last.\n      - operators:\n          - suppress: { by: machine_id, for: 5m, timestamp: ts, count_field: suppressed }\n        output: factory.alerts\n",
        "",
        1,
    );
    let err = load_str(&factory_path(), &text, &no_env).expect_err("refused");
    assert!(
        err.to_string().contains("needs `output` (a topic), `sink`"),
        "{err}"
    );
}

#[test]
fn a_branch_keeps_no_state_by_a_key_the_stage_set_without_moving_records() {
    let (_, problems) = problems_after(&[(
        "      - select:\n          machine_id: machine_id\n          ts: ts\n",
        "      - key_by: [temperature_anomaly]\n      - select:\n          machine_id: machine_id\n          ts: ts\n",
    )]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (_, key, message, _) = &problems[0];
    assert_eq!(
        key,
        "stages.machine_alerts.branches[0].operators[0].suppress"
    );
    assert!(
        message.contains("the stage's `key_by` (operators[3]) re-keyed the records"),
        "{message}"
    );
}

#[test]
fn a_branch_s_join_and_declared_schema_count_like_the_stage_s() {
    // A join in a branch: its table is among the stage's lookups (loaded by `sluice run`).
    let text = std::fs::read_to_string(factory_path()).unwrap().replacen(
        SUPPRESS,
        "- join: { table: factory.machines, on: machine_id, fields: [line] }",
        1,
    );
    let loaded = load_str(&factory_path(), &text, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let Some(StageSpec::Pipeline(p)) = loaded.topology.stage("machine_alerts") else {
        panic!()
    };
    assert!(p.plan().chain.lookups().is_empty());
    let tables: Vec<String> = p.plan().lookups().into_iter().map(|u| u.topic).collect();
    assert_eq!(tables, ["factory.machines"]);

    // A branch writing a topic with a declared schema must write exactly that schema.
    let (_, problems) = problems_after(&[(
        "  factory.alerts: { partitions: 4 }",
        "  factory.alerts: { partitions: 4, schema: machine-reading.avsc }",
    )]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].1, "stages.machine_alerts.branches[0].output");
    assert!(
        problems[0].2.contains("do not have its declared schema"),
        "{}",
        problems[0].2
    );
}
