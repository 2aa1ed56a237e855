//! The type of every field of an Avro record schema, addressed by name or dotted path.
//!
//! A topic's records are `Value::Record(Vec<(String, Value)>)` decoded with the topic's
//! (reader) schema, so the fields of every record come in the schema's order. A
//! [`RecordType`] is built once from that schema ([`RecordType::from_schema`]), a path such as
//! `power.volts` is resolved once into a [`FieldPath`] of positions ([`RecordType::resolve`]),
//! and [`FieldPath::get`] then walks positions per record: no name is looked up per record.
//!
//! Unions: `["null", T]` and `[T, "null"]` are `T` made nullable ([`FieldType::nullable`]).
//! Other unions (`["string", "long"]`, `["null", "string", "long"]`) are kept as
//! [`Type::Union`] so that the rest of the record stays usable: such a field can be carried
//! through to an output schema and tested with `IS NULL`, but not used as a value nor stepped
//! into.
//!
//! Recursive types (a record that contains itself, e.g. a linked list) are supported up to
//! the recursion: the inner occurrence is [`Type::Recursive`], which cannot be stepped into.
//!
//! Output schemas: [`record_schema`] writes a record schema for derived records (a `select`'s
//! output, window results) from `(name, FieldType)` pairs; nullable fields become
//! `["null", T]` with `"default": null`, logical types are kept, and named types keep their
//! names unless two different types would share one, in which case the later one is named
//! `<record>.<field>` (unnamed ones too). `RecordType::from_schema` of that schema gives the
//! same types back.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use apache_avro::schema::{Name, NamesRef, RecordField, ResolvedSchema, Schema};
use apache_avro::types::Value;
use apache_avro::Decimal;
use serde_json::{json, Map, Value as Json};

use crate::Problem;

/// The type of a value, from an Avro schema.
///
/// Logical types are their own variants (a `timestamp-millis` is [`Type::TimestampMillis`],
/// not [`Type::Long`]); named types keep their full names (`io.acme.Status`).
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    /// `"null"`: always null.
    Null,
    Boolean,
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    Long,
    Float,
    Double,
    String,
    Bytes,
    /// `fixed` of `size` bytes.
    Fixed {
        name: String,
        size: usize,
    },
    Enum {
        name: String,
        symbols: Vec<String>,
    },
    /// `decimal` logical type, on `bytes` or `fixed` (output schemas write `bytes`).
    Decimal {
        precision: usize,
        scale: usize,
    },
    /// `big-decimal` logical type (scale carried by each value).
    BigDecimal,
    /// `uuid` logical type (on `string`, or `fixed`/`bytes` of 16).
    Uuid,
    /// Days since 1970-01-01.
    Date,
    /// Milliseconds after midnight.
    TimeMillis,
    /// Microseconds after midnight.
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
    /// `duration` logical type (fixed of 12: months, days, milliseconds).
    Duration,
    Record(RecordType),
    /// Items.
    Array(Box<FieldType>),
    /// Values (keys are strings).
    Map(Box<FieldType>),
    /// A union other than `["null", T]`: its non-null branches (null-ness is in
    /// [`FieldType::nullable`]).
    Union(Vec<Type>),
    /// A reference back to an enclosing record of this full name (recursive types).
    Recursive(String),
}

/// A field's type: a [`Type`], possibly nullable (`["null", T]`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldType {
    pub ty: Type,
    pub nullable: bool,
}

/// A record type: its full name (`io.acme.Reading`) and its fields in schema order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordType {
    /// Full name, namespace included.
    pub name: String,
    pub doc: Option<String>,
    pub fields: Vec<Field>,
}

/// One field of a [`RecordType`].
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub doc: Option<String>,
}

/// A resolved path to a (possibly nested) field: the field's position at every step, and the
/// type of the value found there. Nullable if the field is, or if any record on the way is.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    path: String,
    positions: Vec<usize>,
    ty: FieldType,
}

impl Type {
    /// Int, long, float, double, decimal, big-decimal.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            Type::Int
                | Type::Long
                | Type::Float
                | Type::Double
                | Type::Decimal { .. }
                | Type::BigDecimal
        )
    }

    /// Timestamps (UTC or local, any unit) and dates: what [`timestamp_ms`] reads as an
    /// instant. A plain `long` is not timestamp-like, although `timestamp_ms` accepts it as
    /// milliseconds.
    pub fn is_timestamp_like(&self) -> bool {
        matches!(
            self,
            Type::Date
                | Type::TimestampMillis
                | Type::TimestampMicros
                | Type::TimestampNanos
                | Type::LocalTimestampMillis
                | Type::LocalTimestampMicros
                | Type::LocalTimestampNanos
        )
    }

    /// Not a record, array, map, union or recursive reference.
    pub fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Type::Record(_) | Type::Array(_) | Type::Map(_) | Type::Union(_) | Type::Recursive(_)
        )
    }

    /// A value of this type as a double: like [`as_f64`], and decimals scaled with this type's
    /// scale (see [`decimal_to_f64`] for their precision).
    pub fn as_f64(&self, v: &Value) -> Option<f64> {
        match (self, unwrap_union(v)) {
            (Type::Decimal { scale, .. }, Value::Decimal(d)) => decimal_to_f64(d, *scale),
            (_, v) => as_f64(v),
        }
    }

    /// The type's name as written in schemas and in messages: `double`, `timestamp-millis`,
    /// `decimal(10,3)`, `enum io.acme.Status`, `array of string`.
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Null => f.write_str("null"),
            Type::Boolean => f.write_str("boolean"),
            Type::Int => f.write_str("int"),
            Type::Long => f.write_str("long"),
            Type::Float => f.write_str("float"),
            Type::Double => f.write_str("double"),
            Type::String => f.write_str("string"),
            Type::Bytes => f.write_str("bytes"),
            Type::Fixed { name, size } => write!(f, "fixed {name} ({size} bytes)"),
            Type::Enum { name, .. } => write!(f, "enum {name}"),
            Type::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            Type::BigDecimal => f.write_str("big-decimal"),
            Type::Uuid => f.write_str("uuid"),
            Type::Date => f.write_str("date"),
            Type::TimeMillis => f.write_str("time-millis"),
            Type::TimeMicros => f.write_str("time-micros"),
            Type::TimestampMillis => f.write_str("timestamp-millis"),
            Type::TimestampMicros => f.write_str("timestamp-micros"),
            Type::TimestampNanos => f.write_str("timestamp-nanos"),
            Type::LocalTimestampMillis => f.write_str("local-timestamp-millis"),
            Type::LocalTimestampMicros => f.write_str("local-timestamp-micros"),
            Type::LocalTimestampNanos => f.write_str("local-timestamp-nanos"),
            Type::Duration => f.write_str("duration"),
            Type::Record(r) => write!(f, "record {}", r.name),
            Type::Array(items) => write!(f, "array of {items}"),
            Type::Map(values) => write!(f, "map of {values}"),
            Type::Union(branches) => {
                f.write_str("union of ")?;
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    b.describe(f)?;
                }
                Ok(())
            }
            Type::Recursive(name) => write!(f, "recursive reference to {name}"),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f)
    }
}

