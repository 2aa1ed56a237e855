//! `select`: the output record's fields, each a SQL expression over the input record.
//! Computes, renames, flattens and drops: a field not listed is dropped.
//!
//! ```yaml
//! - select:
//!     device_id: device_id            # kept
//!     kw: round(power_w / 1000.0, 3)  # computed
//!     lat: location.lat               # flattened from a nested (optional) record
//! ```
//!
//! A field given as a bare field name or dotted path (`device_id`, `location.lat`) is
//! copied with its type exactly: an `int` stays an `int`, a decimal a decimal, an enum, a
//! record, an array or a map as it is (nullable when it or a record on its path is).
//! Otherwise the output field's type is the expression's (SQL integers are `long`, reals
//! `double`); it is nullable when the expression can be NULL. An expression that fails on a
//! record sends the record to the dead-letter topic.

use std::sync::Arc;

use apache_avro::types::Value;

use super::{Kind, OpError, Operator, Planned, Record, StreamType};
use crate::expr::Expr;
use crate::types::{record_schema, FieldPath, FieldType, RecordType, Type};
use crate::Problem;

pub struct Select;

impl Kind for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn summary(&self) -> &'static str {
        "the output record's fields, each a SQL expression: compute, rename, flatten, drop"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        let Some(map) = spec.as_mapping().filter(|m| !m.is_empty()) else {
            return Err(vec![Problem::new(
                "",
                "select lists the output fields as `name: expression`",
                "write e.g. `- select: { device_id: device_id, kw: power_w / 1000.0 }`",
            )]);
        };
        let mut problems = Vec::new();
        let mut fields = Vec::new();
        for (k, v) in map {
            let Some(name) = k.as_str() else {
                problems.push(Problem::new("", "field names are strings", "quote it"));
                continue;
            };
            if !valid_name(name) {
                problems.push(Problem::new(
                    name,
                    format!("`{name}` is not a valid Avro field name"),
                    "use letters, digits and `_`, not starting with a digit",
                ));
                continue;
            }
            let src = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => {
                    problems.push(Problem::new(
                        name,
                        "the value is a SQL expression, as a string",
                        "write e.g. `kw: power_w / 1000.0`",
                    ));
                    continue;
                }
            };
            if let Some(path) = bare_path(&src, &input.value) {
                fields.push((name.to_string(), Source::Copy(path)));
                continue;
            }
            match Expr::compile(&src, &input.value) {
                Ok(e) => fields.push((name.to_string(), Source::Expr(e))),
                Err(ps) => problems.extend(ps.into_iter().map(|p| p.under(name))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let typed: Vec<_> = fields
            .iter()
            .map(|(n, e)| (n.clone(), e.ty().clone()))
            .collect();
        let name = format!("{}_select", input.value.name);
        let schema = record_schema(&name, &typed).map_err(|p| vec![p])?;
        let value = RecordType::from_schema(&schema).map_err(|p| vec![p])?;
        Ok(Box::new(SelectPlan {
            fields: Arc::new(fields),
            output: StreamType {
                value,
                key: input.key.clone(),
            },
        }))
    }
}

/// Where an output field's value comes from.
#[derive(Debug)]
enum Source {
    /// A field of the input, copied as it is.
    Copy(FieldPath),
    /// A computed value.
    Expr(Expr),
}

impl Source {
    fn ty(&self) -> &FieldType {
        match self {
            Source::Copy(p) => p.ty(),
            Source::Expr(e) => e.ty(),
        }
    }
}

/// `src` as a field of `record` when it is only a name or a dotted path of names, exactly
/// as the schema spells them.
fn bare_path(src: &str, record: &RecordType) -> Option<FieldPath> {
    let src = src.trim();
    if src.is_empty() || !src.split('.').all(valid_name) {
        return None;
    }
    record.resolve(src).ok()
}

/// Avro's name rule: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug)]
struct SelectPlan {
    fields: Arc<Vec<(String, Source)>>,
    output: StreamType,
}

impl Planned for SelectPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(SelectOp {
            fields: self.fields.clone(),
        })
    }
}

struct SelectOp {
    fields: Arc<Vec<(String, Source)>>,
}

