//! `validate`: checks records of any schema against ranges, required fields and a plausible
//! event time, and sends the ones that fail to the dead-letter topic with a stable class.
//!
//! ```yaml
//! - validate:
//!     ranges:                        # per numeric field (dotted paths), inclusive
//!       power_w: [0, 100000]         # [min, max]
//!       voltage: { min: 180 }        # or one side: { min: .. } / { max: .. }
//!     ranges_by:                     # one numeric field, its range chosen by another's value
//!       field: metric                # a string or enum field
//!       value: value                 # the number checked
//!       ranges: { temperature: [-40, 125], humidity: [0, 100] }
//!       unknown: reject              # reject (default, class `unknown_metric`) | pass
//!     required: [site]               # nullable fields that must not be NULL
//!     timestamp: ts                  # event-time field the clock checks read
//!     max_future_skew: 15m           # event time this far ahead of the record timestamp ...
//!     max_past_age: 7d               # ... or this far behind it is a skewed clock
//!     on_skew: restamp               # restamp (default) | reject
//! ```
//!
//! The counterpart of the built-in `kind: validate` stage (src/stages/validate.rs) for any
//! Avro record: its ranges are `[min, max]` per field rather than per telemetry metric, and
//! its symmetric `max_clock_skew` is `max_future_skew` plus `max_past_age` here. It keeps no
//! state (retransmissions: `dedup`).
//!
//! For each record, in this order, the first failure rejects it:
//!
//! 1. `required`: a listed field that is NULL (or inside a NULL record on its path):
//!    class `missing_field`.
//! 2. `ranges`: a value below its `min` or above its `max`, or not finite (NaN, ±inf):
//!    class `out_of_range`. A NULL value is not range-checked (list it in `required`).
//! 3. `ranges_by`: the `value` not finite (class `out_of_range`); then the `field`'s value
//!    NULL or not listed (class `unknown_<field>`, e.g. `unknown_metric`, unless
//!    `unknown: pass`); then the `value` outside the listed range (`out_of_range`). A NULL
//!    `value` is not range-checked.
//! 4. Clock: with `timestamp`, a NULL event time is class `null_timestamp` (as in `window`
//!    and `dedup`). An event time more than `max_future_skew` after the record timestamp
//!    (the Kafka timestamp), or more than `max_past_age` before it, is **re-stamped**: the
//!    event-time field is set to the record timestamp, in the field's unit, as the built-in
//!    stage does. With `on_skew: reject` such a record is rejected instead, class
//!    `clock_skew`.
//!
//! Records that pass are handed on unchanged (re-stamped ones with the new event time);
//! the record timestamp is never changed. Rejections name the field, the value and the
//! limit, e.g. `` `power_w` = 250000 is above its max 100000 ``.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::types::Value;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::key_by::field_list;
use super::yaml_text;
use super::{Kind, OpError, Operator, Planned, Record, StreamType};
use crate::types::{self, FieldPath, RecordType, Type};
use crate::window::HumanDuration;
use crate::Problem;

pub struct Validate;

/// `validate:` of a topology. Every key is optional, but at least one check must be asked
/// for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSpec {
    /// Accepted values per numeric field (int, long, float, double, decimal; dotted paths
    /// allowed): `[min, max]`, or `{ min: x }`, `{ max: y }`, `{ min: x, max: y }`; bounds
    /// inclusive. A value outside, or not finite, is rejected (class `out_of_range`). Default:
    /// none.
    #[serde(default)]
    pub ranges: serde_yaml::Mapping,
    /// One numeric field whose accepted range depends on another field's value, as a
    /// telemetry stream's `value` does on its `metric`: `{ field: metric, value: value,
    /// ranges: { temperature: [-40, 125], ... }, unknown: reject }`, read as a
    /// [`RangesBySpec`]. Default: none.
    #[serde(default)]
    pub ranges_by: Option<serde_yaml::Value>,
    /// Fields (one or a list; dotted paths allowed) that must not be NULL; each must be
    /// nullable in the schema. A NULL one is rejected (class `missing_field`). Default: none.
    #[serde(default)]
    pub required: Option<serde_yaml::Value>,
    /// The event-time field the clock checks read and re-stamp (timestamp-millis, -micros,
    /// -nanos, a local timestamp, or a long of ms since the epoch). Required with
    /// `max_future_skew` or `max_past_age`, and only used by them. Default: none.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// An event time more than this after the record timestamp is a skewed clock. Default:
    /// not checked.
    #[serde(default)]
    pub max_future_skew: Option<HumanDuration>,
    /// An event time more than this before the record timestamp is a skewed clock. Default:
    /// not checked.
    #[serde(default)]
    pub max_past_age: Option<HumanDuration>,
    /// What a skewed clock gets: `restamp` (default: the event-time field is set to the
    /// record timestamp, as the built-in validate stage does) or `reject` (class
    /// `clock_skew`).
    #[serde(default)]
    pub on_skew: OnSkew,
}

