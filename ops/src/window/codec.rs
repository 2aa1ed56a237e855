//! Bytes for state: little-endian fields and LEB128 varints, a tagged encoding of any Avro
//! `Value`, a total order on values (for `min`/`max`) and a hash of values that is stable
//! across processes, builds and platforms (for `count_distinct`).
//!
//! Nothing here depends on an Avro schema: a value carries its own type tag, so a window's
//! state decodes without the topic's schema.

use std::cmp::Ordering;

use apache_avro::types::Value;
use apache_avro::{BigDecimal, Decimal, Duration, Uuid};
use sluice_state::StateError;

/// Appends fields to a byte buffer.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_varint(&mut self, v: u64);
    fn put_zigzag(&mut self, v: i64);
    fn put_f64(&mut self, v: f64);
    fn put_bytes(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }

    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    fn put_zigzag(&mut self, v: i64) {
        self.put_varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn put_f64(&mut self, v: f64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    /// Length (varint) then the bytes.
    fn put_bytes(&mut self, b: &[u8]) {
        self.put_varint(b.len() as u64);
        self.extend_from_slice(b);
    }
}

/// Reads what [`Put`] wrote; every error names what was being decoded.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn err(&self, reason: impl Into<String>) -> StateError {
        StateError::decode(self.what, reason)
    }

    /// Fails unless everything was read (trailing bytes mean a format mismatch).
    pub(crate) fn finish(&self) -> Result<(), StateError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.buf.len())))
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.buf.len() < n {
            return Err(self.err(format!("needs {n} bytes, {} left", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, StateError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    pub(crate) fn zigzag(&mut self) -> Result<i64, StateError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, StateError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A length written by `put_varint`, checked against what is left (so a corrupt length
    /// cannot make us allocate gigabytes).
    pub(crate) fn len(&mut self, min_bytes_each: usize) -> Result<usize, StateError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.err("length overflows usize"))?;
        if n.saturating_mul(min_bytes_each.max(1)) > self.buf.len() {
            return Err(self.err(format!(
                "length {n} exceeds the {} bytes left",
                self.buf.len()
            )));
        }
        Ok(n)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.len(1)?;
        self.take(n)
    }

    pub(crate) fn string(&mut self) -> Result<String, StateError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|e| self.err(e.to_string()))
    }
}

/// Big-endian bytes of `v` that sort like the signed number (sign bit flipped).
pub(crate) fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn from_ordered_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

// --- Avro values -------------------------------------------------------------------------

mod tag {
    pub(super) const NULL: u8 = 0;
    pub(super) const BOOLEAN: u8 = 1;
    pub(super) const INT: u8 = 2;
    pub(super) const LONG: u8 = 3;
    pub(super) const FLOAT: u8 = 4;
    pub(super) const DOUBLE: u8 = 5;
    pub(super) const BYTES: u8 = 6;
    pub(super) const STRING: u8 = 7;
    pub(super) const FIXED: u8 = 8;
    pub(super) const ENUM: u8 = 9;
    pub(super) const UNION: u8 = 10;
    pub(super) const ARRAY: u8 = 11;
    pub(super) const MAP: u8 = 12;
    pub(super) const RECORD: u8 = 13;
    pub(super) const DATE: u8 = 14;
    pub(super) const DECIMAL: u8 = 15;
    pub(super) const BIG_DECIMAL: u8 = 16;
    pub(super) const TIME_MILLIS: u8 = 17;
    pub(super) const TIME_MICROS: u8 = 18;
    pub(super) const TIMESTAMP_MILLIS: u8 = 19;
    pub(super) const TIMESTAMP_MICROS: u8 = 20;
    pub(super) const TIMESTAMP_NANOS: u8 = 21;
    pub(super) const LOCAL_TIMESTAMP_MILLIS: u8 = 22;
    pub(super) const LOCAL_TIMESTAMP_MICROS: u8 = 23;
    pub(super) const LOCAL_TIMESTAMP_NANOS: u8 = 24;
    pub(super) const DURATION: u8 = 25;
    pub(super) const UUID: u8 = 26;
}

