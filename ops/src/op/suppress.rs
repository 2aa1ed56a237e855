//! `suppress`: lets one record per key through, then drops that key's records for an
//! interval of event time, counting them: one alert per incident rather than one per
//! anomalous reading.
//!
//! ```yaml
//! - suppress:
//!     by: [device_id]                # default: the stream's key
//!     for: 5m                        # required: the quiet interval after a record passes
//!     timestamp: event_time          # event time; default the record's timestamp
//!     count_field: suppressed_since_last   # optional: a long added to what passes
//! ```
//!
//! The built-in `detect` stage's `alert_suppression` for any stream. For each record, in
//! arrival order, with event time *t* and key *k*:
//!
//! - If a record of *k* passed at event time *p* and `t - p < for`, the record is
//!   **dropped** (not a dead letter) and *k*'s suppressed count grows by one. The interval
//!   runs from the last record that passed, not from the last one dropped, so a condition
//!   that persists gives one record every `for`. A record earlier than *p* (out of order)
//!   is dropped too.
//! - Otherwise it **passes**, unchanged but for `count_field` (when set) holding the
//!   records of *k* dropped since the previous one passed; *k*'s time becomes *t* and its
//!   count 0.
//!
//! Only event times decide, never the wall clock, so a replay after a crash drops the same
//! records. What it dropped is its `sluice_operator_records_total{direction="in"}` minus
//! `{direction="out"}` (minus its `null_timestamp` dead letters); the count in
//! `count_field` is exact across restores (it is state).
//!
//! # Keys
//!
//! As `detect`'s: `by` names scalar fields (NULL is a value of its own); without it, the
//! fields of a preceding `key_by`, or else the record's key bytes as read from the input.
//! State is per task (input partition): have the input keyed by (a prefix of) `by`.
//!
//! # State
//!
//! One table, `suppressed` (changelogged as `<i>-suppress-suppressed`), cached like
//! `detect`'s (at most [`CACHE`] clean entries in memory, the rest read from the store):
//! one entry per key that ever passed, never expired, since the count outlives the
//! interval. Key: as `detect`'s (a tag byte, then the record key or a JSON array of the `by`
//! values). Value: 16 bytes, the last pass's event time and the count since, little-endian
//! `i64`s, the layout of the built-in detect stage's suppression table.

use std::sync::Arc;

use apache_avro::types::Value;
use serde::Deserialize;
use sluice_state::table::{AnyTable, CachedTable, Codec, Encode};
use sluice_state::StateError;

use super::key_by::PerKey;
use super::validate::{event_time, parse_spec, plan_timestamp};
use super::{Kind, OpError, Operator, Planned, Record, StreamType};
use crate::types::{check_name, Field, FieldPath, FieldType, RecordType, Type};
use crate::window::HumanDuration;
use crate::Problem;

pub struct Suppress;

/// `suppress:` of a topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressSpec {
    /// One field or a list (dotted paths, scalars) whose values are suppressed separately;
    /// NULL is a value of its own. Default: the stream's key.
    #[serde(default)]
    pub by: Option<serde_yaml::Value>,
    /// Required: how long after a record passes its key's records are dropped, in event
    /// time (`5m`).
    #[serde(default, rename = "for")]
    pub interval: Option<HumanDuration>,
    /// The event-time field (a timestamp or date field, or a long of ms). Default: the
    /// record's timestamp. A NULL one is a dead letter (class `null_timestamp`).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// A `long` field added to the output: how many records of the key were dropped since
    /// the previous one passed. Default: none added.
    #[serde(default)]
    pub count_field: Option<String>,
}

/// The keys of `suppress:`, as [`SuppressSpec`] reads them.
pub const KEYS: &[&str] = &["by", "for", "timestamp", "count_field"];

/// The operator's one store, in the order of [`Operator::tables`].
pub const STORE: &str = "suppressed";

/// Clean entries kept in memory across commits (16 bytes each plus the key).
pub const CACHE: usize = 500_000;

/// Longest `for` accepted (100 years): keeps time arithmetic far from overflow.
const MAX_FOR_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

const EXAMPLE: &str = "write e.g. `- suppress: { by: device_id, for: 5m }`";

impl Kind for Suppress {
    fn name(&self) -> &'static str {
        "suppress"
    }

    fn summary(&self) -> &'static str {
        "passes one record per key, then drops that key's records for an interval, counting them"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        Ok(Box::new(check(spec, input)?))
    }
}

