//! Writer schemas by id for the decoders, fetched from the registry on first sight.

use std::collections::HashMap;

use sluice_schemas::codec::{AvroRecord, DecodeError, Decoder};

use crate::runtime::ProcessError;

/// Where decoders get writer schemas they have not seen.
pub trait SchemaSource: Send {
    /// The schema JSON registered under `id`; `Ok(None)` when the registry has no such id.
    fn fetch(&mut self, id: u32) -> Result<Option<String>, ProcessError>;
}

/// A registry client behind a blocking call. Found schemas are cached (ids are immutable);
/// unknown ids are asked again, so a schema registered after a fix is picked up.
pub struct RegistrySchemas {
    url: String,
    client: sluice_schemas::client::RegistryClient,
    rt: tokio::runtime::Handle,
    cache: HashMap<u32, String>,
}

impl RegistrySchemas {
    pub fn new(client: sluice_schemas::client::RegistryClient, rt: tokio::runtime::Handle) -> Self {
        RegistrySchemas {
            url: client.base_url().to_string(),
            client,
            rt,
            cache: HashMap::new(),
        }
    }
}

impl SchemaSource for RegistrySchemas {
    fn fetch(&mut self, id: u32) -> Result<Option<String>, ProcessError> {
        if let Some(hit) = self.cache.get(&id) {
            return Ok(Some(hit.clone()));
        }
        match self.rt.block_on(self.client.schema_by_id(id)) {
            Ok(json) => {
                self.cache.insert(id, json.to_string());
                Ok(Some(json.to_string()))
            }
            Err(e) if e.code() == Some(40403) => Ok(None),
            Err(e) => Err(ProcessError::Registry {
                url: self.url.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Decodes `bytes`, fetching an unknown writer schema once. Data errors come back as
/// `Ok(Err(..))` (dead letters); a registry outage as `Err` (retry later).
pub(crate) fn decode_with<T: AvroRecord>(
    decoder: &mut Decoder<T>,
    schemas: &mut dyn SchemaSource,
    bytes: &[u8],
    out: &mut T,
) -> Result<Result<(), DecodeError>, ProcessError> {
    match decoder.decode(bytes, out) {
        Err(DecodeError::UnknownSchemaId(id)) => match schemas.fetch(id)? {
            Some(json) => {
                if let Err(e) = decoder.add_writer_schema_json(id, &json) {
                    return Ok(Err(e));
                }
                Ok(decoder.decode(bytes, out))
            }
            None => Ok(Err(DecodeError::UnknownSchemaId(id))),
        },
        other => Ok(other),
    }
}

/// Decodes a stage's input record into `out_rec`; a record without a value or that cannot be
/// decoded becomes a dead letter and `Ok(false)` is returned.
pub(crate) fn decode_input<T: AvroRecord>(
    decoder: &mut Decoder<T>,
    schemas: &mut dyn SchemaSource,
    input: &crate::runtime::Input<'_>,
    out: &mut dyn crate::runtime::Emit,
    out_rec: &mut T,
) -> Result<bool, ProcessError> {
    use crate::runtime::Rejection;
    let Some(bytes) = input.value else {
        out.dead_letter(input, &Rejection::new("empty_value", "record has no value"));
        return Ok(false);
    };
    if let Err(e) = decode_with(decoder, schemas, bytes, out_rec)? {
        out.dead_letter(input, &Rejection::new(e.class(), e.to_string()));
        return Ok(false);
    }
    Ok(true)
}
