//! `detect`: scores a numeric field of every record with a streaming anomaly detector of
//! `sluice-detectors`, one detector per key, and hands the record on with its score and a
//! flag, so a following `filter: anomaly` keeps the anomalies.
//!
//! ```yaml
//! - detect:
//!     field: power_w                # the number scored (dotted path; int, long, float,
//!                                   # double, decimal; nullable: NULLs are not scored)
//!     by: [meter_id]                # one detector per value; default: the stream's key
//!     detector: { kind: ewma, alpha: 0.05 }   # default: ensemble (docs/DETECTORS.md)
//!     threshold: 0.9                # anomaly when score >= threshold; default 0.9
//!     timestamp: ts                 # event time fed to the detector; default record time
//!     score_field: anomaly_score    # output field names (defaults shown)
//!     flag_field: anomaly
//! - filter: anomaly
//! ```
//!
//! The output record is the input record with two fields appended: `score_field` (double in
//! [0, 1]; nullable, and NULL, when `field` is nullable and NULL) and `flag_field` (boolean:
//! score >= threshold; false when not scored). Key and timestamp are unchanged.
//!
//! Each record's value is scored against what its detector learnt *before* it, then learnt
//! (`AnyDetector::update`); NaN and infinities score 0 and are not learnt; a NULL value
//! leaves the detector untouched. The detector sees `(event time, value)`: time-aware
//! detectors (`seasonal`, the ensemble) read the event time, never the wall clock.
//!
//! # Keys
//!
//! `by` names scalar fields; records with the same values share a detector (NULL is a value
//! of its own). Without `by`, the stream's key decides: the fields of a preceding `key_by`
//! when there is one, otherwise the record's key bytes as read from the input topic (records
//! without a key share one detector). State is per task (input partition): have the input
//! topic keyed by (a prefix of) `by`, as for `window` and `dedup`.
//!
//! # State
//!
//! One table, `detectors` (changelogged as `<i>-detect-detectors`), a cached table (at most
//! [`CACHE`] clean detectors in memory, the rest read back from the store on demand):
//!
//! | key | value |
//! |---|---|
//! | `0x00` (no record key) / `0x01` + key bytes / `0x02` + JSON array of the `by` values | the detector's saved state (`AnyDetector::save`: format version, kind, parameters' state) |
//!
//! A restored detector scores bit for bit as the original would have (the detectors' own
//! codec), so a replay after a crash flags the same records. The saved state depends on the
//! detector's kind and some parameters (window lengths, season): changing `detector` between
//! deployments makes restores fail with a state error; give the application a new id (or
//! reset its state) when you change it.

use std::sync::Arc;

use apache_avro::types::Value;
use serde::Deserialize;
use sluice_detectors::{AnyDetector, DetectorSpec};
use sluice_state::table::{AnyTable, CachedTable, Encode};
use sluice_state::StateError;

use super::key_by::PerKey;
use super::select::nullable;
use super::validate::{event_time, not_a_number, parse_spec, plan_timestamp};
use super::{Kind, OpError, Operator, Planned, Record, StreamType};
use crate::types::{check_name, Field, FieldPath, FieldType, RecordType, Type};
use crate::Problem;

pub struct Detect;

/// `detect:` of a topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSpec {
    /// Required: the numeric field scored (int, long, float, double or decimal; dotted
    /// paths allowed). A nullable one is fine: NULLs are not scored.
    #[serde(default)]
    pub field: Option<String>,
    /// The fields (one or a list; dotted paths, scalars) whose values each get a detector.
    /// Default: the fields of a preceding `key_by`, else the record's key as read.
    #[serde(default)]
    pub by: Option<serde_yaml::Value>,
    /// The detector and its parameters, as in the built-in detect stage: a mapping with
    /// `kind:` (`zscore`, `ewma`, `mad`, `seasonal`, `ensemble`, `cad`, `null`) and that
    /// kind's parameters (docs/DETECTORS.md), or just the kind's name. Default: `ensemble`
    /// with its default parameters.
    #[serde(default)]
    pub detector: Option<serde_yaml::Value>,
    /// Scores at or above this are anomalies, in (0, 1]. Default 0.9.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// The event time fed to the detector: a timestamp or date field, or a long of ms since
    /// the epoch. Default: the record's timestamp. A NULL one is rejected (class
    /// `null_timestamp`).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Name of the output field holding the score (double in [0, 1]). Default
    /// `anomaly_score`.
    #[serde(default = "default_score_field")]
    pub score_field: String,
    /// Name of the output field holding score >= threshold (boolean). Default `anomaly`.
    #[serde(default = "default_flag_field")]
    pub flag_field: String,
}

