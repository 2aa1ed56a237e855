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
    /// What each writer schema id gave, made once. Ids the registry does not know are not
    /// kept: they are asked for again (a schema may be registered after a fix).
    decoders: HashMap<u32, Made>,
}

/// A writer schema id's decoder, or why there is none.
enum Made {
    /// `doubt`: the compatibility check's objection, when it had one. apache-avro's
    /// check is stricter than its reader (a named type defined in one schema and referenced
    /// in the other), so the decoder is tried; a record it cannot read is then
    /// `incompatible_schema` with this reason.
    Ready {
        decoder: Decoder,
        doubt: Option<String>,
    },
    /// The writer schema does not parse.
    Bad(Rejection),
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
    /// writer schema, a body that does not decode, bytes left after it) come back as
    /// `Ok(Err(..))`, for a dead letter; a registry outage as `Err` (retry later). The
    /// classes are the built-in decoder's.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Result<Value, Rejection>, ProcessError> {
        let (id, mut body) = match wire::parse(bytes) {
            Ok(x) => x,
            Err(e) => return Ok(Err(Rejection::new(e.class(), e.to_string()))),
        };
        let made = match self.decoders.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Some(json) = self.schemas.fetch(id)? else {
                    return Ok(Err(Rejection::new(
                        "unknown_schema_id",
                        format!("schema id {id} is not in the registry"),
                    )));
                };
                e.insert(make(self.reader, id, &json))
            }
        };
        let (decoder, doubt) = match made {
            Made::Ready { decoder, doubt } => (decoder, doubt),
            Made::Bad(r) => return Ok(Err(r.clone())),
        };
        let value = match decoder.decode(&mut body) {
            Ok(v) => v,
            Err(e) if ends_early(&e) => {
                return Ok(Err(Rejection::new(
                    "truncated",
                    format!("record is truncated: the bytes end before writer schema {id}'s last field: {e}"),
                )))
            }
            Err(e) => {
                return Ok(Err(match doubt {
                    Some(why) => Rejection::new(
                        "incompatible_schema",
                        format!("writer schema {id} cannot be read with the reader schema: {why} ({e})"),
                    ),
                    None => Rejection::new(
                        "invalid_body",
                        format!("record does not decode with writer schema {id} into the reader schema: {e}"),
                    ),
                }))
            }
        };
        if !body.is_empty() {
            return Ok(Err(Rejection::new(
                "invalid_body",
                format!(
                    "{} bytes are left after the record written with schema {id}",
                    body.len()
                ),
            )));
        }
        Ok(Ok(value))
    }
}

/// A decoder of writer schema `id` (its JSON from the registry) into `reader`.
fn make(reader: &'static Schema, id: u32, json: &str) -> Made {
    let unreadable = |e: &dyn std::fmt::Display| {
        Made::Bad(Rejection::new(
            "invalid_writer_schema",
            format!("writer schema {id} from the registry does not parse: {e}"),
        ))
    };
    let mut writer_json: serde_json::Value = match serde_json::from_str(json) {
        Ok(j) => j,
        Err(e) => return unreadable(&e),
    };
    let reader_json = match serde_json::to_value(reader) {
        Ok(j) => j,
        Err(e) => return unreadable(&e),
    };
    // Resolving into the reader schema rebuilds every record; when the writer's schema
    // is the reader's (the usual case: one registered version), records decode straight
    // into its shape. Compared in full form: the canonical form would drop logical
    // types.
    if writer_json == reader_json {
        return match Decoder::new(reader, None) {
            Ok(decoder) => Made::Ready {
                decoder,
                doubt: None,
            },
            Err(e) => unreadable(&e),
        };
    }
    rename_aliased(&mut writer_json, &reader_json);
    let writer = match Schema::parse(&writer_json) {
        Ok(w) => leak(w),
        Err(e) => return unreadable(&e),
    };
    let doubt = apache_avro::schema_compatibility::SchemaCompatibility::can_read(writer, reader)
        .err()
        .map(|e| e.to_string());
    match Decoder::new(writer, Some(reader)) {
        Ok(decoder) => Made::Ready { decoder, doubt },
        Err(e) => Made::Bad(Rejection::new(
            "incompatible_schema",
            format!("writer schema {id} cannot be read with the reader schema: {e}"),
        )),
    }
}

