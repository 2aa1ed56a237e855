//! A pipeline's `join` is checked offline against the table topic's schema, and the topic a
//! join reads is planned as a compacted topic.

use std::path::{Path, PathBuf};

use sluice_topology::{load, load_str, TopologyError};

fn factory_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/factory/factory.yaml")
}

#[test]
fn the_factory_example_plans_its_table_topic_compacted() {
    let loaded = load(&factory_path()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.topology;
    assert_eq!(
        t.table_topics().into_iter().collect::<Vec<_>>(),
        ["factory.machines"]
    );
    let plans = t.topic_plans();
    let machines = plans.iter().find(|p| p.name == "factory.machines").unwrap();
    assert!(
        machines
            .configs
            .contains(&("cleanup.policy", "compact".to_string())),
        "{machines:?}"
    );
    let readings = plans.iter().find(|p| p.name == "factory.readings").unwrap();
    assert!(readings.configs.is_empty(), "{readings:?}");
    // Each join keeps its snapshot in a store of its stage.
    let stores: Vec<String> = t
        .stage_plans()
        .iter()
        .flat_map(|s| s.stores.iter().map(|st| st.changelog.clone()))
        .collect();
    assert!(
        stores.contains(&"factory-over_limit-0-join-snapshot-changelog".to_string()),
        "{stores:?}"
    );
}

#[test]
fn a_join_mistake_names_the_line_the_key_and_the_fix() {
    let text = std::fs::read_to_string(factory_path()).unwrap();
    let text = text.replacen(
        "max_temperature_c: limits.max_temperature_c",
        "max_temperature_c: limits.max_temp_c",
        1,
    );
    let text = text.replacen(
        "fields: [line] }",
        "fields: [line], scope: co_partitioned }",
        1,
    );
    let no_env = |_: &str| None;
    let err = load_str(&factory_path(), &text, &no_env).expect_err("rejected");
    let TopologyError::Invalid { problems, .. } = &err else {
        panic!("not a validation error: {err}");
    };
    let msg = err.to_string();
    assert_eq!(problems.len(), 2, "{msg}");
    let field = &problems[0];
    assert_eq!(
        field.key,
        "stages.over_limit.operators[0].join.fields.max_temperature_c"
    );
    assert_eq!(
        field.line,
        text.lines()
            .position(|l| l.contains("limits.max_temp_c"))
            .unwrap()
            + 1
    );
    assert!(
        field.fix.contains("did you mean `max_temperature_c`"),
        "{msg}"
    );
    // The registry has 1 partition, the readings 4.
    let scope = &problems[1];
    assert_eq!(scope.key, "stages.line_temperature.operators[0].join.scope");
    assert!(
        scope.message.contains("1") && scope.message.contains("4"),
        "{msg}"
    );
}
