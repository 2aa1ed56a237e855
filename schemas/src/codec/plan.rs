//! Compiling Avro schema resolution into a flat list of operations, and running it.

use apache_avro::schema::Schema;
use serde_json::Value as Json;

use super::read::Cursor;
use super::{AvroRecord, DecodeError, Val};
use crate::kinds::{record_names_match, Kind, Names};

/// How a writer value becomes a reader value (the promotions Avro resolution allows).
#[derive(Debug, Clone, Copy)]
enum Conv {
    Null,
    Bool,
    Int,
    IntToLong,
    IntToFloat,
    IntToDouble,
    Long,
    LongToFloat,
    LongToDouble,
    Float,
    FloatToDouble,
    Double,
    /// A writer `string` or `bytes` read as a reader `string` (UTF-8 checked).
    Str,
    /// A writer `string` or `bytes` read as a reader `bytes`.
    Bytes,
}

/// How to step over a writer value the reader does not keep.
#[derive(Debug, Clone)]
enum Skip {
    Nothing,
    Varint,
    Fixed(usize),
    LenPrefixed,
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Vec<Skip>),
    Record(Vec<Skip>),
}

#[derive(Debug, Clone)]
enum Op {
    Read {
        slot: usize,
        conv: Conv,
    },
    /// A writer union read into a plain reader field: one conversion per writer branch,
    /// `None` where that branch cannot be read (an error only if such a record arrives).
    ReadUnion {
        slot: usize,
        branches: Vec<Option<Conv>>,
    },
    Skip(Skip),
}

/// A default value for a reader field the writer does not have.
#[derive(Debug, Clone)]
enum DefaultVal {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
}

/// The compiled resolution of one writer schema to one reader schema.
#[derive(Debug, Clone)]
pub struct Plan {
    ops: Vec<Op>,
    defaults: Vec<(usize, DefaultVal)>,
}

/// Nesting limit for skipping writer types; deeper (or recursive) writer schemas are refused.
const MAX_DEPTH: usize = 32;

impl Plan {
    /// Compiles the resolution of `writer` to `reader`. The reader must be a record whose
    /// fields are primitives (or logical types over them), as the structs in `records.rs` are.
    /// The error says which field fails and why.
    pub fn compile(writer: &Schema, reader: &Schema) -> Result<Plan, String> {
        let wn = Names::of(writer);
        let rn = Names::of(reader);
        let Kind::Record(r) = rn.kind(reader)? else {
            return Err("reader schema is not a record".into());
        };
        let Kind::Record(w) = wn.kind(writer)? else {
            return Err(format!(
                "writer schema is {}, not a record",
                wn.kind(writer)?.describe()
            ));
        };
        if !record_names_match(r, w) {
            return Err(format!(
                "writer record {} does not match reader record {} (names or aliases)",
                w.name.fullname(None),
                r.name.fullname(None)
            ));
        }
        let reader_kinds = r
            .fields
            .iter()
            .map(|f| rn.kind(&f.schema))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = vec![false; r.fields.len()];
        let mut ops = Vec::with_capacity(w.fields.len());
        for wf in &w.fields {
            let slot = r
                .fields
                .iter()
                .position(|rf| rf.name == wf.name || rf.aliases.contains(&wf.name));
            let op = match slot {
                Some(slot) => {
                    seen[slot] = true;
                    let rk = reader_kinds[slot];
                    match wn.kind(&wf.schema)? {
                        Kind::Union(u) => {
                            let branches = u
                                .variants()
                                .iter()
                                .map(|b| Ok(conv(wn.kind(b)?, rk)))
                                .collect::<Result<Vec<_>, String>>()?;
                            if branches.iter().all(Option::is_none) {
                                return Err(field_mismatch(&wf.name, "union", rk));
                            }
                            Op::ReadUnion { slot, branches }
                        }
                        wk => Op::Read {
                            slot,
                            conv: conv(wk, rk)
                                .ok_or_else(|| field_mismatch(&wf.name, &wk.describe(), rk))?,
                        },
                    }
                }
                None => Op::Skip(skip(&wn, &wf.schema, 0)?),
            };
            ops.push(op);
        }
        let mut defaults = Vec::new();
        for (slot, rf) in r.fields.iter().enumerate() {
            if seen[slot] {
                continue;
            }
            let Some(json) = &rf.default else {
                return Err(format!(
                    "reader field {} is missing from the writer and has no default",
                    rf.name
                ));
            };
            defaults.push((slot, default(&rf.name, json, reader_kinds[slot])?));
        }
        Ok(Plan { ops, defaults })
    }

