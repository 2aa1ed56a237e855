//! A physical view of apache-avro's parsed [`Schema`]: logical types reduced to the type they
//! are encoded as, and named references resolved. Both schema resolution (the codec's plans)
//! and the compatibility checker work on this view, because Avro resolves on encodings only.

use std::collections::HashMap;

use apache_avro::schema::{
    EnumSchema, FixedSchema, InnerDecimalSchema, RecordSchema, Schema, UnionSchema, UuidSchema,
};

/// What a schema is on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Kind<'s> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(&'s FixedSchema),
    Enum(&'s EnumSchema),
    Array(&'s Schema),
    Map(&'s Schema),
    Union(&'s UnionSchema),
    Record(&'s RecordSchema),
}

impl Kind<'_> {
    /// A short name for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Kind::Null => "null".into(),
            Kind::Boolean => "boolean".into(),
            Kind::Int => "int".into(),
            Kind::Long => "long".into(),
            Kind::Float => "float".into(),
            Kind::Double => "double".into(),
            Kind::Bytes => "bytes".into(),
            Kind::String => "string".into(),
            Kind::Fixed(f) => format!("fixed {} ({} bytes)", f.name.name(), f.size),
            Kind::Enum(e) => format!("enum {}", e.name.name()),
            Kind::Array(_) => "array".into(),
            Kind::Map(_) => "map".into(),
            Kind::Union(_) => "union".into(),
            Kind::Record(r) => format!("record {}", r.name.name()),
        }
    }
}

/// The named types (records, enums, fixed) of one schema, by full name.
#[derive(Default)]
pub(crate) struct Names<'s>(HashMap<String, &'s Schema>);

impl<'s> Names<'s> {
    pub(crate) fn of(schema: &'s Schema) -> Self {
        let mut names = Names::default();
        names.collect(schema);
        names
    }

    fn collect(&mut self, schema: &'s Schema) {
        match schema {
            Schema::Record(r) => {
                self.0.insert(r.name.fullname(None), schema);
                for f in &r.fields {
                    self.collect(&f.schema);
                }
            }
            Schema::Enum(e) => {
                self.0.insert(e.name.fullname(None), schema);
            }
            Schema::Fixed(f) | Schema::Duration(f) => {
                self.0.insert(f.name.fullname(None), schema);
            }
            Schema::Decimal(d) => {
                if let InnerDecimalSchema::Fixed(f) = &d.inner {
                    self.0.insert(f.name.fullname(None), schema);
                }
            }
            Schema::Uuid(UuidSchema::Fixed(f)) => {
                self.0.insert(f.name.fullname(None), schema);
            }
            Schema::Array(a) => self.collect(&a.items),
            Schema::Map(m) => self.collect(&m.types),
            Schema::Union(u) => {
                for v in u.variants() {
                    self.collect(v);
                }
            }
            _ => {}
        }
    }

    /// The physical kind of `schema`, following a reference through this name table.
    pub(crate) fn kind(&self, schema: &'s Schema) -> Result<Kind<'s>, String> {
        Ok(match schema {
            Schema::Null => Kind::Null,
            Schema::Boolean => Kind::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis => Kind::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Kind::Long,
            Schema::Float => Kind::Float,
            Schema::Double => Kind::Double,
            Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => Kind::Bytes,
            Schema::String | Schema::Uuid(UuidSchema::String) => Kind::String,
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => Kind::Bytes,
                InnerDecimalSchema::Fixed(f) => Kind::Fixed(f),
            },
            Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
                Kind::Fixed(f)
            }
            Schema::Enum(e) => Kind::Enum(e),
            Schema::Array(a) => Kind::Array(&a.items),
            Schema::Map(m) => Kind::Map(&m.types),
            Schema::Union(u) => Kind::Union(u),
            Schema::Record(r) => Kind::Record(r),
            Schema::Ref { name } => {
                let full = name.fullname(None);
                let target = self
                    .0
                    .get(&full)
                    .ok_or_else(|| format!("reference to unknown type {full}"))?;
                if matches!(target, Schema::Ref { .. }) {
                    return Err(format!("reference {full} resolves to another reference"));
                }
                return self.kind(target);
            }
        })
    }
}

/// Whether a reader record resolves a writer record: same unqualified name, or the writer's
/// name among the reader's aliases.
pub(crate) fn record_names_match(reader: &RecordSchema, writer: &RecordSchema) -> bool {
    reader.name.name() == writer.name.name()
        || reader.aliases.iter().flatten().any(|a| {
            a.name() == writer.name.name() || a.fullname(None) == writer.name.fullname(None)
        })
}