/// `ranges_by:` of a validate. `field`, `value` and `ranges` are required (checked after
/// parsing, so that every problem is reported at once).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangesBySpec {
    /// The string or enum field (dotted paths allowed) whose value picks the range.
    #[serde(default)]
    pub field: Option<String>,
    /// The numeric field checked (int, long, float, double, decimal).
    #[serde(default)]
    pub value: Option<String>,
    /// `[min, max]` (or `{ min }`, `{ max }`) per value of `field`; for an enum, keys must be
    /// its symbols.
    #[serde(default)]
    pub ranges: serde_yaml::Mapping,
    /// What a record whose `field` is NULL or has no range gets: `reject` (default; class
    /// `unknown_<field>`, the last part of its path, e.g. `unknown_metric`) or `pass`.
    #[serde(default)]
    pub unknown: Unknown,
}

/// `ranges_by.unknown:` of a validate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Rejected, class `unknown_<field>`.
    #[default]
    Reject,
    /// Handed on unchecked.
    Pass,
}

/// The keys of `ranges_by:`, as [`RangesBySpec`] reads them.
pub const RANGES_BY_KEYS: &[&str] = &["field", "value", "ranges", "unknown"];

/// `on_skew:` of a validate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSkew {
    /// The event-time field becomes the record timestamp.
    #[default]
    Restamp,
    /// The record goes to the dead-letter topic, class `clock_skew`.
    Reject,
}

/// The keys of `validate:`, as [`ValidateSpec`] reads them.
pub const KEYS: &[&str] = &[
    "ranges",
    "ranges_by",
    "required",
    "timestamp",
    "max_future_skew",
    "max_past_age",
    "on_skew",
];

impl Kind for Validate {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn summary(&self) -> &'static str {
        "rejects records out of range or missing required fields; re-stamps skewed clocks"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        Ok(Box::new(check(spec, input)?))
    }

    fn output_despite_errors(&self, input: &StreamType) -> Option<StreamType> {
        Some(input.clone())
    }
}

const EXAMPLE: &str =
    "write e.g. `- validate: { ranges: { power_w: [0, 100000] }, required: [site] }`";