/// Renames, in the writer schema, each record field that a reader field names among its
/// `aliases` (a field renamed in a later version, `ts` to `event_time`) to the reader's name,
/// nested records, arrays, maps and unions included. The binary encoding does not carry
/// names, so the bytes read the same; apache-avro's resolution matches fields by name only.
fn rename_aliased(writer: &mut serde_json::Value, reader: &serde_json::Value) {
    use serde_json::Value as J;
    match (writer, reader) {
        (J::Object(w), J::Object(r)) => {
            let kind = |o: &serde_json::Map<String, J>| {
                o.get("type").and_then(J::as_str).map(str::to_string)
            };
            match (kind(w).as_deref(), kind(r).as_deref()) {
                (Some("record"), Some("record")) => {
                    let (Some(J::Array(wf)), Some(J::Array(rf))) =
                        (w.get_mut("fields"), r.get("fields"))
                    else {
                        return;
                    };
                    let name = |f: &J| f.get("name").and_then(J::as_str).map(str::to_string);
                    let reader_names: Vec<String> = rf.iter().filter_map(name).collect();
                    // Avro uses an alias only when the writer lacks the reader's name.
                    let mut writer_names: Vec<String> = wf.iter().filter_map(name).collect();
                    for f in wf.iter_mut() {
                        let Some(n) = name(f) else { continue };
                        if !reader_names.contains(&n) {
                            let by_alias = rf.iter().find(|r| {
                                r.get("aliases").and_then(J::as_array).is_some_and(|a| {
                                    a.iter().any(|x| x.as_str() == Some(n.as_str()))
                                })
                            });
                            if let Some(target) = by_alias.and_then(name) {
                                if !writer_names.contains(&target) {
                                    writer_names.push(target.clone());
                                    f["name"] = J::String(target);
                                }
                            }
                        }
                        let Some(n) = name(f) else { continue };
                        if let (Some(wt), Some(rt)) = (
                            f.get_mut("type"),
                            rf.iter()
                                .find(|r| name(r).as_deref() == Some(n.as_str()))
                                .and_then(|r| r.get("type")),
                        ) {
                            rename_aliased(wt, rt);
                        }
                    }
                }
                (Some("array"), Some("array")) => {
                    if let (Some(wi), Some(ri)) = (w.get_mut("items"), r.get("items")) {
                        rename_aliased(wi, ri);
                    }
                }
                (Some("map"), Some("map")) => {
                    if let (Some(wv), Some(rv)) = (w.get_mut("values"), r.get("values")) {
                        rename_aliased(wv, rv);
                    }
                }
                _ => {}
            }
        }
        // A union: each writer record branch with the reader's record branch of its name.
        (J::Array(wb), J::Array(rb)) => {
            for w in wb.iter_mut() {
                let wname = w.get("name").and_then(J::as_str).map(str::to_string);
                if let Some(r) = rb.iter().find(|r| {
                    r.get("name").and_then(J::as_str) == wname.as_deref() && wname.is_some()
                }) {
                    rename_aliased(w, r);
                }
            }
        }
        // A union read as its one non-null branch, or the reverse.
        (J::Array(wb), r @ J::Object(_)) => {
            for w in wb.iter_mut() {
                rename_aliased(w, r);
            }
        }
        (w @ J::Object(_), J::Array(rb)) => {
            let wname = w.get("name").and_then(J::as_str).map(str::to_string);
            if let Some(r) = rb
                .iter()
                .find(|r| r.get("name").and_then(J::as_str) == wname.as_deref() && wname.is_some())
            {
                rename_aliased(w, r);
            }
        }
        _ => {}
    }
}