impl fmt::Display for FieldType {
    /// `double`, or `nullable double`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nullable && self.ty != Type::Null {
            f.write_str("nullable ")?;
        }
        self.ty.describe(f)
    }
}

impl FieldType {
    pub fn new(ty: Type, nullable: bool) -> Self {
        FieldType { ty, nullable }
    }

    /// Not nullable.
    pub fn required(ty: Type) -> Self {
        FieldType {
            ty,
            nullable: false,
        }
    }

    /// Nullable (`["null", T]`).
    pub fn optional(ty: Type) -> Self {
        FieldType { ty, nullable: true }
    }

    /// The Avro schema of this type as JSON (`"double"`, `["null", "double"]`,
    /// `{"type": "long", "logicalType": "timestamp-millis"}`, ...). Named types keep their
    /// names; unnamed ones (built by hand) are named `sluice.generated.<kind>`. Use
    /// [`record_schema`] for a whole record, where names are made unique.
    pub fn to_schema_json(&self) -> Json {
        Namer::default().field_type(self, "sluice.generated", "value")
    }

    /// A value of this type as a double (decimals scaled): see [`Type::as_f64`].
    pub fn as_f64(&self, v: &Value) -> Option<f64> {
        self.ty.as_f64(v)
    }
}

impl Field {
    pub fn new(name: impl Into<String>, ty: FieldType) -> Self {
        Field {
            name: name.into(),
            ty,
            doc: None,
        }
    }
}

impl RecordType {
    /// The record type of a record schema, with named references (`Schema::Ref`) resolved
    /// within the schema.
    pub fn from_schema(schema: &Schema) -> Result<RecordType, Problem> {
        let resolved = ResolvedSchema::try_from(schema).map_err(|e| {
            Problem::new(
                "",
                format!("the schema has unresolved or duplicate named types: {e}"),
                "define every named type (record, enum, fixed) once in the schema, before its first use",
            )
        })?;
        let mut conv = Converter {
            names: resolved.get_names(),
            namespaces: Vec::new(),
            stack: Vec::new(),
        };
        match conv.ty(schema)? {
            FieldType {
                ty: Type::Record(r),
                ..
            } => Ok(r),
            other => Err(Problem::new(
                "",
                format!("the schema is {other}, not a record"),
                "operators work on streams of records: give the topic a record schema",
            )),
        }
    }

    /// The field named `name` and its position.
    pub fn field(&self, name: &str) -> Option<(usize, &Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }

