//! Records of any Avro schema to Parquet through Arrow: the Arrow schema is derived from the
//! Avro schema once ([`AvroArrow::new`]), then each object's rows (decoded Avro values) are
//! built into one Arrow record batch and written with Parquet's Arrow writer.
//!
//! | Avro | Arrow |
//! |---|---|
//! | `["null", T]` | T, nullable |
//! | boolean, int, long, float, double | Boolean, Int32, Int64, Float32, Float64 |
//! | string, bytes, fixed(n) | Utf8, Binary, FixedSizeBinary(n) |
//! | enum | Dictionary(Int32, Utf8): the symbol |
//! | record | Struct of its fields |
//! | array, map | List, Map (string keys, sorted) |
//! | decimal(p, s) | Decimal128(p, s), Decimal256 above 38 digits |
//! | big-decimal, uuid | Utf8 (the number's text, the UUID's) |
//! | date, time-millis, time-micros | Date32, Time32(ms), Time64(µs) |
//! | timestamp-millis/micros/nanos | Timestamp(ms/µs/ns, "UTC") |
//! | local-timestamp-millis/micros/nanos | Timestamp(ms/µs/ns), no time zone |
//! | duration | FixedSizeBinary(12), as Avro stores it (months, days, ms; little-endian u32s) |
//!
//! Unions of several types and recursive types have no Parquet form: `sluice validate`
//! refuses them before anything runs (the `s3_parquet` sink's check).

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::schema::{Name, ResolvedSchema, Schema};
use apache_avro::types::Value;
use arrow_array::builder::StringDictionaryBuilder;
use arrow_array::types::Int32Type;
use arrow_array::Array;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array,
    FixedSizeBinaryArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray, MapArray,
    NullArray, RecordBatch, StringArray, StructArray, Time32MillisecondArray,
    Time64MicrosecondArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray,
};
use arrow_buffer::{i256, NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema as ArrowSchema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// An Avro type as the converter builds it.
#[derive(Debug, Clone)]
enum Kind {
    Null,
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    Binary,
    Utf8,
    FixedBinary(i32),
    Enum,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// big-decimal, as its text.
    BigDecimal,
    Uuid,
    Date,
    TimeMillis,
    TimeMicros,
    Timestamp {
        unit: TimeUnit,
        utc: bool,
    },
    Duration,
    Struct(Vec<(String, Node)>),
    List(Box<Node>),
    Map(Box<Node>),
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    nullable: bool,
}

/// The Arrow form of one Avro record schema, and the Parquet writer settings.
#[derive(Debug, Clone)]
pub struct AvroArrow {
    root: Vec<(String, Node)>,
    schema: SchemaRef,
    props: Arc<WriterProperties>,
}

impl AvroArrow {
    /// Derives the Arrow schema of records of `avro` (a record schema). Errs on what Parquet
    /// cannot hold (unions of several types, recursive types).
    pub fn new(avro: &Schema) -> Result<AvroArrow, String> {
        let resolved = ResolvedSchema::try_from(avro).map_err(|e| e.to_string())?;
        let names = resolved.get_names();
        let mut stack = Vec::new();
        let root = match node(avro, names, &mut stack)? {
            Node {
                kind: Kind::Struct(fields),
                ..
            } => fields,
            other => return Err(format!("not a record schema: {other:?}")),
        };
        let schema = Arc::new(ArrowSchema::new(fields_of(&root)));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(concat!("sluice ", env!("CARGO_PKG_VERSION")).into())
            .build();
        Ok(AvroArrow {
            root,
            schema,
            props: Arc::new(props),
        })
    }

    /// The Arrow schema of the records.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// `rows` (Avro records of the schema) as one Arrow record batch.
    pub fn batch(&self, rows: &[&Value]) -> Result<RecordBatch, String> {
        let vals: Vec<Option<&Value>> = rows.iter().map(|v| present(v)).collect();
        let columns = self
            .root
            .iter()
            .enumerate()
            .map(|(i, (_, n))| build(n, &children(&vals, i)))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }

    /// `rows` as one Parquet file (one row group, Snappy, page statistics).
    pub fn parquet(&self, rows: &[&Value]) -> Result<Vec<u8>, String> {
        let batch = self.batch(rows)?;
        let mut writer = ArrowWriter::try_new(
            Vec::with_capacity(rows.len() * 32 + 1024),
            self.schema.clone(),
            Some((*self.props).clone()),
        )
        .map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        writer.into_inner().map_err(|e| e.to_string())
    }
}

fn fields_of(fields: &[(String, Node)]) -> Vec<Field> {
    fields
        .iter()
        .map(|(name, n)| Field::new(name, data_type(n), n.nullable))
        .collect()
}

fn data_type(n: &Node) -> DataType {
    match &n.kind {
        Kind::Null => DataType::Null,
        Kind::Bool => DataType::Boolean,
        Kind::Int32 => DataType::Int32,
        Kind::Int64 => DataType::Int64,
        Kind::Float32 => DataType::Float32,
        Kind::Float64 => DataType::Float64,
        Kind::Binary => DataType::Binary,
        Kind::Utf8 | Kind::BigDecimal | Kind::Uuid => DataType::Utf8,
        Kind::FixedBinary(n) => DataType::FixedSizeBinary(*n),
        Kind::Duration => DataType::FixedSizeBinary(12),
        Kind::Enum => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        Kind::Decimal { precision, scale } if *precision <= 38 => {
            DataType::Decimal128(*precision, *scale)
        }
        Kind::Decimal { precision, scale } => DataType::Decimal256(*precision, *scale),
        Kind::Date => DataType::Date32,
        Kind::TimeMillis => DataType::Time32(TimeUnit::Millisecond),
        Kind::TimeMicros => DataType::Time64(TimeUnit::Microsecond),
        Kind::Timestamp { unit, utc } => DataType::Timestamp(*unit, utc.then(|| Arc::from("UTC"))),
        Kind::Struct(fields) => DataType::Struct(Fields::from(fields_of(fields))),
        Kind::List(item) => DataType::List(Arc::new(list_item(item))),
        Kind::Map(value) => DataType::Map(Arc::new(map_entries(value)), false),
    }
}

fn list_item(item: &Node) -> Field {
    Field::new("item", data_type(item), item.nullable)
}

fn map_entries(value: &Node) -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", data_type(value), value.nullable),
        ])),
        false,
    )
}

