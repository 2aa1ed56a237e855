//! Avro bodies to and from `Value`s, with the schema resolved once per encoder or decoder
//! rather than once per record. Schemas live as long as the process (`leak`): a topology
//! has a handful and a stage sees a few writer schemas, each leaked once.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{AvroResult, Schema};

/// `schema` for the rest of the process.
pub fn leak(schema: Schema) -> &'static Schema {
    Box::leak(Box::new(schema))
}

/// Writes values of one schema (validated first: a value that does not fit is an error,
/// never bytes nobody can read).
pub struct Encoder {
    writer: GenericDatumWriter<'static>,
}

impl Encoder {
    pub fn new(schema: &'static Schema) -> AvroResult<Self> {
        Ok(Encoder {
            writer: GenericDatumWriter::builder(schema).build()?,
        })
    }

    /// Appends the Avro body of `value` to `out`.
    pub fn encode(&self, value: &Value, out: &mut Vec<u8>) -> AvroResult<()> {
        self.writer.write_value_ref(out, value).map(|_| ())
    }
}

/// Reads bodies written with one schema, resolved to a reader schema when given.
pub struct Decoder {
    reader: GenericDatumReader<'static>,
}

impl Decoder {
    pub fn new(writer: &'static Schema, reader: Option<&'static Schema>) -> AvroResult<Self> {
        Ok(Decoder {
            reader: GenericDatumReader::builder(writer)
                .maybe_reader_schema(reader)
                .build()?,
        })
    }

    /// Decodes one body from the front of `bytes`.
    pub fn decode(&self, bytes: &mut &[u8]) -> AvroResult<Value> {
        self.reader.read_value(bytes)
    }
}

/// One-off encoding (tests, tools): resolves the schema on every call.
pub fn encode_once(schema: &Schema, value: &Value) -> AvroResult<Vec<u8>> {
    let mut out = Vec::new();
    GenericDatumWriter::builder(schema)
        .build()?
        .write_value_ref(&mut out, value)?;
    Ok(out)
}

/// One-off decoding (tests, tools).
pub fn decode_once(
    writer: &Schema,
    reader: Option<&Schema>,
    mut bytes: &[u8],
) -> AvroResult<Value> {
    GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()?
        .read_value(&mut bytes)
}