    /// The field names, in order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.fields.iter().map(|f| f.name.as_str())
    }

    /// The dotted paths of every field, nested records' included, whose type (nullable when
    /// a record on the way is) `keep` accepts, in schema order: for fixes in messages.
    pub fn field_paths(&self, keep: impl Fn(&FieldType) -> bool) -> Vec<String> {
        fn walk(
            r: &RecordType,
            prefix: &str,
            nullable: bool,
            keep: &dyn Fn(&FieldType) -> bool,
            out: &mut Vec<String>,
        ) {
            for f in &r.fields {
                let path = format!("{prefix}{}", f.name);
                let ty = FieldType::new(f.ty.ty.clone(), nullable || f.ty.nullable);
                if keep(&ty) {
                    out.push(path.clone());
                }
                if let Type::Record(inner) = &f.ty.ty {
                    walk(inner, &format!("{path}."), ty.nullable, keep, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, "", false, &keep, &mut out);
        out
    }

    /// Resolves `a`, or `a.b.c` through nested (possibly nullable) records.
    pub fn resolve(&self, path: &str) -> Result<FieldPath, Problem> {
        let parts: Vec<&str> = path.split('.').collect();
        self.resolve_parts(&parts)
    }

    /// Resolves a path given as separate names (for quoted names that contain dots:
    /// `"a.b"` is one name).
    pub fn resolve_parts<S: AsRef<str>>(&self, parts: &[S]) -> Result<FieldPath, Problem> {
        let full: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
        let display = full.join(".");
        if full.is_empty() || full.iter().any(|p| p.is_empty()) {
            return Err(Problem::new(
                "",
                format!("`{display}` is not a field name: a name is empty"),
                format!(
                    "name a field, e.g. `{}`",
                    self.fields.first().map_or("a.b", |f| &f.name)
                ),
            ));
        }
        let mut record = self;
        let mut positions = Vec::with_capacity(full.len());
        let mut nullable = false;
        let mut ty: Option<&FieldType> = None;
        for (i, part) in full.iter().enumerate() {
            if let Some(prev) = ty {
                let so_far = full[..i].join(".");
                match &prev.ty {
                    Type::Record(r) => record = r,
                    Type::Recursive(name) => {
                        return Err(Problem::new(
                            "",
                            format!("`{so_far}` refers back to the enclosing record {name}; it has no field `{part}` that can be addressed"),
                            "paths through recursive types are not supported",
                        ))
                    }
                    other => {
                        return Err(Problem::new(
                            "",
                            format!("`{so_far}` is {}, not a record; it has no field `{part}`", a_or_an(other)),
                            not_a_record_fix(other, &so_far),
                        ))
                    }
                }
            }
            let Some((pos, field)) = record.field(part) else {
                let here = if i == 0 {
                    record.name.clone()
                } else {
                    format!("`{}` ({})", full[..i].join("."), record.name)
                };
                return Err(Problem::new(
                    "",
                    format!("no field `{part}` in {here}"),
                    unknown_field_fix(part, record),
                ));
            };
            positions.push(pos);
            nullable |= field.ty.nullable;
            ty = Some(&field.ty);
        }
        let ty = ty.map_or_else(
            || FieldType::optional(Type::Null),
            |t| FieldType::new(t.ty.clone(), nullable),
        );
        Ok(FieldPath {
            path: display,
            positions,
            ty,
        })
    }

    /// The record's Avro schema ([`record_schema`] of its fields, docs kept).
    pub fn to_schema(&self) -> Result<Schema, Problem> {
        parse_schema(&self.to_schema_json())
    }

    /// The record's Avro schema as JSON.
    pub fn to_schema_json(&self) -> Json {
        let mut namer = Namer::default();
        namer.record(self, "", "")
    }
}

pub fn a_or_an(ty: &impl fmt::Display) -> String {
    let s = ty.to_string();
    match s.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {s}"),
        _ => format!("a {s}"),
    }
}

fn not_a_record_fix(ty: &Type, path: &str) -> String {
    match ty {
        Type::Array(_) => format!("`{path}` is an array: address an element, e.g. `{path}[1]`"),
        Type::Map(_) => format!("`{path}` is a map: read an entry, e.g. `{path}['key']`"),
        Type::Union(_) => "only [\"null\", record] unions can be stepped into".to_string(),
        _ => format!("use `{path}` itself"),
    }
}

/// "did you mean `temperature`? fields: device_id, temperature, ..."
fn unknown_field_fix(name: &str, record: &RecordType) -> String {
    let list = name_list(record.field_names());
    match did_you_mean(name, record.field_names()) {
        Some(s) => format!("did you mean `{s}`? fields: {list}"),
        None => format!("fields: {list}"),
    }
}

/// At most 30 names, comma-separated, and how many more.
pub(crate) fn name_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    let mut out = names
        .iter()
        .take(30)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 30 {
        out.push_str(&format!(", ... ({} more)", names.len() - 30));
    }
    out
}

/// The candidate closest to `name`, if it is close enough to be a likely typo: the same name
/// in another case, or a Damerau-Levenshtein distance of at most a third of the name (at
/// least 1), or one a prefix of the other (3 characters at least: `temp` for
/// `temperature`), or a Jaro-Winkler similarity of 0.9 or more.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = name.to_lowercase();
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let cl = c.to_lowercase();
        let score = if cl == lower {
            2.0
        } else {
            let dist = strsim::damerau_levenshtein(&lower, &cl);
            let max_dist = (lower.chars().count().max(cl.chars().count()) / 3).max(1);
            let jw = strsim::jaro_winkler(&lower, &cl);
            if dist <= max_dist {
                1.0 + jw / 2.0
            } else if lower.chars().count() >= 3
                && (cl.starts_with(&lower) || lower.starts_with(&cl))
            {
                0.95 + jw / 100.0
            } else if jw >= 0.9 {
                jw
            } else {
                continue;
            }
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

struct Converter<'s> {
    names: &'s NamesRef<'s>,
    /// Namespaces of the enclosing named types, innermost last.
    namespaces: Vec<Option<String>>,
    /// Full names of the records being converted (to spot recursion).
    stack: Vec<String>,
}

