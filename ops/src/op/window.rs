//! `window`: groups records by fields into windows of event time and aggregates each
//! window (the windowing itself: [`crate::window`]).
//!
//! ```yaml
//! - window:
//!     kind: hopping          # tumbling | hopping | sliding | session
//!     size: 1h
//!     advance: 15m
//!     grace: 1m
//!     emit: final            # final | update
//!     timestamp: ts          # event time: a timestamp field; default the record's timestamp
//!     by: [site]             # group by; default the fields of a preceding key_by
//!     aggregate:
//!       p95_w: p95(power_w)
//!       peak_w: max(power_w)
//!       meters: count_distinct(meter_id)
//! ```
//!
//! Each result is a record of the `by` fields, `window_start` and `window_end`
//! (timestamp-millis, end exclusive) and one field per aggregation, keyed by the compact
//! JSON array `[<by values>..., window_start, window_end]` so a compacted topic or an
//! upserting consumer keeps one record per window. Its timestamp is `window_end`.

use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_state::table::AnyTable;
use sluice_state::StateError;

use super::key_by::{field_list, write_json};
use super::select::nullable;
use super::{KeyShape, Kind, OpError, Operator, Planned, Record, StreamType};
use crate::codec::{Decoder, Encoder};
use crate::types::{self, FieldPath, RecordType};
use crate::window::{
    compile_aggs, Added, Agg, Aggregates, Emit, Input, InputKind, ResultKind, WindowKind, WindowOp,
    WindowResult, WindowSpec,
};
use crate::Problem;

pub struct Window;

/// The keys of `window:` this module reads itself; the rest is a [`WindowSpec`].
const OWN_KEYS: &[&str] = &["timestamp", "by", "aggregate"];

