//! `questdb`: rows to QuestDB (or any server that takes InfluxDB line protocol) from any
//! record, by a mapping: the table, its SYMBOL columns, its value columns, its designated
//! timestamp and its dedup keys.
//!
//! ```yaml
//! sink:
//!   questdb:
//!     table: site_energy
//!     symbols: [site]                          # string or enum fields; dotted paths allowed
//!     columns: [energy_kwh, readings, { volts: power.volts }]   # `column: field` renames
//!     timestamp: window_start                  # default: the record's timestamp
//!     dedup_keys: [ts, site]                   # default: the timestamp column and every symbol
//! ```
//!
//! Exactly once: the table is created by `sluice tsdb init` with `DEDUP UPSERT KEYS(...)`
//! (QuestDB requires the designated timestamp among them), so the rows a replay writes again
//! after a crash replace the ones already there instead of adding to them.

use std::borrow::Cow;

use apache_avro::types::Value;
use serde::Deserialize;

use super::{check_column_name, column_list, Kind, SinkPlan};
use crate::op::{OpError, Record, StreamType};
use crate::types::{self, FieldPath, RecordType, Type};
use crate::Problem;

pub struct Questdb;

/// The keys of `questdb:`, as [`QuestdbSpec`] reads them.
pub const KEYS: &[&str] = &[
    "table",
    "symbols",
    "columns",
    "timestamp",
    "timestamp_column",
    "dedup_keys",
    "addr",
    "flush_rows",
];

const EXAMPLE: &str =
    "write e.g. `questdb: { table: site_energy, symbols: [site], columns: [energy_kwh], timestamp: window_start }`";

/// `sink: { questdb: ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestdbSpec {
    /// The table written. Required. Letters, digits and `_`.
    #[serde(default)]
    pub table: String,
    /// SYMBOL columns (QuestDB's indexed strings: what rows are grouped and looked up by),
    /// from string, enum or uuid fields. Each item is a field path (the column is named after
    /// it, dots as `_`) or `column: field.path`. NULL writes no value. Default: none.
    #[serde(default)]
    pub symbols: Option<serde_yaml::Value>,
    /// Value columns, the same way: boolean to BOOLEAN; int, long, time-* to LONG; float,
    /// double, decimal to DOUBLE; string, enum, uuid to VARCHAR; timestamps and dates to
    /// TIMESTAMP. Records, arrays, maps, bytes and unions are refused: name a nested field by
    /// its dotted path, or compute a value in a `select` first. Default: none.
    #[serde(default)]
    pub columns: Option<serde_yaml::Value>,
    /// The designated timestamp: a timestamp or date field, or a long of ms since the epoch.
    /// A record whose field is NULL is a dead letter (class `null_timestamp`). Default: the
    /// record's timestamp (a window's end for window results).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The designated timestamp column's name. Default `ts`.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Columns whose values identify a row: `DEDUP UPSERT KEYS(...)` of the table, so a row
    /// written again replaces the first. Must include the timestamp column. Default: the
    /// timestamp column and every symbol.
    #[serde(default)]
    pub dedup_keys: Option<Vec<String>>,
    /// questdb-rs configuration string, e.g. `http::addr=127.0.0.1:9000;protocol_version=2;`.
    /// Default `connections.ilp`.
    #[serde(default)]
    pub addr: Option<String>,
    /// Rows buffered before a flush; every commit flushes too. Default 10000.
    #[serde(default)]
    pub flush_rows: Option<usize>,
}

/// A column's type in the table, as ILP writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Symbol,
    Boolean,
    Long,
    Double,
    Varchar,
    Timestamp,
}

impl ColumnKind {
    /// The QuestDB SQL type.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnKind::Symbol => "SYMBOL",
            ColumnKind::Boolean => "BOOLEAN",
            ColumnKind::Long => "LONG",
            ColumnKind::Double => "DOUBLE",
            ColumnKind::Varchar => "VARCHAR",
            ColumnKind::Timestamp => "TIMESTAMP",
        }
    }
}

/// One column of the table and the field it is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestdbColumn {
    pub name: String,
    pub path: FieldPath,
    pub kind: ColumnKind,
}

