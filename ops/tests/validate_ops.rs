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