impl Kind for Window {
    fn name(&self) -> &'static str {
        "window"
    }

    fn summary(&self) -> &'static str {
        "tumbling, hopping, sliding or session windows of event time, grouped by fields, aggregated"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        let Some(map) = spec.as_mapping() else {
            return Err(vec![Problem::new(
                "",
                "a window is a mapping",
                "write e.g. `- window: { kind: tumbling, size: 5m, by: [device_id], aggregate: { n: count } }`",
            )]);
        };
        let mut rest = map.clone();
        let own = |k: &str| map.get(k);
        for k in OWN_KEYS {
            rest.remove(*k);
        }
        let mut problems = Vec::new();
        let window: Option<WindowSpec> =
            match serde_yaml::from_value(serde_yaml::Value::Mapping(rest)) {
                Ok(w) => Some(w),
                Err(e) => {
                    let p = super::yaml_problem(
                    &e,
                    "kind, size, advance, gap, grace, emit, idle_timeout, timestamp, by, aggregate",
                    map,
                );
                    problems.push(p);
                    None
                }
            };
        if let Some(w) = &window {
            problems.extend(w.check());

            if w.kind == WindowKind::Session && w.emit == Emit::Update {
                problems.push(Problem::new(
                    "emit",
                    "`emit: update` is not supported for session windows yet: a session that grows or merges would need its old results deleted (tombstones)",
                    "use `emit: final` for sessions",
                ));
            }
        }
        // Event time.
        let timestamp = match own("timestamp") {
            None => None,
            Some(v) => match v.as_str().map(|f| input.value.resolve(f)) {
                // Timestamps, dates, or a long of milliseconds since the epoch.
                Some(Ok(p))
                    if p.ty().ty.is_timestamp_like()
                        || matches!(p.ty().ty, crate::types::Type::Long) =>
                {
                    Some(p)
                }
                Some(Ok(p)) => {
                    problems.push(Problem::new(
                        "timestamp",
                        format!("`{}` is a {}, not a timestamp", p.path(), p.ty()),
                        "name a timestamp-millis, timestamp-micros, date or long (ms) field, or leave `timestamp` out to use the record's timestamp",
                    ));
                    None
                }
                Some(Err(p)) => {
                    problems.push(p.under("timestamp"));
                    None
                }
                None => {
                    problems.push(Problem::new(
                        "timestamp",
                        "timestamp names one field",
                        "write e.g. `timestamp: ts`",
                    ));
                    None
                }
            },
        };
        // Grouping.
        let by_names = match own("by") {
            Some(v) => field_list(v).ok_or_else(|| {
                Problem::new("by", "by names one field or a list of fields", "write e.g. `by: [site]`")
            }),
            None => match &input.key {
                KeyShape::Fields(f) => Ok(f.clone()),
                KeyShape::Input => Err(Problem::new(
                    "by",
                    "the window does not say what to group by",
                    "add `by: [<field>, ...]` (e.g. `by: [device_id]`), or key the records first with `- key_by: [...]`",
                )),
            },
        };
        let mut by = Vec::new();
        match by_names {
            Ok(names) => {
                for (i, n) in names.iter().enumerate() {
                    let at = if names.len() > 1 {
                        format!("by[{i}]")
                    } else {
                        "by".to_string()
                    };
                    match input.value.resolve(n) {
                        Ok(p) if p.ty().ty.is_scalar() => by.push(p),
                        Ok(p) => problems.push(Problem::new(
                            at,
                            format!("`{n}` is a {}, which cannot be grouped by", p.ty()),
                            "group by scalar fields (strings, numbers, booleans, enums, timestamps)",
                        )),
                        Err(p) => problems.push(p.under(&at)),
                    }
                }
            }
            Err(p) => problems.push(p),
        }
        // Aggregations.
        let aggs = match own("aggregate") {
            None => {
                problems.push(Problem::new(
                    "aggregate",
                    "a window needs at least one aggregation",
                    "add e.g. `aggregate: { n: count, avg_w: mean(power_w) }`",
                ));
                Vec::new()
            }
            Some(v) => match serde_yaml::from_value::<Aggregates>(v.clone()) {
                Err(e) => {
                    let empty = serde_yaml::Mapping::new();
                    let spec = v.as_mapping().unwrap_or(&empty);
                    problems
                        .push(super::yaml_problem(&e, "name: fn(field)", spec).under("aggregate"));
                    Vec::new()
                }
                Ok(a) => match compile_aggs(&a.0) {
                    Ok(a) => a,
                    Err(ps) => {
                        problems.extend(ps.into_iter().map(|p| p.under("aggregate")));
                        Vec::new()
                    }
                },
            },
        };
        let mut inputs = Vec::new();
        let mut result_fields = Vec::new();
        for a in &aggs {
            let at = format!("aggregate.{}", a.name);
            let (path, schema) = match &a.field {
                None => (None, None),
                Some(f) => match input.value.resolve(f) {
                    Ok(p) => {
                        let schema = Schema::parse(&p.ty().to_schema_json()).ok();
                        (Some(p), schema)
                    }
                    Err(p) => {
                        problems.push(p.under(&at));
                        continue;
                    }
                },
            };
            if let Some(s) = &schema {
                if let Err(why) = a.func.check_input(s) {
                    problems.push(Problem::new(
                        at.clone(),
                        why,
                        "aggregate a field of a suitable type, or convert it first with `select` (e.g. CAST(x AS DOUBLE))",
                    ));
                    continue;
                }
            }
            let numeric = a.func.input_kind() == InputKind::Number;
            inputs.push((path, numeric));
            result_fields.push((a.name.clone(), a.func.result_schema(schema.as_ref())));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let window = window.expect("no problems: parsed");
        // The output record: by fields, window bounds, aggregations.
        let mut fields: Vec<serde_json::Value> = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        let mut group_fields = Vec::new();
        for p in &by {
            let name = p.path().rsplit('.').next().unwrap_or(p.path()).to_string();
            if !names.insert(name.clone()) {
                return Err(vec![Problem::new(
                    "by",
                    format!("two grouping fields are both called `{name}` in the output"),
                    "rename one first with `select`",
                )]);
            }
            let ty = p.ty().to_schema_json();
            fields.push(serde_json::json!({"name": name, "type": ty}));
            group_fields.push(serde_json::json!({"name": name, "type": p.ty().to_schema_json()}));
        }
        for bound in ["window_start", "window_end"] {
            names.insert(bound.to_string());
            fields.push(serde_json::json!({"name": bound, "type": {"type": "long", "logicalType": "timestamp-millis"}}));
        }
        for (name, schema) in &result_fields {
            if !names.insert(name.clone()) {
                return Err(vec![Problem::new(
                    format!("aggregate.{name}"),
                    format!(
                        "`{name}` is already an output field (a grouping field or a window bound)"
                    ),
                    "give the aggregation another name",
                )]);
            }
            let ty = serde_json::to_value(schema).unwrap_or(serde_json::Value::Null);
            fields.push(serde_json::json!({"name": name, "type": ty}));
        }
        let name = format!("{}_window", input.value.name);
        let out_schema = parse_record(&name, fields)?;
        let group_schema = parse_record(&format!("{name}_group"), group_fields)?;
        let value = RecordType::from_schema(&out_schema).map_err(|p| vec![p])?;
        let key_names = by.iter().map(|p| p.path().to_string()).collect();
        Ok(Box::new(WindowPlan {
            shared: Arc::new(Shared {
                window,
                aggs,
                inputs,
                by,
                timestamp,
                group_schema: crate::codec::leak(group_schema),
            }),
            output: StreamType {
                value,
                key: KeyShape::Fields(key_names),
            },
        }))
    }
}

fn parse_record(name: &str, fields: Vec<serde_json::Value>) -> Result<Schema, Vec<Problem>> {
    let json = serde_json::json!({"type": "record", "name": name, "fields": fields});
    Schema::parse(&json).map_err(|e| {
        vec![Problem::new(
            "",
            format!("the window's output schema does not form: {e}"),
            "rename the fields involved with `select` first",
        )]
    })
}

#[derive(Debug)]
struct Shared {
    window: WindowSpec,
    aggs: Vec<Agg>,
    /// Per aggregation: the field read (None: count of rows) and whether it is numeric.
    inputs: Vec<(Option<FieldPath>, bool)>,
    by: Vec<FieldPath>,
    timestamp: Option<FieldPath>,
    /// The grouping fields as a record: group keys are its Avro encoding.
    group_schema: &'static Schema,
}