/// Nesting deeper than this is refused when decoding (a corrupt or hostile buffer must not
/// overflow the stack); Avro values from real schemas are far shallower.
const MAX_DEPTH: usize = 64;

/// Appends `v` in the tagged encoding that [`decode_value`] reads back exactly.
pub(crate) fn encode_value(v: &Value, out: &mut Vec<u8>) {
    write_value(v, out, false);
}

/// The canonical bytes of `v` for hashing: unions are replaced by the value inside, `int`
/// widens to `long`, `-0.0` becomes `0.0`, every NaN the same NaN, decimals lose redundant
/// sign bytes and map entries are sorted by key. Equal values of one field give equal bytes
/// in every process and build.
pub(crate) fn canonical_bytes(v: &Value, out: &mut Vec<u8>) {
    write_value(v, out, true);
}

fn canonical_f64(f: f64) -> f64 {
    if f.is_nan() {
        f64::NAN
    } else if f == 0.0 {
        0.0
    } else {
        f
    }
}

fn decimal_bytes(d: &Decimal) -> Vec<u8> {
    // Fails only for a `Decimal` whose length is too short for its value, which the public
    // constructors cannot make.
    Vec::<u8>::try_from(d).unwrap_or_default()
}

fn minimal_twos_complement(mut b: &[u8]) -> &[u8] {
    while b.len() > 1 && ((b[0] == 0x00 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0))
    {
        b = &b[1..];
    }
    b
}

