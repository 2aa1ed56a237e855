//! Pipeline stages are checked offline against their input schema: every mistake in an
//! operator list gets the file, the line of the operator's key, the key path and a fix, all
//! problems at once.

use std::path::{Path, PathBuf};

use sluice_topology::{load, load_str, StageSpec, TopologyError};

fn energy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/energy/energy.yaml")
}

fn energy_text() -> String {
    std::fs::read_to_string(energy_path()).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// The problems after replacing `from` by `to` in the example: (line, key, message, fix).
fn problems_after(edits: &[(&str, &str)]) -> (String, Vec<(usize, String, String, String)>) {
    let mut text = energy_text();
    for (from, to) in edits {
        assert!(text.contains(from), "the example has `{from}`");
        text = text.replacen(from, to, 1);
    }
    let err = load_str(&energy_path(), &text, &no_env).expect_err("the edit must be rejected");
    let TopologyError::Invalid { problems, .. } = &err else {
        panic!("not a validation error: {err}");
    };
    let out = problems
        .iter()
        .map(|p| (p.line, p.key.clone(), p.message.clone(), p.fix.clone()))
        .collect();
    (text, out)
}

#[test]
fn the_energy_example_is_valid_and_its_stores_are_planned() {
    let loaded = load(&energy_path()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    // key_by [site] before a window cuts site_energy in two: the part after the cut is a
    // stage of its own reading a repartition topic.
    let names: Vec<&str> = t.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "site_energy",
            "site_energy-rekeyed",
            "demand",
            "demand-rekeyed",
            "site_energy_tsdb",
            "demand_tsdb"
        ]
    );
    let StageSpec::Pipeline(first) = t.stage("site_energy").unwrap() else {
        panic!("site_energy is a pipeline");
    };
    assert_eq!(first.writes(), Some("energy-site_energy-repartition"));
    let StageSpec::Pipeline(p) = t.stage("site_energy-rekeyed").unwrap() else {
        panic!("site_energy-rekeyed is a pipeline");
    };
    assert_eq!(p.input, "energy-site_energy-repartition");
    assert_eq!(p.writes(), Some("energy.site_kwh"));
    let plan = p.plan();
    let fields: Vec<&str> = plan
        .chain
        .output
        .value
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "site",
            "window_start",
            "window_end",
            "energy_kwh",
            "meters",
            "readings"
        ]
    );
    assert_eq!(plan.output_subject, "energy.site_kwh-value");
    // The repartition topic is planned like the input: same partitions.
    let topics = t.topic_plans();
    let repartition = topics
        .iter()
        .find(|p| p.name == "energy-site_energy-repartition")
        .expect("the repartition topic is created");
    assert_eq!(repartition.partitions, 4);
    // The runner's `ids`, then the window's store, named after its position and kind.
    let names: Vec<&str> = topics.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"energy-site_energy-rekeyed-4-window-windows-changelog"),
        "{names:?}"
    );
    assert!(names.contains(&"energy-site_energy-ids-changelog"));
    assert!(names.contains(&"energy-site_energy-rekeyed-ids-changelog"));
}

#[test]
fn a_misspelt_field_names_the_operator_line_and_suggests_the_field() {
    let (text, problems) = problems_after(&[("power_w >= 0", "pwer_w >= 0")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (line, key, message, fix) = &problems[0];
    assert_eq!(*line, line_of(&text, "pwer_w >= 0"));
    assert_eq!(key, "stages.site_energy.operators[1].filter");
    assert!(message.contains("no field `pwer_w`"), "{message}");
    assert!(fix.contains("did you mean `power_w`?"), "{fix}");
}

#[test]
fn every_problem_of_every_stage_is_reported_at_once() {
    let (text, problems) = problems_after(&[
        ("power_w >= 0", "pwer_w >= 0"),   // site_energy's filter
        ("sum(kwh)", "sum(meter_id)"),     // a sum over a string, after the broken filter
        ("kind: hopping", "kind: hoping"), // demand's window kind
        ("peak_w: max(power_w)", "peak_w: maxx(power_w)"),
    ]);
    let keys: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(
        keys,
        [
            "stages.site_energy.operators[1].filter",
            "stages.site_energy.operators[4].window.aggregate.energy_kwh",
            "stages.demand.operators[4].window.kind",
            "stages.demand.operators[4].window.aggregate.peak_w.fn",
        ],
        "{problems:#?}"
    );
    let sum = &problems[1];
    assert_eq!(sum.0, line_of(&text, "sum(meter_id)"));
    assert!(sum.2.contains("sum needs a number"), "{}", sum.2);
    assert!(sum.2.contains("string"), "{}", sum.2);
    let kind = &problems[2];
    assert_eq!(kind.0, line_of(&text, "kind: hoping"));
    assert!(kind.3.contains("did you mean `hopping`?"), "{}", kind.3);
}

#[test]
fn an_aggregate_function_typo_and_a_non_boolean_filter_are_explained() {
    let (_, problems) = problems_after(&[
        ("peak_w: max(power_w)", "peak_w: maxx(power_w)"),
        (
            "- filter: \"coalesce(site, registered_site) IS NOT NULL\"",
            "- filter: \"power_w * 2\"",
        ),
    ]);
    let filter = problems
        .iter()
        .find(|p| p.1 == "stages.demand.operators[1].filter")
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert!(filter.2.contains("not a boolean"), "{}", filter.2);
    let agg = problems
        .iter()
        .find(|p| {
            p.1.starts_with("stages.demand.operators[4].window.aggregate")
        })
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert!(agg.3.contains("max"), "{}", agg.3);
}

#[test]
fn an_unknown_operator_and_an_unparsable_expression_are_named() {
    let (text, problems) = problems_after(&[
        (
            "- filter: \"coalesce(site, registered_site) IS NOT NULL\"",
            "- filtr: \"coalesce(site, registered_site) IS NOT NULL\"",
        ),
        (
            "kwh: power_w * interval_s / 3600000.0",
            "kwh: power_w * / 3600000.0",
        ),
    ]);
    let unknown = problems
        .iter()
        .find(|p| p.1 == "stages.demand.operators[1].filtr")
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert_eq!(unknown.0, line_of(&text, "filtr:"));
    assert!(
        unknown.3.contains("did you mean `filter`?"),
        "{}",
        unknown.3
    );
    let parse = problems
        .iter()
        .find(|p| p.1 == "stages.site_energy.operators[2].select.kwh")
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert_eq!(parse.0, line_of(&text, "kwh: power_w * /"));
}

#[test]
fn a_pipeline_input_needs_a_schema() {
    let (_, problems) = problems_after(&[(
        "energy.readings: { partitions: 4, subject: energy.readings-value, schema: meter-reading.avsc }",
        "energy.readings: { partitions: 4 }",
    )]);
    assert!(
        problems
            .iter()
            .any(|p| p.1 == "stages.site_energy.input" && p.3.contains("schema:")),
        "{problems:#?}"
    );
}
