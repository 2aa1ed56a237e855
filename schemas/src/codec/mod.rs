//! The fast Avro path: a (writer schema, reader schema) pair is compiled once into a
//! [`plan::Plan`], and bodies are then decoded straight into the structs of
//! [`crate::records`], without building apache-avro's generic `Value` tree.
//!
//! Decoding never panics on corrupt input: every failure is a [`DecodeError`] whose
//! [`DecodeError::class`] is the stable string the runtime writes into dead-letter headers.

mod plan;
pub(crate) mod read;
mod records;

use std::marker::PhantomData;

use apache_avro::Schema;

pub use plan::Plan;

/// Why a record could not be decoded. Every variant is the data's fault, not ours: retrying
/// the same bytes gives the same error, except [`DecodeError::UnknownSchemaId`], which goes
/// away once the writer schema is fetched and added with [`Decoder::add_writer_schema`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The header names a schema id this decoder has no writer schema for.
    #[error("schema id {0} is unknown (not in the registry, or not fetched yet)")]
    UnknownSchemaId(u32),
    /// The first byte is not Confluent's magic byte 0.
    #[error("magic byte is {0}, expected 0: the record is not in Confluent wire format")]
    WrongMagic(u8),
    /// The bytes end before the record does.
    #[error("record is truncated: the bytes end inside a {what}")]
    Truncated {
        /// What was being read when the bytes ran out.
        what: &'static str,
    },
    /// The writer schema cannot be resolved to the reader schema.
    #[error("writer schema {id} cannot be read with the reader schema: {reason}")]
    IncompatibleSchema {
        /// The writer schema id from the header.
        id: u32,
        /// Which field failed to resolve and why.
        reason: String,
    },
    /// The body is not valid Avro for its writer schema.
    #[error("invalid Avro body: {0}")]
    InvalidBody(String),
}

impl DecodeError {
    /// The stable name of the error class, for the `sluice.dlq.error_class` header.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            DecodeError::WrongMagic(_) => "wrong_magic",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::IncompatibleSchema { .. } => "incompatible_schema",
            DecodeError::InvalidBody(_) => "invalid_body",
        }
    }
}

/// One decoded value, already converted to the reader field's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// A struct the fast path can decode into and encode from. The reader schema's fields are
/// addressed by their position (the "slot").
pub trait AvroRecord: Default {
    /// The reader schema, the `.avsc` text this struct mirrors.
    const SCHEMA_JSON: &'static str;

    /// Stores a decoded value in the field at `slot`; the plan guarantees the value has the
    /// field's type.
    fn set(&mut self, slot: usize, value: Val<'_>);

    /// Appends the Avro body (no header) in the reader schema's shape.
    fn encode_body(&self, out: &mut Vec<u8>);

    /// Appends the record in Confluent wire format under `schema_id`.
    fn encode_wire(&self, schema_id: u32, out: &mut Vec<u8>) {
        crate::wire::write_header(schema_id, out);
        self.encode_body(out);
    }

    /// The parsed reader schema.
    fn reader_schema() -> Schema {
        // The .avsc files are compiled in and covered by tests, so this cannot fail at run time.
        Schema::parse_str(Self::SCHEMA_JSON).expect("bundled .avsc parses")
    }
}

/// Decodes wire-format records into `T`, keeping one compiled plan per writer schema id.
pub struct Decoder<T: AvroRecord> {
    reader: Schema,
    /// Few writer ids are live at a time, so a linear scan beats hashing.
    plans: Vec<(u32, Result<Plan, String>)>,
    _record: PhantomData<fn(&mut T)>,
}

/// The telemetry decoder stages use: v1 and v2 writers resolved to the v2 reader.
pub type TelemetryDecoder = Decoder<crate::records::Telemetry>;

impl<T: AvroRecord> Default for Decoder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: AvroRecord> Decoder<T> {
    /// A decoder with `T`'s bundled reader schema and no writer schemas yet.
    pub fn new() -> Self {
        Self {
            reader: T::reader_schema(),
            plans: Vec::new(),
            _record: PhantomData,
        }
    }

    /// Whether a writer schema (compatible or not) is known for `id`.
    pub fn knows(&self, id: u32) -> bool {
        self.plans.iter().any(|(i, _)| *i == id)
    }

    /// Adds the writer schema registered under `id` (for example fetched from the registry
    /// after [`DecodeError::UnknownSchemaId`]). An incompatible schema is remembered too, so
    /// its records fail fast with [`DecodeError::IncompatibleSchema`]; that error is also
    /// returned here.
    pub fn add_writer_schema(&mut self, id: u32, writer: &Schema) -> Result<(), DecodeError> {
        let plan = Plan::compile(writer, &self.reader);
        self.plans.retain(|(i, _)| *i != id);
        let result = plan
            .as_ref()
            .map(|_| ())
            .map_err(|reason| DecodeError::IncompatibleSchema {
                id,
                reason: reason.clone(),
            });
        self.plans.push((id, plan));
        result
    }

    /// Like [`Decoder::add_writer_schema`], from the schema's JSON text.
    pub fn add_writer_schema_json(&mut self, id: u32, json: &str) -> Result<(), DecodeError> {
        match Schema::parse_str(json) {
            Ok(s) => self.add_writer_schema(id, &s),
            Err(e) => {
                let reason = format!("writer schema does not parse: {e}");
                self.plans.retain(|(i, _)| *i != id);
                self.plans.push((id, Err(reason.clone())));
                Err(DecodeError::IncompatibleSchema { id, reason })
            }
        }
    }

    /// Decodes one wire-format record into `out`, reusing its allocations. On error `out`
    /// may hold a mix of old and new field values and must not be used.
    pub fn decode(&self, bytes: &[u8], out: &mut T) -> Result<(), DecodeError> {
        let (id, body) = crate::wire::parse(bytes)?;
        self.decode_body(id, body, out)
    }

    /// Decodes an Avro body written with schema `id`.
    pub fn decode_body(&self, id: u32, body: &[u8], out: &mut T) -> Result<(), DecodeError> {
        let (_, plan) = self
            .plans
            .iter()
            .find(|(i, _)| *i == id)
            .ok_or(DecodeError::UnknownSchemaId(id))?;
        match plan {
            Ok(plan) => plan.execute(id, body, out),
            Err(reason) => Err(DecodeError::IncompatibleSchema {
                id,
                reason: reason.clone(),
            }),
        }
    }
}
