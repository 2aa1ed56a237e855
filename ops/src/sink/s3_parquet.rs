//! `s3_parquet`: records as Parquet objects in S3 (the bucket of `connections.s3`), their
//! Arrow schema derived from the Avro schema of the records flowing in (nested records as
//! structs, optional fields nullable, enums as dictionary-encoded strings, arrays as lists,
//! maps as maps, logical types kept), Hive-partitioned by a time field and by columns.
//!
//! ```yaml
//! sink:
//!   s3_parquet:
//!     prefix: fleet/trips          # required
//!     time: trip_start             # default: the record's timestamp
//!     granularity: day             # hour (default), day, month, year or none
//!     partition_by: [vehicle_id]   # Hive directories `vehicle_id=v1/`; default none
//!     rows_per_file: 100000
//! ```
//!
//! Exactly once: an object holds the rows produced from one range of input offsets of one
//! partition and is named by it (`<topic>-<partition>-<first>-<last>.parquet`); a manifest
//! written before the objects records where the range ends, so a task restarted after a
//! crash cuts its ranges exactly where the crashed run cut them, and a replay overwrites the
//! same objects with the same rows.

use serde::Deserialize;

use super::{check_column_name, Kind, SinkPlan};
use crate::op::{Record, StreamType};
use crate::types::{self, FieldPath, FieldType, RecordType, Type};
use crate::Problem;

pub struct S3Parquet;

/// The keys of `s3_parquet:`, as [`S3ParquetSpec`] reads them.
pub const KEYS: &[&str] = &[
    "prefix",
    "time",
    "granularity",
    "partition_by",
    "rows_per_file",
];

const EXAMPLE: &str =
    "write e.g. `s3_parquet: { prefix: fleet/trips, time: trip_start, granularity: day }`";

/// `sink: { s3_parquet: ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ParquetSpec {
    /// Key prefix of the objects inside the bucket of `connections.s3`, e.g. `fleet/trips`.
    /// Required.
    #[serde(default)]
    pub prefix: String,
    /// The field the time directories are read from: a timestamp or date field, or a long
    /// of ms since the epoch. A NULL one goes to `__HIVE_DEFAULT_PARTITION__`. Default: the
    /// record's timestamp (a window's end for window results).
    #[serde(default)]
    pub time: Option<String>,
    /// Time directories (UTC): `hour` (`date=YYYY-MM-DD/hour=HH/`, the default), `day`
    /// (`date=YYYY-MM-DD/`), `month` (`month=YYYY-MM/`), `year` (`year=YYYY/`) or `none`.
    #[serde(default)]
    pub granularity: Granularity,
    /// Fields (dotted paths allowed; strings, enums, integers, booleans, dates) whose values
    /// make Hive directories `<column>=<value>/` after the time directories, in order. The
    /// column keeps its place in the files too. Default: none.
    #[serde(default)]
    pub partition_by: Option<Vec<String>>,
    /// A batch is cut once it holds this many rows; one object holds one batch's rows of one
    /// directory, so this bounds the rows per object. Default 100000.
    #[serde(default)]
    pub rows_per_file: Option<usize>,
}

/// How finely objects are split by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    None,
    Year,
    Month,
    Day,
    #[default]
    Hour,
}

/// A checked `s3_parquet` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetPlan {
    pub prefix: String,
    /// Where the time directories are read; `None`: the record's timestamp.
    pub time: Option<FieldPath>,
    pub granularity: Granularity,
    /// Hive partition columns: the directory name and the field.
    pub partition_by: Vec<(String, FieldPath)>,
    pub rows_per_file: usize,
}

impl ParquetPlan {
    /// The time `rec`'s directory is chosen by, in ms since the epoch; `None` when NULL.
    pub fn time_ms(&self, rec: &Record) -> Option<i64> {
        match &self.time {
            None => Some(rec.timestamp),
            Some(p) => types::timestamp_ms(p.get(&rec.value)?),
        }
    }

