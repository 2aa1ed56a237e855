//! The `validate` operator through `Chain::plan` over the energy example's meter readings:
//! what it rejects (with which class), what it re-stamps, and problems keyed by their place.

use apache_avro::types::Value;
use sluice_ops::op::{Record, Rejection};

mod common;
use common::{energy_chain, energy_input};

const T0: i64 = 1_772_359_200_000; // 2026-03-01T10:00:00Z
const MIN: i64 = 60_000;

/// A reading: site, power, voltage, meter clock `ts` and broker time `at` (both ms).
fn reading(site: Option<&str>, power_w: f64, voltage: Option<f64>, ts: i64, at: i64) -> Record {
    let opt = |v: Option<Value>| match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    Record {
        key: Some(b"m1".to_vec()),
        value: Value::Record(vec![
            ("meter_id".into(), Value::String("m1".into())),
            ("site".into(), opt(site.map(|s| Value::String(s.into())))),
            ("ts".into(), Value::TimestampMillis(ts)),
            ("power_w".into(), Value::Double(power_w)),
            ("voltage".into(), opt(voltage.map(Value::Double))),
            ("interval_s".into(), Value::Int(60)),
            ("phase".into(), Value::Enum(1, "L2".into())),
        ]),
        timestamp: at,
    }
}

const OPERATORS: &str = r#"
- validate:
    ranges:
      power_w: [0, 100000]
      voltage: { min: 180, max: 260 }
    required: site
    timestamp: ts
    max_future_skew: 15m
    max_past_age: 1d
- key_by: site
"#;

#[test]
fn bad_readings_are_dead_letters_with_their_class_and_skewed_clocks_are_restamped() {
    let c = energy_chain(OPERATORS).unwrap();
    assert!(c.stores().is_empty(), "validate keeps no state");
    assert_eq!(
        c.output.value,
        energy_input().value,
        "validate keeps the record type"
    );
    let mut run = c.build();
    let at = T0 + 30 * MIN;
    let cases = [
        // Good, with and without a voltage; at the limits.
        (reading(Some("A"), 1200.0, Some(231.0), at, at), None),
        (reading(Some("A"), 0.0, None, at + 15 * MIN, at), None),
        (
            reading(Some("A"), 100000.0, Some(260.0), at - 24 * 60 * MIN, at),
            None,
        ),
        // Uncommissioned meter.
        (
            reading(None, 1200.0, None, at, at),
            Some(("missing_field", "required field `site` is NULL")),
        ),
        (
            reading(Some("A"), -5.0, None, at, at),
            Some(("out_of_range", "`power_w` = -5 is below its min 0")),
        ),
        (
            reading(Some("A"), 250000.0, None, at, at),
            Some(("out_of_range", "`power_w` = 250000 is above its max 100000")),
        ),
        (
            reading(Some("A"), 100.0, Some(90.5), at, at),
            Some(("out_of_range", "`voltage` = 90.5 is below its min 180")),
        ),
        (
            reading(Some("A"), f64::INFINITY, None, at, at),
            Some(("out_of_range", "`power_w` = inf is not a finite number")),
        ),
    ];
    for (i, (rec, want)) in cases.iter().enumerate() {
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        run.process(rec.clone(), &mut out, &mut rejected).unwrap();
        match want {
            None => {
                assert!(rejected.is_empty(), "{i}: {rejected:?}");
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].value, rec.value, "{i}: unchanged");
                assert_eq!(out[0].key, Some(b"A".to_vec()), "the key_by after it ran");
            }
            Some((class, message)) => {
                assert!(out.is_empty(), "{i}");
                assert_eq!(
                    rejected,
                    [Rejection {
                        class,
                        message: message.to_string()
                    }],
                    "{i}"
                );
            }
        }
    }
    // A meter clock 2 hours fast and one 3 days slow: the broker's time replaces theirs.
    for ts in [at + 120 * MIN, at - 3 * 24 * 60 * MIN] {
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        run.process(
            reading(Some("B"), 10.0, None, ts, at),
            &mut out,
            &mut rejected,
        )
        .unwrap();
        assert!(rejected.is_empty());
        assert_eq!(out[0].value, reading(Some("B"), 10.0, None, at, at).value);
        assert_eq!(out[0].timestamp, at);
    }
}