fn check(spec: &serde_yaml::Value, input: &StreamType) -> Result<ValidatePlan, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(spec) = parse_spec::<ValidateSpec>(spec, KEYS, "a validate", EXAMPLE, &mut problems)
    else {
        return Err(problems);
    };
    let record = &input.value;
    let mut ranges = Vec::new();
    for (k, v) in &spec.ranges {
        let Some(name) = k.as_str() else {
            problems.push(Problem::new(
                "ranges",
                format!("`{}` is not a field name", yaml_text(k)),
                "name fields as strings, nested ones by a dotted path: `ranges: { power.volts: [180, 260] }`",
            ));
            continue;
        };
        let at = format!("ranges.{name}");
        let path = match record.resolve(name) {
            Ok(p) if p.ty().ty.is_numeric() => Some(p),
            Ok(p) => {
                problems.push(not_a_number(&at, &p, "a range", record));
                None
            }
            Err(p) => {
                problems.push(p.under(&at));
                None
            }
        };
        let bounds = plan_bounds(v, &at, &mut problems);
        if let (Some(path), Some((min, max))) = (path, bounds) {
            ranges.push(Range { path, min, max });
        }
    }
    let ranges_by = spec.ranges_by.as_ref().and_then(|v| {
        let mut inner = Vec::new();
        let planned = parse_spec::<RangesBySpec>(
            v,
            RANGES_BY_KEYS,
            "`ranges_by`",
            RANGES_BY_EXAMPLE,
            &mut inner,
        )
        .and_then(|r| plan_ranges_by(&r, record, &mut inner));
        problems.extend(inner.into_iter().map(|p| p.under("ranges_by")));
        planned
    });
    let mut required: Vec<FieldPath> = Vec::new();
    if let Some(v) = &spec.required {
        let names = field_list(v).unwrap_or_else(|| {
            problems.push(Problem::new(
                "required",
                "`required` names one field or a non-empty list of fields",
                "write e.g. `required: [site, voltage]`",
            ));
            Vec::new()
        });
        for (i, name) in names.iter().enumerate() {
            let at = if names.len() > 1 {
                format!("required[{i}]")
            } else {
                "required".to_string()
            };
            match record.resolve(name) {
                Ok(p) if !p.ty().nullable => problems.push(Problem::new(
                    at,
                    format!(
                        "`{name}` is {}, never NULL: requiring it checks nothing",
                        types::a_or_an(p.ty())
                    ),
                    format!(
                        "remove it; nullable fields: {}",
                        list_or_none(record.field_paths(|t| t.nullable))
                    ),
                )),
                Ok(p) if required.iter().any(|q| q.positions() == p.positions()) => {
                    problems.push(Problem::new(
                        at,
                        format!("`{name}` is listed twice"),
                        "list each field once",
                    ))
                }
                Ok(p) => required.push(p),
                Err(p) => problems.push(p.under(&at)),
            }
        }
    }
    let skew_limit = |d: Option<HumanDuration>, key: &str, problems: &mut Vec<Problem>| {
        let d = d?;
        if d.millis() > MAX_SKEW_MS {
            problems.push(Problem::new(
                key,
                format!("`{key}: {d}` is longer than 100 years"),
                "write how far a clock may be off, e.g. `15m`, or leave it out",
            ));
            return None;
        }
        Some(d.millis())
    };
    let future = skew_limit(spec.max_future_skew, "max_future_skew", &mut problems);
    let past = skew_limit(spec.max_past_age, "max_past_age", &mut problems);
    let checks_clock = spec.max_future_skew.is_some() || spec.max_past_age.is_some();
    let timestamp = match (&spec.timestamp, checks_clock) {
        (None, true) => {
            problems.push(Problem::new(
                "timestamp",
                "the clock checks need `timestamp`: the event-time field to compare with the record timestamp",
                format!(
                    "add e.g. `timestamp: {}`",
                    record
                        .field_paths(|t| restampable(&t.ty))
                        .first()
                        .map_or("ts", |s| s.as_str())
                ),
            ));
            None
        }
        (Some(_), false) => {
            problems.push(Problem::new(
                "timestamp",
                "`timestamp` is only read by the clock checks, and none is set",
                "add `max_future_skew: 15m` (and/or `max_past_age: ...`), or remove `timestamp`",
            ));
            None
        }
        (None, false) => None,
        (Some(name), true) => plan_timestamp(name, record, restampable, &mut problems),
    };
    if spec.on_skew != OnSkew::default() && !checks_clock {
        problems.push(Problem::new(
            "on_skew",
            "`on_skew` says what a skewed clock gets, and no clock check is set",
            "add `timestamp` and `max_future_skew` (and/or `max_past_age`), or remove `on_skew`",
        ));
    }
    if problems.is_empty()
        && ranges.is_empty()
        && spec.ranges_by.is_none()
        && required.is_empty()
        && !checks_clock
    {
        problems.push(Problem::new(
            "",
            "this validate checks nothing",
            "add `ranges`, `ranges_by`, `required`, or `timestamp` with `max_future_skew`/`max_past_age`",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ValidatePlan {
        shared: Arc::new(Shared {
            ranges,
            ranges_by,
            required,
            clock: timestamp.map(|field| Clock {
                field,
                future,
                past,
                on_skew: spec.on_skew,
            }),
        }),
        output: input.clone(),
    })
}

const RANGES_BY_EXAMPLE: &str =
    "write e.g. `ranges_by: { field: metric, value: value, ranges: { temperature: [-40, 125] } }`";

/// Checks `ranges_by:` against the record type; problems are keyed inside `ranges_by`.
fn plan_ranges_by(
    spec: &RangesBySpec,
    record: &RecordType,
    problems: &mut Vec<Problem>,
) -> Option<RangesBy> {
    let before = problems.len();
    let required = |key: &str, problems: &mut Vec<Problem>| {
        problems.push(Problem::new(
            key,
            format!("`ranges_by` needs `{key}`"),
            RANGES_BY_EXAMPLE,
        ));
    };
    let field_name = spec.field.as_deref().unwrap_or_default();
    let field = match spec.field.as_deref().map(|f| record.resolve(f)) {
        None => {
            required("field", problems);
            None
        }
        Some(Ok(p)) if matches!(p.ty().ty, Type::String | Type::Enum { .. }) => Some(p),
        Some(Ok(p)) => {
            problems.push(Problem::new(
                "field",
                format!(
                    "`{}` is {}; the range is looked up by a string or an enum",
                    p.path(),
                    types::a_or_an(p.ty())
                ),
                format!(
                    "name a string or enum field: {}",
                    list_or_none(
                        record.field_paths(|t| matches!(t.ty, Type::String | Type::Enum { .. }))
                    )
                ),
            ));
            None
        }
        Some(Err(p)) => {
            problems.push(p.under("field"));
            None
        }
    };
    let value = match spec.value.as_deref().map(|v| record.resolve(v)) {
        None => {
            required("value", problems);
            None
        }
        Some(Ok(p)) if p.ty().ty.is_numeric() => Some(p),
        Some(Ok(p)) => {
            problems.push(not_a_number("value", &p, "a range", record));
            None
        }
        Some(Err(p)) => {
            problems.push(p.under("value"));
            None
        }
    };
    let symbols = match field.as_ref().map(|f| &f.ty().ty) {
        Some(Type::Enum { symbols, .. }) => Some(symbols.clone()),
        _ => None,
    };
    if spec.ranges.is_empty() {
        problems.push(Problem::new(
            "ranges",
            "`ranges` lists no value",
            "write a range per value, e.g. `ranges: { temperature: [-40, 125] }`",
        ));
    }
    let mut by = HashMap::with_capacity(spec.ranges.len());
    for (k, v) in &spec.ranges {
        // Unquoted YAML integers and booleans read as the text they are written as; other
        // numbers (`1.50`, `0x10`) would not, so they must be quoted.
        let name = match k {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            _ => {
                problems.push(Problem::new(
                    "ranges",
                    format!("`{}` is not a value of a string field", yaml_text(k)),
                    "key each range by the field's text, quoted when it looks like a number: `'1.50': [0, 1]`",
                ));
                continue;
            }
        };
        let at = format!("ranges.{name}");
        if let Some(symbols) = &symbols {
            if !symbols.contains(&name) {
                let hint = types::did_you_mean(&name, symbols.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                problems.push(Problem::new(
                    &at,
                    format!("`{name}` is not a symbol of the enum `{field_name}`"),
                    format!("{hint}its symbols: {}", symbols.join(", ")),
                ));
                continue;
            }
        }
        if let Some((min, max)) = plan_bounds(v, &at, problems) {
            if by.insert(name.into_boxed_str(), (min, max)).is_some() {
                problems.push(Problem::new(
                    &at,
                    "this value has two ranges (once quoted, once not?)",
                    "keep one range per value",
                ));
            }
        }
    }
    if problems.len() > before {
        return None;
    }
    let (field, value) = (field?, value?);
    let last = field.path().rsplit('.').next().unwrap_or(field.path());
    Some(RangesBy {
        unknown_class: intern_class(format!("unknown_{last}")),
        field,
        value,
        by,
        unknown: spec.unknown,
    })
}

/// A dead-letter class made from a field name, kept for the life of the process (classes
/// are `&'static str`); each distinct name is kept once.
fn intern_class(class: String) -> &'static str {
    static CLASSES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut all = CLASSES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = all.iter().find(|c| **c == class) {
        return c;
    }
    let c: &'static str = Box::leak(class.into_boxed_str());
    all.push(c);
    c
}

/// Longest clock limit accepted (100 years): keeps time arithmetic far from overflow.
const MAX_SKEW_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Types whose values a re-stamp can write: instants in ms, µs or ns, and longs (ms).
fn restampable(t: &Type) -> bool {
    (t.is_timestamp_like() && *t != Type::Date) || *t == Type::Long
}

/// `[min, max]` or `{ min, max }` (either side optional).
fn plan_bounds(
    v: &serde_yaml::Value,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<(Option<f64>, Option<f64>)> {
    const FIX: &str = "write `[min, max]`, e.g. `[0, 100000]`, or one side, e.g. `{ min: 0 }`";
    let num = |v: &serde_yaml::Value| v.as_f64().filter(|x| x.is_finite());
    let (min, max) = match v {
        serde_yaml::Value::Sequence(s) if s.len() == 2 => match (num(&s[0]), num(&s[1])) {
            (Some(lo), Some(hi)) => (Some(lo), Some(hi)),
            _ => {
                problems.push(Problem::new(
                    at,
                    format!("`{}` is not two finite numbers", yaml_text(v)),
                    FIX,
                ));
                return None;
            }
        },
        serde_yaml::Value::Mapping(m) if !m.is_empty() => {
            let mut bad = false;
            for (k, _) in m {
                if !matches!(k.as_str(), Some("min" | "max")) {
                    problems.push(Problem::new(
                        at,
                        format!("unknown bound `{}`", yaml_text(k)),
                        "the bounds are `min` and `max`",
                    ));
                    bad = true;
                }
            }
            let mut side = |name: &str| match m.get(name) {
                None => None,
                Some(x) => num(x).or_else(|| {
                    problems.push(Problem::new(
                        format!("{at}.{name}"),
                        format!("`{name}: {}` is not a finite number", yaml_text(x)),
                        FIX,
                    ));
                    bad = true;
                    None
                }),
            };
            let (lo, hi) = (side("min"), side("max"));
            if bad {
                return None;
            }
            (lo, hi)
        }
        _ => {
            problems.push(Problem::new(
                at,
                format!("`{}` is not a range", yaml_text(v)),
                FIX,
            ));
            return None;
        }
    };
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            problems.push(Problem::new(
                at,
                format!("the range is [{lo}, {hi}]: its min is above its max"),
                "write [min, max] with min <= max",
            ));
            return None;
        }
    }
    Some((min, max))
}

