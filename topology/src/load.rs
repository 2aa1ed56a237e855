//! Reading a topology file: interpolation, parsing with located errors, one stage at a time.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{closest, Problem, TopologyError};
use crate::ingest::IngestBridge;
use crate::interp::interpolate;
use crate::lines::LineIndex;
use crate::model::{Stage, Topology, TopologyFile};
use crate::namespace::Namespace;
use crate::stage::{StageSpec, STAGE_KINDS};
use crate::validate::check;

/// A loaded topology with what is needed to point at its lines later.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub topology: Topology,
    pub(crate) index: LineIndex,
}

impl Loaded {
    /// Line and column of a dotted key, for callers that check more (e.g. detectors).
    pub fn position(&self, key: &str) -> (usize, usize) {
        self.index.find(key)
    }

    /// A path in the file resolved against the topology file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_relative(&self.path, p)
    }
}

/// The state directory as written in the topology, resolved against the topology file's folder.
pub fn resolve_state_dir(topology: &Path, state_dir: &Path) -> PathBuf {
    resolve_relative(topology, state_dir)
}

pub(crate) fn resolve_relative(topology: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    topology.parent().unwrap_or(Path::new(".")).join(p)
}

/// Reads, parses and checks a topology file; every problem found is reported at once.
pub fn load(path: &Path) -> Result<Loaded, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(path, &text, &|k| std::env::var(k).ok())
}

/// As [`load`], renamed into the namespace `ns` (`sluice backfill --version`) before its
/// pipelines are planned, so their repartition topics, derived subjects and sinks follow.
pub fn load_namespaced(path: &Path, ns: &Namespace) -> Result<Loaded, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_namespaced_str(path, &text, &|k| std::env::var(k).ok(), ns)
}

/// As [`load_namespaced`], from text, with the environment given.
pub fn load_namespaced_str(
    path: &Path,
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
    ns: &Namespace,
) -> Result<Loaded, TopologyError> {
    load_inner(path, raw, env, Some(ns))
}

/// As [`load`], from text, with the environment given.
pub fn load_str(
    path: &Path,
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, TopologyError> {
    load_inner(path, raw, env, None)
}

fn load_inner(
    path: &Path,
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
    ns: Option<&Namespace>,
) -> Result<Loaded, TopologyError> {
    let invalid = |problems| TopologyError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let text = interpolate(raw, env).map_err(|(line, name)| TopologyError::MissingEnv {
        path: path.to_path_buf(),
        line,
        name,
    })?;
    let index = LineIndex::new(&text);
    let file: TopologyFile = serde_yaml::from_str(&text)
        .map_err(|e| invalid(vec![problem_from_yaml(&e, "", 0, 0, &index)]))?;

    let mut problems = Vec::new();
    let mut stages = Vec::new();
    for (name, value) in &file.stages {
        let Some(name) = name.as_str() else {
            problems.push(Problem::new(
                index.find("stages").0,
                0,
                "stages",
                "stage names must be strings",
                "name each stage with a word, e.g. `aggregate:`",
            ));
            continue;
        };
        match parse_stage(&text, &index, name, value) {
            Ok(spec) => stages.push(Stage {
                name: name.to_string(),
                part_of: None,
                spec,
            }),
            Err(p) => problems.push(p),
        }
    }
    let mut ingest = Vec::new();
    for (name, value) in &file.ingest {
        let Some(name) = name.as_str() else {
            problems.push(Problem::new(
                index.find("ingest").0,
                0,
                "ingest",
                "ingest bridge names must be strings",
                "name each bridge with a word, e.g. `devices-mqtt:`",
            ));
            continue;
        };
        match crate::ingest::parse_bridge(&text, &index, name, value) {
            Ok(spec) => ingest.push(IngestBridge {
                name: name.to_string(),
                spec,
            }),
            Err(p) => problems.push(p),
        }
    }
    let mut topology = Topology {
        metadata: file.metadata,
        processing: file.processing,
        connections: file.connections,
        state_dir: file.state_dir,
        metrics: file.metrics,
        topic_defaults: file.topic_defaults,
        topics: file.topics,
        stages,
        ingest,
    };
    crate::security::resolve_paths(&mut topology.connections, path);
    if let Some(ns) = ns {
        topology = ns.apply(&topology);
    }
    crate::pipeline::plan_all(&mut topology, path, &index, &mut problems);
    let loaded = Loaded {
        path: path.to_path_buf(),
        topology,
        index,
    };
    check(&loaded, &file.api_version, &file.kind, &mut problems);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        problems.sort_by_key(|p| (p.line, p.column));
        Err(invalid(problems))
    }
}