fn write_value(v: &Value, out: &mut Vec<u8>, canonical: bool) {
    match v {
        Value::Null => out.put_u8(tag::NULL),
        Value::Boolean(b) => {
            out.put_u8(tag::BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Value::Int(i) if canonical => {
            out.put_u8(tag::LONG);
            out.put_zigzag(i64::from(*i));
        }
        Value::Int(i) => {
            out.put_u8(tag::INT);
            out.put_zigzag(i64::from(*i));
        }
        Value::Long(i) => {
            out.put_u8(tag::LONG);
            out.put_zigzag(*i);
        }
        Value::Float(f) => {
            out.put_u8(tag::FLOAT);
            let f = if canonical {
                canonical_f64(f64::from(*f)) as f32
            } else {
                *f
            };
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Double(f) => {
            out.put_u8(tag::DOUBLE);
            out.put_f64(if canonical { canonical_f64(*f) } else { *f });
        }
        Value::Bytes(b) => {
            out.put_u8(tag::BYTES);
            out.put_bytes(b);
        }
        Value::String(s) => {
            out.put_u8(tag::STRING);
            out.put_bytes(s.as_bytes());
        }
        Value::Fixed(size, b) => {
            out.put_u8(tag::FIXED);
            out.put_varint(*size as u64);
            out.put_bytes(b);
        }
        Value::Enum(i, s) => {
            out.put_u8(tag::ENUM);
            out.put_varint(u64::from(*i));
            out.put_bytes(s.as_bytes());
        }
        Value::Union(_, inner) if canonical => write_value(inner, out, canonical),
        Value::Union(i, inner) => {
            out.put_u8(tag::UNION);
            out.put_varint(u64::from(*i));
            write_value(inner, out, canonical);
        }
        Value::Array(items) => {
            out.put_u8(tag::ARRAY);
            out.put_varint(items.len() as u64);
            for item in items {
                write_value(item, out, canonical);
            }
        }
        Value::Map(map) => {
            out.put_u8(tag::MAP);
            out.put_varint(map.len() as u64);
            // HashMap order differs between processes: sort, always.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, item) in entries {
                out.put_bytes(k.as_bytes());
                write_value(item, out, canonical);
            }
        }
        Value::Record(fields) => {
            out.put_u8(tag::RECORD);
            out.put_varint(fields.len() as u64);
            for (name, item) in fields {
                out.put_bytes(name.as_bytes());
                write_value(item, out, canonical);
            }
        }
        Value::Date(d) => {
            out.put_u8(tag::DATE);
            out.put_zigzag(i64::from(*d));
        }
        Value::Decimal(d) => {
            out.put_u8(tag::DECIMAL);
            let b = decimal_bytes(d);
            if canonical {
                out.put_bytes(minimal_twos_complement(&b));
            } else {
                out.put_bytes(&b);
            }
        }
        Value::BigDecimal(d) => {
            out.put_u8(tag::BIG_DECIMAL);
            let s = if canonical {
                d.normalized().to_string()
            } else {
                d.to_string()
            };
            out.put_bytes(s.as_bytes());
        }
        Value::TimeMillis(t) => {
            out.put_u8(tag::TIME_MILLIS);
            out.put_zigzag(i64::from(*t));
        }
        Value::TimeMicros(t) => put_tagged_i64(out, tag::TIME_MICROS, *t),
        Value::TimestampMillis(t) => put_tagged_i64(out, tag::TIMESTAMP_MILLIS, *t),
        Value::TimestampMicros(t) => put_tagged_i64(out, tag::TIMESTAMP_MICROS, *t),
        Value::TimestampNanos(t) => put_tagged_i64(out, tag::TIMESTAMP_NANOS, *t),
        Value::LocalTimestampMillis(t) => put_tagged_i64(out, tag::LOCAL_TIMESTAMP_MILLIS, *t),
        Value::LocalTimestampMicros(t) => put_tagged_i64(out, tag::LOCAL_TIMESTAMP_MICROS, *t),
        Value::LocalTimestampNanos(t) => put_tagged_i64(out, tag::LOCAL_TIMESTAMP_NANOS, *t),
        Value::Duration(d) => {
            out.put_u8(tag::DURATION);
            out.extend_from_slice(&<[u8; 12]>::from(d));
        }
        Value::Uuid(u) => {
            out.put_u8(tag::UUID);
            out.extend_from_slice(u.as_bytes());
        }
    }
}

fn put_tagged_i64(out: &mut Vec<u8>, t: u8, v: i64) {
    out.put_u8(t);
    out.put_zigzag(v);
}

/// Reads one value written by [`encode_value`].
pub(crate) fn decode_value(r: &mut Reader<'_>) -> Result<Value, StateError> {
    read_value(r, 0)
}

fn i32_of(r: &Reader<'_>, v: i64) -> Result<i32, StateError> {
    i32::try_from(v).map_err(|_| r.err(format!("{v} does not fit an int")))
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> Result<Value, StateError> {
    if depth > MAX_DEPTH {
        return Err(r.err("value nested too deeply"));
    }
    let t = r.u8()?;
    Ok(match t {
        tag::NULL => Value::Null,
        tag::BOOLEAN => Value::Boolean(r.u8()? != 0),
        tag::INT => {
            let v = r.zigzag()?;
            Value::Int(i32_of(r, v)?)
        }
        tag::LONG => Value::Long(r.zigzag()?),
        tag::FLOAT => Value::Float(f32::from_le_bytes(r.array()?)),
        tag::DOUBLE => Value::Double(r.f64()?),
        tag::BYTES => Value::Bytes(r.bytes()?.to_vec()),
        tag::STRING => Value::String(r.string()?),
        tag::FIXED => {
            let size = r.varint()? as usize;
            Value::Fixed(size, r.bytes()?.to_vec())
        }
        tag::ENUM => {
            let i = r.varint()?;
            let i = u32::try_from(i).map_err(|_| r.err("enum index overflows u32"))?;
            Value::Enum(i, r.string()?)
        }
        tag::UNION => {
            let i = r.varint()?;
            let i = u32::try_from(i).map_err(|_| r.err("union index overflows u32"))?;
            Value::Union(i, Box::new(read_value(r, depth + 1)?))
        }
        tag::ARRAY => {
            let n = r.len(1)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_value(r, depth + 1)?);
            }
            Value::Array(items)
        }
        tag::MAP => {
            let n = r.len(2)?;
            let mut map = std::collections::HashMap::with_capacity(n);
            for _ in 0..n {
                let k = r.string()?;
                map.insert(k, read_value(r, depth + 1)?);
            }
            Value::Map(map)
        }
        tag::RECORD => {
            let n = r.len(2)?;
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                let k = r.string()?;
                fields.push((k, read_value(r, depth + 1)?));
            }
            Value::Record(fields)
        }
        tag::DATE => {
            let v = r.zigzag()?;
            Value::Date(i32_of(r, v)?)
        }
        tag::DECIMAL => Value::Decimal(Decimal::from(r.bytes()?)),
        tag::BIG_DECIMAL => {
            let s = r.string()?;
            Value::BigDecimal(
                s.parse::<BigDecimal>()
                    .map_err(|e| r.err(format!("big decimal {s:?}: {e}")))?,
            )
        }
        tag::TIME_MILLIS => {
            let v = r.zigzag()?;
            Value::TimeMillis(i32_of(r, v)?)
        }
        tag::TIME_MICROS => Value::TimeMicros(r.zigzag()?),
        tag::TIMESTAMP_MILLIS => Value::TimestampMillis(r.zigzag()?),
        tag::TIMESTAMP_MICROS => Value::TimestampMicros(r.zigzag()?),
        tag::TIMESTAMP_NANOS => Value::TimestampNanos(r.zigzag()?),
        tag::LOCAL_TIMESTAMP_MILLIS => Value::LocalTimestampMillis(r.zigzag()?),
        tag::LOCAL_TIMESTAMP_MICROS => Value::LocalTimestampMicros(r.zigzag()?),
        tag::LOCAL_TIMESTAMP_NANOS => Value::LocalTimestampNanos(r.zigzag()?),
        tag::DURATION => Value::Duration(Duration::from(r.array::<12>()?)),
        tag::UUID => Value::Uuid(Uuid::from_bytes(r.array()?)),
        other => return Err(r.err(format!("unknown value tag {other}"))),
    })
}

