//! Sinks: where a `kind: pipeline` stage's records end when they do not go to a topic. One
//! module per kind (its spec, its check against the record type flowing in, and the checked
//! mapping the runtime writes with), registered in [`KINDS`].
//!
//! A stage names its sink under `sink:`, a one-key mapping like an operator:
//!
//! ```yaml
//! sink:
//!   questdb: { table: site_energy, symbols: [site], columns: [energy_kwh], timestamp: window_start }
//! ```
//!
//! The kinds here only check and describe; the connectors that write (ILP, S3) live in
//! `sluice-connectors`, and the stage that drives them in the `sluice` crate. Each sink keeps
//! its exactly-once behaviour (docs/EXACTLY_ONCE.md): TSDB rows are upserted by their dedup
//! keys, Parquet objects are named by the input offsets they hold.

use crate::op::StreamType;
use crate::types::{self, FieldPath, RecordType, Type};
use crate::Problem;

pub mod questdb;
pub mod s3_parquet;

/// A kind of sink: its name in a topology and its check.
pub trait Kind: Sync {
    /// The key naming it under `sink:`, e.g. `questdb`.
    fn name(&self) -> &'static str;
    /// One line for listings and docs/TOPOLOGY.md.
    fn summary(&self) -> &'static str;
    /// Checks `spec` against the records flowing in; problems carry key paths relative to
    /// the sink's value.
    fn plan(&self, spec: &serde_yaml::Value, input: &StreamType) -> Result<SinkPlan, Vec<Problem>>;
}

/// Every sink kind, by the key that names it under `sink:`.
pub const KINDS: &[&dyn Kind] = &[&questdb::Questdb, &s3_parquet::S3Parquet];

/// The names of every sink kind, for messages.
pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name()).collect()
}

/// A checked sink.
#[derive(Debug, Clone)]
pub enum SinkPlan {
    Questdb(questdb::QuestdbPlan),
    S3Parquet(s3_parquet::ParquetPlan),
}

impl SinkPlan {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkPlan::Questdb(_) => "questdb",
            SinkPlan::S3Parquet(_) => "s3_parquet",
        }
    }
}

/// Checks a stage's `sink:` value (a one-key mapping naming its kind) against the records
/// flowing in. Problem keys are relative to `sink` (`.questdb.table`).
pub fn plan(spec: &serde_yaml::Value, input: &StreamType) -> Result<SinkPlan, Vec<Problem>> {
    let Some((name, value)) = spec
        .as_mapping()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.iter().next())
        .and_then(|(k, v)| Some((k.as_str()?, v)))
    else {
        return Err(vec![Problem::new(
            "",
            "a sink is a mapping with one key, its kind",
            format!(
                "write e.g. `sink: {{ questdb: {{ table: t, columns: [x] }} }}`; kinds: {}",
                kind_names().join(", ")
            ),
        )]);
    };
    let Some(kind) = KINDS.iter().copied().find(|k| k.name() == name) else {
        let fix = match crate::types::did_you_mean(name, kind_names()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "use one of {} (or `output: <topic>` instead of `sink:` to write a topic)",
                kind_names().join(", ")
            ),
        };
        return Err(vec![Problem::new(
            format!(".{name}"),
            format!("unknown sink `{name}`"),
            fix,
        )]);
    };
    kind.plan(value, input).map_err(|ps| {
        ps.into_iter()
            .map(|p| p.under(&format!(".{name}")))
            .collect()
    })
}

/// A column of a sink: its name in the table or file, and the field it is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSource {
    /// The column's name.
    pub column: String,
    /// The field read (dotted path).
    pub path: crate::types::FieldPath,
}

