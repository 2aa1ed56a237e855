//! The compiled tree and its evaluation.
//!
//! Nodes evaluate to [`Scalar`]s that borrow from the record and from the tree's literals, so
//! numeric, boolean and string comparisons allocate nothing; only string results built at
//! run time (`||`, `lower`, casts to text, uuids) do.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

use apache_avro::types::Value;

use super::like::LikePattern;
use super::time;
use super::EvalError;
use crate::types::{decimal_to_f64, timestamp_ms, unwrap_union, FieldPath};

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// Milliseconds since the epoch.
    Ts(i64),
}

/// The static type of a node's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only the `NULL` literal (and what is built from it alone).
    Null,
    Bool,
    Int,
    Float,
    Str,
    Ts,
}

impl Kind {
    /// As in messages (Avro names).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "boolean",
            Kind::Int => "long",
            Kind::Float => "double",
            Kind::Str => "string",
            Kind::Ts => "timestamp-millis",
        }
    }

    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, Kind::Int | Kind::Float)
    }
}

/// How a field's Avro value becomes a [`Scalar`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Read {
    Null,
    Bool,
    Int,
    Float,
    /// Decimal with this scale, as a double.
    Decimal(usize),
    Str,
    Ts,
    /// time-millis / time-micros as milliseconds after midnight.
    TimeMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped (`1 < x` is `x > 1`).
    pub(crate) fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            same => same,
        }
    }

    #[inline]
    fn test(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }
}

/// A cast's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastTo {
    /// BIGINT, or INT (range-checked to 32 bits).
    Int {
        int32: bool,
    },
    Float,
    Str,
    Bool,
    Ts,
    /// A timestamp truncated to its day (UTC).
    Date,
}

impl CastTo {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CastTo::Int { int32: true } => "INT",
            CastTo::Int { int32: false } => "BIGINT",
            CastTo::Float => "DOUBLE",
            CastTo::Str => "VARCHAR",
            CastTo::Bool => "BOOLEAN",
            CastTo::Ts => "TIMESTAMP",
            CastTo::Date => "DATE",
        }
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            CastTo::Int { .. } => Kind::Int,
            CastTo::Float => Kind::Float,
            CastTo::Str => Kind::Str,
            CastTo::Bool => Kind::Bool,
            CastTo::Ts | CastTo::Date => Kind::Ts,
        }
    }
}

/// One-argument numeric functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Math {
    Abs,
    Floor,
    Ceil,
    Sqrt,
    Ln,
    Log10,
    Exp,
}

/// One-argument string functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrFn {
    Lower,
    Upper,
    Length,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Lit(Scalar<'static>),
    Field {
        path: FieldPath,
        read: Read,
    },
    /// `attrs['key']`
    MapGet {
        path: FieldPath,
        key: String,
        read: Read,
    },
    /// `tags[1]` (stored 0-based)
    ArrayGet {
        path: FieldPath,
        index: usize,
        read: Read,
    },
    /// `location IS [NOT] NULL` for a field that is not a scalar.
    PathIsNull {
        path: FieldPath,
        negated: bool,
    },
    ToFloat(Box<Node>),
    Neg {
        e: Box<Node>,
        what: Arc<str>,
    },
    Not(Box<Node>),
    Arith {
        op: ArithOp,
        l: Box<Node>,
        r: Box<Node>,
        what: Arc<str>,
    },
    Cmp {
        op: CmpOp,
        l: Box<Node>,
        r: Box<Node>,
    },
    /// A comparison with a non-NULL literal.
    CmpLit {
        op: CmpOp,
        e: Box<Node>,
        lit: Scalar<'static>,
    },
    /// `field <op> number` for an int, long, float or double field: the most common
    /// condition, without the generic machinery.
    FieldCmpF64 {
        path: FieldPath,
        op: CmpOp,
        rhs: f64,
    },
    /// `field <op> integer` for an int or long field.
    FieldCmpI64 {
        path: FieldPath,
        op: CmpOp,
        rhs: i64,
    },
    /// `IS [NOT] DISTINCT FROM`: comparison where NULL equals NULL.
    Distinct {
        l: Box<Node>,
        r: Box<Node>,
        negated: bool,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
    IsNull {
        e: Box<Node>,
        negated: bool,
    },
    /// `IS [NOT] TRUE|FALSE`
    IsBool {
        e: Box<Node>,
        value: bool,
        negated: bool,
    },
    Between {
        e: Box<Node>,
        lo: Box<Node>,
        hi: Box<Node>,
        negated: bool,
    },
    In {
        e: Box<Node>,
        list: Vec<Node>,
        negated: bool,
    },
    Like {
        e: Box<Node>,
        pattern: LikePattern,
        negated: bool,
    },
    Case {
        operand: Option<Box<Node>>,
        whens: Vec<(Node, Node)>,
        otherwise: Option<Box<Node>>,
    },
    Cast {
        e: Box<Node>,
        to: CastTo,
        /// TRY_CAST: NULL instead of an error.
        or_null: bool,
        what: Arc<str>,
    },
    /// `||` (NULL if any part is) or `concat` (skips NULLs).
    Concat {
        parts: Vec<Node>,
        skip_nulls: bool,
    },
    Coalesce(Vec<Node>),
    NullIf(Box<Node>, Box<Node>),
    /// least / greatest
    Extreme {
        args: Vec<Node>,
        greatest: bool,
    },
    Math {
        f: Math,
        e: Box<Node>,
        what: Arc<str>,
    },
    Round {
        e: Box<Node>,
        digits: Option<Box<Node>>,
        what: Arc<str>,
    },
    Power {
        base: Box<Node>,
        exp: Box<Node>,
        what: Arc<str>,
    },
    Str {
        f: StrFn,
        e: Box<Node>,
    },
    Trim {
        e: Box<Node>,
        chars: Option<Box<Node>>,
        leading: bool,
        trailing: bool,
    },
    Substr {
        e: Box<Node>,
        start: Box<Node>,
        len: Option<Box<Node>>,
        what: Arc<str>,
    },
}

type Res<'a> = Result<Scalar<'a>, Box<EvalError>>;

impl Scalar<'_> {
    #[inline]
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    pub(crate) fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Null => Scalar::Null,
            Scalar::Bool(b) => Scalar::Bool(b),
            Scalar::Int(i) => Scalar::Int(i),
            Scalar::Float(f) => Scalar::Float(f),
            Scalar::Str(s) => Scalar::Str(Cow::Owned(s.into_owned())),
            Scalar::Ts(t) => Scalar::Ts(t),
        }
    }

    fn reborrow(&self) -> Scalar<'_> {
        match self {
            Scalar::Null => Scalar::Null,
            Scalar::Bool(b) => Scalar::Bool(*b),
            Scalar::Int(i) => Scalar::Int(*i),
            Scalar::Float(f) => Scalar::Float(*f),
            Scalar::Str(s) => Scalar::Str(Cow::Borrowed(s)),
            Scalar::Ts(t) => Scalar::Ts(*t),
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Boolean(b),
            Scalar::Int(i) => Value::Long(i),
            Scalar::Float(f) => Value::Double(f),
            Scalar::Str(s) => Value::String(s.into_owned()),
            Scalar::Ts(t) => Value::TimestampMillis(t),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as text, as `CAST(x AS VARCHAR)` writes it.
    fn write_text(&self, out: &mut String) {
        match self {
            Scalar::Null => {}
            Scalar::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Scalar::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Scalar::Float(f) => write_float(out, *f),
            Scalar::Str(s) => out.push_str(s),
            Scalar::Ts(t) => out.push_str(&time::format_timestamp_ms(*t)),
        }
    }

    /// For error messages: strings quoted and cut at 64 characters.
    pub(crate) fn describe(&self) -> String {
        match self {
            Scalar::Str(s) => {
                let cut: String = s.chars().take(64).collect();
                if cut.len() < s.len() {
                    format!("'{cut}...'")
                } else {
                    format!("'{cut}'")
                }
            }
            Scalar::Null => "NULL".to_string(),
            other => {
                let mut s = String::new();
                other.write_text(&mut s);
                s
            }
        }
    }
}

