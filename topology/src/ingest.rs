//! `ingest:`: bridges that bring device data from outside into the topology's topics
//! (`sluice ingest FILE` runs them). One module per kind, registered in [`INGEST_KINDS`]
//! and [`parse_bridge`]; each kind's spec, its defaults and its checks sit together.

pub mod mqtt;

use std::path::Path;

use crate::error::{closest, Problem};
use crate::lines::LineIndex;
use crate::model::{TopicSpec, Topology};

pub use mqtt::{MqttIngestSpec, MqttProtocol, MqttUrl, PayloadFormat, TopicFilter};

/// Every ingest kind, by its `kind:` name.
pub const INGEST_KINDS: &[&str] = &["mqtt"];

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
}

impl IngestSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            IngestSpec::Mqtt(_) => "mqtt",
        }
    }

    /// Topics the bridge produces to, with the key that names each (for errors).
    pub fn outputs(&self) -> Vec<(&'static str, &str)> {
        match self {
            IngestSpec::Mqtt(m) => vec![("output", &m.output), ("dead_letter", &m.dead_letter)],
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
        for (field, topic) in bridge.spec.outputs() {
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
        }
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
