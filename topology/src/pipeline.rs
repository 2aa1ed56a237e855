//! `kind: pipeline`: operators composed in order over any Avro stream. The operators
//! themselves (their specs, checks and builds) live in `sluice-ops`; this module ties a
//! stage's list to its input topic's schema, offline, and keeps the checked chain.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sluice_ops::op::{Chain, KeyShape, PlanContext, StreamType, TopicInfo};
use sluice_ops::types::RecordType;

use crate::error::Problem;
use crate::lines::LineIndex;
use crate::model::{Stage, TopicSpec, Topology};
use crate::stage::StageSpec;

/// `kind: pipeline`: reads `input`, runs `operators` in order, writes `output`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Always `pipeline`.
    pub kind: String,
    /// The topic read. It must have a `schema:` (an `.avsc` file), or a `reader_schema`:
    /// the operators are checked against that record type.
    pub input: String,
    /// An `.avsc` file (relative to the topology) to read the input with instead of the
    /// topic's `schema:`: every record is resolved from the schema it was written with into
    /// this one (renamed fields by alias, promoted types, defaults for missing fields), and
    /// the operators are checked against it. It must be able to read the topic's `schema:`.
    #[serde(default)]
    pub reader_schema: Option<String>,
    /// The operators, in order, each a one-key mapping naming its kind: `- filter: "..."`.
    /// See docs/TOPOLOGY.md for every kind.
    #[serde(default)]
    pub operators: Vec<serde_yaml::Value>,
    /// The topic written: what the last operator hands on, with the schema sluice derives
    /// (registered under the topic's `subject`, default `<topic>-value`). A stage has
    /// `output` or `sink`, not both; neither when its `branches` write all it writes.
    #[serde(default)]
    pub output: Option<String>,
    /// Where the records end instead of a topic: a one-key mapping naming the sink's kind,
    /// `questdb` (rows of a TSDB table) or `s3_parquet` (Parquet objects), with its mapping;
    /// checked against what the last operator hands on. See docs/TOPOLOGY.md, "Sinks".
    #[serde(default)]
    pub sink: Option<serde_yaml::Value>,
    /// More topics written from the same records: each branch runs its own operators over
    /// every record the stage's operators hand on (before `output` or `sink`), and writes
    /// what its last operator hands on to its `output`, with a schema of its own. For
    /// anomalies and their alerts from one detector. See [`BranchSpec`].
    #[serde(default)]
    pub branches: Vec<BranchSpec>,
    /// Records an operator rejects (an expression that fails on them, a record too late for
    /// every window) go here with the reason in headers. Without it they are dropped and
    /// counted in `sluice_dead_letters_total`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Filled by the check: the operators compiled against the input schema (up to the
    /// first repartition, when there is one).
    #[serde(skip)]
    pub plan: Option<Arc<PipelinePlan>>,
    /// Filled by the check: the topic this stage writes, `output` or, when its operators are
    /// cut at a `key_by`, the repartition topic the next part reads.
    #[serde(skip)]
    pub output_topic: Option<String>,
}

/// One of a pipeline's `branches:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// The branch's operators, as the stage's `operators`, over what the stage's operators
    /// hand on. No `key_by` before a stateful operator (a branch cannot repartition).
    #[serde(default)]
    pub operators: Vec<serde_yaml::Value>,
    /// Required: the topic the branch writes, with the schema sluice derives for it.
    pub output: String,
}

/// A checked branch.
#[derive(Debug)]
pub struct BranchPlan {
    pub chain: Chain,
    /// The topic written.
    pub output: String,
    /// Its derived schema.
    pub output_schema: &'static apache_avro::Schema,
    /// Its registry subject.
    pub output_subject: String,
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
    /// The sink the records end in (the last part of a stage with `sink:`), checked against
    /// the output schema.
    pub sink: Option<sluice_ops::sink::SinkPlan>,
    /// The branches (the last part of a stage with `branches:`).
    pub branches: Vec<BranchPlan>,
}

impl PipelinePlan {
    /// The tables the stage's operators and its branches' look values up in, each once.
    pub fn lookups(&self) -> Vec<sluice_ops::op::TableUse> {
        let mut all = self.chain.lookups();
        for u in self.branches.iter().flat_map(|b| b.chain.lookups()) {
            if !all.contains(&u) {
                all.push(u);
            }
        }
        all
    }
}