impl<'s> Converter<'s> {
    fn lookup(&self, name: &Name) -> Result<&'s Schema, Problem> {
        if let Some(s) = self.names.get(name) {
            return Ok(s);
        }
        // apache-avro registers a type defined without a namespace inside a namespaced one
        // under the enclosing namespace, while references keep the bare name.
        let enclosing = self.namespaces.last().and_then(|n| n.as_deref());
        self.names
            .get(name.fully_qualified_name(enclosing).as_ref())
            .copied()
            .ok_or_else(|| {
                Problem::new(
                    "",
                    format!(
                        "the schema refers to type {}, which it does not define",
                        name.fullname(None)
                    ),
                    "define the named type in the schema before its first use",
                )
            })
    }

    fn ty(&mut self, schema: &Schema) -> Result<FieldType, Problem> {
        let ty = match schema {
            Schema::Null => return Ok(FieldType::optional(Type::Null)),
            Schema::Boolean => Type::Boolean,
            Schema::Int => Type::Int,
            Schema::Long => Type::Long,
            Schema::Float => Type::Float,
            Schema::Double => Type::Double,
            Schema::Bytes => Type::Bytes,
            Schema::String => Type::String,
            Schema::Array(a) => Type::Array(Box::new(self.ty(&a.items)?)),
            Schema::Map(m) => Type::Map(Box::new(self.ty(&m.types)?)),
            Schema::Union(u) => {
                let mut nullable = false;
                let mut branches = Vec::new();
                for b in u.variants() {
                    let t = self.ty(b)?;
                    if t.ty == Type::Null {
                        nullable = true;
                    } else {
                        nullable |= t.nullable;
                        branches.push(t.ty);
                    }
                }
                return Ok(match branches.len() {
                    0 => FieldType::optional(Type::Null),
                    1 => FieldType::new(branches.remove(0), nullable),
                    _ => FieldType::new(Type::Union(branches), nullable),
                });
            }
            Schema::Record(r) => {
                let name = r.name.fullname(None);
                self.stack.push(name.clone());
                self.namespaces.push(r.name.namespace().map(str::to_string));
                let fields = r
                    .fields
                    .iter()
                    .map(|f: &RecordField| {
                        Ok(Field {
                            name: f.name.clone(),
                            ty: self.ty(&f.schema)?,
                            doc: f.doc.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, Problem>>();
                self.stack.pop();
                self.namespaces.pop();
                Type::Record(RecordType {
                    name,
                    doc: r.doc.clone(),
                    fields: fields?,
                })
            }
            Schema::Enum(e) => Type::Enum {
                name: e.name.fullname(None),
                symbols: e.symbols.clone(),
            },
            Schema::Fixed(f) => Type::Fixed {
                name: f.name.fullname(None),
                size: f.size,
            },
            Schema::Decimal(d) => Type::Decimal {
                precision: d.precision,
                scale: d.scale,
            },
            Schema::BigDecimal => Type::BigDecimal,
            Schema::Uuid(_) => Type::Uuid,
            Schema::Date => Type::Date,
            Schema::TimeMillis => Type::TimeMillis,
            Schema::TimeMicros => Type::TimeMicros,
            Schema::TimestampMillis => Type::TimestampMillis,
            Schema::TimestampMicros => Type::TimestampMicros,
            Schema::TimestampNanos => Type::TimestampNanos,
            Schema::LocalTimestampMillis => Type::LocalTimestampMillis,
            Schema::LocalTimestampMicros => Type::LocalTimestampMicros,
            Schema::LocalTimestampNanos => Type::LocalTimestampNanos,
            Schema::Duration(_) => Type::Duration,
            Schema::Ref { name } => {
                let full = name.fullname(None);
                if self.stack.contains(&full) {
                    Type::Recursive(full)
                } else {
                    let target = self.lookup(name)?;
                    return self.ty(target);
                }
            }
        };
        Ok(FieldType::required(ty))
    }
}

impl FieldPath {
    /// The dotted path as written (`power.volts`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The field's position in its record at every step.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// The type found at the end of the path; nullable if any step is.
    pub fn ty(&self) -> &FieldType {
        &self.ty
    }

    /// The value at the end of the path, unions unwrapped; `None` when it or any record on
    /// the way is null, or when the record does not have the shape of the schema the path was
    /// resolved against (never panics).
    #[inline]
    pub fn get<'a>(&self, rec: &'a Value) -> Option<&'a Value> {
        let mut cur = rec;
        for &pos in &self.positions {
            match unwrap_union(cur) {
                Value::Record(fields) => cur = &fields.get(pos)?.1,
                _ => return None,
            }
        }
        match unwrap_union(cur) {
            Value::Null => None,
            v => Some(v),
        }
    }

    /// The value as a double, decimals scaled with the schema's scale: [`Type::as_f64`].
    #[inline]
    pub fn get_f64(&self, rec: &Value) -> Option<f64> {
        self.ty.ty.as_f64(self.get(rec)?)
    }
}

/// The value inside a union (`Value::Union(_, inner)`), or the value itself.
#[inline]
pub fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        v => v,
    }
}

/// A numeric value as a double: int, long, float, double (unions unwrapped); big-decimal
/// (rounded to the nearest double).
///
/// `Value::Decimal` gives `None`: its scale is in the schema, not in the value. Read decimals
/// with [`FieldPath::get_f64`] or [`Type::as_f64`], which know the scale ([`decimal_to_f64`]).
#[inline]
pub fn as_f64(v: &Value) -> Option<f64> {
    match unwrap_union(v) {
        Value::Int(i) => Some(f64::from(*i)),
        Value::Long(l) => Some(*l as f64),
        Value::Float(f) => Some(f64::from(*f)),
        Value::Double(d) => Some(*d),
        Value::BigDecimal(b) => b.to_string().parse().ok(),
        _ => None,
    }
}

/// A decimal's value as a double, given the schema's scale. Exact (the nearest double to the
/// decimal) when the unscaled integer has at most 15 digits (`precision <= 15`) and
/// `scale <= 22`; otherwise within a couple of ulps. Allocates: `apache_avro::Decimal` only
/// lends its bytes through a copy.
pub fn decimal_to_f64(d: &Decimal, scale: usize) -> Option<f64> {
    let bytes: Vec<u8> = Vec::try_from(d).ok()?;
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    // Drop sign-extension bytes (0x00 or 0xFF repeating the sign) beyond 16.
    let fill = if negative { 0xFF } else { 0 };
    let mut bytes = bytes.as_slice();
    while bytes.len() > 16 && bytes[0] == fill && (bytes[1] & 0x80 != 0) == negative {
        bytes = &bytes[1..];
    }
    let unscaled = if bytes.len() <= 16 {
        let mut buf = [fill; 16];
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        i128::from_be_bytes(buf) as f64
    } else {
        // Two's complement: a negative value is -(!bits + 1).
        let flip = if negative { 0xFF } else { 0 };
        let magnitude = bytes
            .iter()
            .fold(0.0f64, |acc, b| acc * 256.0 + f64::from(b ^ flip));
        if negative {
            -(magnitude + 1.0)
        } else {
            magnitude
        }
    };
    let scale = i32::try_from(scale).ok()?;
    let v = if scale <= 22 {
        unscaled / 10f64.powi(scale)
    } else {
        unscaled / 10f64.powi(22) / 10f64.powi(scale - 22)
    };
    v.is_finite().then_some(v)
}