/// A column list: each item a field path (the column takes the path's name, dots as `_`),
/// or a one-key mapping `column: path` (a rename). Problems are keyed `<at>[i]`.
pub(crate) fn column_list(
    v: &serde_yaml::Value,
    at: &str,
    record: &crate::types::RecordType,
    problems: &mut Vec<Problem>,
) -> Vec<(String, String, Result<crate::types::FieldPath, Problem>)> {
    let items: Vec<&serde_yaml::Value> = match v {
        serde_yaml::Value::Null => Vec::new(),
        serde_yaml::Value::Sequence(seq) => seq.iter().collect(),
        serde_yaml::Value::String(_) => vec![v],
        serde_yaml::Value::Mapping(m) => {
            // `{col: path, col2: path2}`: every entry a rename.
            return m
                .iter()
                .filter_map(|(k, p)| {
                    let key = format!("{at}.{}", k.as_str().unwrap_or("?"));
                    match (k.as_str(), p.as_str()) {
                        (Some(col), Some(path)) => Some((
                            col.to_string(),
                            key.clone(),
                            record.resolve(path).map_err(|e| e.under(&key)),
                        )),
                        _ => {
                            problems.push(Problem::new(
                                key,
                                "a column maps its name to a field path",
                                "write e.g. `meter: device.id`",
                            ));
                            None
                        }
                    }
                })
                .collect();
        }
        _ => {
            problems.push(Problem::new(
                at,
                format!("`{at}` lists fields"),
                format!("write e.g. `{at}: [site, power.volts, {{ phase_name: phase }}]`"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("{at}[{i}]");
        match item {
            serde_yaml::Value::String(path) => out.push((
                path.replace('.', "_"),
                key.clone(),
                record.resolve(path).map_err(|e| e.under(&key)),
            )),
            serde_yaml::Value::Mapping(m) if m.len() == 1 => {
                let (k, p) = m.iter().next().expect("one entry");
                match (k.as_str(), p.as_str()) {
                    (Some(col), Some(path)) => {
                        let key = format!("{key}.{col}");
                        out.push((
                            col.to_string(),
                            key.clone(),
                            record.resolve(path).map_err(|e| e.under(&key)),
                        ))
                    }
                    _ => problems.push(Problem::new(
                        key,
                        "a renamed column is `column: field.path`",
                        "write e.g. `- volts: power.volts`",
                    )),
                }
            }
            _ => problems.push(Problem::new(
                key,
                "a column is a field path or `column: field.path`",
                "write e.g. `- site` or `- volts: power.volts`",
            )),
        }
    }
    out
}

/// Column and table names sinks accept: letters, digits and `_`, not starting with a digit
/// (what every TSDB, Parquet reader and Hive path takes without quoting).
pub(crate) fn check_column_name(name: &str, key: &str, problems: &mut Vec<Problem>) -> bool {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        let suggestion: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        problems.push(Problem::new(
            key,
            format!("`{name}` is not a usable column name"),
            format!(
                "use letters, digits and `_` (not first a digit), e.g. `{}`; rename with `column: field.path`",
                if suggestion.is_empty() { "value".to_string() } else { suggestion }
            ),
        ));
    }
    ok
}

/// The field a sink's `key` names as its time (a timestamp or date, or a long of
/// milliseconds); `None`, with the problem pushed, when it is none of those.
pub(crate) fn time_field(
    record: &RecordType,
    key: &str,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<FieldPath> {
    match record.resolve(name) {
        Ok(p) if p.ty().ty.is_timestamp_like() || p.ty().ty == Type::Long => Some(p),
        Ok(p) => {
            problems.push(Problem::new(
                key,
                format!("`{name}` is {}, not a timestamp", types::a_or_an(p.ty())),
                format!(
                    "name a timestamp or date field ({}), or leave `{key}` out to use the record's timestamp",
                    types::name_list(
                        record
                            .field_paths(|t| t.ty.is_timestamp_like())
                            .iter()
                            .map(String::as_str)
                    )
                ),
            ));
            None
        }
        Err(p) => {
            problems.push(p.under(key));
            None
        }
    }
}