fn parse_stage(
    text: &str,
    index: &LineIndex,
    name: &str,
    value: &serde_yaml::Value,
) -> Result<StageSpec, Problem> {
    let key = format!("stages.{name}");
    let (line, _) = index.find(&key);
    let kind = value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
        Problem::new(
            line,
            0,
            &key,
            "stage has no `kind`",
            format!("add `kind:` with one of {}", STAGE_KINDS.join(", ")),
        )
    })?;
    let (snippet, line_off, col_off) = snippet(text, line);
    let parse = |s: &str| -> Result<StageSpec, Problem> {
        Ok(match kind {
            "validate" => StageSpec::Validate(typed(s, &key, line_off, col_off, index)?),
            "aggregate" => StageSpec::Aggregate(typed(s, &key, line_off, col_off, index)?),
            "detect" => StageSpec::Detect(typed(s, &key, line_off, col_off, index)?),
            "questdb_sink" => StageSpec::QuestdbSink(typed(s, &key, line_off, col_off, index)?),
            "s3_parquet_sink" => {
                StageSpec::S3ParquetSink(typed(s, &key, line_off, col_off, index)?)
            }
            "pipeline" => StageSpec::Pipeline(typed(s, &key, line_off, col_off, index)?),
            other => {
                let (l, c) = index.find(&format!("{key}.kind"));
                let fix = match closest(other, STAGE_KINDS.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("use one of {}", STAGE_KINDS.join(", ")),
                };
                return Err(Problem::new(
                    l,
                    c,
                    format!("{key}.kind"),
                    format!("unknown stage kind `{other}`"),
                    fix,
                ));
            }
        })
    };
    parse(&snippet)
}

pub(crate) fn typed<T: DeserializeOwned>(
    snippet: &str,
    key: &str,
    line_off: usize,
    col_off: usize,
    index: &LineIndex,
) -> Result<T, Problem> {
    serde_yaml::from_str(snippet).map_err(|e| problem_from_yaml(&e, key, line_off, col_off, index))
}

/// The text of the block under the mapping key at `line` (1-based), dedented, padded with
/// empty lines so that its line numbers plus `line_off` are the file's.
pub(crate) fn snippet(text: &str, line: usize) -> (String, usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(head) = lines.get(line.wrapping_sub(1)) else {
        return (String::new(), 0, 0);
    };
    let indent = head.len() - head.trim_start().len();
    // One-line flow mapping: the value after the colon.
    if let Some((_, rest)) = head.split_once(':') {
        if rest.trim_start().starts_with('{') {
            let col = head.len() - rest.trim_start().len();
            return (rest.trim_start().to_string(), line - 1, col);
        }
    }
    let mut body = Vec::new();
    let mut child_indent = usize::MAX;
    for l in &lines[line..] {
        let t = l.trim_start();
        let ind = l.len() - t.len();
        if t.is_empty() || t.starts_with('#') {
            body.push("");
            continue;
        }
        if ind <= indent {
            break;
        }
        child_indent = child_indent.min(ind);
        body.push(l);
    }
    let child_indent = if child_indent == usize::MAX {
        0
    } else {
        child_indent
    };
    let dedented: Vec<&str> = body
        .iter()
        .map(|l| {
            if l.len() >= child_indent {
                &l[child_indent..]
            } else {
                ""
            }
        })
        .collect();
    (dedented.join("\n"), line, child_indent)
}

/// A serde_yaml error as a problem at the right place with a fix.
fn problem_from_yaml(
    e: &serde_yaml::Error,
    prefix: &str,
    line_off: usize,
    col_off: usize,
    index: &LineIndex,
) -> Problem {
    let full = e.to_string();
    // serde_yaml appends " at line L column C"; we print the place ourselves.
    let msg = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    let (path, msg) = match msg.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
        _ => (String::new(), msg.to_string()),
    };
    let mut key = [prefix, path.as_str()]
        .iter()
        .filter(|s| !s.is_empty() && **s != ".")
        .copied()
        .collect::<Vec<_>>()
        .join(".");
    let (mut line, mut col) = e
        .location()
        .map(|l| (l.line() + line_off, l.column() + col_off))
        .unwrap_or((0, 0));
    let mut fix = String::from("see the commented example in topology/iot.yaml");
    if let Some(field) = between(&msg, "unknown field `", "`") {
        let allowed = allowed_names(&msg);
        fix = match closest(field, allowed.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? (allowed here: {})", allowed.join(", ")),
            None if allowed.is_empty() => "remove it".to_string(),
            None => format!("remove it; allowed here: {}", allowed.join(", ")),
        };
        key = if key.is_empty() {
            field.to_string()
        } else {
            format!("{key}.{field}")
        };
        let (l, c) = index.find(&key);
        if l > 0 {
            (line, col) = (l, c);
        }
    } else if let Some(field) = between(&msg, "missing field `", "`") {
        fix = format!("add `{field}:` here");
        key = if key.is_empty() {
            field.to_string()
        } else {
            format!("{key}.{field}")
        };
    } else if let Some(variant) = between(&msg, "unknown variant `", "`") {
        let allowed = allowed_names(&msg);
        fix = match closest(variant, allowed.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("use one of {}", allowed.join(", ")),
        };
    } else if msg.contains("is not a duration") {
        fix = "write durations like `30s`, `5m` or `1h`".into();
        // Custom errors carry the enclosing mapping's place; find the line with the value.
        if let Some(value) = between(&msg, "`", "`") {
            if let Some((l, c, k)) = index.line_with_value(&key, value) {
                (line, col) = (l, c);
                key = k;
            }
        }
    } else if msg.starts_with("invalid type") {
        fix = "check the value's type against the example in topology/iot.yaml".into();
    }
    Problem::new(line, col, key, msg, fix)
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(&s[i..i + j])
}

/// The names serde lists after "expected ..." in unknown field/variant messages.
fn allowed_names(msg: &str) -> Vec<String> {
    let Some(i) = msg.find("expected") else {
        return Vec::new();
    };
    msg[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}
