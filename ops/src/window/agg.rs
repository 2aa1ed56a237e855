//! Aggregations as mergeable accumulators with a compact binary encoding.
//!
//! | `fn` | input | result (Avro) | state |
//! |---|---|---|---|
//! | `count` | none: rows; a field: its non-NULL values | `long` | varint |
//! | `sum` | number | `["null","double"]`, NULL without values | Neumaier-compensated sum |
//! | `min`, `max` | any orderable value | the input's type, nullable | the value |
//! | `mean` | number | `["null","double"]` | Welford (n, mean, M2) |
//! | `stddev` | number | `["null","double"]`, NULL below 2 values | same state as `mean` |
//! | `stddev_pop` | number | `["null","double"]`, NULL without values | same state as `mean` |
//! | `first`, `last` | any value | the input's type, nullable | (event time, arrival, value) |
//! | `quantile(q)`, `p50`.. | number | `["null","double"]` | DDSketch, 1% relative accuracy |
//! | `count_distinct` | any value | `long` (an estimate) | HyperLogLog++, precision 14 |
//!
//! Every aggregation ignores NULLs, as SQL's do; `count` without a field counts rows.
//! Numeric aggregations take an `f64` ([`Input::Num`]): the caller converts ints and
//! decimals. Given a `Value`, they read `int`, `long`, `float` and `double` themselves and
//! skip anything else, which the topology compiler rejects beforehand
//! ([`AggFn::check_input`]).
//!
//! - `stddev` is the sample standard deviation (n − 1), `stddev_pop` the population one (n,
//!   0 for one value), both updated with Welford's recurrence and merged with Chan et al.'s
//!   formula, so neither loses precision to cancellation.
//! - `first`/`last` compare (event time, arrival order): among records of equal event time
//!   the earlier arrival is first and the later one last, also across merged sessions.
//! - `min`/`max` use the total order of [`cmp_values`](super::codec::cmp_values): NaN is
//!   above every number (as in PostgreSQL).
//! - Quantiles come from `sketches-ddsketch` (relative error ≤ 1% for values of magnitude
//!   ≥ 1e-9; smaller magnitudes count as 0; NaN and ±∞ are skipped). Several quantiles of one
//!   field share one sketch. The rank convention is the sketch's: the value of rank
//!   ⌊q·(n−1)⌋ (0-based) in sorted order.
//! - `count_distinct` hashes the value's canonical bytes with SipHash-2-4 under a fixed key
//!   (stable across processes and builds; `int` and `long` of equal value hash alike) into
//!   `hyperloglogplus`' HyperLogLog++ at precision 14: exact-ish (sparse, 25-bit) for small
//!   counts, standard error 0.81% for large ones, at most ~13 KiB per window.

use std::hash::{BuildHasher, Hasher};

use apache_avro::schema::UnionSchema;
use apache_avro::types::Value;
use apache_avro::Schema;
use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};
use sluice_state::StateError;

use super::codec::{self, Put, Reader};

/// One aggregation's input for one record.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// NULL (or the field is absent): ignored by every aggregation but `count` of rows.
    Null,
    /// A number, already converted by the caller (numeric aggregations). `min`, `max`,
    /// `first`, `last` and `count_distinct` see it as a `double`: give them the `Value`.
    Num(f64),
    /// A value as decoded from the record.
    Val(&'a Value),
}

impl<'a> From<Option<&'a Value>> for Input<'a> {
    fn from(v: Option<&'a Value>) -> Self {
        v.map_or(Input::Null, Input::Val)
    }
}

impl Input<'_> {
    fn is_null(&self) -> bool {
        match self {
            Input::Null => true,
            Input::Num(_) => false,
            Input::Val(v) => matches!(codec::plain(v), Value::Null),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Input::Null => None,
            Input::Num(f) => Some(*f),
            Input::Val(v) => codec::number(v),
        }
    }

    /// The value itself, unions unwrapped; numbers given as `f64` become `double`s.
    fn value(&self) -> Option<Value> {
        match self {
            Input::Null => None,
            Input::Num(f) => Some(Value::Double(*f)),
            Input::Val(v) => match codec::plain(v) {
                Value::Null => None,
                other => Some(other.clone()),
            },
        }
    }
}

/// When a record happened and in which order it arrived (a per-task counter); `first` and
/// `last` order by this pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub ts: i64,
    pub seq: u64,
}

/// An aggregation function, parsed from the spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggFn {
    Count,
    Sum,
    Min,
    Max,
    Mean,
    Stddev,
    /// The population standard deviation (divides by n, not n − 1).
    StddevPop,
    First,
    Last,
    /// The q-quantile, 0 ≤ q ≤ 1 (`p95` is `Quantile(0.95)`, `median` is `Quantile(0.5)`).
    Quantile(f64),
    CountDistinct,
}

/// What an aggregation accepts, for the topology compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Anything (`count`, `first`, `last`, `count_distinct`).
    Any,
    /// Numbers: `int`, `long`, `float`, `double`, decimals (converted to `f64` by the caller).
    Number,
    /// Values with an order: everything but records, arrays, maps and NULL.
    Orderable,
}

/// The state kind behind an aggregation; aggregations of one kind over one field share a
/// state (`p50` and `p99` one sketch, `mean` and `stddev` one set of moments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AccKind {
    Rows,
    NonNull,
    Sum,
    Min,
    Max,
    Moments,
    First,
    Last,
    Sketch,
    Distinct,
}