    /// Decodes `body` into `out`. The whole body must be consumed: trailing bytes mean the
    /// header names the wrong schema.
    pub(crate) fn execute<T: AvroRecord>(
        &self,
        id: u32,
        body: &[u8],
        out: &mut T,
    ) -> Result<(), DecodeError> {
        let mut c = Cursor::new(body);
        for op in &self.ops {
            match op {
                Op::Read { slot, conv } => out.set(*slot, read(&mut c, *conv)?),
                Op::ReadUnion { slot, branches } => {
                    let idx = c.long()?;
                    let branch = usize::try_from(idx)
                        .ok()
                        .and_then(|i| branches.get(i))
                        .ok_or_else(|| {
                            DecodeError::InvalidBody(format!("union branch {idx} out of range"))
                        })?;
                    let conv = branch.ok_or_else(|| DecodeError::IncompatibleSchema {
                        id,
                        reason: format!("union branch {idx} cannot be read as the reader field"),
                    })?;
                    out.set(*slot, read(&mut c, conv)?);
                }
                Op::Skip(s) => skip_value(&mut c, s)?,
            }
        }
        for (slot, d) in &self.defaults {
            out.set(*slot, d.as_val());
        }
        if c.remaining() != 0 {
            return Err(DecodeError::InvalidBody(format!(
                "{} bytes left after the record",
                c.remaining()
            )));
        }
        Ok(())
    }
}

fn field_mismatch(field: &str, writer: &str, reader: Kind<'_>) -> String {
    format!(
        "field {field}: writer type {writer} cannot be read as {}",
        reader.describe()
    )
}

/// The conversion from a writer kind to a primitive reader kind, if Avro allows one.
fn conv(w: Kind<'_>, r: Kind<'_>) -> Option<Conv> {
    use Kind as K;
    Some(match (w, r) {
        (K::Null, K::Null) => Conv::Null,
        (K::Boolean, K::Boolean) => Conv::Bool,
        (K::Int, K::Int) => Conv::Int,
        (K::Int, K::Long) => Conv::IntToLong,
        (K::Int, K::Float) => Conv::IntToFloat,
        (K::Int, K::Double) => Conv::IntToDouble,
        (K::Long, K::Long) => Conv::Long,
        (K::Long, K::Float) => Conv::LongToFloat,
        (K::Long, K::Double) => Conv::LongToDouble,
        (K::Float, K::Float) => Conv::Float,
        (K::Float, K::Double) => Conv::FloatToDouble,
        (K::Double, K::Double) => Conv::Double,
        (K::String | K::Bytes, K::String) => Conv::Str,
        (K::String | K::Bytes, K::Bytes) => Conv::Bytes,
        _ => return None,
    })
}

#[inline]
fn read<'a>(c: &mut Cursor<'a>, conv: Conv) -> Result<Val<'a>, DecodeError> {
    Ok(match conv {
        Conv::Null => Val::Null,
        Conv::Bool => Val::Bool(c.boolean()?),
        Conv::Int => Val::Int(c.int()?),
        Conv::IntToLong => Val::Long(i64::from(c.int()?)),
        Conv::IntToFloat => Val::Float(c.int()? as f32),
        Conv::IntToDouble => Val::Double(f64::from(c.int()?)),
        Conv::Long => Val::Long(c.long()?),
        Conv::LongToFloat => Val::Float(c.long()? as f32),
        Conv::LongToDouble => Val::Double(c.long()? as f64),
        Conv::Float => Val::Float(c.float()?),
        Conv::FloatToDouble => Val::Double(f64::from(c.float()?)),
        Conv::Double => Val::Double(c.double()?),
        Conv::Str => Val::Str(c.str()?),
        Conv::Bytes => Val::Bytes(c.bytes()?),
    })
}

