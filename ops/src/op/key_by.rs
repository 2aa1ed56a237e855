//! `key_by`: keys each record by fields of its value. The key is what the output topic is
//! partitioned by and what windows group by when they name no `by`.
//!
//! ```yaml
//! - key_by: [site]                # or one field: `- key_by: site`; dotted paths work
//! ```
//!
//! The key's bytes: one string field's UTF-8, one number's decimal text, several fields (or
//! one of another type) as a compact JSON array of their values. A NULL key field sends the
//! record to the dead-letter topic (class `null_key`).

use std::sync::Arc;

use apache_avro::types::Value;

use super::{KeyShape, Kind, OpError, Operator, Planned, Record, StreamType};
use crate::types::FieldPath;
use crate::Problem;

pub struct KeyBy;

impl Kind for KeyBy {
    fn name(&self) -> &'static str {
        "key_by"
    }

    fn summary(&self) -> &'static str {
        "keys each record by fields of its value (what the output is partitioned by)"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        let names = field_list(spec).ok_or_else(|| {
            vec![Problem::new(
                "",
                "key_by names one field or a list of fields",
                "write e.g. `- key_by: [site]` or `- key_by: device_id`",
            )]
        })?;
        let key = KeyFields::resolve(&names, &input.value, "")?;
        Ok(Box::new(KeyByPlan {
            key: Arc::new(key),
            output: StreamType {
                value: input.value.clone(),
                key: KeyShape::Fields(names),
            },
        }))
    }
}

/// `a` or `[a, b]` as field names.
pub(crate) fn field_list(spec: &serde_yaml::Value) -> Option<Vec<String>> {
    match spec {
        serde_yaml::Value::String(s) => Some(vec![s.clone()]),
        serde_yaml::Value::Sequence(seq) if !seq.is_empty() => {
            seq.iter().map(|v| v.as_str().map(str::to_string)).collect()
        }
        _ => None,
    }
}

/// Key fields resolved against a record type, and how to write a key from them.
#[derive(Debug)]
pub struct KeyFields {
    paths: Vec<(String, FieldPath)>,
}

impl KeyFields {
    /// Resolves `names`; problems are keyed `<at>[i]` when there are several.
    pub fn resolve(
        names: &[String],
        record: &crate::types::RecordType,
        at: &str,
    ) -> Result<KeyFields, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut paths = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let key = if names.len() > 1 {
                format!("{at}[{i}]")
            } else {
                at.to_string()
            };
            match record.resolve(n) {
                Ok(p) if p.ty().ty.is_scalar() => paths.push((n.clone(), p)),
                Ok(p) => problems.push(Problem::new(
                    key,
                    format!("`{n}` is a {}, which cannot be a key", p.ty().ty),
                    "key by scalar fields (strings, numbers, booleans, enums, timestamps)",
                )),
                Err(p) => problems.push(p.under(&key)),
            }
        }
        if problems.is_empty() {
            Ok(KeyFields { paths })
        } else {
            Err(problems)
        }
    }

    /// Writes the key of `rec` into `out`; Err names the field that is NULL.
    pub fn write(&self, rec: &Value, out: &mut Vec<u8>) -> Result<(), OpError> {
        out.clear();
        if let [(name, p)] = self.paths.as_slice() {
            match p.get(rec) {
                Some(Value::String(s)) => out.extend_from_slice(s.as_bytes()),
                Some(Value::Enum(_, s)) => out.extend_from_slice(s.as_bytes()),
                Some(v) if !matches!(v, Value::Null) => write_json(v, out),
                _ => return Err(null_key(name)),
            }
            return Ok(());
        }
        out.push(b'[');
        for (i, (name, p)) in self.paths.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match p.get(rec) {
                Some(v) if !matches!(v, Value::Null) => write_json(v, out),
                _ => return Err(null_key(name)),
            }
        }
        out.push(b']');
        Ok(())
    }
}

fn null_key(name: &str) -> OpError {
    OpError::reject("null_key", format!("key field `{name}` is NULL"))
}

/// What a stateful operator keeps its state per (`detect`'s detectors, `suppress`'s
/// intervals): the `by` fields' values, or without `by` the stream's key (a preceding
/// `key_by`'s fields, else the record's key bytes as read from the input topic).
#[derive(Debug)]
pub(crate) enum PerKey {
    /// The record's key bytes.
    RecordKey,
    /// These fields' values; NULL is a value of its own.
    Fields(Vec<FieldPath>),
}

