//! `join`: enriches each record with the current value of a **table**, a compacted topic
//! materialised by sluice (e.g. a device registry: device id to site, model and limits).
//!
//! ```yaml
//! - join:
//!     table: devices.registry   # a topic of `topics:` with a `schema:`; required
//!     on: device_id             # the stream's field(s) that make the table key; required
//!     type: left                # inner (default): unmatched records are dropped; left: kept
//!     scope: global             # global (default) or co_partitioned
//!     fields:                   # what is added: output name: table field (dotted path)
//!       site: site
//!       max_temp: limits.max_temp
//! ```
//!
//! # Matching
//!
//! A table holds, per record key of its topic, the latest value (a record with no value, a
//! tombstone, deletes the key). A stream record matches the table entry whose key equals
//! the `on` fields written the way `key_by` writes keys: one string field as its UTF-8, one
//! number as its decimal text, several fields as a compact JSON array. So a registry keyed by
//! the plain device id matches `on: device_id`, and a table written by a sluice pipeline
//! with `key_by: [a, b]` matches `on: [a, b]`.
//!
//! - Inner: a record without a match (or with NULL in an `on` field) is dropped; it is not a
//!   dead letter. The operator's in/out counts (`sluice_operator_records_total`) show how
//!   many were dropped.
//! - Left: every record passes; the added fields are NULL when nothing matched.
//!
//! `fields` is a mapping (`name: table field`) or a list of table fields (each added under
//! its last name). Without it every top-level field of the table is added except those named
//! in `on`. An added name the stream already has is a mistake to fix by renaming.
//! Added fields keep their table types; they are nullable in a left join.
//!
//! # Time
//!
//! Table updates apply from their arrival on, in steps of one commit: the records a task
//! processes between two commits see the table as its reader had it at the first of them
//! (a *snapshot*: the next offset of each of the table topic's partitions). The join keeps
//! that snapshot in its own store, `snapshot`, written with each commit, so a replay after a
//! crash sees exactly the table the first run saw and produces the same outputs
//! (docs/EXACTLY_ONCE.md, "Joins with tables"). An update is so visible to records processed
//! from the commit after its arrival on (within `commit_interval`). For that the runtime
//! keeps recent versions of each key ([`TableView::get_at`]).
//!
//! # Scope
//!
//! - `global`: every instance holds the whole table; the stream may be keyed any way.
//! - `co_partitioned`: task *p* holds partition *p* of the table only, so each instance
//!   keeps a share of a table too large for one. The table topic needs as many partitions
//!   as the stream, and both must be partitioned by the same key: after a `key_by` of the
//!   `on` fields (sluice repartitions before the join), or on an input topic its producers
//!   key that way (sluice cannot see this: it checks the partition counts only).

mod mem;
mod snapshot;

use std::sync::Arc;

use apache_avro::types::Value;
use serde::Deserialize;
use sluice_state::table::AnyTable;
use sluice_state::StateError;

use super::key_by::{field_list, KeyFields};
use super::select::nullable;
use super::{KeyShape, Kind, OpError, Operator, PlanContext, Planned, Record, StreamType};
use super::{TaskContext, TopicInfo};

use crate::types::{record_schema, FieldPath, FieldType, RecordType};
use crate::Problem;
pub use mem::{MemTable, MemTables};
use snapshot::Snapshot;

pub struct Join;

const KEYS: &str = "table, on, type, scope, fields";

/// Inner or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinType {
    /// Only records with a match pass.
    #[default]
    Inner,
    /// Every record passes; added fields are NULL without a match.
    Left,
}

/// Where the table is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every instance holds the whole table.
    #[default]
    Global,
    /// Task `p` holds partition `p` of the table.
    CoPartitioned,
}

/// `join:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinSpec {
    /// The table's topic (declared under `topics:` with a `schema:`). Required.
    table: String,
    /// The stream's field(s) whose values make the table key. Required.
    on: serde_yaml::Value,
    /// `inner` (default) or `left`.
    #[serde(default, rename = "type")]
    kind: JoinType,
    /// `global` (default) or `co_partitioned`.
    #[serde(default)]
    scope: Scope,
    /// The table fields added: a mapping `name: path` or a list of paths. Default: every
    /// top-level table field not named in `on`.
    #[serde(default)]
    fields: Option<serde_yaml::Value>,
}