#[test]
fn with_on_skew_reject_a_skewed_clock_is_a_dead_letter() {
    let c = energy_chain(
        "- validate: { timestamp: ts, max_future_skew: 15m, on_skew: reject }\n- filter: \"power_w > 0\"\n",
    )
    .unwrap();
    let mut run = c.build();
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    let at = T0;
    run.process(
        reading(None, 5.0, None, at + 16 * MIN, at),
        &mut out,
        &mut rejected,
    )
    .unwrap();
    run.process(
        reading(None, 5.0, None, at - 16 * MIN, at),
        &mut out,
        &mut rejected,
    )
    .unwrap();
    assert_eq!(out.len(), 1, "no past limit: an old reading passes");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].class, "clock_skew");
    assert_eq!(
        rejected[0].message,
        format!(
            "event time `ts` = {} is 16m ahead of the record timestamp {at}; max_future_skew is 15m",
            at + 16 * MIN
        )
    );
}

#[test]
fn problems_name_their_place_and_later_operators_are_still_checked() {
    let problems = energy_chain(
        "- validate:\n    ranges: { site: [0, 1], power: [0, 1], interval_s: [60, 1] }\n    required: [meter_id]\n    max_past_age: 1d\n    on_skw: reject\n- filter: \"powr_w > 0\"\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "[0].validate.on_skw",
            "[0].validate.ranges.site",
            "[0].validate.ranges.power",
            "[0].validate.ranges.interval_s",
            "[0].validate.required",
            "[0].validate.timestamp",
            "[1].filter",
        ]
    );
    let fixes: Vec<&str> = problems.iter().map(|p| p.fix.as_str()).collect();
    assert!(
        fixes[0].starts_with("did you mean `on_skew`?"),
        "{}",
        fixes[0]
    );
    assert_eq!(
        problems[1].message,
        "field `site` is a nullable string; a range needs a number"
    );
    assert!(
        fixes[1].contains("power_w, voltage, interval_s"),
        "{}",
        fixes[1]
    );
    assert!(fixes[2].contains("did you mean `power_w`?"), "{}", fixes[2]);
    assert!(
        problems[3].message.contains("[60, 1]"),
        "{}",
        problems[3].message
    );
    assert!(
        problems[4]
            .message
            .contains("`meter_id` is a string, never NULL"),
        "{}",
        problems[4].message
    );
    assert!(fixes[4].contains("site, voltage"), "{}", fixes[4]);
    assert_eq!(fixes[5], "add e.g. `timestamp: ts`");
    assert!(fixes[6].contains("power_w"), "{}", fixes[6]);
}

/// `reading` on another phase.
fn on_phase(mut rec: Record, phase: (i32, &str)) -> Record {
    if let Value::Record(fields) = &mut rec.value {
        fields[6].1 = Value::Enum(phase.0 as u32, phase.1.into());
    }
    rec
}

fn outcome(run: &mut sluice_ops::op::Running, rec: Record) -> Result<(), Rejection> {
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    run.process(rec.clone(), &mut out, &mut rejected).unwrap();
    match rejected.pop() {
        Some(r) => {
            assert!(out.is_empty());
            Err(r)
        }
        None => {
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].value, rec.value, "handed on unchanged");
            Ok(())
        }
    }
}

fn rejected(class: &str, message: &str) -> Result<(), Rejection> {
    Err(Rejection {
        class: Box::leak(class.to_string().into_boxed_str()),
        message: message.to_string(),
    })
}

#[test]
fn ranges_by_checks_a_value_against_the_range_its_other_field_picks() {
    let yaml = |unknown: &str| {
        format!(
            "- validate:\n    ranges_by:\n      field: phase\n      value: voltage\n      ranges: {{ L1: [220, 240], L2: {{ min: 180 }} }}\n{unknown}"
        )
    };
    let mut run = energy_chain(&yaml("")).unwrap().build();
    let at = T0;
    let l1 = (0, "L1");
    let l3 = (2, "L3");
    let r = |v: Option<f64>| reading(Some("A"), 10.0, v, at, at);
    assert_eq!(outcome(&mut run, on_phase(r(Some(230.0)), l1)), Ok(()));
    assert_eq!(outcome(&mut run, r(Some(900.0))), Ok(()), "L2 has no max");
    assert_eq!(
        outcome(&mut run, on_phase(r(Some(250.0)), l1)),
        rejected(
            "out_of_range",
            "`voltage` = 250 is above the max 240 for `L1`"
        )
    );
    assert_eq!(
        outcome(&mut run, r(Some(100.0))),
        rejected(
            "out_of_range",
            "`voltage` = 100 is below the min 180 for `L2`"
        )
    );
    assert_eq!(
        outcome(&mut run, on_phase(r(Some(230.0)), l3)),
        rejected(
            "unknown_phase",
            "`phase` = `L3` has no range in `ranges_by`"
        )
    );
    // Not finite comes first, as in the built-in validate; NULL is not checked.
    assert_eq!(
        outcome(&mut run, on_phase(r(Some(f64::NAN)), l3)),
        rejected("out_of_range", "`voltage` = NaN is not a finite number")
    );
    assert_eq!(outcome(&mut run, on_phase(r(None), l3)), Ok(()));

    let mut run = energy_chain(&yaml("      unknown: pass\n"))
        .unwrap()
        .build();
    assert_eq!(outcome(&mut run, on_phase(r(Some(230.0)), l3)), Ok(()));
    assert_eq!(
        outcome(&mut run, on_phase(r(Some(250.0)), l1)),
        rejected(
            "out_of_range",
            "`voltage` = 250 is above the max 240 for `L1`"
        )
    );
}