fn default_threshold() -> f64 {
    0.9
}
fn default_score_field() -> String {
    "anomaly_score".to_string()
}
fn default_flag_field() -> String {
    "anomaly".to_string()
}

/// The keys of `detect:`, as [`DetectSpec`] reads them.
pub const KEYS: &[&str] = &[
    "field",
    "by",
    "detector",
    "threshold",
    "timestamp",
    "score_field",
    "flag_field",
];

/// The operator's one store, in the order of [`Operator::tables`].
pub const STORE: &str = "detectors";

/// Clean detectors kept in memory per task (as the built-in detect stage keeps).
pub const CACHE: usize = 500_000;

impl Kind for Detect {
    fn name(&self) -> &'static str {
        "detect"
    }

    fn summary(&self) -> &'static str {
        "scores a numeric field with an anomaly detector per key; adds the score and a flag"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        Ok(Box::new(check(spec, input)?))
    }
}

const EXAMPLE: &str = "write e.g. `- detect: { field: power_w, by: [meter_id], detector: { kind: zscore }, threshold: 0.9 }`";

fn check(spec: &serde_yaml::Value, input: &StreamType) -> Result<DetectPlan, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(spec) = parse_spec::<DetectSpec>(spec, KEYS, "a detect", EXAMPLE, &mut problems)
    else {
        return Err(problems);
    };
    let record = &input.value;
    let field = match &spec.field {
        None => {
            problems.push(Problem::new(
                "field",
                "detect needs `field`: the number to score",
                format!(
                    "add e.g. `field: {}`",
                    record
                        .field_paths(|t| t.ty.is_numeric())
                        .first()
                        .map_or("value", |s| s.as_str())
                ),
            ));
            None
        }
        Some(name) => match record.resolve(name) {
            Ok(p) if p.ty().ty.is_numeric() => Some(p),
            Ok(p) => {
                problems.push(not_a_number("field", &p, "`detect.field`", record));
                None
            }
            Err(p) => {
                problems.push(p.under("field"));
                None
            }
        },
    };
    let key = PerKey::plan(spec.by.as_ref(), input, "choose a detector", &mut problems);
    let detector = plan_detector(spec.detector.as_ref(), &mut problems);
    if !(spec.threshold > 0.0 && spec.threshold <= 1.0) {
        problems.push(Problem::new(
            "threshold",
            format!("threshold {} is outside (0, 1]", spec.threshold),
            "detector scores are in [0, 1]; pick e.g. 0.9",
        ));
    }
    let timestamp = spec.timestamp.as_deref().and_then(|name| {
        plan_timestamp(
            name,
            record,
            |t| t.is_timestamp_like() || *t == Type::Long,
            &mut problems,
        )
    });
    for (key, name) in [
        ("score_field", &spec.score_field),
        ("flag_field", &spec.flag_field),
    ] {
        if let Err(p) = check_name(name) {
            problems.push(p.under(key));
        } else if record.field(name).is_some() {
            problems.push(Problem::new(
                key,
                format!("`{name}` is already a field of {}", record.name),
                format!("name the output field otherwise, e.g. `{key}: {name}_detected`"),
            ));
        }
    }
    if spec.score_field == spec.flag_field {
        problems.push(Problem::new(
            "flag_field",
            format!("`{}` is also the score field", spec.flag_field),
            "give the score and the flag different names",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let field = field.expect("no problems: resolved");
    let score_ty = FieldType::new(Type::Double, field.ty().nullable);
    let mut out = record.clone();
    out.name = format!("{}_detect", record.name);
    out.fields
        .push(Field::new(spec.score_field.clone(), score_ty.clone()));
    out.fields.push(Field::new(
        spec.flag_field.clone(),
        FieldType::required(Type::Boolean),
    ));
    let value = out
        .to_schema()
        .and_then(|s| RecordType::from_schema(&s))
        .map_err(|p| vec![p])?;
    Ok(DetectPlan {
        shared: Arc::new(Shared {
            field,
            key: key.expect("no problems: planned"),
            detector: detector.expect("no problems: parsed"),
            threshold: spec.threshold,
            timestamp,
            score_field: spec.score_field,
            flag_field: spec.flag_field,
            score_nullable: score_ty.nullable,
        }),
        output: StreamType {
            value,
            key: input.key.clone(),
        },
    })
}

/// `detector:` as a [`DetectorSpec`]: a mapping with `kind:`, or a kind's name.
fn plan_detector(
    v: Option<&serde_yaml::Value>,
    problems: &mut Vec<Problem>,
) -> Option<DetectorSpec> {
    let kinds: Vec<&str> = DetectorSpec::all()
        .iter()
        .map(|s| s.name())
        .chain(["null"])
        .collect();
    let unknown_kind = |name: &str| {
        let fix = match crate::types::did_you_mean(name, kinds.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("use one of {}", kinds.join(", ")),
        };
        Problem::new(
            "detector",
            format!("unknown detector `{name}`"),
            format!("{fix} (docs/DETECTORS.md)"),
        )
    };
    let result = match v {
        None => return Some(DetectorSpec::default()),
        Some(serde_yaml::Value::String(name)) => {
            DetectorSpec::from_name(name).map_err(|_| unknown_kind(name))
        }
        Some(v) => serde_yaml::from_value::<DetectorSpec>(v.clone()).map_err(|e| {
            let msg = e.to_string();
            let msg = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            if let Some(kind) = super::between(&msg, "unknown variant `", "`") {
                return unknown_kind(kind);
            }
            if let Some(param) = super::between(&msg, "unknown field `", "`") {
                let expected: Vec<&str> = msg
                    .find("expected")
                    .map(|i| msg[i..].split('`').skip(1).step_by(2).collect())
                    .unwrap_or_default();
                let fix = match crate::types::did_you_mean(param, expected.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? (parameters: {})", expected.join(", ")),
                    None if expected.is_empty() => "this detector takes no parameters".to_string(),
                    None => format!("remove it; parameters: {}", expected.join(", ")),
                };
                return Problem::new(
                    format!("detector.{param}"),
                    format!("unknown detector parameter `{param}`"),
                    fix,
                );
            }
            Problem::new(
                "detector",
                format!("the detector does not parse: {msg}"),
                format!(
                    "write e.g. `detector: {{ kind: zscore, window: 256 }}` or `detector: ewma`; kinds: {} (docs/DETECTORS.md)",
                    kinds.join(", ")
                ),
            )
        }),
    };
    result.map_err(|p| problems.push(p)).ok()
}

// --- Running ------------------------------------------------------------------------------

#[derive(Debug)]
struct Shared {
    field: FieldPath,
    key: PerKey,
    detector: DetectorSpec,
    threshold: f64,
    timestamp: Option<FieldPath>,
    score_field: String,
    flag_field: String,
    score_nullable: bool,
}

#[derive(Debug)]
struct DetectPlan {
    shared: Arc<Shared>,
    output: StreamType,
}

impl Planned for DetectPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn stores(&self) -> Vec<String> {
        vec![STORE.to_string()]
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(self.op())
    }
}

impl DetectPlan {
    fn op(&self) -> DetectOp {
        let spec = self.shared.detector.clone();
        DetectOp {
            shared: self.shared.clone(),
            table: CachedTable::with_decoder(
                CACHE,
                Box::new(move |b| {
                    spec.restore(b)
                        .map(DetectorSlot)
                        .map_err(|e| StateError::decode("detector state", e.to_string()))
                }),
            ),
            key: Vec::new(),
        }
    }
}

/// A detector in the `detectors` table: its own codec's bytes.
struct DetectorSlot(AnyDetector);

impl Encode for DetectorSlot {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.save(out);
    }
}

