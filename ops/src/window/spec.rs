//! The YAML of a window and of its aggregations, and their offline checks.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::agg::AggFn;
use crate::Problem;

/// A duration written the humantime way: `500ms`, `30s`, `5m`, `1h 30m`, `2days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Whole milliseconds, saturating at `i64::MAX`.
    pub fn millis(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like 500ms, 30s, 5m or 1h")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s.trim()).map(HumanDuration).map_err(|e| {
                    E::custom(format!(
                        "`{s}` is not a duration ({e}); write a number and a unit, like 30s, 5m or 1h"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "`{n}` has no unit; write e.g. {n}s or {n}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "`{n}` is not a duration; write e.g. 30s"
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("`{n}` has no unit; write e.g. {n}s")))
            }
        }
        d.deserialize_any(V)
    }
}

/// How windows are laid over event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows aligned to the epoch: `[k·size, (k+1)·size)`.
    Tumbling,
    /// Fixed-size windows starting every `advance`, aligned to the epoch; they overlap when
    /// `advance < size`, and a record belongs to about `size / advance` of them.
    Hopping,
    /// Kafka Streams' sliding windows: one window per distinct set of records whose event
    /// times lie within `size` of each other, per group key.
    Sliding,
    /// Per group key, records separated by at most `gap` form one window; a record that
    /// falls between two sessions and within `gap` of both merges them.
    Session,
}

/// When results leave the window operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Emit {
    /// Once per window, when it closes (its end plus `grace` has passed in stream time).
    #[default]
    Final,
    /// At every change of a window (keyed by group key, start and end for upserts), and a
    /// final result when it closes. Session windows that grow or merge also retract the
    /// results of their old extents.
    Update,
}

/// `window:` of a window operator.
///
/// ```yaml
/// window:
///   kind: hopping
///   size: 5m
///   advance: 1m
///   grace: 30s
///   emit: final
///   idle_timeout: 2m
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// `tumbling`, `hopping`, `sliding` or `session`.
    pub kind: WindowKind,
    /// Length of each window (tumbling, hopping), or the largest event-time difference of
    /// two records in one window (sliding, both ends inclusive). Not for sessions.
    #[serde(default)]
    pub size: Option<HumanDuration>,
    /// Tumbling only, instead of `size`: several window lengths in one operator (e.g.
    /// `[1m, 5m]`). A record counts in one window of each length, and is late only when it
    /// is too late for all of them; results of every length come out in closing order.
    #[serde(default)]
    pub sizes: Option<Vec<HumanDuration>>,
    /// Hopping only: the distance between the starts of consecutive windows, at most
    /// `size`. Windows start at multiples of `advance` since the epoch; a record belongs to
    /// ⌈size / advance⌉ or ⌊size / advance⌋ of them (the two agree when `advance` divides
    /// `size`, and `advance = size` is tumbling).
    #[serde(default)]
    pub advance: Option<HumanDuration>,
    /// Session only: the longest silence (event time) inside one session; a record at most
    /// `gap` after a session's last record, or before its first, joins it.
    #[serde(default)]
    pub gap: Option<HumanDuration>,
    /// How long after a window's end late records still count, in stream time (the largest
    /// event time seen by the partition). Default `0s`. A record too late for every window
    /// it belongs to is rejected (dead-lettered with the reason).
    #[serde(default)]
    pub grace: Option<HumanDuration>,
    /// `final` (default): one result per window when it closes. `update`: a result at every
    /// change plus a final one at close, keyed by (group key, start, end) so consumers upsert.
    #[serde(default)]
    pub emit: Emit,
    /// Optional. When a partition receives nothing for this long (wall clock), its stream
    /// time advances by the wall time that passed, so its last windows close instead of
    /// waiting for the next record. The advance is recorded in the operator's state before
    /// it takes effect, so replays after a crash reproduce it exactly.
    #[serde(default)]
    pub idle_timeout: Option<HumanDuration>,
}

/// Most windows one record may belong to (hopping): each costs an accumulator update.
pub const MAX_WINDOWS_PER_RECORD: i64 = 1000;

fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// Longest duration accepted anywhere in a window spec (100 years): keeps all sums of
/// times far from `i64` overflow.
const MAX_DURATION_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