/// Whether decoding failed because the bytes ran out (a record cut short), rather than on
/// bytes that are not Avro: the reader's I/O error, somewhere down the error's sources.
fn ends_early(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use sluice_schemas::codec::AvroRecord;
    use sluice_schemas::records::Telemetry;

    use super::*;
    use crate::stages::testkit::{Bundled, AGG, V2};

    fn decoder(reader: &str) -> WireDecoder {
        let reader = leak(Schema::parse_str(reader).unwrap());
        WireDecoder::new(reader, Box::new(Bundled))
    }

    fn class(d: &mut WireDecoder, bytes: &[u8]) -> Option<&'static str> {
        d.decode(bytes).unwrap().err().map(|r| r.class)
    }

    /// The built-in decoder's classes, from the same bytes: a record cut anywhere is
    /// `truncated`, a body that is not Avro `invalid_body`, a writer schema the reader cannot
    /// resolve `incompatible_schema`.
    #[test]
    fn each_kind_of_bad_record_gets_the_built_in_decoder_s_class() {
        let t = Telemetry {
            device_id: "dev-000042".into(),
            metric: "temperature".into(),
            event_time: 1_700_000_000_000,
            value: 21.5,
            seq: 77,
            quality: 100,
        };
        let mut bytes = Vec::new();
        t.encode_wire(V2, &mut bytes);
        let v2 = sluice_schemas::BUNDLED[1].1;
        let mut d = decoder(v2);
        assert_eq!(class(&mut d, &bytes), None);
        for cut in 0..bytes.len() {
            assert_eq!(
                class(&mut d, &bytes[..cut]),
                Some("truncated"),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        let mut invalid = bytes[..5].to_vec();
        invalid.extend_from_slice(&[0xff; 10]);
        invalid.extend_from_slice(&[0x7f; 16]);
        assert_eq!(class(&mut d, &invalid), Some("invalid_body"));
        let mut unknown = bytes.clone();
        unknown[1..5].copy_from_slice(&999u32.to_be_bytes());
        assert_eq!(class(&mut d, &unknown), Some("unknown_schema_id"));
        let mut magic = bytes.clone();
        magic[0] = 7;
        assert_eq!(class(&mut d, &magic), Some("wrong_magic"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            class(&mut d, &longer),
            Some("invalid_body"),
            "a byte left over"
        );
        // Telemetry read as an aggregate: no field in common resolves.
        let mut d = decoder(sluice_schemas::BUNDLED[AGG as usize - 1].1);
        assert_eq!(class(&mut d, &bytes), Some("incompatible_schema"));
    }

    /// An alias renames a writer field only when the writer lacks the reader's name: a
    /// writer with both `ts` and `event_time` keeps both, and `event_time` is read.
    #[test]
    fn an_alias_does_not_rename_a_field_onto_one_the_writer_has() {
        let reader = r#"{"type": "record", "name": "R", "fields": [
            {"name": "event_time", "aliases": ["ts"], "type": "long"}]}"#;
        let writer = r#"{"type": "record", "name": "R", "fields": [
            {"name": "ts", "type": "long"}, {"name": "event_time", "type": "long"}]}"#;
        let mut w: serde_json::Value = serde_json::from_str(writer).unwrap();
        rename_aliased(&mut w, &serde_json::from_str(reader).unwrap());
        assert_eq!(
            w,
            serde_json::from_str::<serde_json::Value>(writer).unwrap()
        );
        let renamed = r#"{"type": "record", "name": "R", "fields": [
            {"name": "ts", "type": "long"}]}"#;
        let mut w: serde_json::Value = serde_json::from_str(renamed).unwrap();
        rename_aliased(&mut w, &serde_json::from_str(reader).unwrap());
        assert_eq!(w["fields"][0]["name"], "event_time");
    }
}
