//! The evolution matrix: Avro resolution rules case by case, and every compatibility level
//! on the telemetry v1/v2 pair in both directions.

use apache_avro::Schema;
use sluice_schemas::compat::{can_read, check_level, Level};

const V1: &str = include_str!("../telemetry-v1.avsc");
const V2: &str = include_str!("../telemetry-v2.avsc");

fn rec(fields: &str) -> Schema {
    Schema::parse_str(&format!(
        r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
    ))
    .unwrap()
}

fn reads(reader: &Schema, writer: &Schema) -> bool {
    can_read(reader, writer).is_empty()
}

const LEVELS: [Level; 7] = [
    Level::Backward,
    Level::BackwardTransitive,
    Level::Forward,
    Level::ForwardTransitive,
    Level::Full,
    Level::FullTransitive,
    Level::None,
];

#[test]
fn telemetry_v1_to_v2_at_every_level() {
    let v1 = Schema::parse_str(V1).unwrap();
    let v2 = Schema::parse_str(V2).unwrap();
    // Registering v2 after v1: v2 reads v1 data (alias, promotion, default) but v1 cannot
    // read v2 data (no event_time alias on v1's side, double cannot narrow to float).
    let expected_v2_after_v1 = [true, true, false, false, false, false, true];
    // Registering v1 after v2: the reverse.
    let expected_v1_after_v2 = [false, false, true, true, false, false, true];
    for (i, level) in LEVELS.iter().enumerate() {
        let ok = check_level(*level, &v2, &[(1, &v1)]).is_empty();
        assert_eq!(ok, expected_v2_after_v1[i], "v2 after v1 at {level}");
        let ok = check_level(*level, &v1, &[(1, &v2)]).is_empty();
        assert_eq!(ok, expected_v1_after_v2[i], "v1 after v2 at {level}");
    }
    let problems = check_level(Level::Forward, &v2, &[(1, &v1)]);
    let text = problems.join("\n");
    assert!(text.contains("/Telemetry/ts"), "{text}");
    assert!(text.contains("/Telemetry/value"), "{text}");
}