impl WindowSpec {
    /// Every mistake in the spec; keys are relative to the `window:` block.
    pub fn check(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let kind = format!("{:?}", self.kind).to_lowercase();
        let not_for = |p: &mut Vec<Problem>, key: &str, v: &Option<HumanDuration>, fix: &str| {
            if v.is_some() {
                p.push(Problem::new(
                    key,
                    format!("`{key}` does not apply to {kind} windows"),
                    fix.to_string(),
                ));
            }
        };
        let required = |p: &mut Vec<Problem>, key: &str, v: &Option<HumanDuration>, eg: &str| {
            if v.is_none() {
                p.push(Problem::new(
                    key,
                    format!("{kind} windows need `{key}`"),
                    format!("add `{key}: {eg}`"),
                ));
            }
        };
        let sizes_not_for = |p: &mut Vec<Problem>| {
            if self.sizes.is_some() {
                p.push(Problem::new(
                    "sizes",
                    format!("`sizes` does not apply to {kind} windows"),
                    "give one `size`; several lengths are for tumbling windows",
                ));
            }
        };
        match self.kind {
            WindowKind::Tumbling => {
                match (&self.size, &self.sizes) {
                    (Some(_), Some(_)) => p.push(Problem::new(
                        "sizes",
                        "`size` and `sizes` are both given",
                        "keep one: `size: 5m` for one length, `sizes: [1m, 5m]` for several",
                    )),
                    (None, None) => required(&mut p, "size", &self.size, "5m"),
                    (None, Some(v)) if v.is_empty() => p.push(Problem::new(
                        "sizes",
                        "`sizes` is empty",
                        "list at least one length, e.g. `sizes: [1m, 5m]`",
                    )),
                    _ => {}
                }
                not_for(
                    &mut p,
                    "advance",
                    &self.advance,
                    "remove `advance`, or use `kind: hopping` for overlapping windows",
                );
                not_for(
                    &mut p,
                    "gap",
                    &self.gap,
                    "remove `gap`, or use `kind: session`",
                );
            }
            WindowKind::Hopping => {
                sizes_not_for(&mut p);
                required(&mut p, "size", &self.size, "5m");
                required(&mut p, "advance", &self.advance, "1m");
                not_for(
                    &mut p,
                    "gap",
                    &self.gap,
                    "remove `gap`, or use `kind: session`",
                );
            }
            WindowKind::Sliding => {
                sizes_not_for(&mut p);
                required(&mut p, "size", &self.size, "5m");
                not_for(
                    &mut p,
                    "advance",
                    &self.advance,
                    "remove `advance`: sliding windows follow the records; use `kind: hopping` for a fixed step",
                );
                not_for(
                    &mut p,
                    "gap",
                    &self.gap,
                    "remove `gap`, or use `kind: session`",
                );
            }
            WindowKind::Session => {
                sizes_not_for(&mut p);
                required(&mut p, "gap", &self.gap, "30m");
                not_for(
                    &mut p,
                    "size",
                    &self.size,
                    "remove `size`: a session lasts as long as records keep coming within `gap`",
                );
                not_for(&mut p, "advance", &self.advance, "remove `advance`");
            }
        }
        let mut positive = |key: &str, v: &Option<HumanDuration>, zero_ok: bool| {
            let Some(d) = v else { return };
            if d.0.subsec_nanos() % 1_000_000 != 0 {
                p.push(Problem::new(
                    key,
                    format!("`{key}: {d}` is not a whole number of milliseconds"),
                    "event times are in milliseconds: round it to ms",
                ));
            } else if d.0.is_zero() && !zero_ok {
                p.push(Problem::new(
                    key,
                    format!("`{key}` must be more than 0"),
                    format!("give `{key}` a positive duration, e.g. 1m"),
                ));
            } else if d.millis() > MAX_DURATION_MS {
                p.push(Problem::new(
                    key,
                    format!("`{key}: {d}` is longer than 100 years"),
                    "use a shorter duration",
                ));
            }
        };
        positive("size", &self.size, false);
        for (i, d) in self.sizes.iter().flatten().enumerate() {
            positive(&format!("sizes[{i}]"), &Some(*d), false);
        }
        positive("advance", &self.advance, false);
        positive("gap", &self.gap, false);
        positive("grace", &self.grace, true);
        positive("idle_timeout", &self.idle_timeout, false);
        let mut seen = Vec::new();
        for (i, d) in self.sizes.iter().flatten().enumerate() {
            if seen.contains(&d.millis()) {
                p.push(Problem::new(
                    format!("sizes[{i}]"),
                    format!("`{d}` is listed twice"),
                    "list each length once",
                ));
            }
            seen.push(d.millis());
        }
        if let (WindowKind::Hopping, Some(size), Some(adv)) = (self.kind, self.size, self.advance) {
            if adv > size {
                p.push(Problem::new(
                    "advance",
                    format!(
                        "`advance: {adv}` is longer than `size: {size}`: records between the end of one window and the start of the next would belong to none"
                    ),
                    format!("make `advance` at most {size}"),
                ));
            } else if adv.millis() > 0
                && ceil_div(size.millis(), adv.millis()) > MAX_WINDOWS_PER_RECORD
            {
                p.push(Problem::new(
                    "advance",
                    format!(
                        "size {size} / advance {adv} puts every record in {} windows (at most {MAX_WINDOWS_PER_RECORD})",
                        ceil_div(size.millis(), adv.millis())
                    ),
                    "use a larger `advance` or a smaller `size`",
                ));
            }
        }
        p
    }