impl AggFn {
    /// The names `fn` accepts (aliases included), for "did you mean".
    pub const NAMES: &'static [&'static str] = &[
        "count",
        "sum",
        "min",
        "max",
        "mean",
        "avg",
        "stddev",
        "stddev_pop",
        "first",
        "last",
        "quantile",
        "median",
        "p50",
        "p90",
        "p95",
        "p99",
        "p999",
        "count_distinct",
    ];

    /// Parses a function name that needs no argument; `quantile` (which needs `q`) and
    /// unknown names are `None`. `pNN` is the NN-th percentile (`p5` = 0.05, `p95` = 0.95); a
    /// name of three or more digits starting with `99` reads as a decimal fraction
    /// (`p999` = 0.999).
    pub fn parse(name: &str) -> Option<AggFn> {
        Some(match name {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum,
            "min" => AggFn::Min,
            "max" => AggFn::Max,
            "mean" | "avg" => AggFn::Mean,
            "stddev" | "stddev_samp" => AggFn::Stddev,
            "stddev_pop" => AggFn::StddevPop,
            "first" => AggFn::First,
            "last" => AggFn::Last,
            "median" => AggFn::Quantile(0.5),
            "count_distinct" | "approx_count_distinct" => AggFn::CountDistinct,
            p if p.len() >= 2
                && p.starts_with('p')
                && p[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                let digits = &p[1..];
                let q = if digits.len() <= 2 {
                    digits.parse::<f64>().ok()? / 100.0
                } else if digits.starts_with("99") {
                    format!("0.{digits}").parse::<f64>().ok()?
                } else {
                    return None;
                };
                if q <= 0.0 {
                    return None;
                }
                AggFn::Quantile(q)
            }
            _ => return None,
        })
    }

    /// The canonical name (`p95` for `Quantile(0.95)`).
    pub fn name(&self) -> String {
        match self {
            AggFn::Count => "count".into(),
            AggFn::Sum => "sum".into(),
            AggFn::Min => "min".into(),
            AggFn::Max => "max".into(),
            AggFn::Mean => "mean".into(),
            AggFn::Stddev => "stddev".into(),
            AggFn::StddevPop => "stddev_pop".into(),
            AggFn::First => "first".into(),
            AggFn::Last => "last".into(),
            AggFn::Quantile(q) => format!("quantile({q})"),
            AggFn::CountDistinct => "count_distinct".into(),
        }
    }

    pub fn input_kind(&self) -> InputKind {
        match self {
            AggFn::Sum | AggFn::Mean | AggFn::Stddev | AggFn::StddevPop | AggFn::Quantile(_) => {
                InputKind::Number
            }
            AggFn::Min | AggFn::Max => InputKind::Orderable,
            AggFn::Count | AggFn::First | AggFn::Last | AggFn::CountDistinct => InputKind::Any,
        }
    }

    /// Whether a field of type `input` suits this aggregation (nullable unions are looked
    /// through); `Err` says why not.
    pub fn check_input(&self, input: &Schema) -> Result<(), String> {
        let t = non_null(input);
        let ok = match self.input_kind() {
            InputKind::Any => true,
            InputKind::Number => matches!(
                t,
                Schema::Int
                    | Schema::Long
                    | Schema::Float
                    | Schema::Double
                    | Schema::Decimal(_)
                    | Schema::BigDecimal
            ),
            InputKind::Orderable => !matches!(
                t,
                Schema::Record(_) | Schema::Array(_) | Schema::Map(_) | Schema::Null
            ),
        };
        if ok {
            Ok(())
        } else {
            let want = match self.input_kind() {
                InputKind::Number => "a number (int, long, float, double or decimal)",
                _ => "a value with an order (not a record, array, map or null)",
            };
            Err(format!(
                "{} needs {want}, the field is {}",
                self.name(),
                kind_name(t)
            ))
        }
    }

    /// The Avro type of the result given the input field's type (`None` for `count` of
    /// rows). Nullable results are `["null", T]`; [`result`](Self::result) returns the plain
    /// value (`Value::Null` or a `T`), which Avro's encoder resolves against the union.
    pub fn result_schema(&self, input: Option<&Schema>) -> Schema {
        let nullable = |t: Schema| {
            let t = match t {
                Schema::Union(u) => {
                    if u.is_nullable() {
                        return Schema::Union(u);
                    }
                    let mut v = vec![Schema::Null];
                    v.extend(u.variants().iter().cloned());
                    return UnionSchema::new(v).map_or(Schema::Null, Schema::Union);
                }
                t => t,
            };
            UnionSchema::new(vec![Schema::Null, t]).map_or(Schema::Null, Schema::Union)
        };
        match self {
            AggFn::Count | AggFn::CountDistinct => Schema::Long,
            AggFn::Sum | AggFn::Mean | AggFn::Stddev | AggFn::StddevPop | AggFn::Quantile(_) => {
                nullable(Schema::Double)
            }
            AggFn::Min | AggFn::Max | AggFn::First | AggFn::Last => {
                nullable(input.map_or(Schema::Null, |s| non_null(s).clone()))
            }
        }
    }

    pub(crate) fn acc_kind(&self, has_field: bool) -> AccKind {
        match self {
            AggFn::Count if has_field => AccKind::NonNull,
            AggFn::Count => AccKind::Rows,
            AggFn::Sum => AccKind::Sum,
            AggFn::Min => AccKind::Min,
            AggFn::Max => AccKind::Max,
            AggFn::Mean | AggFn::Stddev | AggFn::StddevPop => AccKind::Moments,
            AggFn::First => AccKind::First,
            AggFn::Last => AccKind::Last,
            AggFn::Quantile(_) => AccKind::Sketch,
            AggFn::CountDistinct => AccKind::Distinct,
        }
    }

    /// A fresh accumulator for this function (`has_field`: `count(x)` rather than rows).
    pub fn new_acc(&self, has_field: bool) -> Acc {
        Acc::new(self.acc_kind(has_field))
    }

    /// This function's result from an accumulator made by [`new_acc`](Self::new_acc) (or one
    /// shared with functions of the same state kind). A mismatched accumulator gives NULL.
    pub fn result(&self, acc: &Acc) -> Value {
        let double = |x: Option<f64>| x.map_or(Value::Null, Value::Double);
        match (self, acc) {
            (AggFn::Count, Acc::Rows(n) | Acc::NonNull(n)) => Value::Long(*n as i64),
            (AggFn::Sum, Acc::Sum(s)) => double((s.n > 0).then_some(s.sum + s.comp)),
            (AggFn::Min, Acc::Min(v)) | (AggFn::Max, Acc::Max(v)) => {
                v.clone().unwrap_or(Value::Null)
            }
            (AggFn::Mean, Acc::Moments(m)) => double((m.n > 0).then_some(m.mean)),
            (AggFn::Stddev, Acc::Moments(m)) => {
                double((m.n > 1).then(|| (m.m2 / (m.n - 1) as f64).max(0.0).sqrt()))
            }
            (AggFn::StddevPop, Acc::Moments(m)) => {
                double((m.n > 0).then(|| (m.m2 / m.n as f64).max(0.0).sqrt()))
            }
            (AggFn::First, Acc::First(v)) | (AggFn::Last, Acc::Last(v)) => {
                v.as_ref().map_or(Value::Null, |s| s.value.clone())
            }
            (AggFn::Quantile(q), Acc::Sketch(s)) => double(s.0.quantile(*q).ok().flatten()),
            (AggFn::CountDistinct, Acc::Distinct(h)) => Value::Long(h.estimate()),
            _ => Value::Null,
        }
    }
}