struct DetectOp {
    shared: Arc<Shared>,
    table: CachedTable<DetectorSlot>,
    /// The current record's detector key.
    key: Vec<u8>,
}

impl Operator for DetectOp {
    fn process(&mut self, mut rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        let s = &*self.shared;
        let t = match &s.timestamp {
            None => rec.timestamp,
            Some(p) => event_time(p, &rec.value)?,
        };
        let score = match s.field.get_f64(&rec.value) {
            None => None,
            Some(x) => {
                s.key.write(&rec, &mut self.key);
                let det = self
                    .table
                    .get_mut(&self.key, || DetectorSlot(s.detector.build()))?;
                Some(det.0.update(t, x))
            }
        };
        let Value::Record(fields) = &mut rec.value else {
            return Err(OpError::reject(
                "not_a_record",
                "detect reads records; this value is not one",
            ));
        };
        let score_value = score.map_or(Value::Null, Value::Double);
        fields.push((
            s.score_field.clone(),
            nullable(s.score_nullable, score_value),
        ));
        fields.push((
            s.flag_field.clone(),
            Value::Boolean(score.is_some_and(|x| x >= s.threshold)),
        ));
        out.push(rec);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.table]
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::Schema;
    use sluice_state::{KvStore, MemStore, WriteBatch};