/// A checked `questdb` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestdbPlan {
    pub table: String,
    pub timestamp_column: String,
    /// Where the designated timestamp is read; `None`: the record's timestamp.
    pub timestamp: Option<FieldPath>,
    /// Symbols first, then value columns, each in the order written.
    pub columns: Vec<QuestdbColumn>,
    /// The table's dedup keys, the timestamp column first.
    pub dedup_keys: Vec<String>,
    pub addr: Option<String>,
    pub flush_rows: usize,
}

/// A value as ILP writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Long(i64),
    Double(f64),
    /// Microseconds since the epoch.
    TimestampMicros(i64),
}

impl QuestdbPlan {
    /// The designated timestamp of `rec` in microseconds since the epoch.
    pub fn timestamp_micros(&self, rec: &Record) -> Result<i64, OpError> {
        match &self.timestamp {
            None => Ok(rec.timestamp.saturating_mul(1000)),
            Some(p) => p.get(&rec.value).and_then(timestamp_us).ok_or_else(|| {
                OpError::reject(
                    "null_timestamp",
                    format!(
                        "the designated timestamp `{}` of table {} is NULL",
                        p.path(),
                        self.table
                    ),
                )
            }),
        }
    }

    /// The value of `col` in `rec`; `None` when it is NULL (the row then has no value there).
    pub fn cell<'a>(&self, col: &QuestdbColumn, rec: &'a Value) -> Option<Cell<'a>> {
        let v = col.path.get(rec)?;
        Some(match col.kind {
            ColumnKind::Symbol | ColumnKind::Varchar => Cell::Str(types::as_str(v)?),
            ColumnKind::Boolean => match v {
                Value::Boolean(b) => Cell::Bool(*b),
                _ => return None,
            },
            ColumnKind::Long => Cell::Long(match v {
                Value::Int(i) | Value::TimeMillis(i) => i64::from(*i),
                Value::Long(l) | Value::TimeMicros(l) => *l,
                _ => return None,
            }),
            ColumnKind::Double => Cell::Double(col.path.ty().ty.as_f64(v)?),
            ColumnKind::Timestamp => Cell::TimestampMicros(timestamp_us(v)?),
        })
    }

    /// Every column with its type, the timestamp column first (for `CREATE TABLE`).
    pub fn table_columns(&self) -> Vec<(&str, ColumnKind)> {
        std::iter::once((self.timestamp_column.as_str(), ColumnKind::Timestamp))
            .chain(self.columns.iter().map(|c| (c.name.as_str(), c.kind)))
            .collect()
    }
}

/// An instant in microseconds since the epoch: timestamps of any unit (nanoseconds rounded
/// down), dates as their midnight, a long as milliseconds.
pub fn timestamp_us(v: &Value) -> Option<i64> {
    match types::unwrap_union(v) {
        Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => Some(*t),
        Value::TimestampNanos(t) | Value::LocalTimestampNanos(t) => Some(t.div_euclid(1000)),
        other => types::timestamp_ms(other).map(|ms| ms.saturating_mul(1000)),
    }
}

impl Kind for Questdb {
    fn name(&self) -> &'static str {
        "questdb"
    }

    fn summary(&self) -> &'static str {
        "rows to a QuestDB table over ILP, upserted by dedup keys"
    }

    fn plan(&self, spec: &serde_yaml::Value, input: &StreamType) -> Result<SinkPlan, Vec<Problem>> {
        check(spec, &input.value).map(SinkPlan::Questdb)
    }
}