fn non_null(s: &Schema) -> &Schema {
    match s {
        Schema::Union(u) => {
            let rest: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            match rest.as_slice() {
                [one] => one,
                _ => s,
            }
        }
        s => s,
    }
}

fn kind_name(s: &Schema) -> String {
    match s {
        Schema::Record(r) => format!("the record {}", r.name.name()),
        Schema::Array(_) => "an array".into(),
        Schema::Map(_) => "a map".into(),
        Schema::Union(_) => "a union".into(),
        other => format!("{}", other).to_lowercase(),
    }
}

/// Neumaier's compensated sum: the error of each addition is kept in `comp`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SumState {
    n: u64,
    sum: f64,
    comp: f64,
}

impl SumState {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }
}

/// Count, mean and sum of squared deviations (Welford; Chan et al. to merge).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = o.clone();
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        let d = o.mean - self.mean;
        self.mean += d * nb / n;
        self.m2 += o.m2 + d * d * na * nb / n;
        self.n += o.n;
    }
}

/// A value with the event time and arrival order of its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub at: Stamp,
    pub value: Value,
}

/// A DDSketch (α = 1%, 2048 bins per sign, the crate's defaults).
///
/// Stored in the DDSketch binary format shared with DataDog's Java library (only non-empty
/// bins, varint-coded). That format drops the sketch's in-memory layout, which matters in
/// one case only: a store that collapsed its lowest bins (values spanning more than
/// 2048 bins, a factor of ~6·10¹⁷) keeps a flag that decoding does not restore, so a
/// restored sketch would go on differently from the one that never left memory. To keep
/// replays exact, a sketch whose bins reach that size is re-decoded from its own bytes
/// after every change (`settle`), so live and restored sketches are the same function of
/// the bytes. Below that size the layout provably does not affect results.
#[derive(Clone)]
pub struct Sketch(DDSketch);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch(n={})", self.0.count())
    }
}

const SKETCH_MAX_BINS: usize = 2048;

impl Sketch {
    fn new() -> Self {
        Sketch(DDSketch::new(SketchConfig::defaults()))
    }

    fn settle(&mut self) {
        if self.0.length() >= SKETCH_MAX_BINS {
            if let Ok(s) = DDSketch::from_java_bytes(&self.0.to_java_bytes()) {
                self.0 = s;
            }
        }
    }

    fn add(&mut self, x: f64) {
        if x.is_finite() {
            self.0.add(x);
            self.settle();
        }
    }

    fn merge(&mut self, o: &Sketch) {
        // Both use the default configuration, the only case in which merge can fail.
        let _ = self.0.merge(&o.0);
        self.settle();
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_bytes(&self.0.to_java_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut s = DDSketch::from_java_bytes(bytes)
            .map_err(|e| StateError::decode("quantile sketch", e.to_string()))?;
        // The format carries gamma; anything but ours would refuse to merge later. Merging
        // an empty sketch checks exactly that and changes nothing.
        let want = SketchConfig::defaults().gamma;
        if s.merge(&DDSketch::new(SketchConfig::defaults())).is_err() {
            return Err(StateError::decode(
                "quantile sketch",
                format!("sketch has another relative accuracy than gamma {want}"),
            ));
        }
        Ok(Sketch(s))
    }
}

/// A hasher that passes a precomputed 64-bit hash through (the value was already hashed
/// with [`codec::hash_value`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct PassThrough;

#[derive(Debug, Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used: `u64::hash` calls `write_u64`. Fold anything else in deterministically.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

const HLL_PRECISION: u8 = 14;

/// HyperLogLog++ over stable value hashes.
#[derive(Clone)]
pub struct Distinct(HyperLogLogPlus<u64, PassThrough>);

impl std::fmt::Debug for Distinct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Distinct(≈{})", self.estimate())
    }
}