/// A table a stage's operators read, for the runtime to materialise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableUse {
    pub topic: String,
    pub scope: Scope,
}

/// A materialised table: the values of every key of a compacted topic, decoded in the table
/// topic's schema, with recent versions so that a lookup can be made as of a position.
pub trait TableView: Send + Sync {
    /// How far the reader has applied the topic: per partition, the next offset.
    fn position(&self) -> Vec<i64>;
    /// The value `key` had at position `at` (the newest version below `at` in its
    /// partition); `None` when it had none (never written, or deleted).
    fn get_at(&self, key: &[u8], at: &[i64]) -> Result<Option<Value>, StateError>;
}

/// The join's one store.
pub const STORE: &str = "snapshot";

impl Kind for Join {
    fn name(&self) -> &'static str {
        "join"
    }

    fn summary(&self) -> &'static str {
        "adds fields from a table (a compacted topic materialised by sluice) by key; inner or left"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        self.plan_in(spec, input, &PlanContext::default())
    }

    fn plan_in(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
        ctx: &PlanContext,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        Ok(Box::new(check(spec, input, ctx)?))
    }
}

fn check(
    spec: &serde_yaml::Value,
    input: &StreamType,
    ctx: &PlanContext,
) -> Result<JoinPlan, Vec<Problem>> {
    let example = "write e.g. `- join: { table: devices.registry, on: device_id, fields: [site] }`";
    let Some(map) = spec.as_mapping() else {
        return Err(vec![Problem::new(
            "",
            "a join is a mapping with `table` and `on`",
            example,
        )]);
    };
    let spec: JoinSpec = serde_yaml::from_value(spec.clone())
        .map_err(|e| vec![super::yaml_problem(&e, KEYS, map)])?;
    let mut problems = Vec::new();

    // The table and its record type.
    let table_type = match ctx.topics.get(&spec.table) {
        Some(TopicInfo {
            value: Some(t),
            partitions,
        }) => Some((t, *partitions)),
        Some(TopicInfo { value: None, .. }) => {
            problems.push(Problem::new(
                "table",
                format!("table topic `{}` has no `schema:`", spec.table),
                format!(
                    "give `topics.{}` a `schema:` (an .avsc file): the join's fields are checked against it",
                    spec.table
                ),
            ));
            None
        }
        None => {
            let names = ctx.topics.keys().map(String::as_str);
            let fix = match crate::types::did_you_mean(&spec.table, names) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "declare it under `topics:` with its partitions and `schema:`, e.g. `{}: {{ partitions: 4, schema: device.avsc }}`",
                    spec.table
                ),
            };
            problems.push(Problem::new(
                "table",
                format!("no topic `{}` in `topics:`", spec.table),
                fix,
            ));
            None
        }
    };

    // The lookup key.
    let on_names = field_list(&spec.on);
    let key = match &on_names {
        None => {
            problems.push(Problem::new(
                "on",
                "`on` names the stream's field or fields whose values make the table key",
                "write e.g. `on: device_id` or `on: [site, line]`",
            ));
            None
        }
        Some(names) => match KeyFields::resolve(names, &input.value, "on") {
            Ok(k) => Some(k),
            Err(ps) => {
                problems.extend(ps);
                None
            }
        },
    };

    if spec.scope == Scope::CoPartitioned {
        if let (Some((_, table_parts)), Some(stream_parts)) = (table_type, ctx.input_partitions) {
            if table_parts != stream_parts {
                problems.push(Problem::new(
                    "scope",
                    format!(
                        "a co_partitioned join needs as many table partitions as stream partitions: `{}` has {table_parts}, the stream {stream_parts}",
                        spec.table
                    ),
                    "give both topics the same partition count, or use `scope: global`",
                ));
            }
        }
        if let (KeyShape::Fields(keyed), Some(names)) = (&input.key, &on_names) {
            if keyed != names {
                problems.push(Problem::new(
                    "scope",
                    format!(
                        "a co_partitioned join on [{}] needs the stream keyed by them; it is keyed by [{}]",
                        names.join(", "),
                        keyed.join(", ")
                    ),
                    format!(
                        "add `- key_by: [{}]` before the join, or use `scope: global`",
                        names.join(", ")
                    ),
                ));
            }
        }
    }

    // The added fields.
    let mut added = Vec::new();
    if let Some((table, _)) = table_type {
        added = plan_fields(&spec, on_names.as_deref(), table, input, &mut problems);
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut out_fields: Vec<(String, FieldType)> = input
        .value
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.ty.clone()))
        .collect();
    out_fields.extend(added.iter().map(|a| (a.name.clone(), a.ty.clone())));
    let name = format!("{}_join", input.value.name);
    let value = record_schema(&name, &out_fields)
        .and_then(|s| RecordType::from_schema(&s))
        .map_err(|p| {
            vec![Problem::new(
                "fields",
                format!("the joined record cannot be written: {}", p.message),
                p.fix,
            )]
        })?;
    Ok(JoinPlan {
        shared: Arc::new(Shared {
            key: key.expect("no problems: resolved"),
            kind: spec.kind,
            added,
        }),
        table: TableUse {
            topic: spec.table,
            scope: spec.scope,
        },
        output: StreamType {
            value,
            key: input.key.clone(),
        },
    })
}