// --- Order -------------------------------------------------------------------------------

/// Unwraps unions (`["null", "string"]` fields arrive as `Union(1, String)`).
pub(crate) fn plain(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => plain(inner),
        other => other,
    }
}

/// Types in the order `min`/`max` put values of different types (which happens only across
/// the branches of a union); within a type, values compare by their natural order.
fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Boolean(_) => 1,
        Value::Int(_) | Value::Long(_) | Value::Float(_) | Value::Double(_) => 2,
        Value::Decimal(_) => 3,
        Value::BigDecimal(_) => 4,
        Value::String(_) => 5,
        Value::Bytes(_) => 6,
        Value::Fixed(..) => 7,
        Value::Enum(..) => 8,
        Value::Uuid(_) => 9,
        Value::Date(_) => 10,
        Value::TimeMillis(_) => 11,
        Value::TimeMicros(_) => 12,
        Value::TimestampMillis(_) => 13,
        Value::TimestampMicros(_) => 14,
        Value::TimestampNanos(_) => 15,
        Value::LocalTimestampMillis(_) => 16,
        Value::LocalTimestampMicros(_) => 17,
        Value::LocalTimestampNanos(_) => 18,
        Value::Duration(_) => 19,
        Value::Array(_) => 20,
        Value::Record(_) => 21,
        Value::Map(_) => 22,
        Value::Union(..) => 23, // never reached: callers unwrap
    }
}

fn numeric_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(i64::from(*i)),
        Value::Long(i) => Some(*i),
        _ => None,
    }
}

/// A number as `f64`, for numeric aggregations given a `Value`: `int`, `long`, `float`,
/// `double` (unions unwrapped); anything else is `None`.
pub(crate) fn number(v: &Value) -> Option<f64> {
    match plain(v) {
        Value::Int(i) => Some(f64::from(*i)),
        Value::Long(i) => Some(*i as f64),
        Value::Float(f) => Some(f64::from(*f)),
        Value::Double(f) => Some(*f),
        _ => None,
    }
}