/// The serde layout of `hyperloglogplus` 0.4.1's sketch, read before handing bytes to it:
/// the crate indexes its buffers without checks, so damaged state must be refused here
/// rather than panic there. Encoding goes through it too, to sort the sketch's insertion
/// buffer (a `HashSet` with a random iteration order): equal sketches, equal bytes.
#[derive(Serialize, Deserialize)]
struct HllShape {
    _builder: (),
    precision: u8,
    counts: (usize, usize, usize),
    tmpset: Vec<u32>,
    sparse: SparseShape,
    registers: Option<RegistersShape>,
    _phantom: (),
}

#[derive(Serialize, Deserialize)]
struct SparseShape {
    count: usize,
    last: u32,
    buf: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct RegistersShape {
    buf: Vec<u32>,
    count: usize,
    zeros: usize,
}

impl Distinct {
    fn new() -> Self {
        Distinct(HyperLogLogPlus::new(HLL_PRECISION, PassThrough).expect("valid precision"))
    }

    fn insert_hash(&mut self, h: u64) {
        self.0.insert(&h);
    }

    fn merge(&mut self, o: &Distinct) {
        // Same precision on both sides, the only case in which merge can fail.
        let _ = self.0.merge(&o.0);
    }

    /// The estimate, rounded. Estimating folds the sketch's insertion buffer, so it runs on
    /// a copy: the state (and its bytes) must not depend on when results were asked for.
    pub fn estimate(&self) -> i64 {
        self.0.clone().count().round() as i64
    }

    fn encode(&self, out: &mut Vec<u8>) {
        // Serialising plain data into a Vec cannot fail, nor can reading it back.
        let mut b = Vec::new();
        let _ = super::serial::to_bytes(&self.0, &mut b);
        if let Ok(mut shape) = super::serial::from_bytes::<HllShape>(&b) {
            if shape.tmpset.len() > 1 {
                shape.tmpset.sort_unstable();
                b.clear();
                let _ = super::serial::to_bytes(&shape, &mut b);
            }
        }
        out.put_bytes(&b);
    }

    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let err = |r: String| StateError::decode("distinct-count sketch", r);
        let shape: HllShape = super::serial::from_bytes(bytes).map_err(|e| err(e.to_string()))?;
        let fresh = {
            let mut b = Vec::new();
            let _ = super::serial::to_bytes(&Distinct::new().0, &mut b);
            super::serial::from_bytes::<HllShape>(&b).map_err(|e| err(e.to_string()))?
        };
        if shape.precision != fresh.precision || shape.counts != fresh.counts {
            return Err(err(format!(
                "precision {} / sizes {:?}, expected {} / {:?}",
                shape.precision, shape.counts, fresh.precision, fresh.counts
            )));
        }
        // The sparse list: varints whose count and running sum must match its header.
        let (mut n, mut sum, mut i) = (0usize, 0u64, 0usize);
        while i < shape.sparse.buf.len() {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = *shape
                    .sparse
                    .buf
                    .get(i)
                    .ok_or_else(|| err("sparse list ends inside a varint".into()))?;
                i += 1;
                v |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    break;
                }
                shift += 7;
                if shift > 28 {
                    return Err(err("sparse varint longer than 5 bytes".into()));
                }
            }
            n += 1;
            sum += v;
        }
        if n != shape.sparse.count
            || n > fresh.counts.1
            || (n > 0 && sum != u64::from(shape.sparse.last))
        {
            return Err(err("sparse list does not match its header".into()));
        }
        let _ = &shape.tmpset;
        if let Some(r) = &shape.registers {
            let words = fresh.counts.0.div_ceil(5);
            if r.count != fresh.counts.0 || r.buf.len() != words || r.zeros > r.count {
                return Err(err(format!(
                    "{} registers in {} words, expected {} in {words}",
                    r.count,
                    r.buf.len(),
                    fresh.counts.0
                )));
            }
        }
        super::serial::from_bytes(bytes)
            .map(Distinct)
            .map_err(|e| err(e.to_string()))
    }
}

/// The state of one aggregation (or of several sharing it) in one window.
#[derive(Debug, Clone)]
pub enum Acc {
    Rows(u64),
    NonNull(u64),
    Sum(SumState),
    Min(Option<Value>),
    Max(Option<Value>),
    Moments(Moments),
    First(Option<Stamped>),
    Last(Option<Stamped>),
    Sketch(Box<Sketch>),
    Distinct(Box<Distinct>),
}

mod acc_tag {
    pub(super) const ROWS: u8 = 0;
    pub(super) const NON_NULL: u8 = 1;
    pub(super) const SUM: u8 = 2;
    pub(super) const MIN: u8 = 3;
    pub(super) const MAX: u8 = 4;
    pub(super) const MOMENTS: u8 = 5;
    pub(super) const FIRST: u8 = 6;
    pub(super) const LAST: u8 = 7;
    pub(super) const SKETCH: u8 = 8;
    pub(super) const DISTINCT: u8 = 9;
}

impl Acc {
    pub(crate) fn new(kind: AccKind) -> Acc {
        match kind {
            AccKind::Rows => Acc::Rows(0),
            AccKind::NonNull => Acc::NonNull(0),
            AccKind::Sum => Acc::Sum(SumState::default()),
            AccKind::Min => Acc::Min(None),
            AccKind::Max => Acc::Max(None),
            AccKind::Moments => Acc::Moments(Moments::default()),
            AccKind::First => Acc::First(None),
            AccKind::Last => Acc::Last(None),
            AccKind::Sketch => Acc::Sketch(Box::new(Sketch::new())),
            AccKind::Distinct => Acc::Distinct(Box::new(Distinct::new())),
        }
    }