impl PipelineSpec {
    /// The topic this stage writes: `output`, or the repartition topic when its operators
    /// are cut at a `key_by`; `None` when it ends in a sink.
    pub fn writes(&self) -> Option<&str> {
        self.output_topic.as_deref().or(self.output.as_deref())
    }

    /// The topics this stage (part) writes, by output port: `writes()` (unless it ends in a
    /// sink), then each branch's output.
    pub fn port_topics(&self) -> Vec<String> {
        let branches = self.plan.iter().flat_map(|p| p.branches.iter());
        self.writes()
            .map(str::to_string)
            .into_iter()
            .chain(branches.map(|b| b.output.clone()))
            .collect()
    }

    /// The sink this stage (part) writes, when it ends in one.
    pub fn sink_plan(&self) -> Option<&sluice_ops::sink::SinkPlan> {
        self.plan.as_ref().and_then(|p| p.sink.as_ref())
    }

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
    let mut ctx = PlanContext {
        topics: topic_infos(&topics, path),
        input_partitions: None,
    };
    let mut new_topics = Vec::new();
    let mut new_stages = Vec::new();
    // A topic with no `schema:` that a pipeline writes carries that pipeline's derived
    // schema: a stage reading it is planned after the stage writing it.
    let mut derived: std::collections::HashMap<String, apache_avro::Schema> = Default::default();
    let writers: std::collections::HashSet<String> = t
        .stages
        .iter()
        .flat_map(|s| match &s.spec {
            StageSpec::Pipeline(p) => p
                .output
                .iter()
                .cloned()
                .chain(p.branches.iter().map(|b| b.output.clone()))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    for i in planning_order(t) {
        let stage = &mut t.stages[i];
        let StageSpec::Pipeline(spec) = &mut stage.spec else {
            continue;
        };
        let base = format!("stages.{}", stage.name);
        let mut push = |key: String, message: String, fix: String| {
            let (l, c) = index.find(&key);
            out.push(Problem::new(l, c, key, message, fix));
        };
        match (&spec.output, &spec.sink) {
            (Some(_), Some(_)) => push(
                format!("{base}.sink"),
                "a pipeline stage has `output` or `sink`, not both".into(),
                "keep `output: <topic>` to write a topic, or `sink:` to end in a TSDB table or Parquet objects".into(),
            ),
            (None, None) if spec.branches.is_empty() => push(
                base.clone(),
                "a pipeline stage needs `output` (a topic), `sink` (a TSDB table or Parquet objects) or `branches`".into(),
                "add e.g. `output: my.topic`, or `sink: { questdb: { table: t, columns: [x] } }`".into(),
            ),
            _ => {}
        }
        let Some(topic) = topics.get(&spec.input) else {
            continue; // reported by the topic check
        };
        let reader = match &spec.reader_schema {
            None => None,
            Some(file) => match read_schema(path, Path::new(file)) {
                Ok(s) => Some(s),
                Err((message, fix)) => {
                    push(format!("{base}.reader_schema"), message, fix);
                    continue;
                }
            },
        };
        let written = match &topic.schema {
            Some(file) => read_schema(path, file).ok().map(|s| s.0),
            None => derived.get(&spec.input).cloned(),
        };
        if let (Some((reader, file)), Some(written)) = (&reader, &written) {
            if let Err(e) =
                apache_avro::schema_compatibility::SchemaCompatibility::can_read(written, reader)
            {
                push(
                    format!("{base}.reader_schema"),
                    format!(
                        "{file} cannot read what `{}` holds: {e}",
                        spec.input
                    ),
                    "give new fields defaults, rename with aliases, and only promote types (int to long, float to double); `sluice schemas check` explains".into(),
                );
                continue;
            }
        }
        let (input_schema, file) = match (reader, &topic.schema, derived.get(&spec.input)) {
            (Some(r), _, _) => r,
            (None, Some(schema_path), _) => {
                let file = crate::load::resolve_relative(path, schema_path);
                let text = match std::fs::read_to_string(&file) {
                    Ok(t) => t,
                    Err(_) => continue, // reported by the schema file check
                };
                match apache_avro::Schema::parse_str(&text) {
                    Ok(s) => (s, file.display().to_string()),
                    Err(e) => {
                        push(
                            format!("topics.{}.schema", spec.input),
                            format!("{} is not a valid Avro schema: {e}", file.display()),
                            "fix the .avsc file (`sluice schemas check` explains registry compatibility)"
                                .into(),
                        );
                        continue;
                    }
                }
            }
            (None, None, Some(schema)) => (
                schema.clone(),
                format!("the schema derived for `{}`", spec.input),
            ),
            (None, None, None) if writers.contains(&spec.input) => {
                continue; // its writer has problems, reported there
            }
            (None, None, None) => {
                push(
                    format!("{base}.input"),
                    format!("input topic `{}` has no `schema:`", spec.input),
                    format!(
                        "give `topics.{}` a `schema:` (an .avsc file) or the stage a `reader_schema`, or write it with another pipeline stage's `output`: a pipeline's operators are checked against its schema",
                        spec.input
                    ),
                );
                continue;
            }
        };
        let record = match RecordType::from_schema(&input_schema) {
            Ok(r) => r,
            Err(p) => {
                push(
                    format!("topics.{}.schema", spec.input),
                    format!("{file}: {}", p.message),
                    p.fix,
                );
                continue;
            }
        };
        let input = StreamType {
            value: record,
            key: KeyShape::Input,
        };
        ctx.input_partitions = u32::try_from(topic.partitions).ok();
        let chain = match Chain::plan_in(&spec.operators, input, &ctx) {
            Ok(c) => c,
            Err(problems) => {
                for p in problems {
                    push(format!("{base}.operators{}", p.key), p.message, p.fix);
                }
                continue;
            }
        };
        // Cut at every key_by a stateful operator follows: each cut is a repartition topic
        // and a further stage (consumer group) reading it.
        let input_partitions = topic.partitions;
        let mut parts = Vec::new();
        let mut chain = chain;
        while let Some(k) = chain.repartition_after() {
            let (first, rest) = chain.split_after(k);
            parts.push(first);
            chain = rest;
        }
        parts.push(chain);
        let n = parts.len();
        // The branches follow the last part: the first part's spec no longer lists them.
        let branch_specs = std::mem::take(&mut spec.branches);
        let mut branch_offset = spec.operators.len();
        let mut input_schema = sluice_ops::codec::leak(input_schema);
        let mut input_topic = spec.input.clone();
        for (i, part) in parts.into_iter().enumerate() {
            let last = i + 1 == n;
            let name = if i == 0 {
                stage.name.clone()
            } else {
                sub_stage_name(&stage.name, i)
            };
            // A stage ending in a sink writes no topic; its output schema is still derived:
            // it is the schema of the records the sink receives (Parquet's comes from it).
            let output = if last {
                spec.output.clone().unwrap_or_default()
            } else {
                repartition_topic(&app, &stage.name, i + 1)
            };
            let sink = match (&spec.sink, last) {
                (Some(sink), true) => match sluice_ops::sink::plan(sink, &part.output) {
                    Ok(s) => Some(s),
                    Err(problems) => {
                        for p in problems {
                            push(format!("{base}.sink{}", p.key), p.message, p.fix);
                        }
                        break;
                    }
                },
                _ => None,
            };
            let mut branches = Vec::new();
            if last {
                for (b, branch) in branch_specs.iter().enumerate() {
                    let at = format!("{base}.branches[{b}]");
                    let earlier = spec
                        .output
                        .iter()
                        .map(|o| ("the stage's `output`", o.as_str()))
                        .chain(
                            spec.dead_letter
                                .iter()
                                .map(|d| ("`dead_letter`", d.as_str())),
                        )
                        .chain(
                            branch_specs[..b]
                                .iter()
                                .map(|e| ("an earlier branch", e.output.as_str())),
                        )
                        .find(|(_, t)| *t == branch.output);
                    if let Some((what, topic)) = earlier {
                        push(
                            format!("{at}.output"),
                            format!("`{topic}` is also {what}: one stage writes a topic once, with one schema"),
                            "give the branch a topic of its own".into(),
                        );
                        branch_offset += branch.operators.len();
                        continue;
                    }
                    // A `key_by` in this part changed the key without moving records (nothing
                    // stateful follows it here, or it would have been cut).
                    let rekeyed = part
                        .ops
                        .iter()
                        .rposition(|(name, _)| name == "key_by")
                        .map(|k| k + part.first);
                    match plan_branch(
                        path,
                        branch,
                        &part.output,
                        rekeyed,
                        branch_offset,
                        &ctx,
                        &app,
                        &stage.name,
                        b,
                        &topics,
                    ) {
                        Ok(plan) => {
                            if topics.get(&plan.output).is_none_or(|t| t.schema.is_none()) {
                                derived.insert(plan.output.clone(), plan.output_schema.clone());
                            }
                            branches.push(plan);
                        }
                        Err(problems) => {
                            for p in problems {
                                push(format!("{at}.{}", p.key), p.message, p.fix);
                            }
                        }
                    }
                    branch_offset += branch.operators.len();
                }
            }
            let what = if last { "output" } else { "repartition" };
            let full_name = format!(
                "sluice.{}.{}_{what}{}",
                avro_name(&app),
                avro_name(&stage.name),
                if i > 0 && !last {
                    format!("_{i}")
                } else {
                    String::new()
                }
            );
            let declared = match topics.get(&output).and_then(|t| t.schema.as_ref()) {
                Some(file) if last => {
                    match declared_output(path, &output, file, &part.output.value) {
                        Ok(s) => s,
                        Err((message, fix)) => {
                            push(format!("{base}.output"), message, fix);
                            break;
                        }
                    }
                }
                _ => None,
            };
            let output_schema = match declared
                .map(Ok)
                .unwrap_or_else(|| schema_named(&full_name, &part.output.value))
            {
                Ok(s) => sluice_ops::codec::leak(s),
                Err(p) => {
                    push(format!("{base}.output"), p.message, p.fix);
                    break;
                }
            };
            let output_subject = topics
                .get(&output)
                .and_then(|t| t.subject.clone())
                .unwrap_or_else(|| format!("{output}-value"));
            if !last {
                new_topics.push((
                    output.clone(),
                    TopicSpec {
                        partitions: input_partitions,
                        replication: None,
                        min_insync_replicas: None,
                        subject: Some(output_subject.clone()),
                        schema: None,
                        broker: crate::fluvio::Broker::Kafka,
                    },
                ));
            }
            // Decoders and encoders borrow their schemas for the life of the process.
            let plan = Some(Arc::new(PipelinePlan {
                chain: part,
                input_schema,
                output_schema,
                output_subject,
                sink,
                branches,
            }));
            if i == 0 {
                spec.plan = plan;
                spec.output_topic = (!output.is_empty()).then(|| output.clone());
            } else {
                let first_op = spec.operators.len() - plan_len(&plan);
                new_stages.push((
                    stage.name.clone(),
                    Stage {
                        name,
                        part_of: Some(stage.name.clone()),
                        spec: StageSpec::Pipeline(PipelineSpec {
                            kind: spec.kind.clone(),
                            input: input_topic.clone(),
                            reader_schema: None,
                            operators: spec.operators[first_op..].to_vec(),
                            output: (!output.is_empty()).then(|| output.clone()),
                            sink: if last { spec.sink.clone() } else { None },
                            branches: if last {
                                branch_specs.clone()
                            } else {
                                Vec::new()
                            },
                            output_topic: (!output.is_empty()).then(|| output.clone()),
                            dead_letter: spec.dead_letter.clone(),
                            plan,
                        }),
                    },
                ));
            }
            if last && !output.is_empty() && topics.get(&output).is_none_or(|t| t.schema.is_none())
            {
                derived.insert(output.clone(), output_schema.clone());
            }
            input_topic = output;
            input_schema = output_schema;
        }
        if n == 1 {
            spec.branches = branch_specs;
        }
    }
    for (name, spec) in new_topics {
        t.topics.insert(name, spec);
    }
    // Each sub-stage right after the stage (or sub-stage) it continues.
    for (origin, sub) in new_stages {
        let at = t
            .stages
            .iter()
            .rposition(|s| s.name == origin || s.part_of.as_deref() == Some(&origin))
            .map_or(t.stages.len(), |i| i + 1);
        t.stages.insert(at, sub);
    }
}

/// Plans branch `b` of stage `stage` over `input`, what the stage's operators hand on; its
/// operators are numbered from `first` (after the stage's and earlier branches'), so their
/// store names are the stage's own. Problem keys are relative to the branch.
#[allow(clippy::too_many_arguments)]
fn plan_branch(
    path: &Path,
    spec: &BranchSpec,
    input: &StreamType,
    rekeyed: Option<usize>,
    first: usize,
    ctx: &PlanContext,
    app: &str,
    stage: &str,
    b: usize,
    topics: &std::collections::BTreeMap<String, TopicSpec>,
) -> Result<BranchPlan, Vec<sluice_ops::Problem>> {
    let mut chain = Chain::plan_in(&spec.operators, input.clone(), ctx).map_err(|ps| {
        ps.into_iter()
            .map(|mut p| {
                p.key = format!("operators{}", p.key);
                p
            })
            .collect::<Vec<_>>()
    })?;
    chain.first = first;
    if let Some(k) = chain.repartition_after() {
        return Err(vec![sluice_ops::Problem::new(
            format!("operators[{k}].key_by"),
            "a branch cannot re-key before a stateful operator: that needs a repartition topic and a consumer group of its own",
            "move the `key_by` and what follows it into a stage of its own reading the branch's output, or key the stage's operators before the branches",
        )]);
    }
    if let Some(k) = rekeyed {
        if let Some(i) = chain.ops.iter().position(|(_, p)| p.partitions_by_key()) {
            let name = &chain.ops[i].0;
            return Err(vec![sluice_ops::Problem::new(
                format!("operators[{i}].{name}"),
                format!("`{name}` keeps state per key, but the stage's `key_by` (operators[{k}]) re-keyed the records without moving them to their key's partition, and a branch cannot repartition"),
                "move that `key_by` into the branches that need the key, after their stateful operators, or have a stage of its own read the branch's input",
            )]);
        }
    }
    let full_name = format!(
        "sluice.{}.{}_branch{}",
        avro_name(app),
        avro_name(stage),
        b + 1
    );
    let declared = match topics.get(&spec.output).and_then(|t| t.schema.as_ref()) {
        Some(file) => declared_output(path, &spec.output, file, &chain.output.value)
            .map_err(|(message, fix)| vec![sluice_ops::Problem::new("output", message, fix)])?,
        None => None,
    };
    let output_schema = match declared {
        Some(s) => s,
        None => {
            schema_named(&full_name, &chain.output.value).map_err(|p| vec![p.under("output")])?
        }
    };
    let output_subject = topics
        .get(&spec.output)
        .and_then(|t| t.subject.clone())
        .unwrap_or_else(|| format!("{}-value", spec.output));
    Ok(BranchPlan {
        chain,
        output: spec.output.clone(),
        output_schema: sluice_ops::codec::leak(output_schema),
        output_subject,
    })
}

/// The schema in `file` (relative to the topology), and the file's name for messages; or
/// what is wrong with it.
fn read_schema(
    path: &Path,
    file: &Path,
) -> Result<(apache_avro::Schema, String), (String, String)> {
    let resolved = crate::load::resolve_relative(path, file);
    let shown = resolved.display().to_string();
    let text = std::fs::read_to_string(&resolved).map_err(|e| {
        (
            format!("cannot read {shown}: {e}"),
            "give the path of an .avsc file, relative to the topology file".to_string(),
        )
    })?;
    let schema = apache_avro::Schema::parse_str(&text).map_err(|e| {
        (
            format!("{shown} is not a valid Avro schema: {e}"),
            "fix the .avsc file".to_string(),
        )
    })?;
    Ok((schema, shown))
}

/// When a stage's output topic declares a `schema:`, the stage writes with it (its name,
/// docs, defaults and aliases, registered as declared), so the records its operators hand
/// on must have exactly that schema's fields: names, types and order.
fn declared_output(
    path: &Path,
    topic: &str,
    file: &Path,
    records: &RecordType,
) -> Result<Option<apache_avro::Schema>, (String, String)> {
    let Ok((schema, shown)) = read_schema(path, file) else {
        return Ok(None); // reported by the schema file check
    };
    let declared =
        RecordType::from_schema(&schema).map_err(|p| (format!("{shown}: {}", p.message), p.fix))?;
    let fix = format!(
        "end the operators with a `select` of exactly {}'s fields in its order ({}), or remove `topics.{topic}.schema` to have sluice derive the schema",
        shown,
        declared
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mismatch = |why: String| {
        Err((
            format!(
                "the records written to `{topic}` do not have its declared schema ({shown}): {why}"
            ),
            fix.clone(),
        ))
    };
    for (i, d) in declared.fields.iter().enumerate() {
        match records.fields.get(i) {
            None => return mismatch(format!("field `{}` is missing", d.name)),
            Some(f) if f.name != d.name => {
                return mismatch(format!(
                    "field {} is `{}` here, `{}` there",
                    i + 1,
                    f.name,
                    d.name
                ))
            }
            Some(f) if !same_type(&f.ty, &d.ty) => {
                return mismatch(format!(
                    "field `{}` is {} here, {} there",
                    f.name,
                    sluice_ops::types::a_or_an(&f.ty),
                    sluice_ops::types::a_or_an(&d.ty)
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = records.fields.get(declared.fields.len()) {
        return mismatch(format!("field `{}` is not in it", extra.name));
    }
    // The same types can still be written differently (a union's order): the derived
    // schema under the declared name must have the same canonical form.
    let derived = schema_named(&declared.name, records).map_err(|p| (p.message, p.fix))?;
    if derived.canonical_form() != schema.canonical_form() {
        return mismatch(format!(
            "the same fields, written differently (a union's branches in another order, or a nested type's name): sluice writes {}",
            derived.canonical_form()
        ));
    }
    Ok(Some(schema))
}

/// Whether two field types are the same, docs aside (a declared schema keeps its docs).
fn same_type(a: &sluice_ops::types::FieldType, b: &sluice_ops::types::FieldType) -> bool {
    use sluice_ops::types::Type;
    if a.nullable != b.nullable {
        return false;
    }
    match (&a.ty, &b.ty) {
        (Type::Record(x), Type::Record(y)) => {
            x.name == y.name
                && x.fields.len() == y.fields.len()
                && x.fields
                    .iter()
                    .zip(&y.fields)
                    .all(|(f, g)| f.name == g.name && same_type(&f.ty, &g.ty))
        }
        (Type::Array(x), Type::Array(y)) | (Type::Map(x), Type::Map(y)) => same_type(x, y),
        (x, y) => x == y,
    }
}

/// The schema of records of type `record` under the name `full_name`.
fn schema_named(
    full_name: &str,
    record: &RecordType,
) -> Result<apache_avro::Schema, sluice_ops::Problem> {
    let fields: Vec<_> = record
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.ty.clone()))
        .collect();
    sluice_ops::types::record_schema(full_name, &fields)
}

/// The order pipeline stages are planned in: a stage whose input has no `schema:` but is
/// written by another pipeline stage comes after that stage; otherwise file order.
fn planning_order(t: &Topology) -> Vec<usize> {
    let writer_of = |topic: &str| {
        t.stages.iter().position(|s| match &s.spec {
            StageSpec::Pipeline(p) => {
                p.output.as_deref() == Some(topic) || p.branches.iter().any(|b| b.output == topic)
            }
            _ => false,
        })
    };
    let n = t.stages.len();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    loop {
        let mut progress = false;
        for i in 0..n {
            if done[i] {
                continue;
            }
            let ready = match &t.stages[i].spec {
                StageSpec::Pipeline(p) => {
                    t.topics
                        .get(&p.input)
                        .is_none_or(|topic| topic.schema.is_some())
                        || writer_of(&p.input).is_none_or(|w| done[w] || w == i)
                }
                _ => true,
            };
            if ready {
                done[i] = true;
                order.push(i);
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    // A cycle of stages reading each other's outputs: planned as written (and reported).
    order.extend((0..n).filter(|&i| !done[i]));
    order
}

/// What operators may know about every declared topic: partitions and, when it has a
/// readable `schema:`, its record type (problems with the file are reported elsewhere).
fn topic_infos(
    topics: &std::collections::BTreeMap<String, TopicSpec>,
    path: &Path,
) -> std::collections::BTreeMap<String, TopicInfo> {
    topics
        .iter()
        .map(|(name, t)| {
            let value = t.schema.as_ref().and_then(|p| {
                let text = std::fs::read_to_string(crate::load::resolve_relative(path, p)).ok()?;
                let schema = apache_avro::Schema::parse_str(&text).ok()?;
                RecordType::from_schema(&schema).ok()
            });
            let partitions = u32::try_from(t.partitions).unwrap_or(0);
            (name.clone(), TopicInfo { value, partitions })
        })
        .collect()
}

fn plan_len(plan: &Option<Arc<PipelinePlan>>) -> usize {
    plan.as_ref().map_or(0, |p| p.chain.ops.len())
}

/// The stage that runs a pipeline's operators after its `i`-th repartition.
pub(crate) fn sub_stage_name(stage: &str, i: usize) -> String {
    if i == 1 {
        format!("{stage}-rekeyed")
    } else {
        format!("{stage}-rekeyed-{i}")
    }
}

/// The internal topic of a pipeline's `i`-th repartition (from 1).
pub(crate) fn repartition_topic(app: &str, stage: &str, i: usize) -> String {
    if i == 1 {
        format!("{app}-{stage}-repartition")
    } else {
        format!("{app}-{stage}-repartition-{i}")
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