/// The first byte of a written [`PerKey`]: which form follows.
mod per_key_tag {
    pub(super) const NO_KEY: u8 = 0;
    pub(super) const RECORD_KEY: u8 = 1;
    pub(super) const FIELDS: u8 = 2;
}

impl PerKey {
    /// Plans `by:` (one field or a list of scalar fields), or the stream's key without it.
    /// `purpose` completes "`x` is an array, which cannot ..." (e.g. "choose a detector").
    pub(crate) fn plan(
        by: Option<&serde_yaml::Value>,
        input: &StreamType,
        purpose: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<PerKey> {
        let names = match (by, &input.key) {
            (Some(v), _) => match field_list(v) {
                Some(names) => names,
                None => {
                    problems.push(Problem::new(
                        "by",
                        "`by` names one field or a non-empty list of fields",
                        "write e.g. `by: [device_id, metric]`",
                    ));
                    return None;
                }
            },
            (None, KeyShape::Fields(names)) => names.clone(),
            (None, KeyShape::Input) => return Some(PerKey::RecordKey),
        };
        let before = problems.len();
        let mut paths: Vec<FieldPath> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            // Names from a key_by are reported at `by` too: the operator is what needs them.
            let at = if by.is_some() && names.len() > 1 {
                format!("by[{i}]")
            } else {
                "by".to_string()
            };
            match input.value.resolve(name) {
                Ok(p) if !p.ty().ty.is_scalar() => problems.push(Problem::new(
                    at,
                    format!(
                        "`{name}` is {}, which cannot {purpose}",
                        crate::types::a_or_an(p.ty())
                    ),
                    "use scalar fields (strings, numbers, booleans, enums, timestamps); a nested record's fields by dotted paths",
                )),
                Ok(p) if paths.iter().any(|q| q.positions() == p.positions()) => problems.push(
                    Problem::new(at, format!("`{name}` is listed twice"), "list each field once"),
                ),
                Ok(p) => paths.push(p),
                Err(p) => problems.push(p.under(&at)),
            }
        }
        (problems.len() == before).then_some(PerKey::Fields(paths))
    }

    /// The state key of `rec` into `out`: a tag byte, then the record's key bytes or a JSON
    /// array of the `by` values.
    pub(crate) fn write(&self, rec: &Record, out: &mut Vec<u8>) {
        out.clear();
        match self {
            PerKey::RecordKey => match &rec.key {
                None => out.push(per_key_tag::NO_KEY),
                Some(k) => {
                    out.push(per_key_tag::RECORD_KEY);
                    out.extend_from_slice(k);
                }
            },
            PerKey::Fields(paths) => {
                out.push(per_key_tag::FIELDS);
                out.push(b'[');
                for (i, p) in paths.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json(p.get(&rec.value).unwrap_or(&Value::Null), out);
                }
                out.push(b']');
            }
        }
    }
}

/// A scalar Avro value as JSON text.
pub(crate) fn write_json(v: &Value, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = match v {
        Value::String(s) | Value::Enum(_, s) => {
            serde_json::to_writer(&mut *out, s).map_err(std::io::Error::from)
        }
        Value::Boolean(b) => write!(out, "{b}"),
        Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => write!(out, "{n}"),
        Value::Long(n)
        | Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimeMicros(n)
        | Value::LocalTimestampMillis(n)
        | Value::LocalTimestampMicros(n) => write!(out, "{n}"),
        Value::Float(x) => write!(out, "{x}"),
        Value::Double(x) => write!(out, "{x}"),
        Value::Null => write!(out, "null"),
        Value::Union(_, inner) => {
            write_json(inner, out);
            Ok(())
        }
        other => {
            serde_json::to_writer(&mut *out, &format!("{other:?}")).map_err(std::io::Error::from)
        }
    };
}

#[derive(Debug)]
struct KeyByPlan {
    key: Arc<KeyFields>,
    output: StreamType,
}

impl Planned for KeyByPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(KeyByOp {
            key: self.key.clone(),
            buf: Vec::new(),
        })
    }
}

struct KeyByOp {
    key: Arc<KeyFields>,
    buf: Vec<u8>,
}

impl Operator for KeyByOp {
    fn process(&mut self, mut rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        self.key.write(&rec.value, &mut self.buf)?;
        rec.key = Some(self.buf.clone());
        out.push(rec);
        Ok(())
    }
}