    pub(crate) fn kind(&self) -> AccKind {
        match self {
            Acc::Rows(_) => AccKind::Rows,
            Acc::NonNull(_) => AccKind::NonNull,
            Acc::Sum(_) => AccKind::Sum,
            Acc::Min(_) => AccKind::Min,
            Acc::Max(_) => AccKind::Max,
            Acc::Moments(_) => AccKind::Moments,
            Acc::First(_) => AccKind::First,
            Acc::Last(_) => AccKind::Last,
            Acc::Sketch(_) => AccKind::Sketch,
            Acc::Distinct(_) => AccKind::Distinct,
        }
    }

    /// Adds one record's input. `at` matters to `first`/`last` only.
    pub fn update(&mut self, input: Input<'_>, at: Stamp) {
        match self {
            Acc::Rows(n) => *n += 1,
            Acc::NonNull(n) => *n += u64::from(!input.is_null()),
            Acc::Sum(s) => {
                if let Some(x) = input.number() {
                    s.n += 1;
                    s.add(x);
                }
            }
            Acc::Moments(m) => {
                if let Some(x) = input.number() {
                    m.add(x);
                }
            }
            Acc::Sketch(s) => {
                if let Some(x) = input.number() {
                    s.add(x);
                }
            }
            Acc::Min(cur) => keep(cur, input, std::cmp::Ordering::Less),
            Acc::Max(cur) => keep(cur, input, std::cmp::Ordering::Greater),
            Acc::First(cur) => {
                if cur.as_ref().is_none_or(|c| at < c.at) {
                    if let Some(value) = input.value() {
                        *cur = Some(Stamped { at, value });
                    }
                }
            }
            Acc::Last(cur) => {
                if cur.as_ref().is_none_or(|c| at > c.at) {
                    if let Some(value) = input.value() {
                        *cur = Some(Stamped { at, value });
                    }
                }
            }
            Acc::Distinct(h) => {
                let mut scratch = Vec::with_capacity(32);
                match input {
                    Input::Null => {}
                    Input::Num(f) => {
                        h.insert_hash(codec::hash_value(&Value::Double(f), &mut scratch))
                    }
                    Input::Val(v) => {
                        if !input.is_null() {
                            h.insert_hash(codec::hash_value(v, &mut scratch));
                        }
                    }
                }
            }
        }
    }