/// [`Kind::plan`] with the concrete plan.
pub fn check(spec: &serde_yaml::Value, record: &RecordType) -> Result<QuestdbPlan, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(spec) = crate::op::validate::parse_spec::<QuestdbSpec>(
        spec,
        KEYS,
        "a questdb sink",
        EXAMPLE,
        &mut problems,
    ) else {
        return Err(problems);
    };
    if spec.table.is_empty() {
        problems.push(Problem::new(
            "table",
            "a questdb sink needs `table`: the table written",
            "add e.g. `table: site_energy`",
        ));
    } else {
        check_column_name(&spec.table, "table", &mut problems);
    }
    let timestamp_column = spec.timestamp_column.clone().unwrap_or_else(|| "ts".into());
    check_column_name(&timestamp_column, "timestamp_column", &mut problems);
    let mut columns: Vec<QuestdbColumn> = Vec::new();
    let mut keys_of: Vec<String> = Vec::new();
    for (which, v) in [("symbols", &spec.symbols), ("columns", &spec.columns)] {
        let Some(v) = v else { continue };
        for (name, key, path) in column_list(v, which, record, &mut problems) {
            let path = match path {
                Ok(p) => p,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            if !check_column_name(&name, &key, &mut problems) {
                continue;
            }
            let kind = if which == "symbols" {
                symbol_kind(&path, &key, &mut problems)
            } else {
                value_kind(&path, &key, record, &mut problems)
            };
            let Some(kind) = kind else { continue };
            if name == timestamp_column || columns.iter().any(|c| c.name == name) {
                problems.push(Problem::new(
                    key,
                    format!("column `{name}` is named twice in table {}", spec.table),
                    "rename one with `other_name: field.path`",
                ));
                continue;
            }
            keys_of.push(key);
            columns.push(QuestdbColumn { name, path, kind });
        }
    }
    if columns.is_empty() && spec.symbols.is_none() && spec.columns.is_none() {
        problems.push(Problem::new(
            "columns",
            "a questdb sink writes no column",
            format!(
                "list value columns, e.g. `columns: [{}]`",
                record
                    .field_paths(|t| t.ty.is_numeric())
                    .first()
                    .map_or("value", |s| s.as_str())
            ),
        ));
    }
    let timestamp = spec
        .timestamp
        .as_ref()
        .and_then(|name| super::time_field(record, "timestamp", name, &mut problems));
    let names: Vec<&str> = std::iter::once(timestamp_column.as_str())
        .chain(columns.iter().map(|c| c.name.as_str()))
        .collect();
    let dedup_keys = match &spec.dedup_keys {
        None => std::iter::once(timestamp_column.clone())
            .chain(
                columns
                    .iter()
                    .filter(|c| c.kind == ColumnKind::Symbol)
                    .map(|c| c.name.clone()),
            )
            .collect(),
        Some(keys) => {
            for (i, k) in keys.iter().enumerate() {
                if !names.contains(&k.as_str()) {
                    let fix = match types::did_you_mean(k, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? columns: {}", names.join(", ")),
                        None => format!("name columns of the table: {}", names.join(", ")),
                    };
                    problems.push(Problem::new(
                        format!("dedup_keys[{i}]"),
                        format!("`{k}` is not a column of table {}", spec.table),
                        fix,
                    ));
                }
            }
            if !keys.contains(&timestamp_column) {
                problems.push(Problem::new(
                    "dedup_keys",
                    format!(
                        "the dedup keys do not include the designated timestamp `{timestamp_column}`"
                    ),
                    format!(
                        "QuestDB requires it: write `dedup_keys: [{timestamp_column}{}]`",
                        keys.iter().map(|k| format!(", {k}")).collect::<String>()
                    ),
                ));
            }
            let mut keys = keys.clone();
            // The timestamp first, as QuestDB lists it.
            keys.sort_by_key(|k| *k != timestamp_column);
            keys
        }
    };
    if spec.flush_rows == Some(0) {
        problems.push(Problem::new(
            "flush_rows",
            "flush_rows is 0",
            "use at least 1 (default 10000)",
        ));
    }
    if let Some(addr) = &spec.addr {
        if !addr.contains("::") {
            problems.push(Problem::new(
                "addr",
                format!("`{addr}` is not a questdb-rs configuration string"),
                "write it like `http::addr=127.0.0.1:9000;protocol_version=2;`",
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(QuestdbPlan {
        table: spec.table,
        timestamp_column,
        timestamp,
        columns,
        dedup_keys,
        addr: spec.addr,
        flush_rows: spec.flush_rows.unwrap_or(10_000),
    })
}

fn symbol_kind(path: &FieldPath, key: &str, problems: &mut Vec<Problem>) -> Option<ColumnKind> {
    match &path.ty().ty {
        Type::String | Type::Enum { .. } | Type::Uuid => Some(ColumnKind::Symbol),
        other => {
            problems.push(Problem::new(
                key,
                format!(
                    "symbol `{}` is {}; a SYMBOL column holds strings or enum symbols",
                    path.path(),
                    types::a_or_an(other)
                ),
                "list it under `columns:` instead, or make it a string in a `select` first (CAST(x AS VARCHAR))",
            ));
            None
        }
    }
}

fn value_kind(
    path: &FieldPath,
    key: &str,
    record: &RecordType,
    problems: &mut Vec<Problem>,
) -> Option<ColumnKind> {
    let ty = &path.ty().ty;
    let kind = match ty {
        Type::Boolean => ColumnKind::Boolean,
        Type::Int | Type::Long | Type::TimeMillis | Type::TimeMicros => ColumnKind::Long,
        Type::Float | Type::Double | Type::Decimal { .. } | Type::BigDecimal => ColumnKind::Double,
        Type::String | Type::Enum { .. } | Type::Uuid => ColumnKind::Varchar,
        t if t.is_timestamp_like() => ColumnKind::Timestamp,
        Type::Record(r) => {
            let leaves: Vec<String> = r
                .field_paths(|t| t.ty.is_scalar())
                .into_iter()
                .map(|p| format!("{}.{p}", path.path()))
                .collect();
            problems.push(Problem::new(
                key,
                format!(
                    "`{}` is a record ({}); ILP has no nested values",
                    path.path(),
                    r.name
                ),
                format!(
                    "name its fields by dotted path: {}",
                    types::name_list(leaves.iter().map(String::as_str))
                ),
            ));
            return None;
        }
        Type::Array(_) | Type::Map(_) => {
            problems.push(Problem::new(
                key,
                format!(
                    "`{}` is {}; ILP has no arrays or maps",
                    path.path(),
                    types::a_or_an(ty)
                ),
                "pick an element or aggregate it in a `select` first (e.g. `x[1]`, `cardinality(x)`)",
            ));
            return None;
        }
        other => {
            problems.push(Problem::new(
                key,
                format!(
                    "`{}` is {}, which ILP cannot write",
                    path.path(),
                    types::a_or_an(other)
                ),
                format!(
                    "write a boolean, number, string, enum or timestamp field: {}",
                    types::name_list(
                        record
                            .field_paths(|t| t.ty.is_scalar()
                                && !matches!(
                                    t.ty,
                                    Type::Bytes | Type::Fixed { .. } | Type::Duration | Type::Null
                                ))
                            .iter()
                            .map(String::as_str)
                    )
                ),
            ));
            return None;
        }
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_the_column_types_and_nulls_are_none() {
        let r = RecordType::from_schema(
            &apache_avro::Schema::parse_str(
                r#"{"type": "record", "name": "R", "fields": [
                    {"name": "s", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
                    {"name": "b", "type": "boolean"},
                    {"name": "i", "type": "int"},
                    {"name": "f", "type": "float"},
                    {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}},
                    {"name": "t", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
                    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                    {"name": "o", "type": ["null", "string"], "default": null}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        let spec = serde_yaml::from_str(
            "{ table: t, symbols: [s], columns: [b, i, f, d, t, day, { text: o }], timestamp: day }",
        )
        .unwrap();
        let plan = check(&spec, &r).unwrap();
        let kinds: Vec<ColumnKind> = plan.columns.iter().map(|c| c.kind).collect();
        use ColumnKind::*;
        assert_eq!(
            kinds,
            [Symbol, Boolean, Long, Double, Double, Timestamp, Timestamp, Varchar]
        );
        let value = Value::Record(vec![
            ("s".into(), Value::Enum(1, "B".into())),
            ("b".into(), Value::Boolean(true)),
            ("i".into(), Value::Int(7)),
            ("f".into(), Value::Float(1.5)),
            (
                "d".into(),
                Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xD2])),
            ),
            ("t".into(), Value::TimestampNanos(1_000_001_999)),
            ("day".into(), Value::Date(2)),
            ("o".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        let cells: Vec<Option<Cell<'_>>> =
            plan.columns.iter().map(|c| plan.cell(c, &value)).collect();
        assert_eq!(
            cells,
            [
                Some(Cell::Str("B".into())),
                Some(Cell::Bool(true)),
                Some(Cell::Long(7)),
                Some(Cell::Double(1.5)),
                Some(Cell::Double(12.34)),
                Some(Cell::TimestampMicros(1_000_001)),
                Some(Cell::TimestampMicros(2 * 86_400_000_000)),
                None,
            ]
        );
        let rec = Record {
            key: None,
            value,
            timestamp: 0,
        };
        assert_eq!(plan.timestamp_micros(&rec).unwrap(), 2 * 86_400_000_000);
        assert_eq!(plan.dedup_keys, ["ts", "s"]);
    }
}