fn cmp_twos_complement(a: &[u8], b: &[u8]) -> Ordering {
    let neg = |x: &[u8]| x.first().is_some_and(|b| b & 0x80 != 0);
    match (neg(a), neg(b)) {
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    let fill = if neg(a) { 0xff } else { 0x00 };
    let n = a.len().max(b.len());
    let at = |x: &[u8], i: usize| {
        let pad = n - x.len();
        if i < pad {
            fill
        } else {
            x[i - pad]
        }
    };
    (0..n)
        .map(|i| at(a, i).cmp(&at(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// The total order of `min` and `max`: numbers numerically (`int`/`long` exactly, otherwise
/// as `f64` with IEEE total order, so NaN is above every number as in PostgreSQL), strings by
/// code point, bytes and fixed bytewise, enums by symbol position, logical types by their
/// number, arrays and records element by element; maps are all equal (not orderable).
pub(crate) fn cmp_values(a: &Value, b: &Value) -> Ordering {
    let (a, b) = (plain(a), plain(b));
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (x, y) if ra == 2 => match (numeric_i64(x), numeric_i64(y)) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => {
                let f = |v: &Value| number(v).unwrap_or(f64::NAN);
                f(x).total_cmp(&f(y))
            }
        },
        (Value::Decimal(x), Value::Decimal(y)) => {
            cmp_twos_complement(&decimal_bytes(x), &decimal_bytes(y))
        }
        (Value::BigDecimal(x), Value::BigDecimal(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (Value::Fixed(_, x), Value::Fixed(_, y)) => x.cmp(y),
        (Value::Enum(x, _), Value::Enum(y, _)) => x.cmp(y),
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::TimeMillis(x), Value::TimeMillis(y)) => x.cmp(y),
        (Value::TimeMicros(x), Value::TimeMicros(y))
        | (Value::TimestampMillis(x), Value::TimestampMillis(y))
        | (Value::TimestampMicros(x), Value::TimestampMicros(y))
        | (Value::TimestampNanos(x), Value::TimestampNanos(y))
        | (Value::LocalTimestampMillis(x), Value::LocalTimestampMillis(y))
        | (Value::LocalTimestampMicros(x), Value::LocalTimestampMicros(y))
        | (Value::LocalTimestampNanos(x), Value::LocalTimestampNanos(y)) => x.cmp(y),
        (Value::Duration(x), Value::Duration(y)) => {
            let k = |d: &Duration| {
                (
                    u32::from(d.months()),
                    u32::from(d.days()),
                    u32::from(d.millis()),
                )
            };
            k(x).cmp(&k(y))
        }
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(p, q)| cmp_values(p, q))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Record(x), Value::Record(y)) => x
            .iter()
            .zip(y)
            .map(|((_, p), (_, q))| cmp_values(p, q))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        _ => Ordering::Equal,
    }
}

// --- Stable hash -------------------------------------------------------------------------

/// SipHash-2-4 (Aumasson & Bernstein) of `data` under a fixed key: the same 64 bits in
/// every process, build and platform, unlike `std`'s `RandomState`/`DefaultHasher` whose
/// algorithm and keys may change.
pub(crate) fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v0 = k0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k1 ^ 0x7465_6462_7974_6573;
    let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13);
        *v1 ^= *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16);
        *v3 ^= *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21);
        *v3 ^= *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17);
        *v1 ^= *v2;
        *v2 = v2.rotate_left(32);
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let m = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    let mut last = [0u8; 8];
    let rem = chunks.remainder();
    last[..rem.len()].copy_from_slice(rem);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v3 ^= m;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= m;
    v2 ^= 0xff;
    for _ in 0..4 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

/// The key of sluice's value hash. Changing it changes every stored distinct-count sketch's
/// meaning: never do.
const HASH_KEY: (u64, u64) = (0x736c_7569_6365_2d6f, 0x7073_2d64_6973_7463);