#[test]
fn ranges_by_a_string_field_treats_null_as_unknown() {
    let mut run = energy_chain(
        "- validate: { ranges_by: { field: site, value: power_w, ranges: { A: [0, 100], '7': [0, 5] } } }\n",
    )
    .unwrap()
    .build();
    assert_eq!(
        outcome(&mut run, reading(Some("A"), 50.0, None, T0, T0)),
        Ok(())
    );
    assert_eq!(
        outcome(&mut run, reading(Some("7"), 6.0, None, T0, T0)),
        rejected("out_of_range", "`power_w` = 6 is above the max 5 for `7`")
    );
    assert_eq!(
        outcome(&mut run, reading(None, 50.0, None, T0, T0)),
        rejected("unknown_site", "`site` is NULL: no range in `ranges_by`")
    );
    assert_eq!(
        outcome(&mut run, reading(Some("B"), 50.0, None, T0, T0)),
        rejected("unknown_site", "`site` = `B` has no range in `ranges_by`")
    );
}

#[test]
fn ranges_by_problems_name_their_key_and_a_fix() {
    let problems = energy_chain(
        "- validate:\n    ranges_by:\n      field: power_w\n      value: site\n      ranges: { L1: [1, 0] }\n",
    )
    .unwrap_err();
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "[0].validate.ranges_by.field",
                "`power_w` is a double; the range is looked up by a string or an enum"
            ),
            (
                "[0].validate.ranges_by.value",
                "field `site` is a nullable string; a range needs a number"
            ),
            (
                "[0].validate.ranges_by.ranges.L1",
                "the range is [1, 0]: its min is above its max"
            ),
        ]
    );
    assert!(
        problems[0].fix.contains("meter_id, site, phase"),
        "{}",
        problems[0].fix
    );

    let problems = energy_chain(
        "- validate:\n    ranges_by: { field: phase, value: voltag, ranges: { l2: [0, 1], L4: [0, 1] } }\n",
    )
    .unwrap_err();
    let got: Vec<(&str, &str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str(), p.fix.as_str()))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, "[0].validate.ranges_by.value");
    assert!(got[0].2.contains("did you mean `voltage`?"), "{}", got[0].2);
    assert_eq!(
        got[1],
        (
            "[0].validate.ranges_by.ranges.l2",
            "`l2` is not a symbol of the enum `phase`",
            "did you mean `L2`? its symbols: L1, L2, L3"
        )
    );
    assert_eq!(got[2].0, "[0].validate.ranges_by.ranges.L4");

    let problems =
        energy_chain("- validate:\n    ranges_by: { field: phase, valeu: voltage, ranges: {} }\n")
            .unwrap_err();
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.fix.as_str()))
        .collect();
    assert_eq!(got.len(), 3, "{problems:?}");
    assert_eq!(got[0].0, "[0].validate.ranges_by.valeu");
    assert!(
        got[0].1.starts_with("did you mean `value`?"),
        "{}",
        got[0].1
    );
    assert_eq!(
        (got[1].0, problems[1].message.as_str()),
        ("[0].validate.ranges_by.value", "`ranges_by` needs `value`")
    );
    assert_eq!(got[2].0, "[0].validate.ranges_by.ranges");
}

#[test]
fn ranges_by_keys_read_as_the_field_s_text_or_are_refused() {
    let problems = energy_chain(
        "- validate:\n    ranges_by: { field: site, value: power_w, ranges: { 1.50: [0, 1], 7: [0, 1], '7': [0, 2] } }\n",
    )
    .unwrap_err();
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        (
            "[0].validate.ranges_by.ranges",
            "`1.5` is not a value of a string field"
        )
    );
    assert_eq!(
        got[1],
        (
            "[0].validate.ranges_by.ranges.7",
            "this value has two ranges (once quoted, once not?)"
        )
    );
}

#[test]
fn ranges_by_unknown_is_reject_or_pass() {
    let problems = energy_chain(
        "- validate:\n    ranges_by: { field: site, value: power_w, ranges: { A: [0, 1] }, unknown: maybe }\n",
    )
    .unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "[0].validate.ranges_by.unknown");
    assert!(
        problems[0].message.contains("maybe"),
        "{}",
        problems[0].message
    );
}