    pub(crate) fn size_ms(&self) -> i64 {
        self.size.map_or(0, |d| d.millis())
    }
    /// Tumbling windows' lengths: `sizes`, or `size` alone.
    pub(crate) fn sizes_ms(&self) -> Vec<i64> {
        match &self.sizes {
            Some(v) => v.iter().map(|d| d.millis()).collect(),
            None => vec![self.size_ms()],
        }
    }
    pub(crate) fn advance_ms(&self) -> i64 {
        self.advance.or(self.size).map_or(0, |d| d.millis())
    }
    pub(crate) fn gap_ms(&self) -> i64 {
        self.gap.map_or(0, |d| d.millis())
    }
    pub(crate) fn grace_ms(&self) -> i64 {
        self.grace.map_or(0, |d| d.millis())
    }
}

/// One aggregation of a window operator: the output field `name` gets `func` over `field`.
///
/// Two ways to write a list of them. A map from output field to definition, in output
/// order, where a definition is compact SQL-like text or the long form:
///
/// ```yaml
/// aggregate:
///   n: count                       # rows (also count(*))
///   readings: count(power_w)       # non-NULL values of a field
///   total_w: sum(power_w)
///   avg_w: mean(power_w)           # also avg
///   sd_w: stddev(power_w)
///   lo: min(power_w)
///   hi: max(power_w)
///   first_state: first(state)      # by event time; ties: arrival order
///   p95_w: p95(power_w)            # p50, p99, pNN, median; p999 = 0.999
///   p90_w: quantile(power_w, 0.9)
///   devices: count_distinct(device_id)
///   peak: { fn: max, field: power_w }
/// ```
///
/// or a list of long forms, `- { name: total_w, fn: sum, field: power_w }`. Fields are
/// names or dotted paths into the record (`reading.power_w`).
#[derive(Debug, Clone, PartialEq)]
pub struct AggSpec {
    /// The output field.
    pub name: String,
    /// The function as written: `sum`, `p95`, `quantile`, ...
    pub func: String,
    /// The input field; `None` (or `*`) for `count` of rows.
    pub field: Option<String>,
    /// The quantile of `quantile`, 0 to 1.
    pub q: Option<f64>,
    /// Set when the compact text could not be read: the message.
    pub syntax_error: Option<String>,
}

/// The long form of one aggregation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggLong {
    /// The output field (list form only; in the map form the key is the name).
    #[serde(default)]
    pub name: Option<String>,
    /// The function: count, sum, min, max, mean (avg), stddev, first, last, quantile,
    /// median, pNN (p50, p95, p99, p999), count_distinct.
    #[serde(rename = "fn")]
    pub func: String,
    /// The input field (name or dotted path); omit for `count` of rows.
    #[serde(default)]
    pub field: Option<String>,
    /// `quantile` only: which quantile, from 0 to 1 (0.95 for the 95th percentile).
    #[serde(default)]
    pub q: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AggDef {
    Compact(String),
    Long(AggLong),
}

/// The `aggregate:` block: a map or a list (see [`AggSpec`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Aggregates(pub Vec<AggSpec>);