/// An integer value: int or long (unions unwrapped).
#[inline]
pub fn as_i64(v: &Value) -> Option<i64> {
    match unwrap_union(v) {
        Value::Int(i) => Some(i64::from(*i)),
        Value::Long(l) => Some(*l),
        _ => None,
    }
}

/// A textual value: string, enum symbol (both borrowed), uuid (formatted, so owned); unions
/// unwrapped.
#[inline]
pub fn as_str(v: &Value) -> Option<Cow<'_, str>> {
    match unwrap_union(v) {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Enum(_, s) => Some(Cow::Borrowed(s)),
        Value::Uuid(u) => Some(Cow::Owned(u.to_string())),
        _ => None,
    }
}

/// An instant as milliseconds since the epoch (unions unwrapped): timestamp-millis;
/// timestamp-micros and -nanos rounded down to the millisecond; local-timestamp-* the same
/// way (as if UTC); date as its midnight (days × 86 400 000); a plain long as milliseconds.
#[inline]
pub fn timestamp_ms(v: &Value) -> Option<i64> {
    match unwrap_union(v) {
        Value::TimestampMillis(t) | Value::LocalTimestampMillis(t) | Value::Long(t) => Some(*t),
        Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => Some(t.div_euclid(1_000)),
        Value::TimestampNanos(t) | Value::LocalTimestampNanos(t) => Some(t.div_euclid(1_000_000)),
        Value::Date(d) => Some(i64::from(*d) * 86_400_000),
        _ => None,
    }
}

/// The Avro schema of a derived record named `full_name` (e.g. `io.acme.ReadingSummary`) with
/// these fields, in order: nullable fields as `["null", T]` with `"default": null`, logical
/// types kept, named types unique (see the module docs).
///
/// Errs when a name is not a valid Avro name or a field name repeats: derived field names come
/// from the user (aliases), so this is a mistake to report, not a bug.
pub fn record_schema(full_name: &str, fields: &[(String, FieldType)]) -> Result<Schema, Problem> {
    parse_schema(&record_schema_json(full_name, fields)?)
}

/// [`record_schema`] as JSON (for a schema registry).
pub fn record_schema_json(
    full_name: &str,
    fields: &[(String, FieldType)],
) -> Result<Json, Problem> {
    check_full_name(full_name)?;
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for (name, _) in fields {
        check_name(name)?;
        if seen.insert(name.as_str(), ()).is_some() {
            return Err(Problem::new(
                "",
                format!("field `{name}` appears twice in {full_name}"),
                "give every output field a distinct name",
            ));
        }
    }
    let record = RecordType {
        name: full_name.to_string(),
        doc: None,
        fields: fields
            .iter()
            .map(|(n, t)| Field::new(n.clone(), t.clone()))
            .collect(),
    };
    Ok(Namer::default().record(&record, "", ""))
}

/// Checks an Avro name (`[A-Za-z_][A-Za-z0-9_]*`), e.g. an output field name.
pub fn check_name(name: &str) -> Result<(), Problem> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            "",
            format!("`{name}` is not a valid Avro name"),
            "use letters, digits and underscores, not starting with a digit (e.g. `avg_temperature`)",
        ))
    }
}

/// Checks a full name (`io.acme.Reading`): dot-separated Avro names.
pub fn check_full_name(name: &str) -> Result<(), Problem> {
    for part in name.split('.') {
        check_name(part).map_err(|_| {
            Problem::new(
                "",
                format!("`{name}` is not a valid Avro full name"),
                "use dot-separated names of letters, digits and underscores, e.g. `io.acme.ReadingSummary`",
            )
        })?;
    }
    Ok(())
}

fn parse_schema(json: &Json) -> Result<Schema, Problem> {
    Schema::parse(json).map_err(|e| {
        Problem::new(
            "",
            format!("the derived schema is not valid Avro: {e}"),
            "rename the output fields with letters, digits and underscores",
        )
    })
}

/// Writes types as schema JSON, giving every named type one definition.
#[derive(Default)]
struct Namer {
    /// Full name → the type defined under it.
    defined: HashMap<String, Type>,
}

impl Namer {
    /// A unique name for a named type: its own name if free (or already defined as the very
    /// same type: then `None`, reference it), else `<parent>.<field>` (suffixed if need be).
    fn name_for(
        &mut self,
        ty: &Type,
        own: &str,
        parent: &str,
        field: &str,
    ) -> Result<String, String> {
        if !own.is_empty() {
            match self.defined.get(own) {
                None => {
                    self.defined.insert(own.to_string(), ty.clone());
                    return Ok(own.to_string());
                }
                Some(t) if t == ty => return Err(own.to_string()),
                Some(_) => {}
            }
        }
        let base = if parent.is_empty() {
            format!(
                "sluice.generated.{}",
                if field.is_empty() { "type" } else { field }
            )
        } else {
            format!("{parent}.{}", if field.is_empty() { "type" } else { field })
        };
        let mut candidate = base.clone();
        let mut n = 2;
        loop {
            match self.defined.get(&candidate) {
                None => {
                    self.defined.insert(candidate.clone(), ty.clone());
                    return Ok(candidate);
                }
                Some(t) if t == ty => return Err(candidate),
                Some(_) => {
                    candidate = format!("{base}_{n}");
                    n += 1;
                }
            }
        }
    }