/// Shortest text that reads back as the same double; `Infinity`, `-Infinity`, `NaN`.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{f}");
    }
}

/// Orders two non-null scalars of comparable kinds (numbers across int and double exactly;
/// NaN equal to itself and above every number, as in PostgreSQL). `None` if not comparable.
pub(crate) fn compare(a: &Scalar<'_>, b: &Scalar<'_>) -> Option<Ordering> {
    Some(match (a, b) {
        (Scalar::Int(x), Scalar::Int(y)) => x.cmp(y),
        (Scalar::Float(x), Scalar::Float(y)) => cmp_f64(*x, *y),
        (Scalar::Int(x), Scalar::Float(y)) => cmp_i64_f64(*x, *y),
        (Scalar::Float(x), Scalar::Int(y)) => cmp_i64_f64(*y, *x).reverse(),
        (Scalar::Str(x), Scalar::Str(y)) => x.as_ref().cmp(y.as_ref()),
        (Scalar::Bool(x), Scalar::Bool(y)) => x.cmp(y),
        (Scalar::Ts(x), Scalar::Ts(y)) => x.cmp(y),
        _ => return None,
    })
}

fn cmp_f64(x: f64, y: f64) -> Ordering {
    match x.partial_cmp(&y) {
        Some(o) => o,
        None => x.is_nan().cmp(&y.is_nan()),
    }
}