/// One field the join adds.
#[derive(Debug)]
struct Added {
    name: String,
    path: FieldPath,
    /// The output type: the table field's, nullable in a left join.
    ty: FieldType,
}

fn plan_fields(
    spec: &JoinSpec,
    on: Option<&[String]>,
    table: &RecordType,
    input: &StreamType,
    problems: &mut Vec<Problem>,
) -> Vec<Added> {
    // (output name, table path, key of the problem)
    let wanted: Vec<(String, String, String)> = match &spec.fields {
        None => table
            .field_names()
            .filter(|n| !on.unwrap_or_default().iter().any(|o| o == n))
            .map(|n| (n.to_string(), n.to_string(), "fields".to_string()))
            .collect(),
        Some(serde_yaml::Value::Mapping(m)) if !m.is_empty() => m
            .iter()
            .filter_map(|(k, v)| match (k.as_str(), v.as_str()) {
                (Some(k), Some(v)) => Some((k.to_string(), v.to_string(), format!("fields.{k}"))),
                _ => {
                    problems.push(Problem::new(
                        "fields",
                        "each entry of `fields` is `output name: table field`",
                        "write e.g. `fields: { site: site, max_temp: limits.max_temp }`",
                    ));
                    None
                }
            })
            .collect(),
        Some(serde_yaml::Value::Sequence(seq)) if !seq.is_empty() => seq
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(p) => {
                    let name = p.rsplit('.').next().unwrap_or(p).to_string();
                    Some((name, p.to_string(), format!("fields[{i}]")))
                }
                None => {
                    problems.push(Problem::new(
                        format!("fields[{i}]"),
                        "a list of `fields` names table fields",
                        "write e.g. `fields: [site, limits.max_temp]`",
                    ));
                    None
                }
            })
            .collect(),
        Some(_) => {
            problems.push(Problem::new(
                "fields",
                "`fields` is a mapping `name: table field` or a non-empty list of table fields",
                "write e.g. `fields: [site, model]` or `fields: { max_temp: limits.max_temp }`",
            ));
            Vec::new()
        }
    };
    let mut added: Vec<Added> = Vec::new();
    for (name, path, at) in wanted {
        let path = match table.resolve(&path) {
            Ok(p) => p,
            Err(p) => {
                problems.push(Problem::new(
                    at,
                    format!("table `{}`: {}", spec.table, p.message),
                    p.fix,
                ));
                continue;
            }
        };
        if let Err(p) = crate::types::check_name(&name) {
            problems.push(p.under(&at));
            continue;
        }
        if input.value.field(&name).is_some() || added.iter().any(|a| a.name == name) {
            problems.push(Problem::new(
                at,
                format!("the record already has a field `{name}`"),
                format!(
                    "add it under another name: `fields: {{ {}_{name}: {} }}`",
                    table_prefix(&spec.table),
                    path.path()
                ),
            ));
            continue;
        }
        let mut ty = path.ty().clone();
        ty.nullable |= spec.kind == JoinType::Left;
        added.push(Added { name, path, ty });
    }
    added
}