// --- Shared with `detect` -----------------------------------------------------------------

/// Parses an operator's mapping into its spec struct. Every key not in `keys` is a problem
/// (with a did-you-mean), all of them at once; then serde reads the others, and a value of
/// the wrong type is one problem at its key. `None` when the spec did not parse.
pub(crate) fn parse_spec<T: DeserializeOwned>(
    spec: &serde_yaml::Value,
    keys: &[&str],
    what: &str,
    example: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let empty = serde_yaml::Mapping::new();
    let map = match spec {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => &empty,
        _ => {
            problems.push(Problem::new(
                "",
                format!("{what} is a mapping of options"),
                example,
            ));
            return None;
        }
    };
    super::unknown_keys(map, keys, what, problems);
    let allowed = keys.join(", ");
    let known: serde_yaml::Mapping = map
        .iter()
        .filter(|(k, _)| k.as_str().is_some_and(|n| keys.contains(&n)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match serde_yaml::from_value(serde_yaml::Value::Mapping(known.clone())) {
        Ok(s) => Some(s),
        Err(e) => {
            // Every key has a default, so each value can be tried alone: a problem per bad
            // value, at its key (serde_yaml's errors from a `Value` carry no path).
            let before = problems.len();
            for (k, v) in &known {
                let alone = serde_yaml::Mapping::from_iter([(k.clone(), v.clone())]);
                if let Err(e) = serde_yaml::from_value::<T>(serde_yaml::Value::Mapping(alone)) {
                    let key = k.as_str().unwrap_or_default();
                    let mut p = super::yaml_problem(&e, &allowed, &known);
                    if p.key.is_empty() {
                        p.key = key.to_string();
                        p.fix = format!("see the `{key}` option in docs/TOPOLOGY.md");
                    }
                    problems.push(p);
                }
            }
            if problems.len() == before {
                problems.push(super::yaml_problem(&e, &allowed, &known));
            }
            None
        }
    }
}

/// "field `site` is a nullable string; <what> needs a number", with the numeric fields as
/// the fix.
pub(super) fn not_a_number(at: &str, p: &FieldPath, what: &str, record: &RecordType) -> Problem {
    Problem::new(
        at,
        format!(
            "field `{}` is {}; {what} needs a number",
            p.path(),
            types::a_or_an(p.ty())
        ),
        format!(
            "name a numeric field (int, long, float, double, decimal): {}; or convert it first with `select` (e.g. CAST(x AS DOUBLE))",
            list_or_none(record.field_paths(|t| t.ty.is_numeric()))
        ),
    )
}

fn list_or_none(names: Vec<String>) -> String {
    if names.is_empty() {
        "(none in this schema)".to_string()
    } else {
        names.join(", ")
    }
}

/// Resolves the event-time field `name`, which must be of a type `ok` accepts.
pub(super) fn plan_timestamp(
    name: &str,
    record: &RecordType,
    ok: fn(&Type) -> bool,
    problems: &mut Vec<Problem>,
) -> Option<FieldPath> {
    match record.resolve(name) {
        Ok(p) if ok(&p.ty().ty) => Some(p),
        Ok(p) => {
            problems.push(Problem::new(
                "timestamp",
                format!("`{name}` is {}, not a timestamp", types::a_or_an(p.ty())),
                format!(
                    "name a timestamp-millis, -micros or -nanos field, or a long of ms since the epoch: {}",
                    list_or_none(record.field_paths(|t| ok(&t.ty)))
                ),
            ));
            None
        }
        Err(p) => {
            problems.push(p.under("timestamp"));
            None
        }
    }
}

/// The event time of `rec` read from `field`; a NULL one is a `null_timestamp` rejection.
pub(super) fn event_time(field: &FieldPath, rec: &Value) -> Result<i64, OpError> {
    field.get(rec).and_then(types::timestamp_ms).ok_or_else(|| {
        OpError::reject(
            "null_timestamp",
            format!("event time field `{}` is NULL", field.path()),
        )
    })
}

// --- Running ------------------------------------------------------------------------------

#[derive(Debug)]
struct Range {
    path: FieldPath,
    min: Option<f64>,
    max: Option<f64>,
}

/// `ranges_by`, planned.
#[derive(Debug)]
struct RangesBy {
    field: FieldPath,
    value: FieldPath,
    by: HashMap<Box<str>, (Option<f64>, Option<f64>)>,
    unknown: Unknown,
    unknown_class: &'static str,
}

impl RangesBy {
    fn check(&self, rec: &Value) -> Result<(), OpError> {
        let Some(x) = self.value.get_f64(rec) else {
            return Ok(());
        };
        let value = self.value.path();
        if !x.is_finite() {
            return Err(OpError::reject(
                "out_of_range",
                format!("`{value}` = {x} is not a finite number"),
            ));
        }
        let key = self.field.get(rec).and_then(types::as_str);
        let Some((min, max)) = key.as_deref().and_then(|k| self.by.get(k)) else {
            if self.unknown == Unknown::Pass {
                return Ok(());
            }
            let field = self.field.path();
            return Err(OpError::reject(
                self.unknown_class,
                match key {
                    Some(k) => format!("`{field}` = `{k}` has no range in `ranges_by`"),
                    None => format!("`{field}` is NULL: no range in `ranges_by`"),
                },
            ));
        };
        let key = key.unwrap_or_default();
        let why = if let Some(min) = min.filter(|m| x < *m) {
            format!("`{value}` = {x} is below the min {min} for `{key}`")
        } else if let Some(max) = max.filter(|m| x > *m) {
            format!("`{value}` = {x} is above the max {max} for `{key}`")
        } else {
            return Ok(());
        };
        Err(OpError::reject("out_of_range", why))
    }
}

#[derive(Debug)]
struct Clock {
    field: FieldPath,
    /// Milliseconds; `None`: not checked.
    future: Option<i64>,
    past: Option<i64>,
    on_skew: OnSkew,
}

#[derive(Debug)]
struct Shared {
    ranges: Vec<Range>,
    ranges_by: Option<RangesBy>,
    required: Vec<FieldPath>,
    clock: Option<Clock>,
}

#[derive(Debug)]
struct ValidatePlan {
    shared: Arc<Shared>,
    output: StreamType,
}

impl Planned for ValidatePlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(ValidateOp {
            shared: self.shared.clone(),
        })
    }
}

