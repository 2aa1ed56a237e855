//! `ingest:`: bridges that bring device data from outside into the topology's topics
//! (`sluice ingest FILE` runs them). One module per kind, registered in [`INGEST_KINDS`]
//! and [`parse_bridge`]; each kind's spec, its defaults and its checks sit together.

pub mod http;
pub mod mqtt;

use std::path::Path;

use serde::Deserialize;

use crate::error::{closest, Problem};
use crate::lines::LineIndex;
use crate::model::{TopicSpec, Topology};

pub use http::{HttpIngestSpec, HttpTls, TokenStore};
pub use mqtt::{MqttIngestSpec, MqttProtocol, MqttUrl, PayloadFormat, TopicFilter};

/// Every ingest kind, by its `kind:` name.
pub const INGEST_KINDS: &[&str] = &["mqtt", "http"];

/// A named bridge under `ingest:`.
#[derive(Debug, Clone)]
pub struct IngestBridge {
    pub name: String,
    pub spec: IngestSpec,
}

/// A bridge's settings; which struct depends on `kind`.
#[derive(Debug, Clone)]
pub enum IngestSpec {
    Mqtt(MqttIngestSpec),
    Http(HttpIngestSpec),
}

impl IngestSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            IngestSpec::Mqtt(_) => "mqtt",
            IngestSpec::Http(_) => "http",
        }
    }

    /// Topics the bridge produces to, with the key that names each (for errors).
    pub fn outputs(&self) -> Vec<(&'static str, &str)> {
        match self {
            IngestSpec::Mqtt(m) => vec![("output", &m.output), ("dead_letter", &m.dead_letter)],
            IngestSpec::Http(h) => vec![("output", &h.output)],
        }
    }

    /// Topics the bridge reads (the HTTP bridge's token topic), with their keys.
    pub fn inputs(&self) -> Vec<(&'static str, &str)> {
        match self {
            IngestSpec::Http(HttpIngestSpec {
                tokens: TokenStore::Topic(t),
                ..
            }) => vec![("tokens.topic", t)],
            _ => vec![],
        }
    }

    /// The output topic and the field the bridge fills with the device id.
    pub fn output_and_device_field(&self) -> (&str, &str) {
        match self {
            IngestSpec::Mqtt(m) => (&m.output, &m.device_field),
            IngestSpec::Http(h) => (&h.output, &h.device_field),
        }
    }
}

/// Parses the bridge `name`'s block by its `kind`.
pub(crate) fn parse_bridge(
    text: &str,
    index: &LineIndex,
    name: &str,
    value: &serde_yaml::Value,
) -> Result<IngestSpec, Problem> {
    let key = format!("ingest.{name}");
    let (line, _) = index.find(&key);
    let kind = value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
        Problem::new(
            line,
            0,
            &key,
            "ingest bridge has no `kind`",
            format!("add `kind:` with one of {}", INGEST_KINDS.join(", ")),
        )
    })?;
    let (snippet, line_off, col_off) = crate::load::snippet(text, line);
    match kind {
        "mqtt" => Ok(IngestSpec::Mqtt(crate::load::typed(
            &snippet, &key, line_off, col_off, index,
        )?)),
        "http" => Ok(IngestSpec::Http(crate::load::typed(
            &snippet, &key, line_off, col_off, index,
        )?)),
        other => {
            let (l, c) = index.find(&format!("{key}.kind"));
            let fix = match closest(other, INGEST_KINDS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("use one of {}", INGEST_KINDS.join(", ")),
            };
            Err(Problem::new(
                l,
                c,
                format!("{key}.kind"),
                format!("unknown ingest kind `{other}`"),
                fix,
            ))
        }
    }
}

/// Checks every bridge against the rest of the topology: names, declared topics, and each
/// kind's own settings. Pure: only local schema files are read.
pub(crate) fn check(t: &Topology, path: &Path, push: &mut impl FnMut(String, String, String)) {
    let topic_names: Vec<&str> = t.topics.keys().map(String::as_str).collect();
    for bridge in &t.ingest {
        let base = format!("ingest.{}", bridge.name);
        if !crate::validate::usable_name(&bridge.name) {
            push(
                base.clone(),
                format!(
                    "bridge name `{}` is not usable in client ids and metric labels",
                    bridge.name
                ),
                "use lowercase letters, digits, `-` and `_`".into(),
            );
        }
        if t.stages.iter().any(|s| s.name == bridge.name) {
            push(
                base.clone(),
                format!("`{}` names both a stage and an ingest bridge", bridge.name),
                "rename one: dead letters and metrics name their writer".into(),
            );
        }
        for (field, topic) in bridge
            .spec
            .outputs()
            .into_iter()
            .chain(bridge.spec.inputs())
        {
            if !t.topics.contains_key(topic) {
                let fix = crate::validate::undeclared_topic_fix(topic, &topic_names);
                push(
                    format!("{base}.{field}"),
                    format!("topic `{topic}` is not declared"),
                    fix,
                );
            }
        }
        match &bridge.spec {
            IngestSpec::Mqtt(m) => {
                let output = t.topics.get(&m.output);
                m.check(&base, output.map(|o| output_schema(o, path)), push)
            }
            IngestSpec::Http(h) => {
                let output = t.topics.get(&h.output);
                let tokens = match &h.tokens {
                    TokenStore::Topic(name) => Some(t.topics.get(name)),
                    TokenStore::File(_) => None,
                };
                h.check(&base, output.map(|o| output_schema(o, path)), tokens, push);
                if let Some(tls) = &h.tls {
                    for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
                        let resolved = crate::load::resolve_relative(path, file);
                        if !resolved.is_file() {
                            push(
                                format!("{base}.tls.{key}"),
                                format!("{} is not a file", resolved.display()),
                                "name a PEM file, relative to the topology file".into(),
                            );
                        }
                    }
                }
                if let TokenStore::File(file) = &h.tokens {
                    let resolved = crate::load::resolve_relative(path, file);
                    if let Err(why) = read_token_file(&resolved) {
                        push(
                            format!("{base}.tokens.file"),
                            why,
                            "write `device-id: <sha256 of the token, hex>` per line (docs/INGEST.md)".into(),
                        );
                    }
                }
            }
        }
    }
}

