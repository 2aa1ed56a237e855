//! Device payloads to records of the output topic's schema: JSON (one reading or an array)
//! or Confluent-framed Avro in any schema that resolves to it. What cannot be mapped is a
//! [`Rejected`] with a stable class, for the dead-letter headers.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;
use sluice_ops::codec::{Decoder, Encoder};
use sluice_schemas::client::{ClientError, RegistryClient};
use sluice_topology::ingest::PayloadFormat;

/// Every dead-letter class an ingest bridge writes, for docs and dashboards.
pub const CLASSES: &[&str] = &[
    OVERSIZE,
    BAD_TOPIC,
    BAD_JSON,
    MISSING_FIELD,
    WRONG_TYPE,
    DEVICE_MISMATCH,
    BAD_AVRO,
    UNKNOWN_SCHEMA,
];
/// The payload is larger than `max_payload`.
pub const OVERSIZE: &str = "oversize";
/// The topic's device level is empty (`devices//telemetry`).
pub const BAD_TOPIC: &str = "bad_topic";
/// Not JSON, or not an object or a non-empty array of objects.
pub const BAD_JSON: &str = "bad_json";
/// A field the schema requires (no default, not nullable) is absent.
pub const MISSING_FIELD: &str = "missing_field";
/// A field's JSON value does not fit its Avro type.
pub const WRONG_TYPE: &str = "wrong_type";
/// The payload names another device than its topic.
pub const DEVICE_MISMATCH: &str = "device_mismatch";
/// Not Confluent-framed Avro, or its body does not decode with its writer schema or does not
/// resolve to the output schema.
pub const BAD_AVRO: &str = "bad_avro";
/// The framed schema id is not in the registry.
pub const UNKNOWN_SCHEMA: &str = "unknown_schema";

/// Why a payload became a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub class: &'static str,
    pub message: String,
}

fn reject(class: &'static str, message: impl Into<String>) -> Rejected {
    Rejected {
        class,
        message: message.into(),
    }
}

/// Why mapping did not finish: the payload's fault, or the registry's (retry; the payload
/// may be fine).
#[derive(Debug)]
pub enum MapError {
    Rejected(Rejected),
    Registry(ClientError),
}

impl From<Rejected> for MapError {
    fn from(r: Rejected) -> Self {
        MapError::Rejected(r)
    }
}

/// Maps payloads to framed records of one output schema.
pub struct Mapper {
    schema: &'static Schema,
    encoder: Encoder,
    schema_id: u32,
    device_field: String,
    format: PayloadFormat,
    max_payload: usize,
    registry: Option<RegistryClient>,
    /// A decoder per writer schema id seen, resolving to `schema`.
    decoders: HashMap<u32, Decoder>,
    /// What names the device, for messages: `topic` (MQTT) or `token` (HTTP).
    device_from: &'static str,
    /// Whether an Avro payload may hold several framed records back to back (HTTP).
    avro_batches: bool,
}

impl Mapper {
    /// `schema` is registered under `schema_id`; `registry` resolves the writer schemas of
    /// Avro payloads framed with other ids.
    pub fn new(
        schema: Schema,
        schema_id: u32,
        device_field: &str,
        format: PayloadFormat,
        max_payload: usize,
        registry: Option<RegistryClient>,
    ) -> Result<Mapper, apache_avro::Error> {
        // One schema per bridge, for the life of the process.
        let schema = sluice_ops::codec::leak(schema);
        let mut decoders = HashMap::new();
        decoders.insert(schema_id, Decoder::new(schema, None)?);
        Ok(Mapper {
            encoder: Encoder::new(schema)?,
            schema,
            schema_id,
            device_field: device_field.to_string(),
            format,
            max_payload,
            registry,
            decoders,
            device_from: "topic",
            avro_batches: false,
        })
    }

    /// Messages name the device's origin `what` ("the token's device is ..."); Avro payloads
    /// may hold several framed records back to back when `avro_batches`.
    pub fn for_source(mut self, what: &'static str, avro_batches: bool) -> Mapper {
        self.device_from = what;
        self.avro_batches = avro_batches;
        self
    }

    /// The framed records (each `0, id, body`) one payload for `device` holds, in order.
    pub async fn map(&mut self, device: &str, payload: &[u8]) -> Result<Vec<Vec<u8>>, MapError> {
        self.map_as(self.format, device, payload).await
    }