struct ValidateOp {
    shared: Arc<Shared>,
}

impl Operator for ValidateOp {
    fn process(&mut self, mut rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        let s = &*self.shared;
        for p in &s.required {
            if p.get(&rec.value).is_none() {
                return Err(OpError::reject(
                    "missing_field",
                    format!("required field `{}` is NULL", p.path()),
                ));
            }
        }
        for r in &s.ranges {
            let Some(x) = r.path.get_f64(&rec.value) else {
                continue;
            };
            let why = if !x.is_finite() {
                format!("`{}` = {x} is not a finite number", r.path.path())
            } else if let Some(min) = r.min.filter(|m| x < *m) {
                format!("`{}` = {x} is below its min {min}", r.path.path())
            } else if let Some(max) = r.max.filter(|m| x > *m) {
                format!("`{}` = {x} is above its max {max}", r.path.path())
            } else {
                continue;
            };
            return Err(OpError::reject("out_of_range", why));
        }
        if let Some(r) = &s.ranges_by {
            r.check(&rec.value)?;
        }
        if let Some(c) = &s.clock {
            let t = event_time(&c.field, &rec.value)?;
            let ahead = t.saturating_sub(rec.timestamp);
            let skew = match (c.future, c.past) {
                (Some(limit), _) if ahead > limit => {
                    Some(("ahead of", ahead, "max_future_skew", limit))
                }
                (_, Some(limit)) if ahead < -limit => {
                    Some(("behind", ahead.saturating_neg(), "max_past_age", limit))
                }
                _ => None,
            };
            if let Some((dir, by, key, limit)) = skew {
                if c.on_skew == OnSkew::Reject {
                    return Err(OpError::reject(
                        "clock_skew",
                        format!(
                            "event time `{}` = {t} is {} {dir} the record timestamp {}; {key} is {}",
                            c.field.path(),
                            millis_text(by),
                            rec.timestamp,
                            millis_text(limit),
                        ),
                    ));
                }
                restamp(&mut rec.value, c.field.positions(), rec.timestamp);
            }
        }
        out.push(rec);
        Ok(())
    }
}