/// Exact comparison of an integer and a double (no rounding of large integers).
fn cmp_i64_f64(x: i64, y: f64) -> Ordering {
    if y.is_nan() {
        return Ordering::Less;
    }
    // 2^63 is exactly representable; every i64 is below it and at or above -2^63.
    if y >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if y < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let t = y.trunc();
    let ti = t as i64; // exact: t is integral and in range
    match x.cmp(&ti) {
        Ordering::Equal => 0.0f64.partial_cmp(&(y - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

#[cold]
fn err(e: EvalError) -> Box<EvalError> {
    Box::new(e)
}

#[cold]
#[inline(never)]
fn mismatch(what: &str, found: &Value) -> Box<EvalError> {
    err(EvalError::SchemaMismatch {
        expr: Arc::from(what),
        found: value_kind(found),
    })
}

#[cold]
#[inline(never)]
fn internal(what: &str) -> Box<EvalError> {
    err(EvalError::SchemaMismatch {
        expr: Arc::from(what),
        found: "a value of another type",
    })
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Long(_) => "long",
        Value::Float(_) => "float",
        Value::Double(_) => "double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "string",
        Value::Fixed(..) => "fixed",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::Date(_) => "date",
        Value::Decimal(_) => "decimal",
        Value::BigDecimal(_) => "big-decimal",
        Value::TimeMillis(_) => "time-millis",
        Value::TimeMicros(_) => "time-micros",
        Value::TimestampMillis(_) => "timestamp-millis",
        Value::TimestampMicros(_) => "timestamp-micros",
        Value::TimestampNanos(_) => "timestamp-nanos",
        Value::LocalTimestampMillis(_) => "local-timestamp-millis",
        Value::LocalTimestampMicros(_) => "local-timestamp-micros",
        Value::LocalTimestampNanos(_) => "local-timestamp-nanos",
        Value::Duration(_) => "duration",
        Value::Uuid(_) => "uuid",
    }
}

/// A field's value as a scalar; `None` if it is not of the expected kind.
#[inline]
fn read(v: &Value, read: Read) -> Option<Scalar<'_>> {
    let v = unwrap_union(v);
    Some(match (read, v) {
        (_, Value::Null) => Scalar::Null,
        (Read::Float, Value::Double(d)) => Scalar::Float(*d),
        (Read::Float, Value::Float(f)) => Scalar::Float(f64::from(*f)),
        (Read::Float, Value::Int(i)) => Scalar::Float(f64::from(*i)),
        (Read::Float, Value::Long(l)) => Scalar::Float(*l as f64),
        (Read::Float, Value::BigDecimal(_)) => Scalar::Float(crate::types::as_f64(v)?),
        (Read::Int, Value::Long(l)) => Scalar::Int(*l),
        (Read::Int, Value::Int(i)) => Scalar::Int(i64::from(*i)),
        (Read::Str, Value::String(s)) => Scalar::Str(Cow::Borrowed(s)),
        (Read::Str, Value::Enum(_, s)) => Scalar::Str(Cow::Borrowed(s)),
        (Read::Str, Value::Uuid(u)) => Scalar::Str(Cow::Owned(u.to_string())),
        (Read::Bool, Value::Boolean(b)) => Scalar::Bool(*b),
        (Read::Ts, v) => Scalar::Ts(timestamp_ms(v)?),
        (Read::Decimal(scale), Value::Decimal(d)) => Scalar::Float(decimal_to_f64(d, scale)?),
        (Read::TimeMs, Value::TimeMillis(t)) => Scalar::Int(i64::from(*t)),
        (Read::TimeMs, Value::TimeMicros(t)) => Scalar::Int(t.div_euclid(1000)),
        _ => return None,
    })
}

fn arith<'a>(op: ArithOp, a: Scalar<'a>, b: Scalar<'a>, what: &Arc<str>) -> Res<'a> {
    let overflow = || err(EvalError::Overflow { expr: what.clone() });
    let div0 = || err(EvalError::DivisionByZero { expr: what.clone() });
    Ok(match (a, b) {
        (Scalar::Null, _) | (_, Scalar::Null) => Scalar::Null,
        (Scalar::Int(x), Scalar::Int(y)) => Scalar::Int(match op {
            ArithOp::Add => x.checked_add(y).ok_or_else(overflow)?,
            ArithOp::Sub => x.checked_sub(y).ok_or_else(overflow)?,
            ArithOp::Mul => x.checked_mul(y).ok_or_else(overflow)?,
            ArithOp::Div if y == 0 => return Err(div0()),
            ArithOp::Div => x.checked_div(y).ok_or_else(overflow)?,
            ArithOp::Rem if y == 0 => return Err(div0()),
            ArithOp::Rem if y == -1 => 0,
            ArithOp::Rem => x % y,
        }),
        (Scalar::Ts(t), Scalar::Int(d)) => Scalar::Ts(match op {
            ArithOp::Add => t.checked_add(d).ok_or_else(overflow)?,
            ArithOp::Sub => t.checked_sub(d).ok_or_else(overflow)?,
            _ => return Err(internal(what)),
        }),
        (Scalar::Int(d), Scalar::Ts(t)) if op == ArithOp::Add => {
            Scalar::Ts(t.checked_add(d).ok_or_else(overflow)?)
        }
        (Scalar::Ts(x), Scalar::Ts(y)) if op == ArithOp::Sub => {
            Scalar::Int(x.checked_sub(y).ok_or_else(overflow)?)
        }
        (a, b) => {
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return Err(internal(what));
            };
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div if y == 0.0 => return Err(div0()),
                ArithOp::Div => x / y,
                ArithOp::Rem if y == 0.0 => return Err(div0()),
                ArithOp::Rem => x % y,
            };
            if r.is_infinite() && x.is_finite() && y.is_finite() {
                return Err(overflow());
            }
            Scalar::Float(r)
        }
    })
}

/// SQL truth of a boolean scalar: `Some(b)`, `None` for NULL.
#[inline]
fn truth(s: &Scalar<'_>, what: &str) -> Result<Option<bool>, Box<EvalError>> {
    match s {
        Scalar::Bool(b) => Ok(Some(*b)),
        Scalar::Null => Ok(None),
        _ => Err(internal(what)),
    }
}