    /// The partition columns' values of `rec` as directory text (`None` for NULL).
    pub fn partition_values(&self, rec: &Record) -> Vec<(&str, Option<String>)> {
        self.partition_by
            .iter()
            .map(|(name, p)| {
                let v = p.get(&rec.value).map(|v| match types::unwrap_union(v) {
                    apache_avro::types::Value::Boolean(b) => b.to_string(),
                    apache_avro::types::Value::Date(d) => {
                        let (y, m, day) = crate::expr::civil_from_days(i64::from(*d));
                        format!("{y:04}-{m:02}-{day:02}")
                    }
                    other => types::as_str(other)
                        .map(|s| s.into_owned())
                        .or_else(|| types::as_i64(other).map(|n| n.to_string()))
                        .unwrap_or_default(),
                });
                (name.as_str(), v)
            })
            .collect()
    }
}

impl Kind for S3Parquet {
    fn name(&self) -> &'static str {
        "s3_parquet"
    }

    fn summary(&self) -> &'static str {
        "records as Hive-partitioned Parquet objects in S3, named by input offsets"
    }

    fn plan(&self, spec: &serde_yaml::Value, input: &StreamType) -> Result<SinkPlan, Vec<Problem>> {
        check(spec, &input.value).map(SinkPlan::S3Parquet)
    }
}

/// [`Kind::plan`] with the concrete plan.
pub fn check(spec: &serde_yaml::Value, record: &RecordType) -> Result<ParquetPlan, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(spec) = crate::op::validate::parse_spec::<S3ParquetSpec>(
        spec,
        KEYS,
        "an s3_parquet sink",
        EXAMPLE,
        &mut problems,
    ) else {
        return Err(problems);
    };
    let prefix = spec.prefix.trim_matches('/').to_string();
    if prefix.is_empty() {
        problems.push(Problem::new(
            "prefix",
            "an s3_parquet sink needs `prefix`: where its objects go in the bucket",
            "add e.g. `prefix: fleet/trips`",
        ));
    } else if prefix.contains("..")
        || prefix.contains("//")
        || prefix
            .split('/')
            .any(|s| s.starts_with('_') || s.contains('='))
    {
        problems.push(Problem::new(
            "prefix",
            format!("`{}` is not a plain path", spec.prefix),
            "use folder names like `fleet/trips` (no `..`, `//`, `=`, nor a leading `_`, which Hive readers skip)",
        ));
    }
    let time = spec
        .time
        .as_ref()
        .and_then(|name| super::time_field(record, "time", name, &mut problems));
    let mut partition_by: Vec<(String, FieldPath)> = Vec::new();
    for (i, name) in spec.partition_by.iter().flatten().enumerate() {
        let key = format!("partition_by[{i}]");
        match record.resolve(name) {
            Ok(p) => {
                let ok = matches!(
                    p.ty().ty,
                    Type::String
                        | Type::Enum { .. }
                        | Type::Uuid
                        | Type::Int
                        | Type::Long
                        | Type::Boolean
                        | Type::Date
                );
                if !ok {
                    problems.push(Problem::new(
                        key,
                        format!(
                            "`{name}` is {}, which does not make a directory name",
                            types::a_or_an(p.ty())
                        ),
                        "partition by strings, enums, integers, booleans or dates (few distinct values); for time use `time` and `granularity`",
                    ));
                    continue;
                }
                let col = name.replace('.', "_");
                if !check_column_name(&col, &key, &mut problems) {
                    continue;
                }
                if partition_by.iter().any(|(c, _)| *c == col) {
                    problems.push(Problem::new(
                        key,
                        format!("`{name}` is listed twice"),
                        "list each column once",
                    ));
                    continue;
                }
                partition_by.push((col, p));
            }
            Err(p) => problems.push(p.under(&key)),
        }
    }
    if spec.rows_per_file == Some(0) {
        problems.push(Problem::new(
            "rows_per_file",
            "rows_per_file is 0",
            "use at least 1 (default 100000)",
        ));
    }
    unsupported(record, "", &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ParquetPlan {
        prefix,
        time,
        granularity: spec.granularity,
        partition_by,
        rows_per_file: spec.rows_per_file.unwrap_or(100_000),
    })
}