fn node(s: &Schema, names: &HashMap<Name, &Schema>, stack: &mut Vec<Name>) -> Result<Node, String> {
    let plain = |kind| {
        Ok(Node {
            kind,
            nullable: false,
        })
    };
    match s {
        Schema::Null => Ok(Node {
            kind: Kind::Null,
            nullable: true,
        }),
        Schema::Boolean => plain(Kind::Bool),
        Schema::Int => plain(Kind::Int32),
        Schema::Long => plain(Kind::Int64),
        Schema::Float => plain(Kind::Float32),
        Schema::Double => plain(Kind::Float64),
        Schema::Bytes => plain(Kind::Binary),
        Schema::String => plain(Kind::Utf8),
        Schema::Fixed(f) => plain(Kind::FixedBinary(
            i32::try_from(f.size).map_err(|_| format!("fixed {} is too large", f.name))?,
        )),
        Schema::Enum(_) => plain(Kind::Enum),
        Schema::Decimal(d) => plain(Kind::Decimal {
            precision: u8::try_from(d.precision)
                .ok()
                .filter(|p| *p <= 76)
                .ok_or_else(|| format!("decimal precision {} is above 76", d.precision))?,
            scale: i8::try_from(d.scale).map_err(|_| format!("decimal scale {}", d.scale))?,
        }),
        Schema::BigDecimal => plain(Kind::BigDecimal),
        Schema::Uuid(_) => plain(Kind::Uuid),
        Schema::Date => plain(Kind::Date),
        Schema::TimeMillis => plain(Kind::TimeMillis),
        Schema::TimeMicros => plain(Kind::TimeMicros),
        Schema::TimestampMillis => plain(Kind::Timestamp {
            unit: TimeUnit::Millisecond,
            utc: true,
        }),
        Schema::TimestampMicros => plain(Kind::Timestamp {
            unit: TimeUnit::Microsecond,
            utc: true,
        }),
        Schema::TimestampNanos => plain(Kind::Timestamp {
            unit: TimeUnit::Nanosecond,
            utc: true,
        }),
        Schema::LocalTimestampMillis => plain(Kind::Timestamp {
            unit: TimeUnit::Millisecond,
            utc: false,
        }),
        Schema::LocalTimestampMicros => plain(Kind::Timestamp {
            unit: TimeUnit::Microsecond,
            utc: false,
        }),
        Schema::LocalTimestampNanos => plain(Kind::Timestamp {
            unit: TimeUnit::Nanosecond,
            utc: false,
        }),
        Schema::Duration(_) => plain(Kind::Duration),
        Schema::Array(a) => plain(Kind::List(Box::new(node(&a.items, names, stack)?))),
        Schema::Map(m) => plain(Kind::Map(Box::new(node(&m.types, names, stack)?))),
        Schema::Union(u) => {
            let branches: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            match branches.as_slice() {
                [one] => {
                    let mut n = node(one, names, stack)?;
                    n.nullable = n.nullable || branches.len() < u.variants().len();
                    Ok(n)
                }
                [] => Ok(Node {
                    kind: Kind::Null,
                    nullable: true,
                }),
                _ => Err("a union of several types has no Parquet form".into()),
            }
        }
        Schema::Record(r) => {
            if stack.contains(&r.name) {
                return Err(format!(
                    "{} is recursive; Parquet has no recursive types",
                    r.name
                ));
            }
            stack.push(r.name.clone());
            let fields = r
                .fields
                .iter()
                .map(|f| Ok((f.name.clone(), node(&f.schema, names, stack)?)))
                .collect::<Result<Vec<_>, String>>();
            stack.pop();
            plain(Kind::Struct(fields?))
        }
        Schema::Ref { name } => {
            if stack.contains(name) {
                return Err(format!(
                    "{name} is recursive; Parquet has no recursive types"
                ));
            }
            let s = names
                .get(name)
                .ok_or_else(|| format!("unknown named type {name}"))?;
            node(s, names, stack)
        }
    }
}