fn check(spec: &serde_yaml::Value, input: &StreamType) -> Result<SuppressPlan, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(spec) = parse_spec::<SuppressSpec>(spec, KEYS, "a suppress", EXAMPLE, &mut problems)
    else {
        return Err(problems);
    };
    let record = &input.value;
    let key = PerKey::plan(spec.by.as_ref(), input, "be suppressed by", &mut problems);
    let interval = match spec.interval {
        None => {
            problems.push(Problem::new(
                "for",
                "suppress needs `for`: how long after a record passes its key stays quiet",
                "add e.g. `for: 5m`",
            ));
            None
        }
        Some(d) if d.millis() < 1 || d.millis() > MAX_FOR_MS => {
            problems.push(Problem::new(
                "for",
                format!("`for: {d}` is not between 1ms and 100 years"),
                "write how long one key stays quiet, e.g. `for: 5m`",
            ));
            None
        }
        Some(d) => Some(d.millis()),
    };
    let timestamp = spec.timestamp.as_deref().and_then(|name| {
        plan_timestamp(
            name,
            record,
            |t| t.is_timestamp_like() || *t == Type::Long,
            &mut problems,
        )
    });
    if let Some(name) = &spec.count_field {
        if let Err(p) = check_name(name) {
            problems.push(p.under("count_field"));
        } else if record.field(name).is_some() {
            problems.push(Problem::new(
                "count_field",
                format!("`{name}` is already a field of {}", record.name),
                format!("name the count otherwise, e.g. `count_field: {name}_suppressed`"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let output = match &spec.count_field {
        None => input.clone(),
        Some(name) => {
            let mut out = record.clone();
            out.name = format!("{}_suppress", record.name);
            out.fields
                .push(Field::new(name.clone(), FieldType::required(Type::Long)));
            let value = out
                .to_schema()
                .and_then(|s| RecordType::from_schema(&s))
                .map_err(|p| vec![p])?;
            StreamType {
                value,
                key: input.key.clone(),
            }
        }
    };
    Ok(SuppressPlan {
        shared: Arc::new(Shared {
            key: key.expect("no problems: planned"),
            interval: interval.expect("no problems: parsed"),
            timestamp,
            count_field: spec.count_field,
        }),
        output,
    })
}

#[derive(Debug)]
struct Shared {
    key: PerKey,
    /// Milliseconds, at least 1.
    interval: i64,
    timestamp: Option<FieldPath>,
    count_field: Option<String>,
}

#[derive(Debug)]
struct SuppressPlan {
    shared: Arc<Shared>,
    output: StreamType,
}

impl Planned for SuppressPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn stores(&self) -> Vec<String> {
        vec![STORE.to_string()]
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(SuppressOp {
            shared: self.shared.clone(),
            table: CachedTable::new(CACHE),
            key: Vec::new(),
        })
    }
}

/// A key's entry in the `suppressed` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    /// Event time of the last record that passed.
    pub passed_at: i64,
    /// Records dropped since.
    pub dropped: i64,
}

impl Encode for Quiet {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.passed_at.to_le_bytes());
        out.extend_from_slice(&self.dropped.to_le_bytes());
    }
}

impl Codec for Quiet {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        let (Some(t), Some(n)) = (b.get(..8), b.get(8..16)) else {
            return Err(StateError::decode(
                "suppress entry",
                format!("{} bytes, expected 16", b.len()),
            ));
        };
        if b.len() != 16 {
            return Err(StateError::decode(
                "suppress entry",
                format!("{} bytes, expected 16", b.len()),
            ));
        }
        Ok(Quiet {
            passed_at: i64::from_le_bytes(t.try_into().expect("8 bytes")),
            dropped: i64::from_le_bytes(n.try_into().expect("8 bytes")),
        })
    }
}

struct SuppressOp {
    shared: Arc<Shared>,
    table: CachedTable<Quiet>,
    /// The current record's key.
    key: Vec<u8>,
}