/// A problem for every field Parquet cannot hold: unions other than `["null", T]` and
/// recursive types.
fn unsupported(record: &RecordType, prefix: &str, problems: &mut Vec<Problem>) {
    for f in &record.fields {
        let path = format!("{prefix}{}", f.name);
        field_type(&f.ty, &path, problems);
    }
}

fn field_type(ty: &FieldType, path: &str, problems: &mut Vec<Problem>) {
    match &ty.ty {
        Type::Union(_) => problems.push(Problem::new(
            "",
            format!("field `{path}` is {}; Parquet has no unions", types::a_or_an(ty)),
            format!("make it one type in a `select` before the sink (e.g. `{}: CAST({path} AS VARCHAR)`), or leave it out", path.replace('.', "_")),
        )),
        Type::Recursive(name) => problems.push(Problem::new(
            "",
            format!("field `{path}` refers back to {name}; Parquet has no recursive types"),
            "leave it out in a `select` before the sink",
        )),
        Type::Record(r) => unsupported(r, &format!("{path}."), problems),
        Type::Array(item) => field_type(item, &format!("{path}[]"), problems),
        Type::Map(value) => field_type(value, &format!("{path}{{}}"), problems),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;

    use super::*;

    fn record(schema: &str) -> RecordType {
        RecordType::from_schema(&apache_avro::Schema::parse_str(schema).unwrap()).unwrap()
    }

    #[test]
    fn unions_of_several_types_and_recursive_types_are_refused_by_path() {
        let r = record(
            r#"{"type": "record", "name": "N", "fields": [
                {"name": "v", "type": ["null", "string", "long"]},
                {"name": "inner", "type": {"type": "record", "name": "I", "fields": [
                    {"name": "tags", "type": {"type": "array", "items": ["string", "int"]}}]}},
                {"name": "next", "type": ["null", "N"], "default": null}]}"#,
        );
        let spec = serde_yaml::from_str("{ prefix: lake }").unwrap();
        let problems = check(&spec, &r).unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 3, "{messages:#?}");
        assert!(messages[0].contains("field `v`") && messages[0].contains("no unions"));
        assert!(
            messages[1].contains("field `inner.tags[]`"),
            "{messages:#?}"
        );
        assert!(messages[2].contains("recursive"), "{messages:#?}");
        assert!(
            problems[0].fix.contains("CAST(v AS VARCHAR)"),
            "{problems:?}"
        );
    }

    #[test]
    fn partition_values_and_time_come_from_the_record() {
        let r = record(
            r#"{"type": "record", "name": "R", "fields": [
                {"name": "site", "type": ["null", "string"], "default": null},
                {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                {"name": "ok", "type": "boolean"},
                {"name": "n", "type": "int"},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}"#,
        );
        let spec = serde_yaml::from_str(
            "{ prefix: /lake/, time: at, granularity: day, partition_by: [site, day, ok, n] }",
        )
        .unwrap();
        let plan = check(&spec, &r).unwrap();
        assert_eq!(plan.prefix, "lake");
        let rec = Record {
            key: None,
            timestamp: 5,
            value: Value::Record(vec![
                ("site".into(), Value::Union(0, Box::new(Value::Null))),
                ("day".into(), Value::Date(19_675)),
                ("ok".into(), Value::Boolean(true)),
                ("n".into(), Value::Int(-3)),
                ("at".into(), Value::TimestampMicros(1_700_000_000_123_456)),
            ]),
        };
        assert_eq!(plan.time_ms(&rec), Some(1_700_000_000_123));
        assert_eq!(
            plan.partition_values(&rec),
            [
                ("site", None),
                ("day", Some("2023-11-14".to_string())),
                ("ok", Some("true".to_string())),
                ("n", Some("-3".to_string())),
            ]
        );
        // Without `time`, the record's timestamp.
        let plan = check(&serde_yaml::from_str("{ prefix: lake }").unwrap(), &r).unwrap();
        assert_eq!(plan.time_ms(&rec), Some(5));
        assert_eq!(plan.granularity, Granularity::Hour);
        assert_eq!(plan.rows_per_file, 100_000);
    }
}