/// `round(x, digits)` half away from zero, on the value's shortest decimal text (so
/// `round(0.285, 2)` is 0.29, as written, although the double is slightly below 0.285).
fn round_float(x: f64, digits: i64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let digits = digits.clamp(-400, 400);
    // Shortest round-trip digits: d.ddddde±x
    let mut buf = String::with_capacity(32);
    let _ = write!(buf, "{:e}", x.abs());
    let Some((mantissa, exp)) = buf.split_once('e') else {
        return x;
    };
    let Ok(exp) = exp.parse::<i64>() else {
        return x;
    };
    let mut ds: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|d| d - b'0')
        .collect();
    // Digit k has place value 10^(exp - k); keep those with place >= 10^-digits.
    let keep = exp + digits + 1;
    if keep >= ds.len() as i64 {
        return x;
    }
    let sign = x.signum();
    if keep < 0 {
        return 0.0 * sign;
    }
    let keep = keep as usize;
    let round_up = ds[keep] >= 5;
    ds.truncate(keep);
    let mut exp_out = exp - keep as i64 + 1; // place of the unit after the kept digits
    if round_up {
        let mut i = ds.len();
        loop {
            if i == 0 {
                ds.insert(0, 1);
                break;
            }
            i -= 1;
            if ds[i] == 9 {
                ds[i] = 0;
            } else {
                ds[i] += 1;
                break;
            }
        }
    }
    if ds.is_empty() {
        return 0.0 * sign;
    }
    // value = digits × 10^(exp - keep + 1)
    let mut text = String::with_capacity(ds.len() + 8);
    for d in &ds {
        text.push(char::from(b'0' + d));
    }
    if exp_out != 0 {
        let _ = write!(text, "e{exp_out}");
    }
    exp_out = 0;
    let _ = exp_out;
    text.parse::<f64>().map_or(x, |v| v * sign)
}

/// `round(i, digits)` for integers: unchanged for digits >= 0, else to a multiple of
/// 10^-digits, half away from zero.
fn round_int(i: i64, digits: i64) -> Option<i64> {
    if digits >= 0 {
        return Some(i);
    }
    if digits < -18 {
        return Some(0);
    }
    let p = 10i64.pow(u32::try_from(-digits).ok()?);
    let q = i / p;
    let r = i % p;
    let q = if r.abs() * 2 >= p { q + i.signum() } else { q };
    q.checked_mul(p)
}

fn float_to_int(f: f64) -> Option<i64> {
    let r = f.round();
    (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0)
        .contains(&r)
        .then_some(r as i64)
}

fn cast<'a>(v: Scalar<'a>, to: CastTo, what: &Arc<str>) -> Res<'a> {
    let invalid = |v: &Scalar<'_>| {
        err(EvalError::InvalidCast {
            expr: what.clone(),
            value: v.describe(),
            to: to.name(),
        })
    };
    Ok(match (to, v) {
        (_, Scalar::Null) => Scalar::Null,
        (CastTo::Int { int32 }, v) => {
            let i = match &v {
                Scalar::Int(i) => Some(*i),
                Scalar::Float(f) => float_to_int(*f),
                Scalar::Str(s) => s.trim().parse::<i64>().ok(),
                Scalar::Bool(b) => Some(i64::from(*b)),
                Scalar::Ts(t) => Some(*t),
                Scalar::Null => None,
            };
            match i {
                Some(i) if !int32 || i32::try_from(i).is_ok() => Scalar::Int(i),
                _ => return Err(invalid(&v)),
            }
        }
        (CastTo::Float, v) => match &v {
            Scalar::Int(i) => Scalar::Float(*i as f64),
            Scalar::Float(f) => Scalar::Float(*f),
            Scalar::Bool(b) => Scalar::Float(if *b { 1.0 } else { 0.0 }),
            Scalar::Str(s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Scalar::Float(f),
                _ => return Err(invalid(&v)),
            },
            _ => return Err(invalid(&v)),
        },
        (CastTo::Str, Scalar::Str(s)) => Scalar::Str(s),
        (CastTo::Str, v) => {
            let mut s = String::new();
            v.write_text(&mut s);
            Scalar::Str(Cow::Owned(s))
        }
        (CastTo::Bool, v) => match &v {
            Scalar::Bool(b) => Scalar::Bool(*b),
            Scalar::Int(i) => Scalar::Bool(*i != 0),
            Scalar::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "on" | "1" => Scalar::Bool(true),
                "false" | "f" | "no" | "n" | "off" | "0" => Scalar::Bool(false),
                _ => return Err(invalid(&v)),
            },
            _ => return Err(invalid(&v)),
        },
        (CastTo::Ts | CastTo::Date, v) => {
            let t = match &v {
                Scalar::Ts(t) => *t,
                Scalar::Int(i) => *i,
                Scalar::Str(s) => match time::parse_timestamp_ms(s) {
                    Some(t) => t,
                    None => return Err(invalid(&v)),
                },
                _ => return Err(invalid(&v)),
            };
            Scalar::Ts(if to == CastTo::Date {
                time::truncate_to_day(t)
            } else {
                t
            })
        }
    })
}

/// A sub-slice of a string scalar, borrowed when the string is.
fn slice<'a>(s: Cow<'a, str>, range: std::ops::Range<usize>) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
        Cow::Owned(o) => Cow::Owned(o[range].to_string()),
    }
}

/// The byte range of characters `[from, from + count)` (0-based, clamped).
fn char_range(s: &str, from: usize, count: usize) -> std::ops::Range<usize> {
    let mut it = s
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(s.len()));
    let start = it.nth(from).unwrap_or(s.len());
    let end = if count == 0 {
        start
    } else {
        it.nth(count - 1).unwrap_or(s.len())
    };
    start..end.max(start)
}

