//! `kind: pipeline`: operators composed in order over any Avro stream. The operators
//! themselves (their specs, checks and builds) live in `sluice-ops`; this module ties a
//! stage's list to its input topic's schema, offline, and keeps the checked chain.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sluice_ops::op::{Chain, KeyShape, StreamType};
use sluice_ops::types::RecordType;

use crate::error::Problem;
use crate::lines::LineIndex;
use crate::model::Topology;
use crate::stage::StageSpec;

/// `kind: pipeline`: reads `input`, runs `operators` in order, writes `output`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Always `pipeline`.
    pub kind: String,
    /// The topic read. It must have a `schema:` (an `.avsc` file): the operators are checked
    /// against that record type.
    pub input: String,
    /// The operators, in order, each a one-key mapping naming its kind: `- filter: "..."`.
    /// See docs/TOPOLOGY.md for every kind.
    #[serde(default)]
    pub operators: Vec<serde_yaml::Value>,
    /// The topic written: what the last operator hands on, with the schema sluice derives
    /// (registered under the topic's `subject`, default `<topic>-value`).
    pub output: String,
    /// Records an operator rejects (an expression that fails on them, a record too late for
    /// every window) go here with the reason in headers. Without it they are dropped and
    /// counted in `sluice_dead_letters_total`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Filled by the check: the operators compiled against the input schema.
    #[serde(skip)]
    pub plan: Option<Arc<PipelinePlan>>,
}

/// A checked pipeline: its operators and the schemas at both ends.
#[derive(Debug)]
pub struct PipelinePlan {
    pub chain: Chain,
    /// The input topic's schema, the reader schema of every input record.
    pub input_schema: &'static apache_avro::Schema,
    /// The derived output schema.
    pub output_schema: &'static apache_avro::Schema,
    /// The output's registry subject.
    pub output_subject: String,
}

impl PipelineSpec {
    /// The checked plan; `sluice_topology::load` fills it for every pipeline stage.
    pub fn plan(&self) -> &PipelinePlan {
        self.plan
            .as_deref()
            .expect("pipeline stages are planned when the topology loads")
    }
}

/// Plans every pipeline stage of `t`: reads its input schema, checks its operators and
/// derives its output schema. Problems go to `out` with lines.
pub(crate) fn plan_all(t: &mut Topology, path: &Path, index: &LineIndex, out: &mut Vec<Problem>) {
    let topics = t.topics.clone();
    let app = t.metadata.name.clone();
    for stage in &mut t.stages {
        let StageSpec::Pipeline(spec) = &mut stage.spec else {
            continue;
        };
        let base = format!("stages.{}", stage.name);
        let mut push = |key: String, message: String, fix: String| {
            let (l, c) = index.find(&key);
            out.push(Problem::new(l, c, key, message, fix));
        };
        let Some(topic) = topics.get(&spec.input) else {
            continue; // reported by the topic check
        };
        let Some(schema_path) = &topic.schema else {
            push(
                format!("{base}.input"),
                format!("input topic `{}` has no `schema:`", spec.input),
                format!(
                    "give `topics.{}` a `schema:` (an .avsc file): a pipeline's operators are checked against it",
                    spec.input
                ),
            );
            continue;
        };
        let file = crate::load::resolve_relative(path, schema_path);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(_) => continue, // reported by the schema file check
        };
        let input_schema = match apache_avro::Schema::parse_str(&text) {
            Ok(s) => s,
            Err(e) => {
                push(
                    format!("topics.{}.schema", spec.input),
                    format!("{} is not a valid Avro schema: {e}", file.display()),
                    "fix the .avsc file (`sluice schemas check` explains registry compatibility)"
                        .into(),
                );
                continue;
            }
        };
        let record = match RecordType::from_schema(&input_schema) {
            Ok(r) => r,
            Err(p) => {
                push(
                    format!("topics.{}.schema", spec.input),
                    format!("{}: {}", file.display(), p.message),
                    p.fix,
                );
                continue;
            }
        };
        let input = StreamType {
            value: record,
            key: KeyShape::Input,
        };
        let chain = match Chain::plan(&spec.operators, input) {
            Ok(c) => c,
            Err(problems) => {
                for p in problems {
                    push(format!("{base}.operators{}", p.key), p.message, p.fix);
                }
                continue;
            }
        };
        let name = format!("{}_{}", avro_name(&stage.name), "output");
        let fields: Vec<_> = chain
            .output
            .value
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.ty.clone()))
            .collect();
        let full_name = format!("sluice.{}.{name}", avro_name(&app));
        let output_schema = match sluice_ops::types::record_schema(&full_name, &fields) {
            Ok(s) => s,
            Err(p) => {
                push(format!("{base}.output"), p.message, p.fix);
                continue;
            }
        };
        let output_subject = topics
            .get(&spec.output)
            .and_then(|t| t.subject.clone())
            .unwrap_or_else(|| format!("{}-value", spec.output));
        // Decoders and encoders borrow their schemas for the life of the process.
        spec.plan = Some(Arc::new(PipelinePlan {
            chain,
            input_schema: sluice_ops::codec::leak(input_schema),
            output_schema: sluice_ops::codec::leak(output_schema),
            output_subject,
        }));
    }
}

/// `name` with every character Avro names do not allow replaced by `_`.
fn avro_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}