#[derive(Debug)]
struct WindowPlan {
    shared: Arc<Shared>,
    output: StreamType,
}

impl Planned for WindowPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn stores(&self) -> Vec<String> {
        WindowOp::store_names()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn build(&self) -> Box<dyn Operator> {
        let s = &self.shared;
        Box::new(WindowTask {
            op: WindowOp::from_parts(&s.window, s.aggs.clone()),
            group_enc: Encoder::new(s.group_schema).expect("the group schema resolves: it parsed"),
            group_dec: Decoder::new(s.group_schema, None)
                .expect("the group schema resolves: it parsed"),
            shared: s.clone(),
            results: Vec::new(),
            key: Vec::new(),
        })
    }
}

struct WindowTask {
    op: WindowOp,
    group_enc: Encoder,
    group_dec: Decoder,
    key: Vec<u8>,
    shared: Arc<Shared>,
    results: Vec<WindowResult>,
}

impl WindowTask {
    fn emit(&mut self, out: &mut Vec<Record>) -> Result<(), OpError> {
        for r in self.results.drain(..) {
            if r.kind == ResultKind::Retract {
                continue; // sessions with `emit: update` are refused by the check
            }
            let group = self.group_dec.decode(&mut &r.key[..]).map_err(|e| {
                OpError::reject("window_state", format!("group key does not decode: {e}"))
            })?;
            let Value::Record(group) = group else {
                return Err(OpError::reject("window_state", "group key is not a record"));
            };
            let mut key = Vec::with_capacity(r.key.len() + 32);
            key.push(b'[');
            for (_, v) in &group {
                write_json(v, &mut key);
                key.push(b',');
            }
            key.extend_from_slice(format!("{},{}]", r.start, r.end).as_bytes());
            let mut fields = group;
            fields.push(("window_start".into(), Value::TimestampMillis(r.start)));
            fields.push(("window_end".into(), Value::TimestampMillis(r.end)));
            for (a, v) in self.shared.aggs.iter().zip(r.values) {
                let v = match a.func {
                    crate::window::AggFn::Count | crate::window::AggFn::CountDistinct => v,
                    _ => nullable(true, v),
                };
                fields.push((a.name.clone(), v));
            }
            out.push(Record {
                key: Some(key),
                value: Value::Record(fields),
                timestamp: r.end,
            });
        }
        Ok(())
    }
}

impl Operator for WindowTask {
    fn process(&mut self, rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        let s = self.shared.clone();
        let ts = match &s.timestamp {
            None => rec.timestamp,
            Some(p) => match p.get(&rec.value).and_then(types::timestamp_ms) {
                Some(t) => t,
                None => {
                    return Err(OpError::reject(
                        "null_timestamp",
                        format!("event time field `{}` is NULL", p.path()),
                    ))
                }
            },
        };
        let group: Vec<(String, Value)> =
            s.by.iter()
                .map(|p| {
                    let v = p.get(&rec.value).cloned().unwrap_or(Value::Null);
                    let name = p.path().rsplit('.').next().unwrap_or(p.path()).to_string();
                    (name, nullable(p.ty().nullable, v))
                })
                .collect();
        self.key.clear();
        self.group_enc
            .encode(&Value::Record(group), &mut self.key)
            .map_err(|e| {
                OpError::reject(
                    "window_group",
                    format!("grouping fields do not encode: {e}"),
                )
            })?;
        let nums: Vec<Option<f64>> = s
            .inputs
            .iter()
            .map(|(p, numeric)| match (p, numeric) {
                (Some(p), true) => p.get_f64(&rec.value),
                _ => None,
            })
            .collect();
        let values: Vec<Input<'_>> = s
            .inputs
            .iter()
            .zip(&nums)
            .map(|((p, numeric), n)| match (p, numeric) {
                (None, _) => Input::Null,
                (Some(_), true) => n.map_or(Input::Null, Input::Num),
                (Some(p), false) => match p.get(&rec.value) {
                    None | Some(Value::Null) => Input::Null,
                    Some(v) => Input::Val(v),
                },
            })
            .collect();
        let added = self.op.add(&self.key, ts, &values, &mut self.results)?;
        self.emit(out)?;
        match added {
            Added::Counted(_) => Ok(()),
            Added::Late(late) => Err(OpError::reject("late_record", late.to_string())),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        self.op.tables()
    }

    fn idle(&mut self, idle_for_ms: i64, out: &mut Vec<Record>) -> Result<bool, StateError> {
        // A tick recorded earlier and committed since: apply it (closes windows).
        self.op.idle_advance(&mut self.results)?;
        self.emit(out).map_err(|e| match e {
            OpError::State(e) => e,
            OpError::Reject { message, .. } => StateError::Usage(message),
        })?;
        match self.op.idle_tick(idle_for_ms)? {
            Some(tick) => self.op.record_tick(tick),
            None => Ok(false),
        }
    }
}