impl AggSpec {
    fn from_long(name: String, l: AggLong) -> Self {
        AggSpec {
            name,
            func: l.func,
            field: l.field.filter(|f| f != "*"),
            q: l.q,
            syntax_error: None,
        }
    }

    /// Reads the compact form: `fn`, `fn(field)`, `fn(*)`, `quantile(field, q)`.
    pub fn compact(name: &str, text: &str) -> Self {
        let mut spec = AggSpec {
            name: name.to_string(),
            func: String::new(),
            field: None,
            q: None,
            syntax_error: None,
        };
        let t = text.trim();
        let (func, args) = match t.find('(') {
            None => (t, None),
            Some(i) => {
                let Some(inner) = t[i + 1..].strip_suffix(')') else {
                    spec.func = t[..i].trim().to_string();
                    spec.syntax_error = Some(format!("`{t}` lacks its closing parenthesis"));
                    return spec;
                };
                (t[..i].trim(), Some(inner))
            }
        };
        spec.func = func.to_string();
        if let Some(args) = args {
            let parts: Vec<&str> = args.split(',').map(str::trim).collect();
            match parts.as_slice() {
                [""] | ["*"] => {}
                [field] => spec.field = Some((*field).to_string()),
                [field, q] => {
                    spec.field = Some((*field).to_string());
                    match q.parse::<f64>() {
                        Ok(q) => spec.q = Some(q),
                        Err(_) => {
                            spec.syntax_error = Some(format!(
                                "`{q}` in `{t}` is not a number (the quantile, 0 to 1)"
                            ))
                        }
                    }
                }
                _ => {
                    spec.syntax_error = Some(format!(
                        "`{t}` has {} arguments: write fn(field), or quantile(field, q)",
                        parts.len()
                    ))
                }
            }
        }
        if let Some(f) = &spec.field {
            let ok = !f.is_empty()
                && f.split('.').all(|seg| {
                    !seg.is_empty()
                        && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !seg.starts_with(|c: char| c.is_ascii_digit())
                });
            if !ok && spec.syntax_error.is_none() {
                spec.syntax_error = Some(format!(
                    "`{f}` is not a field name or dotted path (letters, digits, _)"
                ));
            }
        }
        spec
    }

    /// The function, field and quantile checked; problems keyed `<name>`, `<name>.fn`,
    /// `<name>.field`, `<name>.q` relative to the `aggregate:` block.
    pub fn compile(&self) -> Result<Agg, Vec<Problem>> {
        let key = |k: &str| {
            if k.is_empty() {
                self.name.clone()
            } else {
                format!("{}.{k}", self.name)
            }
        };
        let mut p = Vec::new();
        if let Some(e) = &self.syntax_error {
            p.push(Problem::new(
                key(""),
                e.clone(),
                "write e.g. `sum(power_w)`, `count`, `quantile(latency_ms, 0.99)` or the long form `{ fn: sum, field: power_w }`",
            ));
            return Err(p);
        }
        let lower = self.func.to_ascii_lowercase();
        let func = match AggFn::parse(&lower) {
            Some(f) => {
                if self.q.is_some() {
                    p.push(Problem::new(
                        key("q"),
                        format!("`q` is for `quantile`, not `{}`", self.func),
                        "remove `q`, or use `fn: quantile`",
                    ));
                }
                Some(f)
            }
            None if lower == "quantile" => match self.q {
                Some(q) if (0.0..=1.0).contains(&q) => Some(AggFn::Quantile(q)),
                Some(q) => {
                    p.push(Problem::new(
                        key("q"),
                        format!("quantile {q} is outside 0..1"),
                        "use a fraction: 0.95 for the 95th percentile",
                    ));
                    None
                }
                None => {
                    p.push(Problem::new(
                        key("q"),
                        "`quantile` needs `q`",
                        format!(
                            "write `quantile({}, 0.95)`, or `p95`",
                            self.field.as_deref().unwrap_or("field")
                        ),
                    ));
                    None
                }
            },
            None => {
                p.push(Problem::new(
                    key("fn"),
                    format!("unknown aggregation `{}`", self.func),
                    did_you_mean(&self.func),
                ));
                None
            }
        };
        if let Some(f) = func {
            if self.field.is_none() && f != AggFn::Count {
                p.push(Problem::new(
                    key("field"),
                    format!("`{}` needs a field", f.name()),
                    format!("write `{}(field)`", self.func),
                ));
            }
        }
        if self.name.is_empty() {
            p.push(Problem::new(
                key(""),
                "an aggregation without a name",
                "give it the output field's name",
            ));
        }
        match func {
            Some(func) if p.is_empty() => Ok(Agg {
                name: self.name.clone(),
                func,
                field: self.field.clone(),
            }),
            _ => Err(p),
        }
    }
}

