//! The `detect` operator through `Chain::plan` over a schema that is not telemetry (the
//! energy example's meter readings): it flags an injected spike, its problems name their
//! place, and a task restored from its table's changelog scores exactly as one that never
//! stopped.

use apache_avro::types::Value;
use sluice_ops::op::{KeyShape, Record, Running};
use sluice_state::MemStore;

mod common;
use common::{commit, energy_chain, restored};

const T0: i64 = 1_772_359_200_000; // 2026-03-01T10:00:00Z
const MIN: i64 = 60_000;

/// A reading of `meter` at minute `i`.
fn reading(meter: &str, i: i64, power_w: f64) -> Record {
    Record {
        key: Some(meter.as_bytes().to_vec()),
        value: Value::Record(vec![
            ("meter_id".into(), Value::String(meter.into())),
            (
                "site".into(),
                Value::Union(1, Box::new(Value::String("A".into()))),
            ),
            ("ts".into(), Value::TimestampMillis(T0 + i * MIN)),
            ("power_w".into(), Value::Double(power_w)),
            ("voltage".into(), Value::Union(0, Box::new(Value::Null))),
            ("interval_s".into(), Value::Int(60)),
            ("phase".into(), Value::Enum(0, "L1".into())),
        ]),
        timestamp: T0 + i * MIN + 250,
    }
}

/// A deterministic noise source (xorshift), so runs compare exactly.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Three meters, one reading each per minute for `n` minutes, each around its own level;
/// meter m2 draws 9 kW at minute `spike`.
fn readings(n: i64, spike: i64) -> Vec<Record> {
    let mut rng = Rng(0x5eed);
    let mut out = Vec::new();
    for i in 0..n {
        for (meter, level) in [("m1", 1200.0), ("m2", 600.0), ("m3", 3500.0)] {
            let mut w = level * (1.0 + 0.02 * (rng.unit() - 0.5));
            if meter == "m2" && i == spike {
                w = 9000.0;
            }
            out.push(reading(meter, i, w));
        }
    }
    out
}

fn step(run: &mut Running, rec: &Record) -> Vec<Record> {
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    run.process(rec.clone(), &mut out, &mut rejected).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    out
}

fn field<'a>(rec: &'a Record, name: &str) -> &'a Value {
    match &rec.value {
        Value::Record(f) => &f.iter().find(|(n, _)| n == name).unwrap().1,
        v => panic!("{v:?}"),
    }
}

const ALERTS: &str = r#"
- detect:
    field: power_w
    by: meter_id
    detector: { kind: zscore, window: 120, warmup: 30 }
    threshold: 0.99
    timestamp: ts
- filter: anomaly
"#;

#[test]
fn a_spike_of_one_meter_is_the_one_alert() {
    let c = energy_chain(ALERTS).unwrap();
    assert_eq!(c.stores(), ["0-detect-detectors"]);
    let out = &c.output.value;
    assert_eq!(out.name, "io.acme.energy.MeterReading_detect");
    let names: Vec<&str> = out.field_names().collect();
    assert_eq!(
        names,
        [
            "meter_id",
            "site",
            "ts",
            "power_w",
            "voltage",
            "interval_s",
            "phase",
            "anomaly_score",
            "anomaly"
        ]
    );
    let mut run = c.build();
    let alerts: Vec<Record> = readings(200, 150)
        .iter()
        .flat_map(|r| step(&mut run, r))
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(field(a, "meter_id"), &Value::String("m2".into()));
    assert_eq!(field(a, "ts"), &Value::TimestampMillis(T0 + 150 * MIN));
    assert_eq!(field(a, "anomaly"), &Value::Boolean(true));
    assert!(matches!(field(a, "anomaly_score"), Value::Double(s) if *s >= 0.99));
    assert_eq!(a.key, Some(b"m2".to_vec()), "key and timestamp are kept");
    assert_eq!(a.timestamp, T0 + 150 * MIN + 250);
}

#[test]
fn a_key_by_before_detect_is_a_repartition_and_keys_the_detectors() {
    let c = energy_chain(
        "- key_by: meter_id\n- detect: { field: power_w, detector: mad, score_field: s, flag_field: f }\n",
    )
    .unwrap();
    assert_eq!(c.stores(), ["1-detect-detectors"]);
    assert_eq!(c.repartition_after(), Some(0));
    assert_eq!(c.output.key, KeyShape::Fields(vec!["meter_id".into()]));
}

#[test]
fn problems_name_their_place_and_a_fix() {
    let problems = energy_chain(
        "- filter: \"power_w > 0\"\n- detect: { field: site, by: [meter, phase], detector: { kind: seasonl }, flag_field: voltage }\n",
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
                "[1].detect.field",
                "field `site` is a nullable string; `detect.field` needs a number"
            ),
            (
                "[1].detect.by[0]",
                "no field `meter` in io.acme.energy.MeterReading"
            ),
            ("[1].detect.detector", "unknown detector `seasonl`"),
            (
                "[1].detect.flag_field",
                "`voltage` is already a field of io.acme.energy.MeterReading"
            ),
        ]
    );
    assert!(
        problems[0].fix.contains("power_w, voltage, interval_s"),
        "{}",
        problems[0].fix
    );
    assert!(problems[1].fix.contains("did you mean `meter_id`?"));
    assert!(problems[2].fix.starts_with("did you mean `seasonal`?"));
}

/// Every record's output, for the ensemble (the default detector, the one with the most
/// state) over three meters.
const SCORES: &str =
    "- detect: { field: power_w, by: [meter_id], threshold: 0.7, timestamp: ts }\n";

#[test]
fn a_task_restored_from_its_changelog_scores_as_if_uninterrupted() {
    let c = energy_chain(SCORES).unwrap();
    let rs = readings(600, 450);
    let mut reference = c.build();
    let expected: Vec<Vec<Record>> = rs.iter().map(|r| step(&mut reference, r)).collect();
    let flagged: Vec<&Record> = expected
        .iter()
        .flatten()
        .filter(|r| field(r, "anomaly") == &Value::Boolean(true))
        .collect();
    assert_eq!(flagged, [&expected[450 * 3 + 1][0]], "the spike, only");
    let mut final_state = vec![MemStore::new()];
    commit(&mut reference, &mut final_state);
    assert_eq!(final_state[0].snapshot().len(), 3, "one detector per meter");

    for midway in [1, 301, 1352, 1700] {
        let mut first = c.build();
        let mut got: Vec<Vec<Record>> = rs[..midway].iter().map(|r| step(&mut first, r)).collect();
        let mut stores = vec![MemStore::new()];
        commit(&mut first, &mut stores);
        // Work after the last commit is lost with the task...
        for r in &rs[midway..midway + 40] {
            step(&mut first, r);
        }
        drop(first);
        // ... and replayed by its successor, from the committed state.
        let mut second = restored(&c, &stores);
        got.extend(rs[midway..].iter().map(|r| step(&mut second, r)));
        assert_eq!(got, expected, "restored after {midway} readings");
        commit(&mut second, &mut stores);
        assert_eq!(
            final_state[0].snapshot(),
            stores[0].snapshot(),
            "after {midway}"
        );
    }
}
