//! `stamp`: sets each record's timestamp (the one it is written with) from a timestamp field.
//!
//! ```yaml
//! - stamp: event_time
//! ```
//!
//! Operators read event time from a field and leave the record timestamp alone; a window's
//! results are stamped with their `window_end`. `stamp` is for outputs whose readers go by the
//! record timestamp (time-based retention, a downstream stage without a `timestamp:` field, a
//! backfill choosing its range by time): it stamps each record with its own event time, e.g.
//! after `validate` re-stamped a skewed clock. The field may be a timestamp (millis, micros,
//! nanos, local or not), a date or a long of ms since the epoch. A NULL field sends the
//! record to the dead-letter topic (class `null_timestamp`), as windows do. Stateless.
//! Fluvio records carry the producer's time, not this one (docs/FLUVIO.md).

use super::{Kind, OpError, Operator, Planned, Record, StreamType};
use crate::types::{self, FieldPath, Type};
use crate::Problem;

pub struct Stamp;

impl Kind for Stamp {
    fn name(&self) -> &'static str {
        "stamp"
    }

    fn summary(&self) -> &'static str {
        "sets each record's timestamp from a timestamp field"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        let Some(name) = spec.as_str() else {
            return Err(vec![Problem::new(
                "",
                "a stamp names one timestamp field",
                "write e.g. `- stamp: event_time`",
            )]);
        };
        let field = match input.value.resolve(name) {
            Ok(p) if p.ty().ty.is_timestamp_like() || p.ty().ty == Type::Long => p,
            Ok(p) => {
                return Err(vec![Problem::new(
                    "",
                    format!("`{name}` is a {}, not a timestamp", p.ty()),
                    "name a timestamp (millis, micros, nanos, local or not), a date, or a long of ms since the epoch",
                )])
            }
            Err(p) => return Err(vec![p]),
        };
        Ok(Box::new(StampPlan {
            field,
            output: input.clone(),
        }))
    }

    fn output_despite_errors(&self, input: &StreamType) -> Option<StreamType> {
        Some(input.clone())
    }
}

#[derive(Debug)]
struct StampPlan {
    field: FieldPath,
    output: StreamType,
}

impl Planned for StampPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(StampOp {
            field: self.field.clone(),
        })
    }
}

struct StampOp {
    field: FieldPath,
}

impl Operator for StampOp {
    fn process(&mut self, mut rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        match self.field.get(&rec.value).and_then(types::timestamp_ms) {
            Some(t) => {
                rec.timestamp = t;
                out.push(rec);
                Ok(())
            }
            None => Err(OpError::reject(
                "null_timestamp",
                format!("timestamp field `{}` is NULL", self.field.path()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use apache_avro::Schema;

    use super::*;
    use crate::op::KeyShape;
    use crate::types::RecordType;

    const SCHEMA: &str = r#"{"type": "record", "name": "R", "fields": [
        {"name": "event_time", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
        {"name": "value", "type": "double"}
    ]}"#;

    fn input() -> StreamType {
        StreamType {
            value: RecordType::from_schema(&Schema::parse_str(SCHEMA).unwrap()).unwrap(),
            key: KeyShape::Input,
        }
    }

    fn rec(t: Option<i64>) -> Record {
        Record {
            key: None,
            value: Value::Record(vec![
                (
                    "event_time".into(),
                    match t {
                        Some(t) => Value::Union(1, Box::new(Value::TimestampMillis(t))),
                        None => Value::Union(0, Box::new(Value::Null)),
                    },
                ),
                ("value".into(), Value::Double(1.0)),
            ]),
            timestamp: 5,
        }
    }

    #[test]
    fn the_record_timestamp_becomes_the_field_and_null_is_a_dead_letter() {
        let plan = Stamp
            .plan(&serde_yaml::Value::from("event_time"), &input())
            .unwrap();
        let mut op = plan.build();
        let mut out = Vec::new();
        op.process(rec(Some(1_700_000_000_000)), &mut out).unwrap();
        assert_eq!(out[0].timestamp, 1_700_000_000_000);
        assert_eq!(out[0].value, rec(Some(1_700_000_000_000)).value);
        match op.process(rec(None), &mut out) {
            Err(OpError::Reject { class, .. }) => assert_eq!(class, "null_timestamp"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_timestamp_fields_are_accepted() {
        let err = |spec: serde_yaml::Value| match Stamp.plan(&spec, &input()) {
            Err(p) => format!("{} {}", p[0].message, p[0].fix),
            Ok(_) => panic!("accepted"),
        };
        assert!(err("value".into()).contains("not a timestamp"));
        assert!(err("event_tim".into()).contains("event_time"));
        assert!(err(serde_yaml::Value::from(3)).contains("names one timestamp field"));
    }
}