impl Node {
    /// Direct children (for constant folding).
    pub(crate) fn children(&self) -> Vec<&Node> {
        match self {
            Node::Lit(_)
            | Node::FieldCmpF64 { .. }
            | Node::FieldCmpI64 { .. }
            | Node::Field { .. }
            | Node::MapGet { .. }
            | Node::ArrayGet { .. }
            | Node::PathIsNull { .. } => vec![],
            Node::ToFloat(e)
            | Node::Neg { e, .. }
            | Node::Not(e)
            | Node::IsNull { e, .. }
            | Node::IsBool { e, .. }
            | Node::Like { e, .. }
            | Node::CmpLit { e, .. }
            | Node::Cast { e, .. }
            | Node::Math { e, .. }
            | Node::Str { e, .. } => vec![e],
            Node::Arith { l, r, .. }
            | Node::Cmp { l, r, .. }
            | Node::Distinct { l, r, .. }
            | Node::NullIf(l, r) => {
                vec![l, r]
            }
            Node::Power { base, exp, .. } => vec![base, exp],
            Node::And(v) | Node::Or(v) | Node::Coalesce(v) => v.iter().collect(),
            Node::Concat { parts, .. } => parts.iter().collect(),
            Node::Extreme { args, .. } => args.iter().collect(),
            Node::Between { e, lo, hi, .. } => vec![e, lo, hi],
            Node::In { e, list, .. } => std::iter::once(&**e).chain(list).collect(),
            Node::Case {
                operand,
                whens,
                otherwise,
            } => operand
                .iter()
                .map(|b| &**b)
                .chain(whens.iter().flat_map(|(w, t)| [w, t]))
                .chain(otherwise.iter().map(|b| &**b))
                .collect(),
            Node::Round { e, digits, .. } => std::iter::once(&**e)
                .chain(digits.iter().map(|b| &**b))
                .collect(),
            Node::Trim { e, chars, .. } => std::iter::once(&**e)
                .chain(chars.iter().map(|b| &**b))
                .collect(),
            Node::Substr { e, start, len, .. } => [&**e, &**start]
                .into_iter()
                .chain(len.iter().map(|b| &**b))
                .collect(),
        }
    }

    /// Levels of nodes below and including this one.
    pub(crate) fn depth(&self) -> usize {
        1 + self.children().iter().map(|c| c.depth()).max().unwrap_or(0)
    }

    pub(crate) fn is_lit(&self) -> bool {
        matches!(self, Node::Lit(_))
    }

    /// Evaluates against one record.
    ///
    /// The common nodes are handled here, in a small function (a small stack frame per
    /// level); the others in [`Node::eval_other`].
    #[inline]
    pub(crate) fn eval<'a>(&'a self, rec: &'a Value) -> Res<'a> {
        match self {
            Node::Lit(s) => Ok(s.reborrow()),
            Node::Field { path, read: r } => match path.get(rec) {
                None => Ok(Scalar::Null),
                Some(v) => read(v, *r).ok_or_else(|| mismatch(path.path(), v)),
            },
            Node::FieldCmpF64 { .. } | Node::FieldCmpI64 { .. } | Node::And(_) | Node::Or(_) => {
                Ok(match self.truth(rec)? {
                    Some(b) => Scalar::Bool(b),
                    None => Scalar::Null,
                })
            }
            _ => self.eval_other(rec),
        }
    }

    /// Evaluates a boolean node: `Some(b)`, or `None` for NULL. Conditions are evaluated
    /// here without building [`Scalar`]s (results fit in registers).
    #[inline]
    pub(crate) fn truth(&self, rec: &Value) -> Result<Option<bool>, Box<EvalError>> {
        match self {
            Node::FieldCmpF64 { path, op, rhs } => Ok(match path.get(rec) {
                None => None,
                Some(v) => Some(op.test(match v {
                    Value::Double(d) => cmp_f64(*d, *rhs),
                    Value::Float(f) => cmp_f64(f64::from(*f), *rhs),
                    Value::Long(l) => cmp_i64_f64(*l, *rhs),
                    Value::Int(i) => cmp_i64_f64(i64::from(*i), *rhs),
                    v => return Err(mismatch(path.path(), v)),
                })),
            }),
            Node::FieldCmpI64 { path, op, rhs } => Ok(match path.get(rec) {
                None => None,
                Some(v) => Some(op.test(match v {
                    Value::Long(l) => l.cmp(rhs),
                    Value::Int(i) => i64::from(*i).cmp(rhs),
                    v => return Err(mismatch(path.path(), v)),
                })),
            }),
            Node::And(items) => {
                let mut null = false;
                for item in items {
                    match item.truth(rec)? {
                        Some(false) => return Ok(Some(false)),
                        Some(true) => {}
                        None => null = true,
                    }
                }
                Ok(if null { None } else { Some(true) })
            }
            Node::Or(items) => {
                let mut null = false;
                for item in items {
                    match item.truth(rec)? {
                        Some(true) => return Ok(Some(true)),
                        Some(false) => {}
                        None => null = true,
                    }
                }
                Ok(if null { None } else { Some(false) })
            }
            Node::Not(e) => Ok(e.truth(rec)?.map(|b| !b)),
            other => match other.eval(rec)? {
                Scalar::Bool(b) => Ok(Some(b)),
                Scalar::Null => Ok(None),
                _ => Err(internal("condition")),
            },
        }
    }

