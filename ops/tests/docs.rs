//! docs/TOPOLOGY.md cannot drift from the code: every operator kind, window option,
//! aggregation and expression function the code accepts is documented there.

use sluice_ops::op::{detect, suppress, validate, KINDS};
use sluice_ops::window::{AggFn, WindowSpec};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TOPOLOGY.md");
    std::fs::read_to_string(path).expect("docs/TOPOLOGY.md exists")
}

/// The text of the section under `heading` (up to the next heading of its level or above).
fn section(doc: &str, heading: &str) -> String {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/TOPOLOGY.md has no `{heading}`"));
    let level = heading.chars().take_while(|c| *c == '#').count();
    let rest = &doc[start + heading.len()..];
    let end = rest
        .lines()
        .scan(0usize, |off, l| {
            let here = *off;
            *off += l.len() + 1;
            Some((here, l))
        })
        .find(|(_, l)| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level && l.chars().nth(hashes) == Some(' ')
        })
        .map_or(rest.len(), |(off, _)| off);
    rest[..end].to_string()
}

/// The keys a `deny_unknown_fields` struct accepts, as serde lists them.
fn keys_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let err = match serde_yaml::from_str::<T>("__no_such_key__: 1") {
        Ok(_) => panic!("an unknown key must be refused"),
        Err(e) => e.to_string(),
    };
    let i = err.find("expected").expect("serde lists the expected keys");
    err[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_operator_kind_has_a_section() {
    let doc = doc();
    for k in KINDS {
        let heading = format!("### `{}`", k.name());
        assert!(doc.contains(&heading), "docs/TOPOLOGY.md lacks `{heading}`");
    }
}

#[test]
fn every_window_option_is_documented() {
    let text = section(&doc(), "### `window`");
    let mut keys = keys_of::<WindowSpec>();
    assert!(keys.contains(&"grace".to_string()), "{keys:?}");
    keys.extend(["timestamp", "by", "aggregate"].map(String::from));
    for key in keys {
        assert!(
            text.contains(&format!("| `{key}` |")),
            "the window section of docs/TOPOLOGY.md has no row for `{key}`"
        );
    }
}

#[test]
fn every_aggregation_is_documented() {
    let text = section(&doc(), "### `window`");
    for name in AggFn::NAMES {
        assert!(
            text.contains(&format!("`{name}(")) || text.contains(&format!("`{name}`")),
            "the window section of docs/TOPOLOGY.md does not mention the aggregation `{name}`"
        );
    }
}

#[test]
fn every_expression_function_is_documented() {
    let text = section(&doc(), "## Expressions");
    let mut n = 0;
    for (name, _) in sluice_ops::expr::functions() {
        n += 1;
        assert!(
            text.contains(&format!("`{name}(")),
            "the expressions section of docs/TOPOLOGY.md does not mention `{name}(`"
        );
    }
    assert!(n > 10, "the function list is read from the code");
    for varargs in ["coalesce", "least", "greatest", "concat"] {
        assert!(text.contains(&format!("`{varargs}(")), "{varargs}");
    }
}

/// The keys of `spec`'s struct are the module's `KEYS` (what its did-you-mean offers), and
/// each has a row in the operator's section.
fn options_are_documented<T: serde::de::DeserializeOwned>(op: &str, keys: &[&str]) {
    let serde_keys = keys_of::<T>();
    assert_eq!(serde_keys, keys, "{op}: KEYS and the spec struct disagree");
    let text = section(&doc(), &format!("### `{op}`"));
    for key in keys {
        assert!(
            text.contains(&format!("| `{key}` |")),
            "the {op} section of docs/TOPOLOGY.md has no row for `{key}`"
        );
    }
}

#[test]
fn every_validate_option_is_documented() {
    options_are_documented::<validate::ValidateSpec>("validate", validate::KEYS);
    let text = section(&doc(), "### `validate`");
    for class in [
        "missing_field",
        "out_of_range",
        "clock_skew",
        "null_timestamp",
    ] {
        assert!(text.contains(&format!("`{class}`")), "class `{class}`");
    }
}

#[test]
fn every_detect_option_is_documented() {
    options_are_documented::<detect::DetectSpec>("detect", detect::KEYS);
    let text = section(&doc(), "### `detect`");
    for kind in sluice_detectors::DetectorSpec::all() {
        assert!(
            text.contains(&format!("`{}`", kind.name())),
            "detector `{}`",
            kind.name()
        );
    }
}

#[test]
fn every_sink_kind_has_a_section() {
    let text = section(&doc(), "## Sinks");
    for k in sluice_ops::sink::KINDS {
        let heading = format!("### `{}`", k.name());
        assert!(
            text.contains(&heading),
            "docs/TOPOLOGY.md's Sinks lack `{heading}`"
        );
    }
}

#[test]
fn every_questdb_option_is_documented() {
    use sluice_ops::sink::questdb;
    options_are_documented::<questdb::QuestdbSpec>("questdb", questdb::KEYS);
}

#[test]
fn every_s3_parquet_option_is_documented() {
    use sluice_ops::sink::s3_parquet;
    options_are_documented::<s3_parquet::S3ParquetSpec>("s3_parquet", s3_parquet::KEYS);
    let text = section(&doc(), "### `s3_parquet`");
    for g in ["hour", "day", "month", "year", "none"] {
        assert!(text.contains(&format!("`{g}`")), "granularity `{g}`");
    }
}

#[test]
fn every_suppress_option_is_documented() {
    options_are_documented::<suppress::SuppressSpec>("suppress", suppress::KEYS);
}

#[test]
fn every_ranges_by_option_is_documented() {
    assert_eq!(
        keys_of::<validate::RangesBySpec>(),
        validate::RANGES_BY_KEYS,
        "RANGES_BY_KEYS and the spec struct disagree"
    );
    let text = section(&doc(), "### `validate`");
    let row = text
        .lines()
        .find(|l| l.starts_with("| `ranges_by` |"))
        .expect("a row for `ranges_by`");
    for key in validate::RANGES_BY_KEYS {
        assert!(
            row.contains(&format!("`{key}`")),
            "the `ranges_by` row of docs/TOPOLOGY.md does not mention `{key}`"
        );
    }
}