    use super::*;
    use crate::op::KeyShape;

    const SCHEMA: &str = r#"{"type": "record", "name": "Reading", "namespace": "io.acme", "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "metric", "type": "string"},
        {"name": "site", "type": ["null", "string"], "default": null},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "value", "type": ["null", "double"], "default": null},
        {"name": "count", "type": "int"},
        {"name": "tags", "type": {"type": "array", "items": "string"}}
    ]}"#;

    fn input(key: KeyShape) -> StreamType {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        StreamType {
            value: RecordType::from_schema(&schema).unwrap(),
            key,
        }
    }

    fn plan(yaml: &str, key: KeyShape) -> Result<DetectPlan, Vec<Problem>> {
        check(&serde_yaml::from_str(yaml).unwrap(), &input(key))
    }

    fn problems(yaml: &str) -> Vec<(String, String, String)> {
        match plan(yaml, KeyShape::Input) {
            Ok(_) => panic!("{yaml}: no problems"),
            Err(ps) => ps.into_iter().map(|p| (p.key, p.message, p.fix)).collect(),
        }
    }

    fn keys(ps: &[(String, String, String)]) -> Vec<&str> {
        ps.iter().map(|(k, _, _)| k.as_str()).collect()
    }

    fn reading(device: &str, metric: &str, t: i64, value: Option<f64>) -> Record {
        Record {
            key: Some(device.as_bytes().to_vec()),
            value: Value::Record(vec![
                ("device_id".into(), Value::String(device.into())),
                ("metric".into(), Value::String(metric.into())),
                ("site".into(), Value::Union(0, Box::new(Value::Null))),
                ("ts".into(), Value::TimestampMillis(t)),
                (
                    "value".into(),
                    match value {
                        Some(v) => Value::Union(1, Box::new(Value::Double(v))),
                        None => Value::Union(0, Box::new(Value::Null)),
                    },
                ),
                ("count".into(), Value::Int(1)),
                ("tags".into(), Value::Array(vec![])),
            ]),
            timestamp: t + 3,
        }
    }

    /// (score, flag) of what came out.
    fn scored(op: &mut DetectOp, rec: Record) -> (Value, bool) {
        let mut out = Vec::new();
        op.process(rec.clone(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let r = out.remove(0);
        assert_eq!((&r.key, r.timestamp), (&rec.key, rec.timestamp));
        let Value::Record(mut f) = r.value else {
            panic!()
        };
        let Value::Record(orig) = rec.value else {
            panic!()
        };
        assert_eq!(
            f[..orig.len()],
            orig[..],
            "the input fields come first, unchanged"
        );
        let (flag, score) = (f.pop().unwrap(), f.pop().unwrap());
        assert_eq!(
            (score.0.as_str(), flag.0.as_str()),
            ("anomaly_score", "anomaly")
        );
        let Value::Boolean(flag) = flag.1 else {
            panic!("{flag:?}")
        };
        (score.1, flag)
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_and_a_fix() {
        let p = problems(
            "field: site\nby: [device_id, metrc, tags]\ndetector: { kind: zscore, windw: 5 }\nthreshold: 1.5\ntimestamp: device_id\nscore_field: count\nflag_field: 2x\n",
        );
        assert_eq!(
            keys(&p),
            [
                "field",
                "by[1]",
                "by[2]",
                "detector.windw",
                "threshold",
                "timestamp",
                "score_field",
                "flag_field"
            ]
        );
        assert_eq!(
            p[0].1,
            "field `site` is a nullable string; `detect.field` needs a number"
        );
        assert!(p[0].2.contains(": value, count;"), "{}", p[0].2);
        assert!(p[1].2.contains("did you mean `metric`?"), "{}", p[1].2);
        assert!(p[2].1.contains("cannot choose a detector"), "{}", p[2].1);
        assert!(p[3].2.starts_with("did you mean `window`?"), "{}", p[3].2);
        assert!(p[4].1.contains("outside (0, 1]"), "{}", p[4].1);
        assert!(p[5].1.contains("not a timestamp"), "{}", p[5].1);
        assert!(p[5].2.ends_with("epoch: ts"), "{}", p[5].2);
        assert!(
            p[6].1.contains("already a field of io.acme.Reading"),
            "{}",
            p[6].1
        );
        assert!(p[7].1.contains("not a valid Avro name"), "{}", p[7].1);

        let p = problems("feild: value\ndetector: zscor\n");
        assert_eq!(keys(&p), ["feild", "field", "detector"]);
        assert!(p[0].2.starts_with("did you mean `field`?"), "{}", p[0].2);
        let p = problems("detector: zscor\nthreshold: high\n");
        assert_eq!(keys(&p), ["threshold"]);
        let p = problems("detector: zscor\n");
        assert_eq!(keys(&p), ["field", "detector"]);
        assert!(p[0].2.contains("field: value"), "{}", p[0].2);
        assert!(p[1].2.starts_with("did you mean `zscore`?"), "{}", p[1].2);
        let p = problems("field: value\ndetector: { kind: emwa }\n");
        assert!(p[0].2.starts_with("did you mean `ewma`?"), "{}", p[0].2);
        let p = problems("field: value\ndetector: { kind: ewma, alpha: x }\n");
        assert_eq!(keys(&p), ["detector"]);
        let p = problems("field: value\nscore_field: flag\nflag_field: flag\n");
        assert_eq!(keys(&p), ["flag_field"]);
        let p = problems("field: value\nby: device_id\nwat: 1\n");
        assert_eq!(keys(&p), ["wat"]);
    }

    #[test]
    fn the_output_is_the_input_plus_a_score_and_a_flag() {
        let p = plan("field: value\nby: [device_id, metric]\n", KeyShape::Input).unwrap();
        assert_eq!(p.stores(), ["detectors"]);
        let out = &p.output().value;
        assert_eq!(out.name, "io.acme.Reading_detect");
        let n = input(KeyShape::Input).value.fields.len();
        assert_eq!(out.fields[..n], input(KeyShape::Input).value.fields[..]);
        assert_eq!(out.fields[n].name, "anomaly_score");
        assert_eq!(out.fields[n].ty, FieldType::optional(Type::Double));
        assert_eq!(out.fields[n + 1].ty, FieldType::required(Type::Boolean));
        assert_eq!(p.output().key, KeyShape::Input);
        // A required field: a required score.
        let p = plan(
            "field: count\nscore_field: s\nflag_field: f\n",
            KeyShape::Input,
        )
        .unwrap();
        assert_eq!(p.output().value.fields[n].name, "s");
        assert_eq!(
            p.output().value.fields[n].ty,
            FieldType::required(Type::Double)
        );
    }

    #[test]
    fn a_spike_is_flagged_per_key_and_nulls_are_not_scored() {
        let p = plan(
            "field: value\nby: [device_id, metric]\ndetector: { kind: zscore, window: 64, warmup: 16 }\nthreshold: 0.9\n",
            KeyShape::Input,
        )
        .unwrap();
        let mut d = p.op();
        let t0 = 1_767_225_600_000;
        for i in 0..100i64 {
            let v = 20.0 + (i % 7) as f64 * 0.1;
            let (score, flag) = scored(&mut d, reading("d1", "temp", t0 + i * 1000, Some(v)));
            assert!(!flag, "{i}: {score:?}");
            // Another metric of the same device, other scale: its own detector.
            let (_, flag) = scored(&mut d, reading("d1", "hum", t0 + i * 1000, Some(v * 100.0)));
            assert!(!flag);
        }
        let (score, flag) = scored(&mut d, reading("d1", "temp", t0 + 100_000, Some(90.0)));
        assert!(flag, "{score:?}");
        assert!(
            matches!(score, Value::Union(1, ref s) if matches!(**s, Value::Double(x) if x > 0.9)),
            "{score:?}"
        );
        // A NULL value: NULL score, no flag, no detector for a new key.
        let (score, flag) = scored(&mut d, reading("d2", "temp", t0, None));
        assert_eq!(
            (score, flag),
            (Value::Union(0, Box::new(Value::Null)), false)
        );
        assert_eq!(d.table.len(), 2);
    }

    #[test]
    fn the_default_key_is_the_key_by_fields_or_else_the_record_key() {
        let rec = reading("d1", "temp", 0, Some(1.0));
        let mut buf = Vec::new();
        let p = plan("field: value\n", KeyShape::Fields(vec!["metric".into()])).unwrap();
        p.shared.key.write(&rec, &mut buf);
        assert_eq!(buf, b"\x02[\"temp\"]");
        let p = plan("field: value\n", KeyShape::Input).unwrap();
        p.shared.key.write(&rec, &mut buf);
        assert_eq!(buf, b"\x01d1");
        p.shared.key.write(
            &Record {
                key: None,
                ..rec.clone()
            },
            &mut buf,
        );
        assert_eq!(buf, b"\x00");
        let p = plan("field: value\nby: [site, device_id]\n", KeyShape::Input).unwrap();
        p.shared.key.write(&rec, &mut buf);
        assert_eq!(buf, b"\x02[null,\"d1\"]");
        // A key_by over fields that cannot choose a detector is reported here.
        let p = match plan("field: value\n", KeyShape::Fields(vec!["tags".into()])) {
            Err(p) => p,
            Ok(_) => panic!(),
        };
        assert_eq!(p[0].key, "by");
    }

    #[test]
    fn a_restored_table_scores_as_the_original() {
        let spec =
            "field: value\nby: device_id\ndetector: ensemble\nthreshold: 0.8\ntimestamp: ts\n";
        let p = plan(spec, KeyShape::Input).unwrap();
        let t0 = 1_767_225_600_000;
        let series = |i: i64| {
            let v = 100.0 + ((i * 37) % 11) as f64 + if i == 700 { 400.0 } else { 0.0 };
            reading(
                if i % 2 == 0 { "a" } else { "b" },
                "p",
                t0 + i * 60_000,
                Some(v),
            )
        };
        let mut whole = p.op();
        let expected: Vec<_> = (0..800).map(|i| scored(&mut whole, series(i))).collect();
        assert!(expected[700].1, "the spike is flagged: {:?}", expected[700]);

        let mut first = p.op();
        for i in 0..400 {
            assert_eq!(scored(&mut first, series(i)), expected[i as usize]);
        }
        let mut dirty = Vec::new();
        first.table.drain_dirty(&mut dirty);
        assert_eq!(dirty.len(), 2, "one detector per device");
        let mut batch = WriteBatch::new();
        for (k, v) in dirty {
            batch.push(k, v);
        }
        let mut store = MemStore::new();
        store.write(batch, None).unwrap();
        drop(first);
        let mut second = p.op();
        second.table.attach(Box::new(store)).unwrap();
        for i in 400..800 {
            assert_eq!(
                scored(&mut second, series(i)),
                expected[i as usize],
                "at {i}"
            );
        }
        // Another kind of detector does not read this state: a state error, not a guess.
        let mut dirty = Vec::new();
        second.table.drain_dirty(&mut dirty);
        let mut batch = WriteBatch::new();
        for (k, v) in dirty {
            batch.push(k, v);
        }
        let mut store = MemStore::new();
        store.write(batch, None).unwrap();
        let mut other = plan(
            "field: value\nby: device_id\ndetector: zscore\n",
            KeyShape::Input,
        )
        .unwrap()
        .op();
        other.table.attach(Box::new(store)).unwrap();
        match other.process(series(0), &mut Vec::new()) {
            Err(OpError::State(e)) => assert!(e.to_string().contains("detector state"), "{e}"),
            r => panic!("{r:?}"),
        }
    }
}