    /// Folds `other` (the same kind) into `self`: afterwards `self` is what one accumulator
    /// fed both inputs would be (up to floating-point rounding for sums and moments).
    /// Accumulators of different kinds are left alone.
    pub fn merge(&mut self, other: &Acc) {
        use std::cmp::Ordering::{Greater, Less};
        match (self, other) {
            (Acc::Rows(a), Acc::Rows(b)) | (Acc::NonNull(a), Acc::NonNull(b)) => *a += b,
            (Acc::Sum(a), Acc::Sum(b)) if b.n > 0 => {
                a.n += b.n;
                a.add(b.sum);
                a.comp += b.comp;
            }
            (Acc::Moments(a), Acc::Moments(b)) => a.merge(b),
            (Acc::Min(a), Acc::Min(Some(v))) => keep(a, Input::Val(v), Less),
            (Acc::Max(a), Acc::Max(Some(v))) => keep(a, Input::Val(v), Greater),
            (Acc::First(a), Acc::First(Some(b))) if a.as_ref().is_none_or(|a| b.at < a.at) => {
                *a = Some(b.clone())
            }
            (Acc::Last(a), Acc::Last(Some(b))) if a.as_ref().is_none_or(|a| b.at > a.at) => {
                *a = Some(b.clone())
            }
            (Acc::Sketch(a), Acc::Sketch(b)) => a.merge(b),
            (Acc::Distinct(a), Acc::Distinct(b)) => a.merge(b),
            _ => {}
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Acc::Rows(n) => {
                out.put_u8(acc_tag::ROWS);
                out.put_varint(*n);
            }
            Acc::NonNull(n) => {
                out.put_u8(acc_tag::NON_NULL);
                out.put_varint(*n);
            }
            Acc::Sum(s) => {
                out.put_u8(acc_tag::SUM);
                out.put_varint(s.n);
                if s.n > 0 {
                    out.put_f64(s.sum);
                    out.put_f64(s.comp);
                }
            }
            Acc::Min(v) | Acc::Max(v) => {
                out.put_u8(if matches!(self, Acc::Min(_)) {
                    acc_tag::MIN
                } else {
                    acc_tag::MAX
                });
                match v {
                    None => out.put_u8(0),
                    Some(v) => {
                        out.put_u8(1);
                        codec::encode_value(v, out);
                    }
                }
            }
            Acc::Moments(m) => {
                out.put_u8(acc_tag::MOMENTS);
                out.put_varint(m.n);
                if m.n > 0 {
                    out.put_f64(m.mean);
                    out.put_f64(m.m2);
                }
            }
            Acc::First(v) | Acc::Last(v) => {
                out.put_u8(if matches!(self, Acc::First(_)) {
                    acc_tag::FIRST
                } else {
                    acc_tag::LAST
                });
                match v {
                    None => out.put_u8(0),
                    Some(s) => {
                        out.put_u8(1);
                        out.put_zigzag(s.at.ts);
                        out.put_varint(s.at.seq);
                        codec::encode_value(&s.value, out);
                    }
                }
            }
            Acc::Sketch(s) => {
                out.put_u8(acc_tag::SKETCH);
                s.encode(out);
            }
            Acc::Distinct(h) => {
                out.put_u8(acc_tag::DISTINCT);
                h.encode(out);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Acc, StateError> {
        let opt_value = |r: &mut Reader<'_>| -> Result<Option<Value>, StateError> {
            match r.u8()? {
                0 => Ok(None),
                1 => Ok(Some(codec::decode_value(r)?)),
                t => Err(r.err(format!("option tag {t}"))),
            }
        };
        let stamped = |r: &mut Reader<'_>| -> Result<Option<Stamped>, StateError> {
            match r.u8()? {
                0 => Ok(None),
                1 => {
                    let ts = r.zigzag()?;
                    let seq = r.varint()?;
                    let value = codec::decode_value(r)?;
                    Ok(Some(Stamped {
                        at: Stamp { ts, seq },
                        value,
                    }))
                }
                t => Err(r.err(format!("option tag {t}"))),
            }
        };
        Ok(match r.u8()? {
            acc_tag::ROWS => Acc::Rows(r.varint()?),
            acc_tag::NON_NULL => Acc::NonNull(r.varint()?),
            acc_tag::SUM => {
                let n = r.varint()?;
                let (sum, comp) = if n > 0 {
                    (r.f64()?, r.f64()?)
                } else {
                    (0.0, 0.0)
                };
                Acc::Sum(SumState { n, sum, comp })
            }
            acc_tag::MIN => Acc::Min(opt_value(r)?),
            acc_tag::MAX => Acc::Max(opt_value(r)?),
            acc_tag::MOMENTS => {
                let n = r.varint()?;
                let (mean, m2) = if n > 0 {
                    (r.f64()?, r.f64()?)
                } else {
                    (0.0, 0.0)
                };
                Acc::Moments(Moments { n, mean, m2 })
            }
            acc_tag::FIRST => Acc::First(stamped(r)?),
            acc_tag::LAST => Acc::Last(stamped(r)?),
            acc_tag::SKETCH => Acc::Sketch(Box::new(Sketch::decode(r.bytes()?)?)),
            acc_tag::DISTINCT => Acc::Distinct(Box::new(Distinct::decode(r.bytes()?)?)),
            t => return Err(r.err(format!("unknown accumulator tag {t}"))),
        })
    }

    /// Decodes one accumulator from exactly `bytes`.
    pub fn decode_from(bytes: &[u8]) -> Result<Acc, StateError> {
        let mut r = Reader::new(bytes, "accumulator");
        let acc = Acc::decode(&mut r)?;
        r.finish()?;
        Ok(acc)
    }
}

/// `min` (want = Less) / `max` (Greater): replaces `cur` when the input orders strictly
/// before/after it, so among equal values the earliest arrival stays.
fn keep(cur: &mut Option<Value>, input: Input<'_>, want: std::cmp::Ordering) {
    if input.is_null() {
        return;
    }
    let better = match (&cur, input) {
        (None, _) => true,
        (Some(c), Input::Num(f)) => codec::cmp_values(&Value::Double(f), c) == want,
        (Some(c), Input::Val(v)) => codec::cmp_values(v, c) == want,
        (Some(_), Input::Null) => false,
    };
    if better {
        *cur = input.value();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: deterministic test data without a dependency.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub(crate) fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn at(ts: i64, seq: u64) -> Stamp {
        Stamp { ts, seq }
    }

    fn all_fns() -> Vec<(AggFn, bool)> {
        vec![
            (AggFn::Count, false),
            (AggFn::Count, true),
            (AggFn::Sum, true),
            (AggFn::Min, true),
            (AggFn::Max, true),
            (AggFn::Mean, true),
            (AggFn::Stddev, true),
            (AggFn::First, true),
            (AggFn::Last, true),
            (AggFn::Quantile(0.95), true),
            (AggFn::CountDistinct, true),
        ]
    }

    fn round_trip(a: &Acc) -> Acc {
        let mut b = Vec::new();
        a.encode(&mut b);
        Acc::decode_from(&b).unwrap()
    }

    fn inputs(n: usize, seed: u64) -> Vec<(Value, Stamp)> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|i| {
                let v = if rng.next() % 10 == 0 {
                    Value::Null
                } else {
                    Value::Double((rng.unit() - 0.3) * 1000.0)
                };
                (v, at((rng.next() % 50) as i64, i as u64))
            })
            .collect()
    }

    #[test]
    fn nulls_are_ignored_and_rows_counted() {
        let vals = [
            Value::Null,
            Value::Long(4),
            Value::Union(0, Box::new(Value::Null)),
        ];
        let run = |f: AggFn, field: bool| {
            let mut a = f.new_acc(field);
            for (i, v) in vals.iter().enumerate() {
                a.update(Input::Val(v), at(i as i64, i as u64));
            }
            a.update(Input::Null, at(9, 9));
            f.result(&a)
        };
        assert_eq!(run(AggFn::Count, false), Value::Long(4));
        assert_eq!(run(AggFn::Count, true), Value::Long(1));
        assert_eq!(run(AggFn::Sum, true), Value::Double(4.0));
        assert_eq!(run(AggFn::Min, true), Value::Long(4));
        assert_eq!(run(AggFn::First, true), Value::Long(4));
        assert_eq!(run(AggFn::Last, true), Value::Long(4));
        assert_eq!(run(AggFn::Stddev, true), Value::Null);
        assert_eq!(run(AggFn::CountDistinct, true), Value::Long(1));
        // Nothing at all: NULL, except counts.
        let empty = |f: AggFn| f.result(&f.new_acc(true));
        assert_eq!(empty(AggFn::Sum), Value::Null);
        assert_eq!(empty(AggFn::Mean), Value::Null);
        assert_eq!(empty(AggFn::Max), Value::Null);
        assert_eq!(empty(AggFn::Quantile(0.5)), Value::Null);
        assert_eq!(empty(AggFn::Count), Value::Long(0));
        assert_eq!(empty(AggFn::CountDistinct), Value::Long(0));
    }