fn millis_text(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.unsigned_abs())).to_string()
}

/// Sets the (non-NULL) instant at `positions` to `ms`, in the unit of the value there.
fn restamp(rec: &mut Value, positions: &[usize], ms: i64) {
    let mut cur = rec;
    for &pos in positions {
        let inner = match cur {
            Value::Union(_, inner) => &mut **inner,
            v => v,
        };
        match inner {
            Value::Record(fields) => match fields.get_mut(pos) {
                Some((_, v)) => cur = v,
                None => return,
            },
            _ => return,
        }
    }
    let slot = match cur {
        Value::Union(_, inner) => &mut **inner,
        v => v,
    };
    *slot = match *slot {
        Value::TimestampMillis(_) => Value::TimestampMillis(ms),
        Value::LocalTimestampMillis(_) => Value::LocalTimestampMillis(ms),
        Value::TimestampMicros(_) => Value::TimestampMicros(ms.saturating_mul(1_000)),
        Value::LocalTimestampMicros(_) => Value::LocalTimestampMicros(ms.saturating_mul(1_000)),
        Value::TimestampNanos(_) => Value::TimestampNanos(ms.saturating_mul(1_000_000)),
        Value::LocalTimestampNanos(_) => Value::LocalTimestampNanos(ms.saturating_mul(1_000_000)),
        Value::Long(_) => Value::Long(ms),
        // Refused by the check; leave anything else alone.
        _ => return,
    };
}

#[cfg(test)]
mod tests {
    use apache_avro::Schema;

    use super::*;
    use crate::op::KeyShape;