    /// As [`Mapper::map`], for a payload in `format` (an HTTP request's content type).
    pub async fn map_as(
        &mut self,
        format: PayloadFormat,
        device: &str,
        payload: &[u8],
    ) -> Result<Vec<Vec<u8>>, MapError> {
        if payload.len() > self.max_payload {
            return Err(reject(
                OVERSIZE,
                format!(
                    "payload of {} bytes is over max_payload ({} bytes)",
                    payload.len(),
                    self.max_payload
                ),
            )
            .into());
        }
        let values = match format {
            PayloadFormat::Json => self.map_json(device, payload)?,
            PayloadFormat::Avro => {
                let mut values = Vec::new();
                let mut rest = payload;
                loop {
                    let (v, after) = self.map_avro(device, rest, values.len()).await?;
                    values.push(v);
                    if after.is_empty() {
                        break values;
                    }
                    if !self.avro_batches {
                        return Err(reject(
                            BAD_AVRO,
                            format!("{} bytes after the record", after.len()),
                        )
                        .into());
                    }
                    rest = after;
                }
            }
        };
        values
            .into_iter()
            .map(|v| {
                let mut out = Vec::with_capacity(64);
                sluice_schemas::wire::write_header(self.schema_id, &mut out);
                self.encoder
                    .encode(&v, &mut out)
                    .map_err(|e| reject(WRONG_TYPE, format!("does not encode: {e}")))?;
                Ok(out)
            })
            .collect()
    }

    fn map_json(&self, device: &str, payload: &[u8]) -> Result<Vec<Value>, Rejected> {
        let json: Json = serde_json::from_slice(payload)
            .map_err(|e| reject(BAD_JSON, format!("not JSON: {e}")))?;
        let items = match json {
            Json::Array(items) if !items.is_empty() => items,
            Json::Array(_) => return Err(reject(BAD_JSON, "an empty array")),
            one @ Json::Object(_) => vec![one],
            other => {
                return Err(reject(
                    BAD_JSON,
                    format!(
                        "a {} where a reading object or an array of them was expected",
                        kind_of(&other)
                    ),
                ))
            }
        };
        let many = items.len() > 1;
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let at = if many {
                    format!("[{i}]")
                } else {
                    String::new()
                };
                let mut obj = match item {
                    Json::Object(o) => o,
                    other => {
                        return Err(reject(
                            BAD_JSON,
                            format!("element {at} is a {}, not an object", kind_of(&other)),
                        ))
                    }
                };
                match obj.get(&self.device_field) {
                    None | Some(Json::Null) => {
                        obj.insert(self.device_field.clone(), Json::String(device.into()));
                    }
                    Some(Json::String(d)) if d == device => {}
                    Some(Json::String(d)) => {
                        return Err(reject(
                            DEVICE_MISMATCH,
                            format!(
                                "{at}{} is `{d}` but the {}'s device is `{device}`",
                                self.device_field, self.device_from
                            ),
                        ))
                    }
                    Some(other) => {
                        return Err(reject(
                            WRONG_TYPE,
                            format!(
                                "{at}{} is a {}, expected a string",
                                self.device_field,
                                kind_of(other)
                            ),
                        ))
                    }
                }
                json_to_avro(self.schema, &Json::Object(obj), &at)
            })
            .collect()
    }

    /// The record framed at the start of `payload` (the `i`th of the payload) and what
    /// follows it.
    async fn map_avro<'p>(
        &mut self,
        device: &str,
        payload: &'p [u8],
        i: usize,
    ) -> Result<(Value, &'p [u8]), MapError> {
        let at = if i > 0 {
            format!("record [{i}]: ")
        } else {
            String::new()
        };
        let (id, mut body) = sluice_schemas::wire::parse(payload)
            .map_err(|e| reject(BAD_AVRO, format!("{at}not Confluent-framed Avro: {e}")))?;
        if !self.decoders.contains_key(&id) {
            let Some(registry) = &self.registry else {
                return Err(reject(UNKNOWN_SCHEMA, format!("schema id {id} is not known")).into());
            };
            let text = match registry.schema_by_id(id).await {
                Ok(t) => t,
                Err(e) if matches!(e.code(), Some(40403) | Some(40401)) => {
                    return Err(reject(
                        UNKNOWN_SCHEMA,
                        format!("schema id {id} is not in the registry"),
                    )
                    .into())
                }
                Err(e) => return Err(MapError::Registry(e)),
            };
            let writer = Schema::parse_str(&text).map_err(|e| {
                reject(
                    BAD_AVRO,
                    format!("schema id {id} is not an Avro schema: {e}"),
                )
            })?;
            // Each writer schema once for the life of the process (a handful per fleet).
            let decoder = Decoder::new(sluice_ops::codec::leak(writer), Some(self.schema))
                .map_err(|e| {
                    reject(
                        BAD_AVRO,
                        format!("schema id {id} does not resolve to the output schema: {e}"),
                    )
                })?;
            self.decoders.insert(id, decoder);
        }
        let value = self.decoders[&id].decode(&mut body).map_err(|e| {
            reject(
                BAD_AVRO,
                format!("{at}body does not decode with schema id {id}: {e}"),
            )
        })?;
        let Value::Record(fields) = &value else {
            return Err(reject(BAD_AVRO, format!("{at}not a record")).into());
        };
        let named = fields.iter().find(|(n, _)| *n == self.device_field);
        match named.map(|(_, v)| v) {
            Some(Value::String(d)) if d == device => Ok((value, body)),
            Some(Value::String(d)) => Err(reject(
                DEVICE_MISMATCH,
                format!(
                    "{at}{} is `{d}` but the {}'s device is `{device}`",
                    self.device_field, self.device_from
                ),
            )
            .into()),
            _ => Err(reject(
                WRONG_TYPE,
                format!("{at}{} is not a string", self.device_field),
            )
            .into()),
        }
    }
}