    #[test]
    fn first_and_last_order_by_event_time_then_arrival() {
        let mut first = AggFn::First.new_acc(true);
        let mut last = AggFn::Last.new_acc(true);
        let recs = [(5, "a"), (3, "b"), (3, "c"), (7, "d"), (7, "e"), (4, "f")];
        for (i, (ts, s)) in recs.iter().enumerate() {
            let v = Value::String((*s).into());
            first.update(Input::Val(&v), at(*ts, i as u64));
            last.update(Input::Val(&v), at(*ts, i as u64));
        }
        assert_eq!(AggFn::First.result(&first), Value::String("b".into()));
        assert_eq!(AggFn::Last.result(&last), Value::String("e".into()));
    }

    #[test]
    fn min_max_work_on_strings_and_timestamps() {
        let mut mn = AggFn::Min.new_acc(true);
        let mut mx = AggFn::Max.new_acc(true);
        for s in ["pear", "apple", "zucchini", "fig"] {
            let v = Value::String(s.into());
            mn.update(Input::Val(&v), at(0, 0));
            mx.update(Input::Val(&v), at(0, 0));
        }
        assert_eq!(AggFn::Min.result(&mn), Value::String("apple".into()));
        assert_eq!(AggFn::Max.result(&mx), Value::String("zucchini".into()));
        let mut mx = AggFn::Max.new_acc(true);
        for t in [5, -3, 9, 2] {
            mx.update(Input::Val(&Value::TimestampMillis(t)), at(0, 0));
        }
        assert_eq!(AggFn::Max.result(&mx), Value::TimestampMillis(9));
    }

    #[test]
    fn mean_and_stddev_match_a_two_pass_computation() {
        let mut rng = Rng(7);
        // Large offset, small spread: the case that breaks the textbook one-pass formula.
        let xs: Vec<f64> = (0..100_000).map(|_| 1e9 + rng.unit() * 10.0).collect();
        let mut m = AggFn::Mean.new_acc(true);
        for x in &xs {
            m.update(Input::Num(*x), at(0, 0));
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let Value::Double(got_mean) = AggFn::Mean.result(&m) else {
            panic!()
        };
        let Value::Double(got_sd) = AggFn::Stddev.result(&m) else {
            panic!()
        };
        assert!(
            (got_mean - mean).abs() / mean < 1e-12,
            "{got_mean} vs {mean}"
        );
        assert!(
            (got_sd - var.sqrt()).abs() / var.sqrt() < 1e-6,
            "{got_sd} vs {}",
            var.sqrt()
        );

        // Merged from uneven parts: the same within rounding.
        let mut parts: Vec<Acc> = (0..7).map(|_| AggFn::Mean.new_acc(true)).collect();
        for (i, x) in xs.iter().enumerate() {
            parts[(i * i) % 7].update(Input::Num(*x), at(0, 0));
        }
        let mut merged = AggFn::Mean.new_acc(true);
        for p in &parts {
            merged.merge(p);
        }
        let Value::Double(msd) = AggFn::Stddev.result(&merged) else {
            panic!()
        };
        assert!((msd - var.sqrt()).abs() / var.sqrt() < 1e-6);

        // The population deviation divides by n.
        let pop = (var * (n - 1.0) / n).sqrt();
        let Value::Double(got_pop) = AggFn::StddevPop.result(&m) else {
            panic!()
        };
        assert!((got_pop - pop).abs() / pop < 1e-6, "{got_pop} vs {pop}");
    }

    #[test]
    fn stddev_pop_is_zero_for_one_value_and_null_for_none() {
        let mut m = AggFn::StddevPop.new_acc(true);
        assert_eq!(AggFn::StddevPop.result(&m), Value::Null);
        m.update(Input::Num(21.5), at(0, 0));
        assert_eq!(AggFn::StddevPop.result(&m), Value::Double(0.0));
        assert_eq!(AggFn::Stddev.result(&m), Value::Null);
        assert_eq!(AggFn::parse("stddev_pop"), Some(AggFn::StddevPop));
    }

    #[test]
    fn quantiles_are_within_one_percent_of_exact() {
        let mut rng = Rng(11);
        // Log-normal-ish latencies over several orders of magnitude.
        let mut xs: Vec<f64> = (0..100_000).map(|_| (rng.unit() * 12.0).exp()).collect();
        let mut acc = AggFn::Quantile(0.5).new_acc(true);
        for x in &xs {
            acc.update(Input::Num(*x), at(0, 0));
        }
        xs.sort_by(f64::total_cmp);
        for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999] {
            let exact = xs[(q * (xs.len() - 1) as f64).floor() as usize];
            let Value::Double(got) = AggFn::Quantile(q).result(&acc) else {
                panic!()
            };
            let rel = (got - exact).abs() / exact;
            assert!(rel <= 0.01, "q={q}: {got} vs {exact} ({rel})");
        }
    }