    const SCHEMA: &str = r#"{"type": "record", "name": "Reading", "namespace": "io.acme", "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "site", "type": ["null", "string"], "default": null},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "power", "type": ["null", {"type": "record", "name": "Power", "fields": [
            {"name": "volts", "type": ["null", "float"], "default": null},
            {"name": "watts", "type": "double"}
        ]}], "default": null},
        {"name": "count", "type": "int"}
    ]}"#;

    fn input() -> StreamType {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        StreamType {
            value: RecordType::from_schema(&schema).unwrap(),
            key: KeyShape::Input,
        }
    }

    fn problems(yaml: &str) -> Vec<(String, String, String)> {
        match check(&serde_yaml::from_str(yaml).unwrap(), &input()) {
            Ok(_) => panic!("{yaml}: no problems"),
            Err(ps) => ps.into_iter().map(|p| (p.key, p.message, p.fix)).collect(),
        }
    }

    fn keys(ps: &[(String, String, String)]) -> Vec<&str> {
        ps.iter().map(|(k, _, _)| k.as_str()).collect()
    }

    fn op(yaml: &str) -> ValidateOp {
        let p = check(&serde_yaml::from_str(yaml).unwrap(), &input()).unwrap();
        assert!(p.stores().is_empty(), "stateless");
        assert_eq!(p.output().value, input().value);
        ValidateOp {
            shared: p.shared.clone(),
        }
    }

    /// A reading: site, volts (None: NULL power record when watts is None too), watts, ts
    /// (µs), record timestamp (ms).
    fn reading(site: Option<&str>, watts: Option<f64>, ts_us: i64, timestamp: i64) -> Record {
        let null = || Value::Union(0, Box::new(Value::Null));
        Record {
            key: None,
            value: Value::Record(vec![
                ("device_id".into(), Value::String("d1".into())),
                (
                    "site".into(),
                    site.map_or_else(null, |s| Value::Union(1, Box::new(Value::String(s.into())))),
                ),
                ("ts".into(), Value::TimestampMicros(ts_us)),
                ("day".into(), Value::Date(20_000)),
                (
                    "power".into(),
                    watts.map_or_else(null, |w| {
                        Value::Union(
                            1,
                            Box::new(Value::Record(vec![
                                ("volts".into(), null()),
                                ("watts".into(), Value::Double(w)),
                            ])),
                        )
                    }),
                ),
                ("count".into(), Value::Int(3)),
            ]),
            timestamp,
        }
    }

    fn run(op: &mut ValidateOp, rec: Record) -> Result<Record, (&'static str, String)> {
        let mut out = Vec::new();
        match op.process(rec, &mut out) {
            Ok(()) => {
                assert_eq!(out.len(), 1);
                Ok(out.remove(0))
            }
            Err(OpError::Reject { class, message }) => {
                assert!(out.is_empty());
                Err((class, message))
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_and_a_fix() {
        let p = problems(
            "rangs: {}\nranges:\n  site: [0, 1]\n  count: [5, 1]\n  power.watts: { min: 0, maks: 3 }\n  powr: [0, 1]\n  power.volts: [a, 2]\nrequired: [device_id, stie, site, site]\nmax_future_skew: 15m\n",
        );
        assert_eq!(
            keys(&p),
            [
                "rangs",
                "ranges.site",
                "ranges.count",
                "ranges.power.watts",
                "ranges.powr",
                "ranges.power.volts",
                "required[0]",
                "required[1]",
                "required[3]",
                "timestamp"
            ]
        );
        assert!(p[0].2.starts_with("did you mean `ranges`?"), "{}", p[0].2);
        assert_eq!(
            p[1].1,
            "field `site` is a nullable string; a range needs a number"
        );
        assert!(
            p[1].2.contains("power.volts, power.watts, count"),
            "{}",
            p[1].2
        );
        assert!(p[2].1.contains("min is above its max"), "{}", p[2].1);
        assert!(p[3].1.contains("unknown bound `maks`"), "{}", p[3].1);
        assert!(p[4].2.contains("did you mean `power`?"), "{}", p[4].2);
        assert!(p[5].1.contains("not two finite numbers"), "{}", p[5].1);
        assert!(p[6].1.contains("never NULL"), "{}", p[6].1);
        assert!(
            p[6].2.contains("site, power, power.volts, power.watts"),
            "{}",
            p[6].2
        );
        assert!(p[7].2.contains("did you mean `site`?"), "{}", p[7].2);
        assert!(p[8].1.contains("listed twice"), "{}", p[8].1);
        assert!(p[9].1.contains("need `timestamp`"), "{}", p[9].1);
        assert_eq!(p[9].2, "add e.g. `timestamp: ts`");

        let p = problems("timestamp: day\nmax_past_age: 1d\non_skew: rejet\n");
        assert_eq!(keys(&p), ["on_skew"]);
        assert!(p[0].2.contains("did you mean `reject`?"), "{}", p[0].2);
        let p = problems("timestamp: day\nmax_past_age: 1d\n");
        assert_eq!(keys(&p), ["timestamp"]);
        assert!(p[0].1.contains("is a date, not a timestamp"), "{}", p[0].1);
        assert!(p[0].2.ends_with(": ts"), "{}", p[0].2);
        let p = problems("timestamp: ts\non_skew: reject\n");
        assert_eq!(keys(&p), ["timestamp", "on_skew"]);
        let p = problems("max_future_skew: 900\nmax_past_age: [1]\nranges: 3\n");
        assert_eq!(keys(&p), ["max_future_skew", "max_past_age", "ranges"]);
        assert!(p[0].1.contains("has no unit"), "{}", p[0].1);
        assert!(p[2].1.contains("invalid type"), "{}", p[2].1);
        let p = problems("{}");
        assert_eq!(p[0].1, "this validate checks nothing");
        let p = problems("[site]");
        assert!(p[0].2.contains("ranges: { power_w"), "{}", p[0].2);
        // The output is the input, problems or not.
        assert_eq!(
            Validate.output_despite_errors(&input()).unwrap().value,
            input().value
        );
    }

    #[test]
    fn the_first_failed_check_rejects_with_its_class_and_the_value_and_limit() {
        let mut v = op("required: site\nranges:\n  power.watts: [0, 1000]\n  power.volts: { min: 180 }\n  count: { max: 2 }\n");
        let t = 1_767_225_600_000;
        let ok = reading(Some("A"), Some(5.0), t * 1000, t);
        // count is 3 in every reading: allow it for the first checks.
        let mut v2 = op("required: site\nranges:\n  power.watts: [0, 1000]\n");
        assert_eq!(run(&mut v2, ok.clone()), Ok(ok.clone()));
        assert_eq!(
            run(&mut v2, reading(None, Some(5000.0), 0, t)),
            Err(("missing_field", "required field `site` is NULL".to_string()))
        );
        assert_eq!(
            run(&mut v2, reading(Some("A"), Some(5000.0), 0, t)),
            Err((
                "out_of_range",
                "`power.watts` = 5000 is above its max 1000".to_string()
            ))
        );
        assert_eq!(
            run(&mut v2, reading(Some("A"), Some(-0.5), 0, t)),
            Err((
                "out_of_range",
                "`power.watts` = -0.5 is below its min 0".to_string()
            ))
        );
        assert_eq!(
            run(&mut v2, reading(Some("A"), Some(f64::NAN), 0, t))
                .unwrap_err()
                .1,
            "`power.watts` = NaN is not a finite number"
        );
        // A NULL on the path is not range-checked.
        assert!(run(&mut v2, reading(Some("A"), None, 0, t)).is_ok());
        assert_eq!(
            run(&mut v, ok).unwrap_err(),
            ("out_of_range", "`count` = 3 is above its max 2".to_string())
        );
    }

    #[test]
    fn a_skewed_clock_is_restamped_in_the_field_s_unit_or_rejected() {
        let t = 1_767_225_600_000;
        let spec = "timestamp: ts\nmax_future_skew: 15m\nmax_past_age: 1h\n";
        let mut v = op(spec);
        let ts = |r: &Record| match &r.value {
            Value::Record(f) => f[2].1.clone(),
            _ => unreachable!(),
        };
        // Within the limits (the limits themselves included): unchanged.
        for off in [0, 15 * 60_000, -3_600_000] {
            let r = reading(Some("A"), Some(1.0), (t + off) * 1000, t);
            assert_eq!(run(&mut v, r.clone()), Ok(r));
        }
        // 16 minutes ahead, 2 hours behind: re-stamped to the record timestamp, in µs.
        for off in [16 * 60_000, -7_200_000] {
            let r = run(
                &mut v,
                reading(Some("A"), Some(1.0), (t + off) * 1000 + 7, t),
            )
            .unwrap();
            assert_eq!(ts(&r), Value::TimestampMicros(t * 1000));
            assert_eq!(r.timestamp, t, "the record timestamp is kept");
        }
        let mut v = op(&format!("{spec}on_skew: reject\n"));
        let (class, msg) = run(
            &mut v,
            reading(Some("A"), Some(1.0), (t + 7_200_000) * 1000, t),
        )
        .unwrap_err();
        assert_eq!(class, "clock_skew");
        assert_eq!(
            msg,
            format!(
                "event time `ts` = {} is 2h ahead of the record timestamp {t}; max_future_skew is 15m",
                t + 7_200_000
            )
        );
        let (class, msg) = run(
            &mut v,
            reading(Some("A"), Some(1.0), (t - 7_200_000) * 1000, t),
        )
        .unwrap_err();
        assert_eq!(class, "clock_skew");
        assert!(
            msg.contains("2h behind") && msg.ends_with("max_past_age is 1h"),
            "{msg}"
        );
        // Only one side checked.
        let mut v = op("timestamp: ts\nmax_past_age: 1h\non_skew: reject\n");
        assert!(run(
            &mut v,
            reading(Some("A"), Some(1.0), (t + 7_200_000) * 1000, t)
        )
        .is_ok());
    }

    #[test]
    fn restamp_writes_every_instant_type_and_nested_nullable_fields() {
        for (before, after) in [
            (Value::TimestampMillis(1), Value::TimestampMillis(5)),
            (Value::TimestampMicros(1), Value::TimestampMicros(5_000)),
            (Value::TimestampNanos(1), Value::TimestampNanos(5_000_000)),
            (
                Value::LocalTimestampMillis(1),
                Value::LocalTimestampMillis(5),
            ),
            (
                Value::LocalTimestampMicros(1),
                Value::LocalTimestampMicros(5_000),
            ),
            (
                Value::LocalTimestampNanos(1),
                Value::LocalTimestampNanos(5_000_000),
            ),
            (Value::Long(1), Value::Long(5)),
        ] {
            let wrap = |v: Value| {
                Value::Record(vec![(
                    "h".into(),
                    Value::Union(
                        1,
                        Box::new(Value::Record(vec![
                            ("x".into(), Value::Int(0)),
                            ("t".into(), Value::Union(1, Box::new(v))),
                        ])),
                    ),
                )])
            };
            let mut rec = wrap(before);
            restamp(&mut rec, &[0, 1], 5);
            assert_eq!(rec, wrap(after));
        }
    }
}