    /// [`Node::eval`] of the other nodes.
    #[inline(never)]
    fn eval_other<'a>(&'a self, rec: &'a Value) -> Res<'a> {
        match self {
            Node::Lit(s) => Ok(s.reborrow()),
            Node::Field { path, read: r } => match path.get(rec) {
                None => Ok(Scalar::Null),
                Some(v) => read(v, *r).ok_or_else(|| mismatch(path.path(), v)),
            },
            Node::MapGet { path, key, read: r } => match path.get(rec) {
                None => Ok(Scalar::Null),
                Some(Value::Map(m)) => match m.get(key) {
                    None => Ok(Scalar::Null),
                    Some(v) => read(v, *r).ok_or_else(|| mismatch(path.path(), v)),
                },
                Some(v) => Err(mismatch(path.path(), v)),
            },
            Node::ArrayGet {
                path,
                index,
                read: r,
            } => match path.get(rec) {
                None => Ok(Scalar::Null),
                Some(Value::Array(items)) => match items.get(*index) {
                    None => Ok(Scalar::Null),
                    Some(v) => read(v, *r).ok_or_else(|| mismatch(path.path(), v)),
                },
                Some(v) => Err(mismatch(path.path(), v)),
            },
            Node::PathIsNull { path, negated } => {
                Ok(Scalar::Bool(path.get(rec).is_none() != *negated))
            }
            Node::ToFloat(e) => Ok(match e.eval(rec)? {
                Scalar::Int(i) => Scalar::Float(i as f64),
                other => other,
            }),
            Node::Neg { e, what } => Ok(match e.eval(rec)? {
                Scalar::Int(i) => Scalar::Int(
                    i.checked_neg()
                        .ok_or_else(|| err(EvalError::Overflow { expr: what.clone() }))?,
                ),
                Scalar::Float(f) => Scalar::Float(-f),
                Scalar::Null => Scalar::Null,
                _ => return Err(internal(what)),
            }),
            Node::FieldCmpF64 { .. }
            | Node::FieldCmpI64 { .. }
            | Node::And(_)
            | Node::Or(_)
            | Node::Not(_) => Ok(match self.truth(rec)? {
                Some(b) => Scalar::Bool(b),
                None => Scalar::Null,
            }),
            Node::Arith { op, l, r, what } => arith(*op, l.eval(rec)?, r.eval(rec)?, what),
            Node::Cmp { op, l, r } => {
                let a = l.eval(rec)?;
                if a.is_null() {
                    return Ok(Scalar::Null);
                }
                let b = r.eval(rec)?;
                if b.is_null() {
                    return Ok(Scalar::Null);
                }
                match compare(&a, &b) {
                    Some(o) => Ok(Scalar::Bool(op.test(o))),
                    None => Err(internal("comparison")),
                }
            }
            Node::CmpLit { op, e, lit } => {
                let a = e.eval(rec)?;
                if a.is_null() {
                    return Ok(Scalar::Null);
                }
                match compare(&a, lit) {
                    Some(o) => Ok(Scalar::Bool(op.test(o))),
                    None => Err(internal("comparison")),
                }
            }
            Node::Distinct { l, r, negated } => {
                let (a, b) = (l.eval(rec)?, r.eval(rec)?);
                let same = match (&a, &b) {
                    (Scalar::Null, Scalar::Null) => true,
                    (Scalar::Null, _) | (_, Scalar::Null) => false,
                    _ => compare(&a, &b) == Some(Ordering::Equal),
                };
                Ok(Scalar::Bool(same == *negated))
            }
            Node::IsNull { e, negated } => Ok(Scalar::Bool((e.eval(rec)?.is_null()) != *negated)),
            Node::IsBool { e, value, negated } => {
                let t = truth(&e.eval(rec)?, "IS TRUE")?;
                Ok(Scalar::Bool((t == Some(*value)) != *negated))
            }
            Node::Between { e, lo, hi, negated } => {
                let v = e.eval(rec)?;
                if v.is_null() {
                    return Ok(Scalar::Null);
                }
                let side =
                    |bound: &'a Node, want: Ordering| -> Result<Option<bool>, Box<EvalError>> {
                        let b = bound.eval(rec)?;
                        if b.is_null() {
                            return Ok(None);
                        }
                        Ok(Some(
                            compare(&v, &b).ok_or_else(|| internal("BETWEEN"))? != want,
                        ))
                    };
                let ge_lo = side(lo, Ordering::Less)?;
                if ge_lo == Some(false) {
                    return Ok(Scalar::Bool(*negated));
                }
                let le_hi = side(hi, Ordering::Greater)?;
                Ok(match (ge_lo, le_hi) {
                    (_, Some(false)) => Scalar::Bool(*negated),
                    (Some(true), Some(true)) => Scalar::Bool(!*negated),
                    _ => Scalar::Null,
                })
            }
            Node::In { e, list, negated } => {
                let v = e.eval(rec)?;
                if v.is_null() {
                    return Ok(Scalar::Null);
                }
                let mut null = false;
                for item in list {
                    let x = item.eval(rec)?;
                    if x.is_null() {
                        null = true;
                    } else if compare(&v, &x) == Some(Ordering::Equal) {
                        return Ok(Scalar::Bool(!*negated));
                    }
                }
                Ok(if null {
                    Scalar::Null
                } else {
                    Scalar::Bool(*negated)
                })
            }
            Node::Like {
                e,
                pattern,
                negated,
            } => Ok(match e.eval(rec)? {
                Scalar::Str(s) => Scalar::Bool(pattern.matches(&s) != *negated),
                Scalar::Null => Scalar::Null,
                _ => return Err(internal("LIKE")),
            }),
            Node::Case {
                operand,
                whens,
                otherwise,
            } => {
                match operand {
                    Some(op) => {
                        let v = op.eval(rec)?;
                        if !v.is_null() {
                            for (w, then) in whens {
                                let x = w.eval(rec)?;
                                if !x.is_null() && compare(&v, &x) == Some(Ordering::Equal) {
                                    return then.eval(rec);
                                }
                            }
                        }
                    }
                    None => {
                        for (w, then) in whens {
                            if truth(&w.eval(rec)?, "CASE WHEN")? == Some(true) {
                                return then.eval(rec);
                            }
                        }
                    }
                }
                match otherwise {
                    Some(o) => o.eval(rec),
                    None => Ok(Scalar::Null),
                }
            }
            Node::Cast {
                e,
                to,
                or_null,
                what,
            } => match cast(e.eval(rec)?, *to, what) {
                Err(_) if *or_null => Ok(Scalar::Null),
                r => r,
            },
            Node::Concat { parts, skip_nulls } => {
                let mut out = String::new();
                for p in parts {
                    let v = p.eval(rec)?;
                    if v.is_null() {
                        if *skip_nulls {
                            continue;
                        }
                        return Ok(Scalar::Null);
                    }
                    v.write_text(&mut out);
                }
                Ok(Scalar::Str(Cow::Owned(out)))
            }
            Node::Coalesce(items) => {
                for item in items {
                    let v = item.eval(rec)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Ok(Scalar::Null)
            }
            Node::NullIf(a, b) => {
                let x = a.eval(rec)?;
                if x.is_null() {
                    return Ok(Scalar::Null);
                }
                let y = b.eval(rec)?;
                if !y.is_null() && compare(&x, &y) == Some(Ordering::Equal) {
                    return Ok(Scalar::Null);
                }
                Ok(x)
            }
            Node::Extreme { args, greatest } => {
                let mut best: Option<Scalar<'a>> = None;
                for a in args {
                    let v = a.eval(rec)?;
                    if v.is_null() {
                        return Ok(Scalar::Null);
                    }
                    best = Some(match best {
                        None => v,
                        Some(b) => {
                            let o = compare(&v, &b).ok_or_else(|| internal("least/greatest"))?;
                            if (o == Ordering::Greater) == *greatest && o != Ordering::Equal {
                                v
                            } else {
                                b
                            }
                        }
                    });
                }
                Ok(best.unwrap_or(Scalar::Null))
            }
            Node::Math { f, e, what } => math(*f, e.eval(rec)?, what),
            Node::Round { e, digits, what } => {
                let v = e.eval(rec)?;
                let d = match digits {
                    None => 0,
                    Some(d) => match d.eval(rec)? {
                        Scalar::Int(d) => d,
                        Scalar::Null => return Ok(Scalar::Null),
                        _ => return Err(internal(what)),
                    },
                };
                Ok(match v {
                    Scalar::Null => Scalar::Null,
                    Scalar::Int(i) => Scalar::Int(
                        round_int(i, d)
                            .ok_or_else(|| err(EvalError::Overflow { expr: what.clone() }))?,
                    ),
                    Scalar::Float(f) => {
                        Scalar::Float(if d == 0 { f.round() } else { round_float(f, d) })
                    }
                    _ => return Err(internal(what)),
                })
            }
            Node::Power { base, exp, what } => {
                let (b, e) = (base.eval(rec)?, exp.eval(rec)?);
                let (Some(b), Some(e)) = (b.as_f64(), e.as_f64()) else {
                    if b.is_null() || e.is_null() {
                        return Ok(Scalar::Null);
                    }
                    return Err(internal(what));
                };
                let r = b.powf(e);
                if r.is_nan() && !b.is_nan() && !e.is_nan() {
                    return Err(err(EvalError::InvalidArgument {
                        expr: what.clone(),
                        reason: format!("{b} to the power {e} is not a real number"),
                    }));
                }
                if r.is_infinite() && b.is_finite() && e.is_finite() {
                    return Err(err(if b == 0.0 {
                        EvalError::DivisionByZero { expr: what.clone() }
                    } else {
                        EvalError::Overflow { expr: what.clone() }
                    }));
                }
                Ok(Scalar::Float(r))
            }
            Node::Str { f, e } => Ok(match (f, e.eval(rec)?) {
                (_, Scalar::Null) => Scalar::Null,
                (StrFn::Lower, Scalar::Str(s)) => Scalar::Str(Cow::Owned(s.to_lowercase())),
                (StrFn::Upper, Scalar::Str(s)) => Scalar::Str(Cow::Owned(s.to_uppercase())),
                (StrFn::Length, Scalar::Str(s)) => Scalar::Int(s.chars().count() as i64),
                _ => return Err(internal("string function")),
            }),
            Node::Trim {
                e,
                chars,
                leading,
                trailing,
            } => {
                let Scalar::Str(s) = e.eval(rec)? else {
                    return Ok(Scalar::Null);
                };
                let set = match chars {
                    None => None,
                    Some(c) => match c.eval(rec)? {
                        Scalar::Str(c) => Some(c),
                        _ => return Ok(Scalar::Null),
                    },
                };
                let trim = |c: char| match &set {
                    None => c.is_whitespace(),
                    Some(set) => set.contains(c),
                };
                let mut start = 0;
                let mut end = s.len();
                if *leading {
                    start = s.len() - s.trim_start_matches(trim).len();
                }
                if *trailing {
                    end = s[start..].trim_end_matches(trim).len() + start;
                }
                Ok(Scalar::Str(slice(s, start..end)))
            }
            Node::Substr {
                e,
                start,
                len,
                what,
            } => {
                let Scalar::Str(s) = e.eval(rec)? else {
                    return Ok(Scalar::Null);
                };
                let Scalar::Int(from) = start.eval(rec)? else {
                    return Ok(Scalar::Null);
                };
                let count = match len {
                    None => None,
                    Some(l) => match l.eval(rec)? {
                        Scalar::Int(l) if l < 0 => {
                            return Err(err(EvalError::InvalidArgument {
                                expr: what.clone(),
                                reason: format!("negative substring length {l}"),
                            }))
                        }
                        Scalar::Int(l) => Some(l),
                        _ => return Ok(Scalar::Null),
                    },
                };
                // Characters from position `from` (1-based) for `count`, clipped to the string.
                let begin = from.max(1);
                let end = count.map_or(i64::MAX, |c| from.saturating_add(c));
                if end <= begin {
                    return Ok(Scalar::Str(Cow::Borrowed("")));
                }
                let skip = usize::try_from(begin - 1).unwrap_or(usize::MAX);
                let take = usize::try_from(end - begin).unwrap_or(usize::MAX);
                let range = char_range(&s, skip, take);
                Ok(Scalar::Str(slice(s, range)))
            }
        }
    }
}