    #[test]
    fn distinct_count_is_within_two_percent() {
        let mut acc = AggFn::CountDistinct.new_acc(true);
        for i in 0..100_000i64 {
            // Each value twice: duplicates must not count.
            let v = Value::String(format!("device-{i}"));
            acc.update(Input::Val(&v), at(0, 0));
            acc.update(Input::Val(&v), at(0, 0));
        }
        let Value::Long(est) = AggFn::CountDistinct.result(&acc) else {
            panic!()
        };
        let rel = (est as f64 - 100_000.0).abs() / 100_000.0;
        assert!(rel < 0.02, "estimate {est} ({rel})");
        // Small counts are exact in the sparse representation.
        let mut small = AggFn::CountDistinct.new_acc(true);
        for i in 0..500 {
            small.update(Input::Val(&Value::Long(i % 250)), at(0, 0));
        }
        assert_eq!(AggFn::CountDistinct.result(&small), Value::Long(250));
    }

    #[test]
    fn merge_equals_sequential_and_every_state_round_trips() {
        let data = inputs(3000, 3);
        for (f, field) in all_fns() {
            let mut seq = f.new_acc(field);
            let (mut a, mut b) = (f.new_acc(field), f.new_acc(field));
            for (i, (v, s)) in data.iter().enumerate() {
                seq.update(Input::Val(v), *s);
                if i % 3 == 0 { &mut a } else { &mut b }.update(Input::Val(v), *s);
            }
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            for merged in [&ab, &ba] {
                match (f.result(&seq), f.result(merged)) {
                    (Value::Double(x), Value::Double(y)) => {
                        assert!(
                            (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                            "{f:?}: {x} vs {y}"
                        )
                    }
                    (x, y) => assert_eq!(x, y, "{f:?}"),
                }
            }
            for acc in [&seq, &a, &ab, &f.new_acc(field)] {
                let back = round_trip(acc);
                assert_eq!(f.result(acc), f.result(&back), "{f:?}");
                let (mut x, mut y) = (Vec::new(), Vec::new());
                acc.encode(&mut x);
                back.encode(&mut y);
                assert_eq!(x, y, "{f:?}: re-encoding differs");
                // And a restored accumulator goes on like the original.
                let (mut live, mut restored) = (acc.clone(), back);
                for (v, s) in data.iter().take(100) {
                    live.update(Input::Val(v), *s);
                    restored.update(Input::Val(v), *s);
                }
                assert_eq!(f.result(&live), f.result(&restored), "{f:?}");
            }
        }
    }

    #[test]
    fn wide_sketches_restore_exactly() {
        // Values spanning far more than 2048 bins: the sketch collapses its lowest bins.
        let mut rng = Rng(5);
        let xs: Vec<f64> = (0..5000)
            .map(|_| 10f64.powf(rng.unit() * 40.0 - 12.0))
            .collect();
        let mut live = AggFn::Quantile(0.5).new_acc(true);
        for x in &xs[..2500] {
            live.update(Input::Num(*x), at(0, 0));
        }
        let mut restored = round_trip(&live);
        for x in &xs[2500..] {
            live.update(Input::Num(*x), at(0, 0));
            restored.update(Input::Num(*x), at(0, 0));
        }
        for q in [0.0, 0.01, 0.1, 0.5, 0.99, 1.0] {
            assert_eq!(
                AggFn::Quantile(q).result(&live),
                AggFn::Quantile(q).result(&restored),
                "q={q}"
            );
        }
    }

    #[test]
    fn damaged_state_is_an_error() {
        for (f, field) in all_fns() {
            let mut acc = f.new_acc(field);
            for (v, s) in inputs(300, 9) {
                acc.update(Input::Val(&v), s);
            }
            let mut b = Vec::new();
            acc.encode(&mut b);
            for cut in 0..b.len() {
                // Truncations either fail or (for self-delimiting prefixes) decode something;
                // they never panic.
                let _ = Acc::decode_from(&b[..cut]);
            }
        }
        let mut b = vec![acc_tag::DISTINCT];
        let mut inner = Vec::new();
        super::super::serial::to_bytes(&Distinct::new().0, &mut inner).unwrap();
        inner[0] = 12; // precision 12
        b.put_bytes(&inner);
        assert!(Acc::decode_from(&b).is_err());
    }

    #[test]
    fn parses_function_names() {
        assert_eq!(AggFn::parse("p95"), Some(AggFn::Quantile(0.95)));
        assert_eq!(AggFn::parse("p5"), Some(AggFn::Quantile(0.05)));
        assert_eq!(AggFn::parse("p999"), Some(AggFn::Quantile(0.999)));
        assert_eq!(AggFn::parse("avg"), Some(AggFn::Mean));
        assert_eq!(AggFn::parse("quantile"), None);
        assert_eq!(AggFn::parse("p0"), None);
        assert_eq!(AggFn::parse("p123"), None);
        assert_eq!(AggFn::parse("summ"), None);
    }

    #[test]
    fn result_types() {
        let nd = AggFn::Sum.result_schema(Some(&Schema::Long));
        assert_eq!(format!("{nd:?}").matches("Double").count(), 1);
        assert!(matches!(AggFn::Count.result_schema(None), Schema::Long));
        let s = AggFn::Max.result_schema(Some(&Schema::String));
        let Schema::Union(u) = s else { panic!() };
        assert!(matches!(u.variants(), [Schema::Null, Schema::String]));
        assert!(AggFn::Sum.check_input(&Schema::String).is_err());
        assert!(AggFn::Min.check_input(&Schema::String).is_ok());
        let nullable_long =
            Schema::Union(UnionSchema::new(vec![Schema::Null, Schema::Long]).unwrap());
        assert!(AggFn::Mean.check_input(&nullable_long).is_ok());
    }
}