/// The stable 64-bit hash of a value's canonical bytes; `scratch` is reused between calls.
pub(crate) fn hash_value(v: &Value, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    canonical_bytes(v, scratch);
    siphash24(HASH_KEY.0, HASH_KEY.1, scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn round_trip(v: &Value) -> Value {
        let mut b = Vec::new();
        encode_value(v, &mut b);
        let mut r = Reader::new(&b, "value");
        let back = decode_value(&mut r).unwrap();
        r.finish().unwrap();
        back
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX / 2, u64::MAX] {
            let mut b = Vec::new();
            b.put_varint(v);
            assert_eq!(Reader::new(&b, "t").varint().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -64, 64] {
            let mut b = Vec::new();
            b.put_zigzag(v);
            assert_eq!(Reader::new(&b, "t").zigzag().unwrap(), v);
        }
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(from_ordered_i64(ordered_i64(v)), v);
        }
        assert!(ordered_i64(-1) < ordered_i64(0));
        assert!(ordered_i64(i64::MIN) < ordered_i64(-1));
    }

    #[test]
    fn every_value_variant_round_trips() {
        let mut map = HashMap::new();
        map.insert("b".to_string(), Value::Long(2));
        map.insert("a".to_string(), Value::Null);
        let values = vec![
            Value::Null,
            Value::Boolean(true),
            Value::Int(-7),
            Value::Long(i64::MIN),
            Value::Float(1.5),
            Value::Double(-0.0),
            Value::Bytes(vec![0, 255]),
            Value::String("grüße".into()),
            Value::Fixed(2, vec![1, 2]),
            Value::Enum(3, "HOT".into()),
            Value::Union(1, Box::new(Value::String("x".into()))),
            Value::Array(vec![Value::Int(1), Value::Null]),
            Value::Map(map),
            Value::Record(vec![("f".into(), Value::Double(2.5))]),
            Value::Date(-3),
            Value::Decimal(Decimal::from(vec![0xff, 0x38])),
            Value::BigDecimal("-12.3400".parse().unwrap()),
            Value::TimeMillis(5),
            Value::TimeMicros(6),
            Value::TimestampMillis(-7),
            Value::TimestampMicros(8),
            Value::TimestampNanos(9),
            Value::LocalTimestampMillis(10),
            Value::LocalTimestampMicros(11),
            Value::LocalTimestampNanos(12),
            Value::Duration(Duration::from([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0])),
            Value::Uuid(Uuid::from_bytes([7; 16])),
        ];
        for v in &values {
            assert_eq!(&round_trip(v), v, "{v:?}");
        }
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let mut b = Vec::new();
        encode_value(&Value::Array(vec![Value::String("abc".into()); 3]), &mut b);
        for cut in 0..b.len() {
            let mut r = Reader::new(&b[..cut], "value");
            assert!(decode_value(&mut r).is_err(), "cut at {cut}");
        }
        assert!(decode_value(&mut Reader::new(&[200], "value")).is_err());
        // A length claiming more than is there.
        assert!(decode_value(&mut Reader::new(&[tag::ARRAY, 0xff, 0xff, 0x7f], "v")).is_err());
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The SipHash paper's test vector: key 00..0f, message 00..0e.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(k0, k1, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn hashes_are_pinned() {
        // Changing these changes the meaning of every stored distinct-count sketch.
        let mut s = Vec::new();
        let a = hash_value(&Value::String("device-1".into()), &mut s);
        let b = hash_value(
            &Value::Union(1, Box::new(Value::String("device-1".into()))),
            &mut s,
        );
        assert_eq!(a, b);
        assert_eq!(
            hash_value(&Value::Int(5), &mut s),
            hash_value(&Value::Long(5), &mut s)
        );
        assert_eq!(
            hash_value(&Value::Double(0.0), &mut s),
            hash_value(&Value::Double(-0.0), &mut s)
        );
        assert_eq!(a, 0xe68f_b72c_9400_69c6, "got {a:#x}");
    }

    #[test]
    fn values_order_naturally() {
        use Ordering::*;
        let c = |a: Value, b: Value| cmp_values(&a, &b);
        assert_eq!(c(Value::Int(3), Value::Double(2.5)), Greater);
        assert_eq!(c(Value::Long(i64::MAX), Value::Long(i64::MAX - 1)), Greater);
        assert_eq!(
            c(Value::Double(f64::NAN), Value::Double(f64::INFINITY)),
            Greater
        );
        assert_eq!(
            c(Value::String("a".into()), Value::String("b".into())),
            Less
        );
        assert_eq!(
            c(
                Value::Decimal(Decimal::from(vec![0xff])),
                Value::Decimal(Decimal::from(vec![0x00, 0x01]))
            ),
            Less
        );
        assert_eq!(
            c(
                Value::Decimal(Decimal::from(vec![0x01, 0x00])),
                Value::Decimal(Decimal::from(vec![0x7f]))
            ),
            Greater
        );
        assert_eq!(
            c(
                Value::TimestampMillis(5),
                Value::Union(1, Box::new(Value::TimestampMillis(4)))
            ),
            Greater
        );
    }
}