#[test]
fn added_and_removed_fields() {
    let old = rec(r#"{"name":"a","type":"int"}"#);
    let added_default =
        rec(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":"x"}"#);
    let added_plain = rec(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
    assert!(reads(&added_default, &old));
    assert!(reads(&old, &added_default), "old readers ignore new fields");
    assert!(!reads(&added_plain, &old));
    let msg = can_read(&added_plain, &old)[0].to_string();
    assert!(msg.contains("/R/b") && msg.contains("no default"), "{msg}");
    // Removing a field: new readers ignore it; old readers need its default.
    let removed = rec(r#"{"name":"b","type":"string","default":"x"}"#);
    assert!(reads(
        &rec(r#"{"name":"a","type":"int","default":0}"#),
        &removed
    ));
    assert!(!reads(&old, &removed));
}

#[test]
fn aliases_rename_fields_and_records() {
    let old = rec(r#"{"name":"ts","type":"long"}"#);
    let renamed = rec(r#"{"name":"event_time","aliases":["ts"],"type":"long"}"#);
    assert!(reads(&renamed, &old));
    assert!(!reads(&old, &renamed));
    let other_name = Schema::parse_str(
        r#"{"type":"record","name":"S","aliases":["R"],"fields":[{"name":"ts","type":"long"}]}"#,
    )
    .unwrap();
    assert!(reads(&other_name, &old));
    assert!(!reads(&old, &other_name), "R has no alias S");
}

#[test]
fn promotions() {
    let t = |ty: &str| rec(&format!(r#"{{"name":"x","type":"{ty}"}}"#));
    let order = ["int", "long", "float", "double"];
    for (i, w) in order.iter().enumerate() {
        for (j, r) in order.iter().enumerate() {
            assert_eq!(reads(&t(r), &t(w)), j >= i, "{w} -> {r}");
        }
    }
    assert!(reads(&t("string"), &t("bytes")));
    assert!(reads(&t("bytes"), &t("string")));
    assert!(!reads(&t("string"), &t("int")));
    assert!(!reads(&t("boolean"), &t("int")));
}

#[test]
fn enums() {
    let e = |syms: &str, default: &str| {
        rec(&format!(
            r#"{{"name":"x","type":{{"type":"enum","name":"E","symbols":[{syms}]{default}}}}}"#
        ))
    };
    let ab = e(r#""A","B""#, "");
    let abc = e(r#""A","B","C""#, "");
    let ab_default = e(r#""A","B""#, r#","default":"A""#);
    assert!(reads(&abc, &ab), "reader with more symbols");
    assert!(!reads(&ab, &abc), "writer symbol C unknown to reader");
    assert!(reads(&ab_default, &abc), "reader default covers C");
}

#[test]
fn unions() {
    let plain = rec(r#"{"name":"x","type":"string"}"#);
    let nullable = rec(r#"{"name":"x","type":["null","string"]}"#);
    let wide = rec(r#"{"name":"x","type":["null","string","long"]}"#);
    let promoted = rec(r#"{"name":"x","type":["null","double"]}"#);
    let ints = rec(r#"{"name":"x","type":["null","int"]}"#);
    assert!(reads(&nullable, &plain));
    assert!(
        !reads(&plain, &nullable),
        "the null branch has nowhere to go"
    );
    assert!(reads(&wide, &nullable));
    assert!(!reads(&nullable, &wide));
    assert!(
        reads(&promoted, &ints),
        "int branch promotes into double branch"
    );
    assert!(!reads(&ints, &promoted));
}

#[test]
fn arrays_maps_and_nested_records() {
    let arr = |t: &str| {
        rec(&format!(
            r#"{{"name":"x","type":{{"type":"array","items":"{t}"}}}}"#
        ))
    };
    let map = |t: &str| {
        rec(&format!(
            r#"{{"name":"x","type":{{"type":"map","values":"{t}"}}}}"#
        ))
    };
    assert!(reads(&arr("long"), &arr("int")));
    assert!(!reads(&arr("int"), &arr("long")));
    assert!(reads(&map("double"), &map("float")));
    assert!(!reads(&map("float"), &map("string")));
    let nested = |inner: &str| {
        rec(&format!(
            r#"{{"name":"n","type":{{"type":"record","name":"Inner","fields":[{inner}]}}}}"#
        ))
    };
    let old = nested(r#"{"name":"a","type":"int"}"#);
    let new_ok = nested(r#"{"name":"a","type":"long"},{"name":"b","type":"int","default":1}"#);
    let new_bad = nested(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#);
    assert!(reads(&new_ok, &old));
    assert!(!reads(&new_bad, &old));
    assert!(
        can_read(&new_bad, &old)[0].path.ends_with("/n/b"),
        "{:?}",
        can_read(&new_bad, &old)
    );
    assert!(!reads(&arr("int"), &map("int")));
}

#[test]
fn recursive_types_terminate() {
    let list = Schema::parse_str(
        r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},
            {"name":"next","type":["null","Node"]}]}"#,
    )
    .unwrap();
    let list_long = Schema::parse_str(
        r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"long"},
            {"name":"next","type":["null","Node"]}]}"#,
    )
    .unwrap();
    assert!(reads(&list_long, &list));
    assert!(!reads(&list, &list_long));
}

#[test]
fn transitive_levels_check_every_version() {
    let v1 = rec(r#"{"name":"a","type":"string"}"#);
    let v2 = rec(r#"{"name":"c","type":"int","default":0}"#);
    let v3 = rec(r#"{"name":"a","type":"int","default":0}"#);
    let history = [(1, &v1), (2, &v2)];
    assert!(check_level(Level::Backward, &v3, &history).is_empty());
    let problems = check_level(Level::BackwardTransitive, &v3, &history);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("version 1") && problems[0].contains("/R/a"),
        "{problems:?}"
    );
    assert!(check_level(Level::None, &v3, &history).is_empty());
}

#[test]
fn levels_parse_like_confluent() {
    for level in LEVELS {
        assert_eq!(level.as_str().parse::<Level>().unwrap(), level);
        assert_eq!(
            level.as_str().to_lowercase().parse::<Level>().unwrap(),
            level
        );
    }
    assert!("SIDEWAYS".parse::<Level>().is_err());
}