fn kind_of(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// A JSON value as an Avro value of `schema`; `at` names the place for messages.
fn json_to_avro(schema: &Schema, j: &Json, at: &str) -> Result<Value, Rejected> {
    let wrong = || {
        reject(
            WRONG_TYPE,
            format!("{at} is a {}, expected {}", kind_of(j), type_name(schema)),
        )
    };
    let int = || j.as_i64().ok_or_else(wrong);
    Ok(match schema {
        Schema::Null if j.is_null() => Value::Null,
        Schema::Boolean => Value::Boolean(j.as_bool().ok_or_else(wrong)?),
        Schema::Int => Value::Int(i32::try_from(int()?).map_err(|_| wrong())?),
        Schema::Long => Value::Long(int()?),
        Schema::Float => Value::Float(j.as_f64().ok_or_else(wrong)? as f32),
        Schema::Double => Value::Double(j.as_f64().ok_or_else(wrong)?),
        Schema::String => Value::String(j.as_str().ok_or_else(wrong)?.to_string()),
        Schema::TimestampMillis => Value::TimestampMillis(int()?),
        Schema::TimestampMicros => Value::TimestampMicros(int()?),
        Schema::Date => Value::Date(i32::try_from(int()?).map_err(|_| wrong())?),
        Schema::Enum(e) => {
            let s = j.as_str().ok_or_else(wrong)?;
            let i = e.symbols.iter().position(|x| x == s).ok_or_else(|| {
                reject(
                    WRONG_TYPE,
                    format!("{at} is `{s}`, not one of {}", e.symbols.join(", ")),
                )
            })?;
            Value::Enum(i as u32, s.to_string())
        }
        Schema::Array(a) => Value::Array(
            j.as_array()
                .ok_or_else(wrong)?
                .iter()
                .enumerate()
                .map(|(i, x)| json_to_avro(&a.items, x, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Map(m) => Value::Map(
            j.as_object()
                .ok_or_else(wrong)?
                .iter()
                .map(|(k, x)| Ok((k.clone(), json_to_avro(&m.types, x, &format!("{at}.{k}"))?)))
                .collect::<Result<_, Rejected>>()?,
        ),
        Schema::Union(u) => {
            // The first branch the value fits: null for null, else the first non-null one.
            let mut last = None;
            for (i, branch) in u.variants().iter().enumerate() {
                if matches!(branch, Schema::Null) != j.is_null() {
                    continue;
                }
                match json_to_avro(branch, j, at) {
                    Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
                    Err(e) => last = Some(e),
                }
            }
            return Err(last.unwrap_or_else(wrong));
        }
        Schema::Record(r) => {
            let obj = j.as_object().ok_or_else(wrong)?;
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let path = if at.is_empty() {
                    f.name.clone()
                } else {
                    format!("{at}.{}", f.name)
                };
                let v = match (obj.get(&f.name), &f.default) {
                    (Some(v), _) => json_to_avro(&f.schema, v, &path)?,
                    (None, Some(d)) => json_to_avro(&f.schema, d, &path)?,
                    (None, None) if nullable(&f.schema) => {
                        json_to_avro(&f.schema, &Json::Null, &path)?
                    }
                    (None, None) => {
                        return Err(reject(
                            MISSING_FIELD,
                            format!("{path} is missing ({})", type_name(&f.schema)),
                        ))
                    }
                };
                fields.push((f.name.clone(), v));
            }
            Value::Record(fields)
        }
        _ => return Err(wrong()),
    })
}

fn nullable(s: &Schema) -> bool {
    matches!(s, Schema::Union(u) if u.variants().iter().any(|v| matches!(v, Schema::Null)))
}

fn type_name(s: &Schema) -> String {
    match s {
        Schema::Union(u) => u
            .variants()
            .iter()
            .map(type_name)
            .collect::<Vec<_>>()
            .join(" or "),
        Schema::Record(r) => format!("a {} object", r.name.name()),
        Schema::TimestampMillis => "a timestamp in ms (integer)".into(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../schemas/telemetry-v1.avsc");

    fn mapper(format: PayloadFormat) -> Mapper {
        Mapper::new(
            Schema::parse_str(SCHEMA).unwrap(),
            7,
            "device_id",
            format,
            1024,
            None,
        )
        .unwrap()
    }

    fn decode(framed: &[u8]) -> Value {
        let (id, body) = sluice_schemas::wire::parse(framed).unwrap();
        assert_eq!(id, 7);
        sluice_ops::codec::decode_once(&Schema::parse_str(SCHEMA).unwrap(), None, body).unwrap()
    }

    fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
        let Value::Record(f) = v else { panic!() };
        &f.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn class(r: Result<Vec<Vec<u8>>, MapError>) -> &'static str {
        match r {
            Err(MapError::Rejected(r)) => r.class,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn json_readings_take_the_device_from_the_topic() {
        let mut m = mapper(PayloadFormat::Json);
        let one = br#"{"metric":"temperature","ts":1700000000000,"value":21.5,"seq":3}"#;
        let recs = m.map("d-1", one).await.unwrap();
        assert_eq!(recs.len(), 1);
        let v = decode(&recs[0]);
        assert_eq!(field(&v, "device_id"), &Value::String("d-1".into()));
        assert_eq!(field(&v, "seq"), &Value::Long(3));
        assert_eq!(field(&v, "firmware"), &Value::String(String::new()));
        let many = br#"[{"metric":"a","ts":1,"value":1,"seq":1,"device_id":"d-1"},{"metric":"b","ts":2,"value":2.5,"seq":2}]"#;
        assert_eq!(m.map("d-1", many).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bad_json_payloads_get_their_class() {
        let mut m = mapper(PayloadFormat::Json);
        let ok = r#""metric":"t","ts":1,"value":1.0,"seq":1"#;
        assert_eq!(class(m.map("d", b"{not json").await), BAD_JSON);
        assert_eq!(class(m.map("d", b"[]").await), BAD_JSON);
        assert_eq!(class(m.map("d", b"42").await), BAD_JSON);
        let missing = br#"{"metric":"t","ts":1,"value":1.0}"#;
        assert_eq!(class(m.map("d", missing).await), MISSING_FIELD);
        let mistyped = br#"{"metric":"t","ts":1,"value":"hot","seq":1}"#;
        assert_eq!(class(m.map("d", mistyped).await), WRONG_TYPE);
        let other = format!(r#"{{{ok},"device_id":"e"}}"#);
        assert_eq!(class(m.map("d", other.as_bytes()).await), DEVICE_MISMATCH);
        let big = format!(r#"{{{ok},"firmware":"{}"}}"#, "x".repeat(2000));
        assert_eq!(class(m.map("d", big.as_bytes()).await), OVERSIZE);
    }

    #[tokio::test]
    async fn avro_in_the_output_schema_is_checked_and_kept() {
        let mut j = mapper(PayloadFormat::Json);
        let framed = j
            .map("d-2", br#"{"metric":"t","ts":5,"value":1.0,"seq":9}"#)
            .await
            .unwrap()
            .remove(0);
        let mut a = mapper(PayloadFormat::Avro);
        assert_eq!(a.map("d-2", &framed).await.unwrap(), vec![framed.clone()]);
        assert_eq!(class(a.map("d-3", &framed).await), DEVICE_MISMATCH);
        assert_eq!(class(a.map("d-2", b"{}").await), BAD_AVRO);
        assert_eq!(class(a.map("d-2", &framed[..8]).await), BAD_AVRO);
        let mut other_id = framed.clone();
        other_id[4] = 99;
        assert_eq!(class(a.map("d-2", &other_id).await), UNKNOWN_SCHEMA);
    }
}
