//! Confluent-framed Avro into one reader schema: the writer schema of each record comes
//! from the registry by the id in its header, is resolved into the reader schema once, and
//! is kept for the next record. A pipeline decodes its input with it, a table its updates.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Schema;
use sluice_ops::codec::{leak, Decoder};
use sluice_schemas::wire;

use super::schemas::SchemaSource;
use crate::runtime::{ProcessError, Rejection};

pub struct WireDecoder {
    reader: &'static Schema,
    schemas: Box<dyn SchemaSource>,
    /// Decoders by writer schema id, made once; `None`: the registry does not know the id.
    decoders: HashMap<u32, Option<Decoder>>,
}

impl WireDecoder {
    pub fn new(reader: &'static Schema, schemas: Box<dyn SchemaSource>) -> Self {
        WireDecoder {
            reader,
            schemas,
            decoders: HashMap::new(),
        }
    }

    /// Decodes one framed record. The record's faults (framing, an unknown or incompatible
    /// writer schema, a body that does not decode) come back as `Ok(Err(..))`, for a dead
    /// letter; a registry outage as `Err` (retry later).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Result<Value, Rejection>, ProcessError> {
        let (id, mut body) = match wire::parse(bytes) {
            Ok(x) => x,
            Err(e) => return Ok(Err(Rejection::new(e.class(), e.to_string()))),
        };
        let decoder = match self.decoder(id)? {
            Ok(d) => d,
            Err(r) => return Ok(Err(r)),
        };
        Ok(decoder.decode(&mut body).map_err(|e| {
            Rejection::new(
                "invalid_body",
                format!(
                    "record does not decode with writer schema {id} into the reader schema: {e}"
                ),
            )
        }))
    }

    /// The decoder for writer schema `id`, made on first sight. A schema the registry does
    /// not have is asked for again next time (it may be registered after a fix).
    fn decoder(&mut self, id: u32) -> Result<Result<&Decoder, Rejection>, ProcessError> {
        if !matches!(self.decoders.get(&id), Some(Some(_))) {
            let made = match self.schemas.fetch(id)? {
                Some(json) => {
                    let reader = self.reader;
                    let made = Schema::parse_str(&json).and_then(|writer| {
                        // Resolving into the reader schema rebuilds every record; when the
                        // writer's schema is the reader's (the usual case: one registered
                        // version), records decode straight into its shape. Compared in
                        // full form: the canonical form would drop logical types.
                        let same =
                            serde_json::to_value(&writer).ok() == serde_json::to_value(reader).ok();
                        Decoder::new(leak(writer), (!same).then_some(reader))
                    });
                    match made {
                        Ok(d) => Some(d),
                        Err(e) => {
                            return Ok(Err(Rejection::new(
                                "invalid_writer_schema",
                                format!("writer schema {id} from the registry cannot be read into the reader schema: {e}"),
                            )))
                        }
                    }
                }
                None => None,
            };
            self.decoders.insert(id, made);
        }
        Ok(match self.decoders.get(&id) {
            Some(Some(d)) => Ok(d),
            _ => Err(Rejection::new(
                "unknown_schema_id",
                format!("schema id {id} is not in the registry"),
            )),
        })
    }
}