impl Operator for SuppressOp {
    fn process(&mut self, mut rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        let s = &*self.shared;
        let t = match &s.timestamp {
            None => rec.timestamp,
            Some(p) => event_time(p, &rec.value)?,
        };
        if s.count_field.is_some() && !matches!(rec.value, Value::Record(_)) {
            return Err(OpError::reject(
                "not_a_record",
                "suppress reads records; this value is not one",
            ));
        }
        s.key.write(&rec, &mut self.key);
        let mut fresh = false;
        let q = self.table.get_mut(&self.key, || {
            fresh = true;
            Quiet {
                passed_at: t,
                dropped: 0,
            }
        })?;
        if !fresh && t.saturating_sub(q.passed_at) < s.interval {
            q.dropped = q.dropped.saturating_add(1);
            return Ok(());
        }
        let dropped = q.dropped;
        *q = Quiet {
            passed_at: t,
            dropped: 0,
        };
        if let (Some(name), Value::Record(fields)) = (&s.count_field, &mut rec.value) {
            fields.push((name.clone(), Value::Long(dropped)));
        }
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

    const SCHEMA: &str = r#"{"type": "record", "name": "Anomaly", "namespace": "io.acme", "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "rule", "type": ["null", "string"], "default": null},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
        {"name": "tags", "type": {"type": "array", "items": "string"}}
    ]}"#;

    const MIN: i64 = 60_000;

    fn input(key: KeyShape) -> StreamType {
        StreamType {
            value: RecordType::from_schema(&Schema::parse_str(SCHEMA).unwrap()).unwrap(),
            key,
        }
    }

    fn plan(yaml: &str) -> Result<SuppressPlan, Vec<Problem>> {
        check(
            &serde_yaml::from_str(yaml).unwrap(),
            &input(KeyShape::Input),
        )
    }

    fn anomaly(device: &str, rule: Option<&str>, ts: i64) -> Record {
        let rule = match rule {
            Some(r) => Value::Union(1, Box::new(Value::String(r.into()))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        Record {
            key: Some(device.as_bytes().to_vec()),
            value: Value::Record(vec![
                ("device_id".into(), Value::String(device.into())),
                ("rule".into(), rule),
                ("ts".into(), Value::TimestampMillis(ts)),
                ("at".into(), Value::Union(0, Box::new(Value::Null))),
                ("tags".into(), Value::Array(vec![])),
            ]),
            timestamp: ts + 7,
        }
    }

    /// The counts of what passed, in order, as (device, ts, count).
    fn run(op: &mut dyn Operator, recs: &[Record]) -> Vec<(String, i64, i64)> {
        let mut out = Vec::new();
        for r in recs {
            op.process(r.clone(), &mut out).unwrap();
        }
        out.iter()
            .map(|r| {
                let Value::Record(f) = &r.value else { panic!() };
                let Value::String(d) = &f[0].1 else { panic!() };
                let Value::TimestampMillis(t) = f[2].1 else {
                    panic!()
                };
                let n = match f.get(5) {
                    Some((name, Value::Long(n))) if name == "suppressed" => *n,
                    None => -1,
                    other => panic!("{other:?}"),
                };
                (d.clone(), t, n)
            })
            .collect()
    }

    #[test]
    fn one_record_per_key_and_interval_passes_with_the_count_dropped_before_it() {
        let p = plan("by: device_id\nfor: 5m\ntimestamp: ts\ncount_field: suppressed\n").unwrap();
        assert_eq!(p.stores(), ["suppressed"]);
        let last = p.output().value.fields.last().unwrap();
        assert_eq!(
            (last.name.as_str(), &last.ty),
            ("suppressed", &FieldType::required(Type::Long))
        );
        let mut op = p.build();
        let t0 = 1_000 * MIN;
        let got = run(
            op.as_mut(),
            &[
                anomaly("d1", None, t0),
                anomaly("d1", None, t0 + MIN),
                anomaly("d2", None, t0 + MIN),
                // Persisting: still inside 5 minutes of the pass at t0, not of t0 + 4m.
                anomaly("d1", None, t0 + 4 * MIN),
                // Out of order: before the last pass.
                anomaly("d1", None, t0 - MIN),
                // Exactly 5 minutes after: passes (the interval is half-open).
                anomaly("d1", None, t0 + 5 * MIN),
                anomaly("d1", None, t0 + 5 * MIN + 1),
                anomaly("d1", None, t0 + 20 * MIN),
            ],
        );
        assert_eq!(
            got,
            [
                ("d1".to_string(), t0, 0),
                ("d2".to_string(), t0 + MIN, 0),
                ("d1".to_string(), t0 + 5 * MIN, 3),
                ("d1".to_string(), t0 + 20 * MIN, 1),
            ]
        );
    }

    #[test]
    fn state_survives_a_restore_and_the_default_key_is_the_record_key() {
        let p = plan("for: 1m\n").unwrap();
        assert_eq!(
            p.output().value,
            input(KeyShape::Input).value,
            "no count field"
        );
        let p = plan("for: 1m\ncount_field: suppressed\n").unwrap();
        let mut op = p.build();
        // The record timestamp (ts + 7) decides without `timestamp`.
        let recs = [
            anomaly("d1", Some("z"), 0),
            anomaly("d1", Some("y"), MIN - 8),
            anomaly("d1", Some("x"), MIN - 9),
        ];
        assert_eq!(run(op.as_mut(), &recs).len(), 1, "one key: the record key");
        // Commit, then a fresh operator reads the entry back from the store.
        let mut dirty = Vec::new();
        op.tables()[0].drain_dirty(&mut dirty);
        let mut batch = WriteBatch::new();
        for (k, v) in dirty {
            batch.push(k, v);
        }
        let mut store = MemStore::new();
        store.write(batch, None).unwrap();
        let mut op = p.build();
        op.tables()[0].attach(Box::new(store)).unwrap();
        // Timestamps MIN + 6 (inside the minute after 7) and MIN + 7 (a minute after).
        let got = run(
            op.as_mut(),
            &[anomaly("d1", None, MIN - 1), anomaly("d1", None, MIN)],
        );
        assert_eq!(
            got,
            [("d1".to_string(), MIN, 3)],
            "two dropped before the commit, one after"
        );
    }

    #[test]
    fn without_by_a_preceding_key_by_s_fields_are_the_key() {
        let p = check(
            &serde_yaml::from_str("for: 1h\n").unwrap(),
            &input(KeyShape::Fields(vec!["rule".into()])),
        )
        .unwrap();
        let mut op = p.build();
        let recs = [
            anomaly("d1", Some("r"), 0),
            anomaly("d2", Some("r"), 1),
            anomaly("d3", Some("q"), 2),
        ];
        let got: Vec<String> = run(op.as_mut(), &recs).into_iter().map(|g| g.0).collect();
        assert_eq!(got, ["d1", "d3"], "by rule, not by the record key");
        let extreme = [
            anomaly("d4", Some("p"), i64::MAX - 7),
            anomaly("d4", Some("p"), i64::MIN),
        ];
        let got: Vec<i64> = run(op.as_mut(), &extreme)
            .into_iter()
            .map(|g| g.1)
            .collect();
        assert_eq!(
            got,
            [i64::MAX - 7],
            "far out of order is inside the interval"
        );
    }

    #[test]
    fn null_in_by_is_a_key_of_its_own_and_a_null_time_is_a_dead_letter() {
        let p = plan("by: [rule]\nfor: 1h\ntimestamp: at\n").unwrap();
        let mut op = p.build();
        let mut out = Vec::new();
        match op.process(anomaly("d1", None, 0), &mut out) {
            Err(OpError::Reject { class, message }) => {
                assert_eq!(class, "null_timestamp");
                assert_eq!(message, "event time field `at` is NULL");
            }
            other => panic!("{other:?}"),
        }
        let p = plan("by: [rule]\nfor: 1h\n").unwrap();
        let mut op = p.build();
        let recs = [
            anomaly("d1", None, 0),
            anomaly("d2", None, 1),
            anomaly("d3", Some("r"), 2),
            anomaly("d4", Some("r"), 3),
        ];
        let got: Vec<String> = run(op.as_mut(), &recs).into_iter().map(|g| g.0).collect();
        assert_eq!(got, ["d1", "d3"]);
    }

    #[test]
    fn problems_are_reported_at_once_with_their_key() {
        let ps = plan(
            "by: [tags, device_id, device_id]\ntimestamp: device_id\ncount_field: rule\nfro: 5m\n",
        )
        .err()
        .unwrap();
        let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["fro", "by[0]", "by[2]", "for", "timestamp", "count_field"]
        );
        assert!(
            ps[0].fix.starts_with("did you mean `for`?"),
            "{}",
            ps[0].fix
        );
        assert!(
            ps[1].message.contains("cannot be suppressed by"),
            "{}",
            ps[1].message
        );
        let ps = plan("for: 0s\n").err().unwrap();
        assert_eq!(ps[0].message, "`for: 0s` is not between 1ms and 100 years");
    }

    #[test]
    fn entries_refuse_bytes_that_are_not_sixteen() {
        let q = Quiet {
            passed_at: -5,
            dropped: 9,
        };
        let mut b = Vec::new();
        q.encode(&mut b);
        assert_eq!(Quiet::decode(&b).unwrap(), q);
        assert!(Quiet::decode(&b[..15]).is_err());
        b.push(0);
        assert!(Quiet::decode(&b).is_err());
    }
}