    fn field_type(&mut self, ft: &FieldType, parent: &str, field: &str) -> Json {
        let inner = self.ty(&ft.ty, parent, field);
        match (&ft.ty, ft.nullable) {
            (Type::Null, _) => inner,
            (Type::Union(_), true) => {
                let mut branches = vec![json!("null")];
                if let Json::Array(b) = inner {
                    branches.extend(b);
                }
                Json::Array(branches)
            }
            (_, true) => json!(["null", inner]),
            (_, false) => inner,
        }
    }

    fn record(&mut self, r: &RecordType, parent: &str, field: &str) -> Json {
        let name = match self.name_for(&Type::Record(r.clone()), &r.name, parent, field) {
            Ok(n) => n,
            Err(existing) => return json!(full_name_ref(&existing)),
        };
        let fields: Vec<Json> = r
            .fields
            .iter()
            .map(|f| {
                let mut obj = Map::new();
                obj.insert("name".into(), json!(f.name));
                obj.insert("type".into(), self.field_type(&f.ty, &name, &f.name));
                if let Some(doc) = &f.doc {
                    obj.insert("doc".into(), json!(doc));
                }
                if f.ty.nullable || f.ty.ty == Type::Null {
                    obj.insert("default".into(), Json::Null);
                }
                Json::Object(obj)
            })
            .collect();
        let mut obj = named("record", &name);
        if let Some(doc) = &r.doc {
            obj.insert("doc".into(), json!(doc));
        }
        obj.insert("fields".into(), Json::Array(fields));
        Json::Object(obj)
    }

    fn ty(&mut self, ty: &Type, parent: &str, field: &str) -> Json {
        let logical = |base: &str, lt: &str| json!({"type": base, "logicalType": lt});
        match ty {
            Type::Null => json!("null"),
            Type::Boolean => json!("boolean"),
            Type::Int => json!("int"),
            Type::Long => json!("long"),
            Type::Float => json!("float"),
            Type::Double => json!("double"),
            Type::String => json!("string"),
            Type::Bytes => json!("bytes"),
            Type::Fixed { name, size } => match self.name_for(ty, name, parent, field) {
                Ok(n) => {
                    let mut obj = named("fixed", &n);
                    obj.insert("size".into(), json!(size));
                    Json::Object(obj)
                }
                Err(n) => json!(full_name_ref(&n)),
            },
            Type::Enum { name, symbols } => match self.name_for(ty, name, parent, field) {
                Ok(n) => {
                    let mut obj = named("enum", &n);
                    obj.insert("symbols".into(), json!(symbols));
                    Json::Object(obj)
                }
                Err(n) => json!(full_name_ref(&n)),
            },
            Type::Decimal { precision, scale } => json!({
                "type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale
            }),
            Type::BigDecimal => logical("bytes", "big-decimal"),
            Type::Uuid => logical("string", "uuid"),
            Type::Date => logical("int", "date"),
            Type::TimeMillis => logical("int", "time-millis"),
            Type::TimeMicros => logical("long", "time-micros"),
            Type::TimestampMillis => logical("long", "timestamp-millis"),
            Type::TimestampMicros => logical("long", "timestamp-micros"),
            Type::TimestampNanos => logical("long", "timestamp-nanos"),
            Type::LocalTimestampMillis => logical("long", "local-timestamp-millis"),
            Type::LocalTimestampMicros => logical("long", "local-timestamp-micros"),
            Type::LocalTimestampNanos => logical("long", "local-timestamp-nanos"),
            Type::Duration => match self.name_for(ty, "", parent, field) {
                Ok(n) => {
                    let mut obj = named("fixed", &n);
                    obj.insert("size".into(), json!(12));
                    obj.insert("logicalType".into(), json!("duration"));
                    Json::Object(obj)
                }
                Err(n) => json!(full_name_ref(&n)),
            },
            Type::Record(r) => self.record(r, parent, field),
            Type::Array(items) => {
                json!({"type": "array", "items": self.field_type(items, parent, field)})
            }
            Type::Map(values) => {
                json!({"type": "map", "values": self.field_type(values, parent, field)})
            }
            Type::Union(branches) => Json::Array(
                branches
                    .iter()
                    .enumerate()
                    .map(|(i, b)| self.ty(b, parent, &format!("{field}_{i}")))
                    .collect(),
            ),
            Type::Recursive(name) => json!(full_name_ref(name)),
        }
    }
}

/// `{"type": kind, "name": name}`, with an explicitly empty namespace for names without one
/// (so that they do not inherit the enclosing record's namespace).
fn named(kind: &str, full_name: &str) -> Map<String, Json> {
    let mut obj = Map::new();
    obj.insert("type".into(), json!(kind));
    obj.insert("name".into(), json!(full_name));
    if !full_name.contains('.') {
        obj.insert("namespace".into(), json!(""));
    }
    obj
}