fn did_you_mean(name: &str) -> String {
    let lower = name.to_lowercase();
    let best = AggFn::NAMES
        .iter()
        .map(|n| (strsim::damerau_levenshtein(&lower, n), *n))
        .min();
    let list = "count, sum, min, max, mean, stddev, first, last, quantile, median, p50/p95/p99, count_distinct";
    match best {
        Some((d, n)) if d <= 2 || (lower.len() > 4 && n.starts_with(&lower[..3])) => {
            format!("did you mean `{n}`? (known: {list})")
        }
        _ => format!("use one of: {list}"),
    }
}

/// A checked aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// Output field.
    pub name: String,
    pub func: AggFn,
    /// Input field; `None` only for `count` of rows.
    pub field: Option<String>,
}

/// Checks a whole `aggregate:` block: each aggregation, duplicate names, emptiness.
pub fn compile_aggs(aggs: &[AggSpec]) -> Result<Vec<Agg>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    if aggs.is_empty() {
        problems.push(Problem::new(
            "",
            "a window without aggregations",
            "add at least one, e.g. `n: count`",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for a in aggs {
        if !seen.insert(a.name.as_str()) {
            problems.push(Problem::new(
                a.name.clone(),
                format!("output field `{}` is defined twice", a.name),
                "give each aggregation its own name",
            ));
        }
        match a.compile() {
            Ok(agg) => out.push(agg),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

impl<'de> Deserialize<'de> for Aggregates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Aggregates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map `output_field: fn(field)` or a list of `{ name, fn, field }`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Aggregates, A::Error> {
                let mut v = Vec::new();
                while let Some(name) = m.next_key::<String>()? {
                    let spec = match m.next_value::<AggDef>()? {
                        AggDef::Compact(text) => AggSpec::compact(&name, &text),
                        AggDef::Long(l) => {
                            if l.name.as_ref().is_some_and(|n| n != &name) {
                                return Err(de::Error::custom(format!(
                                    "aggregation `{name}` has a different `name:`; in the map form the key is the name"
                                )));
                            }
                            AggSpec::from_long(name, l)
                        }
                    };
                    v.push(spec);
                }
                Ok(Aggregates(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Aggregates, A::Error> {
                let mut v = Vec::new();
                while let Some(l) = s.next_element::<AggLong>()? {
                    let Some(name) = l.name.clone() else {
                        return Err(de::Error::custom(format!(
                            "aggregation #{} has no `name:` (the output field)",
                            v.len() + 1
                        )));
                    };
                    v.push(AggSpec::from_long(name, l));
                }
                Ok(Aggregates(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> WindowSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn keys(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn parses_the_documented_example_with_defaults() {
        let s = spec("kind: hopping\nsize: 5m\nadvance: 1m\n");
        assert_eq!(s.kind, WindowKind::Hopping);
        assert_eq!(s.size_ms(), 300_000);
        assert_eq!(s.advance_ms(), 60_000);
        assert_eq!(s.grace_ms(), 0);
        assert_eq!(s.emit, Emit::Final);
        assert!(s.check().is_empty());
        let s = spec("kind: session\ngap: 30m\ngrace: 30s\nemit: update\nidle_timeout: 2m\n");
        assert_eq!(s.emit, Emit::Update);
        assert_eq!(s.idle_timeout.unwrap().millis(), 120_000);
        assert!(s.check().is_empty());
    }

    #[test]
    fn rejects_unknown_keys_and_unitless_durations() {
        let e = serde_yaml::from_str::<WindowSpec>("kind: tumbling\nsize: 5m\nsise: 1m\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sise"), "{e}");
        let e = serde_yaml::from_str::<WindowSpec>("kind: tumbling\nsize: 300\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("300s"), "{e}");
        let e = serde_yaml::from_str::<WindowSpec>("kind: tumbling\nsize: five minutes\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn finds_the_mistakes() {
        let p = spec("kind: tumbling\nsize: 5m\nadvance: 1m\n").check();
        assert_eq!(keys(&p), ["advance"]);
        assert!(p[0].fix.contains("hopping"));
        assert_eq!(
            keys(&spec("kind: hopping\nsize: 1m\nadvance: 5m\n").check()),
            ["advance"]
        );
        assert_eq!(keys(&spec("kind: tumbling\nsize: 0s\n").check()), ["size"]);
        assert_eq!(keys(&spec("kind: session\n").check()), ["gap"]);
        assert_eq!(
            keys(&spec("kind: session\ngap: 1m\nsize: 5m\n").check()),
            ["size"]
        );
        assert_eq!(
            keys(&spec("kind: hopping\nsize: 5m\n").check()),
            ["advance"]
        );
        assert_eq!(
            keys(&spec("kind: sliding\nsize: 5m\nadvance: 1m\n").check()),
            ["advance"]
        );
        assert_eq!(
            keys(&spec("kind: tumbling\nsize: 1500us\n").check()),
            ["size"]
        );
        assert_eq!(
            keys(&spec("kind: tumbling\nsize: 1m\nidle_timeout: 0s\n").check()),
            ["idle_timeout"]
        );
        assert_eq!(
            keys(&spec("kind: hopping\nsize: 1d\nadvance: 1s\n").check()),
            ["advance"]
        );
        assert!(spec("kind: tumbling\nsize: 1m\ngrace: 0s\n")
            .check()
            .is_empty());
    }

    #[test]
    fn aggregations_in_map_and_list_form() {
        let a: Aggregates = serde_yaml::from_str(
            "n: count\nrows: count(*)\ntotal: sum(power_w)\np95: p95(power_w)\np9: quantile(power_w, 0.9)\npeak: { fn: max, field: reading.power_w }\n",
        )
        .unwrap();
        let aggs = compile_aggs(&a.0).unwrap();
        let got: Vec<_> = aggs
            .iter()
            .map(|a| (a.name.as_str(), a.func, a.field.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("n", AggFn::Count, None),
                ("rows", AggFn::Count, None),
                ("total", AggFn::Sum, Some("power_w")),
                ("p95", AggFn::Quantile(0.95), Some("power_w")),
                ("p9", AggFn::Quantile(0.9), Some("power_w")),
                ("peak", AggFn::Max, Some("reading.power_w")),
            ]
        );
        let l: Aggregates = serde_yaml::from_str(
            "- { name: total, fn: sum, field: power_w }\n- { name: n, fn: count }\n",
        )
        .unwrap();
        assert_eq!(compile_aggs(&l.0).unwrap().len(), 2);
        assert!(serde_yaml::from_str::<Aggregates>("- { fn: sum, field: x }\n").is_err());
        assert!(serde_yaml::from_str::<Aggregates>("a: { fn: sum, field: x, wat: 1 }\n").is_err());
    }

    #[test]
    fn unknown_functions_get_a_suggestion() {
        let a: Aggregates = serde_yaml::from_str(
            "a: summ(x)\nb: stdev(x)\nc: frobnicate(x)\nd: quantile(x)\ne: quantile(x, 1.5)\nf: sum\ng: sum(x\nh: max(1x)\n",
        )
        .unwrap();
        let p = compile_aggs(&a.0).unwrap_err();
        let by_key = |k: &str| {
            p.iter()
                .find(|p| p.key == k)
                .unwrap_or_else(|| panic!("{k}: {p:?}"))
        };
        assert!(by_key("a.fn").fix.contains("`sum`"));
        assert!(by_key("b.fn").fix.contains("`stddev`"));
        assert!(by_key("c.fn").fix.starts_with("use one of"));
        assert!(by_key("d.q").message.contains("needs `q`"));
        assert!(by_key("e.q").message.contains("outside"));
        assert!(by_key("f.field").message.contains("needs a field"));
        assert!(by_key("g").message.contains("parenthesis"));
        assert!(by_key("h").message.contains("not a field"));
        assert_eq!(
            AggSpec::compact("x", "SUM(v)").compile().unwrap().func,
            AggFn::Sum
        );
        let dup = compile_aggs(&[
            AggSpec::compact("x", "count"),
            AggSpec::compact("x", "sum(y)"),
        ])
        .unwrap_err();
        assert_eq!(keys(&dup), ["x"]);
    }
}