impl Operator for SelectOp {
    fn process(&mut self, rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        let mut values = Vec::with_capacity(self.fields.len());
        for (name, source) in self.fields.iter() {
            let v = match source {
                Source::Copy(p) => {
                    conform(p.get(&rec.value).cloned().unwrap_or(Value::Null), p.ty())
                }
                Source::Expr(e) => nullable(
                    e.ty().nullable,
                    e.eval(&rec.value)
                        .map_err(|err| OpError::reject(err.class(), err.to_string()))?,
                ),
            };
            values.push((name.clone(), v));
        }
        out.push(Record {
            key: rec.key,
            value: Value::Record(values),
            timestamp: rec.timestamp,
        });
        Ok(())
    }
}

/// A copied value in the shape the derived schema writes for `ft`: a nullable value as the
/// `["null", ...]` branch it is there (the input's schema may have put `null` elsewhere), a
/// value of a union of several types as the branch of its type, at every depth (records,
/// arrays, maps).
fn conform(v: Value, ft: &FieldType) -> Value {
    let v = match v {
        Value::Union(_, inner) => *inner,
        v => v,
    };
    if v == Value::Null {
        return nullable(ft.nullable, Value::Null);
    }
    let inner = match (&ft.ty, v) {
        (Type::Record(r), Value::Record(fields)) => Value::Record(
            fields
                .into_iter()
                .zip(&r.fields)
                .map(|((name, v), f)| (name, conform(v, &f.ty)))
                .collect(),
        ),
        (Type::Array(items), Value::Array(vs)) => {
            Value::Array(vs.into_iter().map(|v| conform(v, items)).collect())
        }
        (Type::Map(values), Value::Map(m)) => Value::Map(
            m.into_iter()
                .map(|(k, v)| (k, conform(v, values)))
                .collect(),
        ),
        (Type::Union(branches), v) => {
            return match branches.iter().position(|t| fits(&v, t)) {
                // Null is the derived union's first branch when it is nullable.
                Some(j) => {
                    let v = conform(v, &FieldType::required(branches[j].clone()));
                    Value::Union((j + usize::from(ft.nullable)) as u32, Box::new(v))
                }
                // Not one of its types: left as it is, for the encoder to refuse.
                None => v,
            };
        }
        (_, v) => v,
    };
    nullable(ft.nullable, inner)
}

/// Whether `v` (not NULL, not a union) is a value of the type `t`.
fn fits(v: &Value, t: &Type) -> bool {
    match (v, t) {
        (Value::Boolean(_), Type::Boolean)
        | (Value::Int(_), Type::Int)
        | (Value::Long(_), Type::Long)
        | (Value::Float(_), Type::Float)
        | (Value::Double(_), Type::Double)
        | (Value::String(_), Type::String)
        | (Value::Bytes(_), Type::Bytes)
        | (Value::Decimal(_), Type::Decimal { .. })
        | (Value::BigDecimal(_), Type::BigDecimal)
        | (Value::Uuid(_), Type::Uuid)
        | (Value::Date(_), Type::Date)
        | (Value::TimeMillis(_), Type::TimeMillis)
        | (Value::TimeMicros(_), Type::TimeMicros)
        | (Value::TimestampMillis(_), Type::TimestampMillis)
        | (Value::TimestampMicros(_), Type::TimestampMicros)
        | (Value::TimestampNanos(_), Type::TimestampNanos)
        | (Value::LocalTimestampMillis(_), Type::LocalTimestampMillis)
        | (Value::LocalTimestampMicros(_), Type::LocalTimestampMicros)
        | (Value::LocalTimestampNanos(_), Type::LocalTimestampNanos)
        | (Value::Duration(_), Type::Duration)
        | (Value::Array(_), Type::Array(_))
        | (Value::Map(_), Type::Map(_)) => true,
        (Value::Fixed(n, _), Type::Fixed { size, .. }) => n == size,
        (Value::Enum(_, s), Type::Enum { symbols, .. }) => symbols.contains(s),
        (Value::Record(fields), Type::Record(r)) => {
            fields.len() == r.fields.len()
                && fields.iter().zip(&r.fields).all(|((n, _), f)| *n == f.name)
        }
        _ => false,
    }
}

/// A value of a `["null", T]` field is written as the union's branch.
pub(crate) fn nullable(is_nullable: bool, v: Value) -> Value {
    match (is_nullable, v) {
        (false, v) => v,
        (true, Value::Null) => Value::Union(0, Box::new(Value::Null)),
        (true, v @ Value::Union(..)) => v,
        (true, v) => Value::Union(1, Box::new(v)),
    }
}