/// A reference to a defined name; names without a namespace get a leading dot so that they
/// are not read in the enclosing namespace.
fn full_name_ref(full_name: &str) -> String {
    if full_name.contains('.') {
        full_name.to_string()
    } else {
        format!(".{full_name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READING: &str = r#"{
      "type": "record", "name": "Reading", "namespace": "io.acme", "doc": "one measurement",
      "fields": [
        {"name": "device_id", "type": "string", "doc": "the meter"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "site", "type": ["null", "string"], "default": null},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OK", "WARN", "ALARM"]}},
        {"name": "power", "type": {"type": "record", "name": "Power", "fields": [
          {"name": "watts", "type": "double"},
          {"name": "volts", "type": ["null", "double"], "default": null}
        ]}},
        {"name": "location", "type": ["null", {"type": "record", "name": "Location", "fields": [
          {"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}
        ]}], "default": null},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "string"}},
        {"name": "energy_kwh", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3}},
        {"name": "seq", "type": "long"},
        {"name": "backup", "type": ["null", "Power"], "default": null},
        {"name": "prev_status", "type": "Status"},
        {"name": "mac", "type": {"type": "fixed", "name": "Mac", "size": 6}},
        {"name": "mac2", "type": ["Mac", "null"]},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "either", "type": ["null", "string", "long"]}
      ]}"#;

    fn reading() -> RecordType {
        RecordType::from_schema(&Schema::parse_str(READING).unwrap()).unwrap()
    }

    #[test]
    fn from_schema_resolves_names_unions_and_logical_types() {
        let r = reading();
        assert_eq!(r.name, "io.acme.Reading");
        assert_eq!(r.doc.as_deref(), Some("one measurement"));
        assert_eq!(r.fields[0].doc.as_deref(), Some("the meter"));
        let ty = |p: &str| r.resolve(p).unwrap().ty().clone();
        assert_eq!(ty("ts"), FieldType::required(Type::TimestampMillis));
        assert_eq!(ty("site"), FieldType::optional(Type::String));
        assert_eq!(
            ty("status"),
            FieldType::required(Type::Enum {
                name: "io.acme.Status".into(),
                symbols: vec!["OK".into(), "WARN".into(), "ALARM".into()]
            })
        );
        assert_eq!(ty("prev_status"), ty("status"));
        assert_eq!(ty("power.volts"), FieldType::optional(Type::Double));
        assert_eq!(
            ty("backup.watts"),
            FieldType::optional(Type::Double),
            "optional record makes its fields nullable"
        );
        assert_eq!(ty("location.lat"), FieldType::optional(Type::Double));
        assert_eq!(
            ty("energy_kwh"),
            FieldType::required(Type::Decimal {
                precision: 10,
                scale: 3
            })
        );
        assert_eq!(
            ty("mac2"),
            FieldType::optional(Type::Fixed {
                name: "io.acme.Mac".into(),
                size: 6
            })
        );
        assert_eq!(ty("id"), FieldType::required(Type::Uuid));
        assert_eq!(ty("day"), FieldType::required(Type::Date));
        assert_eq!(
            ty("either"),
            FieldType::optional(Type::Union(vec![Type::String, Type::Long]))
        );
        assert_eq!(
            ty("tags"),
            FieldType::required(Type::Array(Box::new(FieldType::required(Type::String))))
        );
        assert_eq!(r.resolve("location.lon").unwrap().positions(), &[5, 1]);
        assert!(Type::Decimal {
            precision: 1,
            scale: 0
        }
        .is_numeric());
        assert!(Type::Date.is_timestamp_like() && !Type::Long.is_timestamp_like());
    }

    #[test]
    fn resolve_explains_mistakes() {
        let r = reading();
        let e = r.resolve("sequ").unwrap_err();
        assert_eq!(e.message, "no field `sequ` in io.acme.Reading");
        assert!(
            e.fix
                .starts_with("did you mean `seq`? fields: device_id, ts, site, status,"),
            "{}",
            e.fix
        );
        let e = r.resolve("zzzzzz").unwrap_err();
        assert!(
            e.fix.starts_with("fields: device_id"),
            "no suggestion when nothing is close: {}",
            e.fix
        );
        let e = r.resolve("power.wats").unwrap_err();
        assert_eq!(e.message, "no field `wats` in `power` (io.acme.Power)");
        assert_eq!(e.fix, "did you mean `watts`? fields: watts, volts");
        let e = r.resolve("power.watts.x").unwrap_err();
        assert_eq!(
            e.message,
            "`power.watts` is a double, not a record; it has no field `x`"
        );
        let e = r.resolve("attrs.room").unwrap_err();
        assert_eq!(
            e.message,
            "`attrs` is a map of string, not a record; it has no field `room`"
        );
        assert!(e.fix.contains("attrs['key']"), "{}", e.fix);
        assert!(r.resolve("").is_err() && r.resolve("power..watts").is_err());
        assert_eq!(
            r.resolve_parts(&["power", "watts"]).unwrap().path(),
            "power.watts"
        );
    }

    #[test]
    fn get_walks_positions_and_nulls() {
        let r = reading();
        let rec = Value::Record(vec![
            ("device_id".into(), Value::String("pm-1".into())),
            ("ts".into(), Value::TimestampMillis(5)),
            ("site".into(), Value::Union(0, Box::new(Value::Null))),
            ("status".into(), Value::Enum(2, "ALARM".into())),
            (
                "power".into(),
                Value::Record(vec![
                    ("watts".into(), Value::Double(1.5)),
                    (
                        "volts".into(),
                        Value::Union(1, Box::new(Value::Double(230.0))),
                    ),
                ]),
            ),
            ("location".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        assert_eq!(
            r.resolve("power.volts").unwrap().get(&rec),
            Some(&Value::Double(230.0))
        );
        assert_eq!(r.resolve("site").unwrap().get(&rec), None);
        assert_eq!(
            r.resolve("location.lat").unwrap().get(&rec),
            None,
            "null record on the way"
        );
        assert_eq!(
            r.resolve("seq").unwrap().get(&rec),
            None,
            "short record: no panic"
        );
        assert_eq!(
            r.resolve("power.watts").unwrap().get(&Value::Long(3)),
            None,
            "not a record"
        );
        assert_eq!(
            as_str(r.resolve("status").unwrap().get(&rec).unwrap()).as_deref(),
            Some("ALARM")
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(as_f64(&Value::Union(1, Box::new(Value::Int(3)))), Some(3.0));
        assert_eq!(
            as_f64(&Value::Decimal(Decimal::from(vec![0x30, 0x39]))),
            None
        );
        let d = Decimal::from(12_345i64.to_be_bytes());
        assert_eq!(decimal_to_f64(&d, 3), Some(12.345));
        let neg = Decimal::from((-12_345i64).to_be_bytes());
        assert_eq!(decimal_to_f64(&neg, 3), Some(-12.345));
        assert_eq!(decimal_to_f64(&Decimal::from(vec![0xFF]), 0), Some(-1.0));
        let mut big = vec![0u8; 20];
        big[19] = 1;
        assert_eq!(decimal_to_f64(&Decimal::from(big), 0), Some(1.0));
        let mut big_neg = vec![0xFFu8; 20];
        big_neg[19] = 0xFE;
        assert_eq!(decimal_to_f64(&Decimal::from(big_neg), 0), Some(-2.0));
        let t = Type::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(
            t.as_f64(&Value::Decimal(Decimal::from(vec![0x01, 0x00]))),
            Some(2.56)
        );
        assert_eq!(timestamp_ms(&Value::TimestampMicros(-1)), Some(-1));
        assert_eq!(timestamp_ms(&Value::Date(1)), Some(86_400_000));
        assert_eq!(timestamp_ms(&Value::Long(7)), Some(7));
        assert_eq!(as_i64(&Value::Int(-4)), Some(-4));
        assert_eq!(
            did_you_mean("tempreature", ["device_id", "temperature", "humidity"]),
            Some("temperature")
        );
        assert_eq!(
            did_you_mean("Temperature", ["device_id", "temperature"]),
            Some("temperature")
        );
        assert_eq!(did_you_mean("xyz", ["device_id", "temperature"]), None);
        assert_eq!(
            did_you_mean("temp", ["device_id", "temperature"]),
            Some("temperature")
        );
        assert_eq!(
            did_you_mean("device", ["device_id", "temperature"]),
            Some("device_id")
        );
        assert_eq!(did_you_mean("id", ["device_id", "ts"]), None);
    }

    #[test]
    fn record_schema_round_trips() {
        let r = reading();
        let fields: Vec<(String, FieldType)> = r
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.ty.clone()))
            .collect();
        let schema = record_schema("io.acme.Copy", &fields).unwrap();
        let back = RecordType::from_schema(&schema).unwrap();
        assert_eq!(back.name, "io.acme.Copy");
        for (f, b) in r.fields.iter().zip(&back.fields) {
            assert_eq!(f.name, b.name);
            assert_eq!(f.ty, b.ty, "field {}", f.name);
        }
        // Derived types: unnamed records and clashing names get `<record>.<field>`.
        let loc = |name: &str, fields: &[&str]| {
            FieldType::optional(Type::Record(RecordType {
                name: name.into(),
                doc: None,
                fields: fields
                    .iter()
                    .map(|f| Field::new(*f, FieldType::required(Type::Double)))
                    .collect(),
            }))
        };
        let fields = vec![
            ("a".to_string(), loc("", &["x"])),
            ("b".to_string(), loc("Loc", &["lat"])),
            ("c".to_string(), loc("Loc", &["lat"])),
            ("d".to_string(), loc("Loc", &["lon"])),
            ("t".to_string(), FieldType::required(Type::TimestampMicros)),
            ("n".to_string(), FieldType::optional(Type::Null)),
        ];
        let json = record_schema_json("out.Win", &fields).unwrap();
        let back = RecordType::from_schema(&Schema::parse(&json).unwrap()).unwrap();
        let names: Vec<String> = back
            .fields
            .iter()
            .filter_map(|f| match &f.ty.ty {
                Type::Record(r) => Some(r.name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["out.Win.a", "Loc", "Loc", "out.Win.d"]);
        assert_eq!(
            back.fields[4].ty,
            FieldType::required(Type::TimestampMicros)
        );
        assert!(back.fields[5].ty.nullable);
        let e = record_schema(
            "out.Win",
            &[("a b".into(), FieldType::required(Type::Long))],
        )
        .unwrap_err();
        assert!(
            e.message.contains("`a b` is not a valid Avro name"),
            "{}",
            e.message
        );
        let dup = [
            ("a".into(), FieldType::required(Type::Long)),
            ("a".into(), FieldType::required(Type::Long)),
        ];
        assert!(record_schema("out.Win", &dup).is_err());
    }

    #[test]
    fn recursive_and_non_record_schemas() {
        let list = Schema::parse_str(
            r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","Node"]}]}"#,
        )
        .unwrap();
        let r = RecordType::from_schema(&list).unwrap();
        assert_eq!(
            r.resolve("next").unwrap().ty(),
            &FieldType::optional(Type::Recursive("Node".into()))
        );
        assert!(r
            .resolve("next.v")
            .unwrap_err()
            .message
            .contains("refers back"));
        let round = RecordType::from_schema(&r.to_schema().unwrap()).unwrap();
        assert_eq!(round, r);
        let e = RecordType::from_schema(&Schema::Long).unwrap_err();
        assert_eq!(e.message, "the schema is long, not a record");
    }
}