/// The value itself, unions unwrapped; `None` for null.
fn present(v: &Value) -> Option<&Value> {
    match v {
        Value::Union(_, inner) => present(inner),
        Value::Null => None,
        v => Some(v),
    }
}

/// Field `i` of every row (a record), null where the row is.
fn children<'a>(rows: &[Option<&'a Value>], i: usize) -> Vec<Option<&'a Value>> {
    rows.iter()
        .map(|r| match r {
            Some(Value::Record(fields)) => fields.get(i).and_then(|(_, v)| present(v)),
            _ => None,
        })
        .collect()
}

fn nulls(vals: &[Option<&Value>]) -> Option<NullBuffer> {
    let n = NullBuffer::from(vals.iter().map(Option::is_some).collect::<Vec<bool>>());
    (n.null_count() > 0).then_some(n)
}

fn wrong(kind: &Kind, v: &Value) -> String {
    format!("a value does not fit its schema: {v:?} for {kind:?}")
}

/// One column of values of `n`'s type.
fn build(n: &Node, vals: &[Option<&Value>]) -> Result<ArrayRef, String> {
    macro_rules! column {
        ($array:ty, $pat:pat => $out:expr) => {{
            let items = vals
                .iter()
                .map(|v| match v {
                    None => Ok(None),
                    Some($pat) => Ok(Some($out)),
                    Some(other) => Err(wrong(&n.kind, other)),
                })
                .collect::<Result<Vec<_>, String>>()?;
            Arc::new(<$array>::from(items)) as ArrayRef
        }};
    }
    let array: ArrayRef = match &n.kind {
        Kind::Null => Arc::new(NullArray::new(vals.len())),
        Kind::Bool => column!(BooleanArray, Value::Boolean(b) => *b),
        Kind::Int32 => column!(Int32Array, Value::Int(x) => *x),
        Kind::Int64 => column!(Int64Array, Value::Long(x) => *x),
        Kind::Float32 => column!(Float32Array, Value::Float(x) => *x),
        Kind::Float64 => column!(Float64Array, Value::Double(x) => *x),
        Kind::Binary => column!(BinaryArray, Value::Bytes(b) => b.as_slice()),
        Kind::Utf8 => column!(StringArray, Value::String(s) => s.as_str()),
        Kind::BigDecimal => column!(StringArray, Value::BigDecimal(b) => b.to_string()),
        Kind::Uuid => column!(StringArray, Value::Uuid(u) => u.to_string()),
        Kind::Date => column!(Date32Array, Value::Date(d) => *d),
        Kind::TimeMillis => column!(Time32MillisecondArray, Value::TimeMillis(t) => *t),
        Kind::TimeMicros => column!(Time64MicrosecondArray, Value::TimeMicros(t) => *t),
        Kind::Timestamp { unit, utc } => {
            let tz: Option<Arc<str>> = utc.then(|| Arc::from("UTC"));
            match unit {
                TimeUnit::Millisecond => {
                    let a = column!(TimestampMillisecondArray, Value::TimestampMillis(t) | Value::LocalTimestampMillis(t) => *t);
                    let a = a
                        .as_any()
                        .downcast_ref::<TimestampMillisecondArray>()
                        .expect("built above")
                        .clone();
                    Arc::new(a.with_timezone_opt(tz))
                }
                TimeUnit::Microsecond => {
                    let a = column!(TimestampMicrosecondArray, Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => *t);
                    let a = a
                        .as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .expect("built above")
                        .clone();
                    Arc::new(a.with_timezone_opt(tz))
                }
                _ => {
                    let a = column!(TimestampNanosecondArray, Value::TimestampNanos(t) | Value::LocalTimestampNanos(t) => *t);
                    let a = a
                        .as_any()
                        .downcast_ref::<TimestampNanosecondArray>()
                        .expect("built above")
                        .clone();
                    Arc::new(a.with_timezone_opt(tz))
                }
            }
        }
        Kind::FixedBinary(size) => {
            let items = vals
                .iter()
                .map(|v| match v {
                    None => Ok(None),
                    Some(Value::Fixed(_, b)) => Ok(Some(b.as_slice())),
                    Some(other) => Err(wrong(&n.kind, other)),
                })
                .collect::<Result<Vec<_>, String>>()?;
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(items.into_iter(), *size)
                    .map_err(|e| e.to_string())?,
            )
        }
        Kind::Duration => {
            let items = vals
                .iter()
                .map(|v| match v {
                    None => Ok(None),
                    Some(Value::Duration(d)) => Ok(Some(<[u8; 12]>::from(d))),
                    Some(other) => Err(wrong(&n.kind, other)),
                })
                .collect::<Result<Vec<_>, String>>()?;
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(items.into_iter(), 12)
                    .map_err(|e| e.to_string())?,
            )
        }
        Kind::Enum => {
            let mut b = StringDictionaryBuilder::<Int32Type>::new();
            for v in vals {
                match v {
                    None => b.append_null(),
                    Some(Value::Enum(_, s)) => {
                        b.append(s).map_err(|e| e.to_string())?;
                    }
                    Some(other) => return Err(wrong(&n.kind, other)),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Decimal { precision, scale } => {
            let unscaled = vals
                .iter()
                .map(|v| match v {
                    None => Ok(None),
                    Some(Value::Decimal(d)) => {
                        let bytes = Vec::<u8>::try_from(d).map_err(|e| e.to_string())?;
                        Ok(Some(bytes))
                    }
                    Some(other) => Err(wrong(&n.kind, other)),
                })
                .collect::<Result<Vec<_>, String>>()?;
            if *precision <= 38 {
                let items: Vec<Option<i128>> = unscaled
                    .iter()
                    .map(|b| {
                        b.as_deref()
                            .map(|b| i128::from_be_bytes(sign_extend::<16>(b)))
                    })
                    .collect();
                Arc::new(
                    Decimal128Array::from(items)
                        .with_precision_and_scale(*precision, *scale)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                let items: Vec<Option<i256>> = unscaled
                    .iter()
                    .map(|b| {
                        b.as_deref()
                            .map(|b| i256::from_be_bytes(sign_extend::<32>(b)))
                    })
                    .collect();
                Arc::new(
                    Decimal256Array::from(items)
                        .with_precision_and_scale(*precision, *scale)
                        .map_err(|e| e.to_string())?,
                )
            }
        }
        Kind::Struct(fields) => {
            let columns = fields
                .iter()
                .enumerate()
                .map(|(i, (_, f))| build(f, &children(vals, i)))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(
                StructArray::try_new(Fields::from(fields_of(fields)), columns, nulls(vals))
                    .map_err(|e| e.to_string())?,
            )
        }
        Kind::List(item) => {
            let mut lengths = Vec::with_capacity(vals.len());
            let mut items: Vec<Option<&Value>> = Vec::new();
            for v in vals {
                match v {
                    None => lengths.push(0),
                    Some(Value::Array(xs)) => {
                        lengths.push(xs.len());
                        items.extend(xs.iter().map(present));
                    }
                    Some(other) => return Err(wrong(&n.kind, other)),
                }
            }
            let values = build(item, &items)?;
            Arc::new(
                ListArray::try_new(
                    Arc::new(list_item(item)),
                    OffsetBuffer::from_lengths(lengths),
                    values,
                    nulls(vals),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Kind::Map(value) => {
            let mut lengths = Vec::with_capacity(vals.len());
            let mut keys: Vec<&str> = Vec::new();
            let mut values: Vec<Option<&Value>> = Vec::new();
            for v in vals {
                match v {
                    None => lengths.push(0),
                    Some(Value::Map(m)) => {
                        // Sorted, so the same map always writes the same bytes.
                        let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                        entries.sort_by(|a, b| a.0.cmp(b.0));
                        lengths.push(entries.len());
                        for (k, x) in entries {
                            keys.push(k);
                            values.push(present(x));
                        }
                    }
                    Some(other) => return Err(wrong(&n.kind, other)),
                }
            }
            let entries_field = map_entries(value);
            let DataType::Struct(entry_fields) = entries_field.data_type().clone() else {
                unreachable!("map entries are a struct")
            };
            let entries = StructArray::try_new(
                entry_fields,
                vec![Arc::new(StringArray::from(keys)), build(value, &values)?],
                None,
            )
            .map_err(|e| e.to_string())?;
            Arc::new(
                MapArray::try_new(
                    Arc::new(entries_field),
                    OffsetBuffer::from_lengths(lengths),
                    entries,
                    nulls(vals),
                    false,
                )
                .map_err(|e| e.to_string())?,
            )
        }
    };
    Ok(array)
}

/// Big-endian two's complement bytes widened (or narrowed, dropping sign bytes) to `N`.
fn sign_extend<const N: usize>(b: &[u8]) -> [u8; N] {
    let negative = b.first().is_some_and(|x| x & 0x80 != 0);
    let mut out = [if negative { 0xFF } else { 0 }; N];
    let take = b.len().min(N);
    out[N - take..].copy_from_slice(&b[b.len() - take..]);
    out
}

/// The rows of a Parquet object as JSON objects, column by column: for `sluice test` and
/// tests that read back what a sink wrote. Numbers as numbers (timestamps and dates as their
/// count since the epoch, decimals scaled), dictionary values and strings as strings,
/// binary as arrays of bytes, structs as objects, lists as arrays, maps as objects.
pub fn parquet_json(bytes: bytes::Bytes) -> Result<Vec<serde_json::Value>, String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut o = serde_json::Map::new();
            for (i, f) in schema.fields().iter().enumerate() {
                o.insert(f.name().clone(), json_at(batch.column(i).as_ref(), row));
            }
            out.push(serde_json::Value::Object(o));
        }
    }
    Ok(out)
}

fn json_at(a: &dyn arrow_array::Array, i: usize) -> serde_json::Value {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use serde_json::Value as J;
    if a.is_null(i) {
        return J::Null;
    }
    let num = |x: f64| serde_json::Number::from_f64(x).map_or(J::Null, J::Number);
    match a.data_type() {
        DataType::Null => J::Null,
        DataType::Boolean => J::Bool(a.as_boolean().value(i)),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::Float32 => num(f64::from(a.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => num(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => a.as_string::<i32>().value(i).into(),
        DataType::Binary => a
            .as_binary::<i32>()
            .value(i)
            .iter()
            .map(|b| J::from(*b))
            .collect(),
        DataType::FixedSizeBinary(_) => a
            .as_fixed_size_binary()
            .value(i)
            .iter()
            .map(|b| J::from(*b))
            .collect(),
        DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<Int32Type>();
            let k = d.keys().value(i) as usize;
            json_at(d.values().as_ref(), k)
        }
        DataType::Decimal128(_, scale) => {
            num(a.as_primitive::<Decimal128Type>().value(i) as f64 / 10f64.powi(i32::from(*scale)))
        }
        DataType::Decimal256(_, scale) => num(a
            .as_primitive::<Decimal256Type>()
            .value(i)
            .to_string()
            .parse::<f64>()
            .unwrap_or(f64::NAN)
            / 10f64.powi(i32::from(*scale))),
        DataType::Date32 => a.as_primitive::<Date32Type>().value(i).into(),
        DataType::Time32(_) => a.as_primitive::<Time32MillisecondType>().value(i).into(),
        DataType::Time64(_) => a.as_primitive::<Time64MicrosecondType>().value(i).into(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            a.as_primitive::<TimestampMillisecondType>().value(i).into()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            a.as_primitive::<TimestampMicrosecondType>().value(i).into()
        }
        DataType::Timestamp(_, _) => a.as_primitive::<TimestampNanosecondType>().value(i).into(),
        DataType::Struct(fields) => {
            let s = a.as_struct();
            J::Object(
                fields
                    .iter()
                    .enumerate()
                    .map(|(c, f)| (f.name().clone(), json_at(s.column(c).as_ref(), i)))
                    .collect(),
            )
        }
        DataType::List(_) => {
            let v = a.as_list::<i32>().value(i);
            (0..v.len()).map(|j| json_at(v.as_ref(), j)).collect()
        }
        DataType::Map(_, _) => {
            let m = a.as_map().value(i);
            let (keys, values) = (m.column(0), m.column(1));
            J::Object(
                (0..m.len())
                    .map(|j| {
                        let k = match json_at(keys.as_ref(), j) {
                            J::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, json_at(values.as_ref(), j))
                    })
                    .collect(),
            )
        }
        other => J::String(format!("<{other}>")),
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    const SCHEMA: &str = r#"{
      "type": "record", "name": "Trip", "namespace": "io.acme.fleet",
      "fields": [
        {"name": "vehicle", "type": "string"},
        {"name": "start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "km", "type": ["null", "double"], "default": null},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OK", "LATE"]}},
        {"name": "fare", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "pos", "type": ["null", {"type": "record", "name": "Pos", "fields": [
            {"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}]}], "default": null},
        {"name": "stops", "type": {"type": "array", "items": "string"}},
        {"name": "tags", "type": {"type": "map", "values": "long"}},
        {"name": "micros", "type": {"type": "long", "logicalType": "timestamp-micros"}}
      ]
    }"#;

    fn row(i: i32) -> Value {
        let d = apache_avro::Decimal::from(((1234 + i) as i64).to_be_bytes().to_vec());
        Value::Record(vec![
            ("vehicle".into(), Value::String(format!("v{i}"))),
            (
                "start".into(),
                Value::TimestampMillis(1_700_000_000_000 + i64::from(i)),
            ),
            ("day".into(), Value::Date(19_675)),
            (
                "km".into(),
                if i % 2 == 0 {
                    Value::Union(1, Box::new(Value::Double(f64::from(i) * 1.5)))
                } else {
                    Value::Union(0, Box::new(Value::Null))
                },
            ),
            (
                "status".into(),
                Value::Enum((i % 2) as u32, ["OK", "LATE"][(i % 2) as usize].into()),
            ),
            ("fare".into(), Value::Decimal(d)),
            (
                "pos".into(),
                if i == 1 {
                    Value::Union(0, Box::new(Value::Null))
                } else {
                    Value::Union(
                        1,
                        Box::new(Value::Record(vec![
                            ("lat".into(), Value::Double(52.5)),
                            ("lon".into(), Value::Double(f64::from(i))),
                        ])),
                    )
                },
            ),
            (
                "stops".into(),
                Value::Array((0..i).map(|s| Value::String(format!("s{s}"))).collect()),
            ),
            (
                "tags".into(),
                Value::Map(
                    [
                        ("b".to_string(), Value::Long(2)),
                        ("a".to_string(), Value::Long(i64::from(i))),
                    ]
                    .into(),
                ),
            ),
            (
                "micros".into(),
                Value::TimestampMicros(1_700_000_000_000_001),
            ),
        ])
    }

    #[test]
    fn nested_optional_enum_decimal_and_collections_round_trip_through_parquet() {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let conv = AvroArrow::new(&schema).unwrap();
        let s = conv.schema();
        assert_eq!(s.field(0).data_type(), &DataType::Utf8);
        assert!(!s.field(0).is_nullable());
        assert_eq!(
            s.field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert_eq!(s.field(2).data_type(), &DataType::Date32);
        assert!(s.field(3).is_nullable());
        assert!(matches!(s.field(4).data_type(), DataType::Dictionary(_, _)));
        assert_eq!(s.field(5).data_type(), &DataType::Decimal128(9, 2));
        assert!(matches!(s.field(6).data_type(), DataType::Struct(_)));
        assert!(s.field(6).is_nullable());
        assert!(matches!(s.field(7).data_type(), DataType::List(_)));
        assert!(matches!(s.field(8).data_type(), DataType::Map(_, _)));
        let rows: Vec<Value> = (0..3).map(row).collect();
        let refs: Vec<&Value> = rows.iter().collect();
        let bytes = conv.parquet(&refs).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.column(0).as_string::<i32>().value(2), "v2");
        let km = b
            .column(3)
            .as_primitive::<arrow_array::types::Float64Type>();
        assert_eq!((km.value(0), km.is_null(1), km.value(2)), (0.0, true, 3.0));
        let fare = b
            .column(5)
            .as_primitive::<arrow_array::types::Decimal128Type>();
        assert_eq!(fare.value(1), 1235);
        let pos = b.column(6).as_struct();
        assert!(pos.is_null(1));
        assert_eq!(
            pos.column(1)
                .as_primitive::<arrow_array::types::Float64Type>()
                .value(2),
            2.0
        );
        let stops = b.column(7).as_list::<i32>();
        assert_eq!(stops.value(2).len(), 2);
        let tags = b.column(8).as_map();
        assert_eq!(
            tags.value(0).column(0).as_string::<i32>().value(0),
            "a",
            "keys sorted"
        );
        let micros = b
            .column(9)
            .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert_eq!(micros.value(0), 1_700_000_000_000_001);
        let json = parquet_json(Bytes::from(conv.parquet(&refs).unwrap())).unwrap();
        assert_eq!(
            json[1],
            serde_json::json!({
                "vehicle": "v1", "start": 1_700_000_000_001i64, "day": 19_675, "km": null,
                "status": "LATE", "fare": 12.35, "pos": null, "stops": ["s0"],
                "tags": {"a": 1, "b": 2}, "micros": 1_700_000_000_000_001i64
            })
        );
    }

    #[test]
    fn unions_of_several_types_are_refused() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"x","type":["null","string","long"]}]}"#,
        )
        .unwrap();
        assert!(AvroArrow::new(&schema).unwrap_err().contains("union"));
    }

    #[test]
    fn negative_decimals_keep_their_sign() {
        assert_eq!(i128::from_be_bytes(sign_extend::<16>(&[0xFF, 0x38])), -200);
        assert_eq!(i128::from_be_bytes(sign_extend::<16>(&[0x00, 0xC8])), 200);
    }
}