/// Tokens a file holds: each hash (64 hex digits, lowercase) with its device. `Err` says
/// what is wrong with the file, naming it and the entry.
pub fn read_token_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("token file {} cannot be read ({e})", path.display()))?;
    parse_token_file(&text).map_err(|e| format!("token file {}: {e}", path.display()))
}

/// `device: hash` or `device: [hash, ...]` per entry; an empty file holds no tokens.
pub fn parse_token_file(text: &str) -> Result<Vec<(String, String)>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Hashes {
        One(String),
        Many(Vec<String>),
    }
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    let map: std::collections::BTreeMap<String, Option<Hashes>> = serde_yaml::from_str(text)
        .map_err(|e| format!("not a map of device ids to token hashes ({e})"))?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (device, hashes) in map {
        let hashes = match hashes {
            None => vec![],
            Some(Hashes::One(h)) => vec![h],
            Some(Hashes::Many(v)) => v,
        };
        for h in hashes {
            let h = h.trim().to_ascii_lowercase();
            if !http::is_token_hash(&h) {
                return Err(format!(
                    "device `{device}`: `{h}` is not a SHA-256 in hex (64 digits); store the token's hash, never the token"
                ));
            }
            if let Some(other) = seen.insert(h.clone(), device.clone()) {
                if other != device {
                    return Err(format!(
                        "devices `{other}` and `{device}` have the same token hash; give each device its own token"
                    ));
                }
            }
            out.push((h, device.clone()));
        }
    }
    Ok(out)
}

/// Checks the output topic a bridge fills: a subject, a record schema with `device_field`
/// a string. `filler` says what gives the device id (for the message).
pub(crate) fn check_output(
    base: &str,
    output: &str,
    device_field: &str,
    filler: &str,
    out: OutputSchema,
    push: &mut impl FnMut(String, String, String),
) {
    if out.subject.is_none() {
        push(
            format!("{base}.output"),
            format!("topic `{output}` has no `subject`"),
            "declare the topic with `subject:` and `schema:`: records are produced with the registry id of its subject".into(),
        );
    }
    match out.fields {
        Err(why) => push(
            format!("{base}.output"),
            format!("topic `{output}` {why}"),
            "declare the topic with `schema: <file>.avsc` (a record); payloads are mapped to it"
                .into(),
        ),
        Ok(fields) => match fields.iter().find(|(n, _)| n == device_field) {
            None => push(
                format!("{base}.device_field"),
                format!("{filler} fills `{device_field}`, which `{output}`'s schema does not have"),
                format!(
                    "name a string field of the schema: {}",
                    fields
                        .iter()
                        .filter(|(_, s)| *s)
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some((_, false)) => push(
                format!("{base}.device_field"),
                format!("field `{device_field}` is not a string"),
                "the device id is a string: name a string field".into(),
            ),
            Some(_) => {}
        },
    }
}

/// What a bridge needs to know of its output topic: its subject and, from its `.avsc`, the
/// record's field names with whether each is a string.
pub(crate) struct OutputSchema {
    pub(crate) subject: Option<String>,
    /// `Err` says why the schema cannot be read (no `schema:`, unreadable, not a record).
    pub(crate) fields: Result<Vec<(String, bool)>, String>,
}

fn output_schema(topic: &TopicSpec, path: &Path) -> OutputSchema {
    let fields = match &topic.schema {
        None => Err("has no `schema:`".to_string()),
        Some(p) => {
            let resolved = crate::load::resolve_relative(path, p);
            std::fs::read_to_string(&resolved)
                .map_err(|e| format!("schema {} cannot be read ({e})", resolved.display()))
                .and_then(|text| {
                    apache_avro::Schema::parse_str(&text)
                        .map_err(|e| format!("schema {} is not Avro ({e})", resolved.display()))
                })
                .and_then(|s| match s {
                    apache_avro::Schema::Record(r) => Ok(r
                        .fields
                        .iter()
                        .map(|f| {
                            (
                                f.name.clone(),
                                matches!(f.schema, apache_avro::Schema::String),
                            )
                        })
                        .collect()),
                    _ => Err(format!("schema {} is not a record", resolved.display())),
                })
        }
    };
    OutputSchema {
        subject: topic.subject.clone(),
        fields,
    }
}