/// A short name for a table topic in suggestions: its last dotted part, `_` for the rest.
fn table_prefix(topic: &str) -> String {
    topic
        .rsplit('.')
        .next()
        .unwrap_or(topic)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[derive(Debug)]
struct Shared {
    key: KeyFields,
    kind: JoinType,
    added: Vec<Added>,
}

#[derive(Debug)]
struct JoinPlan {
    shared: Arc<Shared>,
    table: TableUse,
    output: StreamType,
}

impl Planned for JoinPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn lookups(&self) -> Vec<TableUse> {
        vec![self.table.clone()]
    }

    fn stores(&self) -> Vec<String> {
        vec![STORE.to_string()]
    }

    /// Only a co-partitioned join needs its stream partitioned by key; a global one holds
    /// every partition of the table, so its store (a snapshot position) does not care.
    fn partitions_by_key(&self) -> bool {
        self.table.scope == Scope::CoPartitioned
    }

    fn build(&self) -> Box<dyn Operator> {
        self.op(None)
    }

    fn build_for(&self, task: &TaskContext<'_>) -> Result<Box<dyn Operator>, StateError> {
        let view = task
            .tables
            .view(&self.table.topic, self.table.scope, task.partition)?;
        Ok(self.op(Some(view)))
    }
}

impl JoinPlan {
    fn op(&self, view: Option<Arc<dyn TableView>>) -> Box<dyn Operator> {
        Box::new(JoinOp {
            shared: self.shared.clone(),
            snapshot: Snapshot {
                view,
                at: None,
                written: None,
                engine: None,
            },
            topic: self.table.topic.clone(),
            buf: Vec::new(),
        })
    }
}

struct JoinOp {
    shared: Arc<Shared>,
    snapshot: Snapshot,
    topic: String,
    buf: Vec<u8>,
}

impl Operator for JoinOp {
    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.snapshot]
    }

    /// A task whose table moved since its snapshot wants a commit, which takes the new
    /// snapshot: an update so reaches the next record even after a quiet spell.
    fn wants_commit(&self) -> bool {
        match (&self.snapshot.view, &self.snapshot.at) {
            (Some(view), Some(at)) => view.position() != *at,
            _ => false,
        }
    }

    fn process(&mut self, rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        let Snapshot { view, at, .. } = &mut self.snapshot;
        let view = view.as_ref().ok_or_else(|| {
            StateError::Usage(format!(
                "table `{}` is not materialised in this process",
                self.topic
            ))
        })?;
        // A task that never committed has no snapshot yet: it takes the reader's position
        // now, for every record until its first commit.
        let at = at.get_or_insert_with(|| view.position());
        let found = match self.shared.key.write(&rec.value, &mut self.buf) {
            Ok(()) => view.get_at(&self.buf, at)?,
            Err(_) => None, // a NULL `on` field matches nothing
        };
        if found.is_none() && self.shared.kind == JoinType::Inner {
            return Ok(());
        }
        let Value::Record(mut fields) = rec.value else {
            return Err(OpError::reject("join_error", "the value is not a record"));
        };
        fields.reserve(self.shared.added.len());
        for a in &self.shared.added {
            let v = found.as_ref().and_then(|t| a.path.get(t)).cloned();
            let v = match v {
                Some(v) => v,
                None if a.ty.nullable => Value::Null,
                None => {
                    return Err(OpError::reject(
                        "join_error",
                        format!(
                            "the value of key {:?} in table `{}` has no `{}`",
                            String::from_utf8_lossy(&self.buf),
                            self.topic,
                            a.path.path()
                        ),
                    ))
                }
            };
            fields.push((a.name.clone(), nullable(a.ty.nullable, v)));
        }
        out.push(Record {
            key: rec.key,
            value: Value::Record(fields),
            timestamp: rec.timestamp,
        });
        Ok(())
    }
}