fn math<'a>(f: Math, v: Scalar<'a>, what: &Arc<str>) -> Res<'a> {
    let invalid = |reason: String| {
        err(EvalError::InvalidArgument {
            expr: what.clone(),
            reason,
        })
    };
    Ok(match (f, v) {
        (_, Scalar::Null) => Scalar::Null,
        (Math::Abs, Scalar::Int(i)) => Scalar::Int(
            i.checked_abs()
                .ok_or_else(|| err(EvalError::Overflow { expr: what.clone() }))?,
        ),
        (Math::Abs, Scalar::Float(x)) => Scalar::Float(x.abs()),
        (Math::Floor | Math::Ceil, Scalar::Int(i)) => Scalar::Int(i),
        (Math::Floor, Scalar::Float(x)) => Scalar::Float(x.floor()),
        (Math::Ceil, Scalar::Float(x)) => Scalar::Float(x.ceil()),
        (f, v) => {
            let Some(x) = v.as_f64() else {
                return Err(internal(what));
            };
            Scalar::Float(match f {
                Math::Sqrt if x < 0.0 => {
                    return Err(invalid(format!("square root of the negative number {x}")))
                }
                Math::Sqrt => x.sqrt(),
                Math::Ln | Math::Log10 if x <= 0.0 => {
                    return Err(invalid(format!("logarithm of {x}, which is not positive")))
                }
                Math::Ln => x.ln(),
                Math::Log10 => x.log10(),
                Math::Exp => {
                    let r = x.exp();
                    if r.is_infinite() && x.is_finite() {
                        return Err(err(EvalError::Overflow { expr: what.clone() }));
                    }
                    r
                }
                Math::Abs | Math::Floor | Math::Ceil => return Err(internal(what)),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(round_float(0.285, 2), 0.29);
        assert_eq!(round_float(-0.285, 2), -0.29);
        assert_eq!(round_float(2.675, 2), 2.68);
        assert_eq!(round_float(1.005, 2), 1.01);
        assert_eq!(round_float(123.456, 0), 123.0);
        assert_eq!(round_float(1234.5, -2), 1200.0);
        assert_eq!(round_float(1250.0, -2), 1300.0);
        assert_eq!(round_float(0.0004, 3), 0.0);
        assert_eq!(round_float(0.0005, 3), 0.001);
        assert_eq!(round_float(9.995, 2), 10.0);
        assert_eq!(round_float(999.9, -3), 1000.0);
        assert_eq!(round_float(0.4, -1), 0.0);
        assert_eq!(round_float(1.5e300, 2), 1.5e300);
        assert_eq!(round_float(1e-300, 400), 1e-300);
        assert_eq!(round_float(f64::MAX, -400), 0.0);
        assert_eq!(round_int(1250, -2), Some(1300));
        assert_eq!(round_int(-1249, -2), Some(-1200));
        assert_eq!(round_int(i64::MAX, -1), None);
        assert_eq!(round_int(5, -30), Some(0));
    }

    #[test]
    fn int_double_comparison_is_exact() {
        assert_eq!(
            cmp_i64_f64(i64::MAX, 9_223_372_036_854_775_807.0),
            Ordering::Less
        );
        assert_eq!(cmp_i64_f64(3, 3.0), Ordering::Equal);
        assert_eq!(cmp_i64_f64(3, 3.5), Ordering::Less);
        assert_eq!(cmp_i64_f64(-3, -3.5), Ordering::Greater);
        assert_eq!(
            cmp_i64_f64(i64::MIN, -9_223_372_036_854_775_808.0),
            Ordering::Equal
        );
        assert_eq!(cmp_i64_f64(0, f64::NAN), Ordering::Less);
        assert_eq!(cmp_f64(f64::NAN, f64::NAN), Ordering::Equal);
        assert_eq!(cmp_f64(f64::NAN, 1.0), Ordering::Greater);
        assert_eq!(cmp_f64(-0.0, 0.0), Ordering::Equal);
    }

    #[test]
    fn substrings_by_character() {
        assert_eq!(char_range("héllo", 1, 3), 1..5);
        assert_eq!(char_range("abc", 5, 2), 3..3);
        assert_eq!(char_range("abc", 0, usize::MAX), 0..3);
    }
}