fn skip(names: &Names<'_>, schema: &Schema, depth: usize) -> Result<Skip, String> {
    if depth > MAX_DEPTH {
        return Err("writer schema nests too deeply (or is recursive) for the fast decoder".into());
    }
    Ok(match names.kind(schema)? {
        Kind::Null => Skip::Nothing,
        Kind::Boolean => Skip::Fixed(1),
        Kind::Int | Kind::Long | Kind::Enum(_) => Skip::Varint,
        Kind::Float => Skip::Fixed(4),
        Kind::Double => Skip::Fixed(8),
        Kind::Bytes | Kind::String => Skip::LenPrefixed,
        Kind::Fixed(f) => Skip::Fixed(f.size),
        Kind::Array(items) => Skip::Array(Box::new(skip(names, items, depth + 1)?)),
        Kind::Map(values) => Skip::Map(Box::new(skip(names, values, depth + 1)?)),
        Kind::Union(u) => Skip::Union(
            u.variants()
                .iter()
                .map(|v| skip(names, v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Kind::Record(r) => Skip::Record(
            r.fields
                .iter()
                .map(|f| skip(names, &f.schema, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
    })
}

impl Skip {
    /// Whether skipping this consumes no bytes, so a block of them needs no loop.
    fn is_empty(&self) -> bool {
        match self {
            Skip::Nothing => true,
            Skip::Fixed(n) => *n == 0,
            Skip::Record(fields) => fields.iter().all(Skip::is_empty),
            _ => false,
        }
    }
}

fn skip_value(c: &mut Cursor<'_>, s: &Skip) -> Result<(), DecodeError> {
    match s {
        Skip::Nothing => {}
        Skip::Varint => {
            c.long()?;
        }
        Skip::Fixed(n) => {
            c.take(*n, "fixed-size value")?;
        }
        Skip::LenPrefixed => {
            c.bytes()?;
        }
        Skip::Array(item) => skip_blocks(c, item, false)?,
        Skip::Map(value) => skip_blocks(c, value, true)?,
        Skip::Union(branches) => {
            let idx = c.long()?;
            let branch = usize::try_from(idx)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| {
                    DecodeError::InvalidBody(format!("union branch {idx} out of range"))
                })?;
            skip_value(c, branch)?;
        }
        Skip::Record(fields) => {
            for f in fields {
                skip_value(c, f)?;
            }
        }
    }
    Ok(())
}

fn skip_blocks(c: &mut Cursor<'_>, item: &Skip, is_map: bool) -> Result<(), DecodeError> {
    loop {
        let count = c.block_count()?;
        if count == 0 {
            return Ok(());
        }
        // Items that take no bytes (and have no map key) are skipped without looping, so a
        // forged count cannot keep us busy.
        if !is_map && item.is_empty() {
            continue;
        }
        for _ in 0..count {
            if is_map {
                c.bytes()?;
            }
            skip_value(c, item)?;
        }
    }
}

impl DefaultVal {
    fn as_val(&self) -> Val<'_> {
        match self {
            DefaultVal::Null => Val::Null,
            DefaultVal::Bool(b) => Val::Bool(*b),
            DefaultVal::Int(v) => Val::Int(*v),
            DefaultVal::Long(v) => Val::Long(*v),
            DefaultVal::Float(v) => Val::Float(*v),
            DefaultVal::Double(v) => Val::Double(*v),
            DefaultVal::Str(s) => Val::Str(s),
            DefaultVal::Bytes(b) => Val::Bytes(b),
        }
    }
}

fn default(field: &str, json: &Json, kind: Kind<'_>) -> Result<DefaultVal, String> {
    let bad = || {
        format!(
            "reader field {field}: default {json} does not fit {}",
            kind.describe()
        )
    };
    Ok(match (kind, json) {
        (Kind::Null, Json::Null) => DefaultVal::Null,
        (Kind::Boolean, Json::Bool(b)) => DefaultVal::Bool(*b),
        (Kind::Int, Json::Number(n)) => DefaultVal::Int(
            n.as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(bad)?,
        ),
        (Kind::Long, Json::Number(n)) => DefaultVal::Long(n.as_i64().ok_or_else(bad)?),
        (Kind::Float, Json::Number(n)) => DefaultVal::Float(n.as_f64().ok_or_else(bad)? as f32),
        (Kind::Double, Json::Number(n)) => DefaultVal::Double(n.as_f64().ok_or_else(bad)?),
        (Kind::String, Json::String(s)) => DefaultVal::Str(s.clone()),
        // Avro writes bytes defaults as strings of code points 0-255.
        (Kind::Bytes, Json::String(s)) => DefaultVal::Bytes(
            s.chars()
                .map(|ch| u8::try_from(u32::from(ch)).map_err(|_| bad()))
                .collect::<Result<_, _>>()?,
        ),
        (
            Kind::Union(_)
            | Kind::Record(_)
            | Kind::Array(_)
            | Kind::Map(_)
            | Kind::Enum(_)
            | Kind::Fixed(_),
            _,
        ) => {
            return Err(format!(
                "reader field {field}: type {} is not supported by the fast decoder",
                kind.describe()
            ))
        }
        _ => return Err(bad()),
    })
}
