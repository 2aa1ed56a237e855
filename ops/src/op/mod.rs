//! Operators: one module per kind (its spec, its check against the record type flowing in,
//! its build and the state stores it declares), registered in [`KINDS`].
//!
//! A stage's `operators:` list is checked front to back: each operator sees the
//! [`StreamType`] the previous one produces, so a field renamed by `select` is known by its
//! new name downstream, and every problem of the whole list is reported at once.

use apache_avro::types::Value;
use sluice_state::table::AnyTable;
use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_state::StateError;

use crate::types::RecordType;
use crate::Problem;

pub use join::{Scope, TableUse, TableView};

pub mod dedup;
pub mod detect;
pub mod filter;
pub mod join;
pub mod key_by;
pub mod select;
pub mod stamp;
pub mod suppress;
pub mod validate;
pub mod window;

/// Every operator kind, by the key that names it in a topology (`- filter: ...`).
pub const KINDS: &[&dyn Kind] = &[
    &filter::Filter,
    &select::Select,
    &key_by::KeyBy,
    &window::Window,
    &dedup::Dedup,
    &stamp::Stamp,
    &validate::Validate,
    &detect::Detect,
    &suppress::Suppress,
    &join::Join,
];

/// The names of every operator kind, for messages.
pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name()).collect()
}

/// The kind registered under `name`.
pub fn kind(name: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// One record between operators: the decoded value, the key it will be written with and its
/// timestamp (ms; the input record's, or what a window or a re-stamp set).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Value,
    pub timestamp: i64,
}

/// How the records between two operators are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyShape {
    /// As read from the input topic: bytes sluice does not interpret.
    Input,
    /// Set by `key_by` (or a window's `by`) from these field paths.
    Fields(Vec<String>),
}

/// The shape of the records flowing between two operators.
#[derive(Debug, Clone)]
pub struct StreamType {
    pub value: RecordType,
    pub key: KeyShape,
}

/// Why an operator could not process a record.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The record's fault: it goes to the dead-letter topic with this reason and processing
    /// goes on.
    #[error("{message}")]
    Reject {
        class: &'static str,
        message: String,
    },
    /// Not the record's fault: the task rewinds to its last commit and retries.
    #[error("state: {0}")]
    State(#[from] StateError),
}

impl OpError {
    pub fn reject(class: &'static str, message: impl Into<String>) -> Self {
        OpError::Reject {
            class,
            message: message.into(),
        }
    }
}

/// Why a record goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable, for the `sluice.dlq.error_class` header (e.g. `filter_error`, `late_record`).
    pub class: &'static str,
    pub message: String,
}

/// A kind of operator: parses and checks its spec.
pub trait Kind: Sync {
    /// The key naming it in a topology, e.g. `filter`.
    fn name(&self) -> &'static str;
    /// One line for `sluice validate --help`-style listings and docs/TOPOLOGY.md.
    fn summary(&self) -> &'static str;
    /// Checks `spec` against the records flowing in. Problems carry key paths relative to
    /// the operator's value (empty for the value as a whole).
    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>>;
    /// [`Kind::plan`] with what the topology knows besides the stream (its topics), for
    /// kinds that read other topics (`join`).
    fn plan_in(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
        ctx: &PlanContext,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        let _ = ctx;
        self.plan(spec, input)
    }
    /// What flows out when the spec has problems, if that does not depend on the spec, so
    /// the operators after it are still checked.
    fn output_despite_errors(&self, input: &StreamType) -> Option<StreamType> {
        let _ = input;
        None
    }
}

/// A checked operator: what it produces, what it stores, and how to build one per task.
pub trait Planned: Send + Sync + std::fmt::Debug {
    /// The records it hands on.
    fn output(&self) -> &StreamType;
    /// Names of the state stores it keeps (each changelogged), unique within the operator.
    fn stores(&self) -> Vec<String> {
        Vec::new()
    }
    /// Tables (compacted topics) it looks values up in, for the runtime to materialise.
    fn lookups(&self) -> Vec<TableUse> {
        Vec::new()
    }
    /// Whether its records must be partitioned by their key (a stateful operator, or a
    /// co-partitioned join): a `key_by` before it then repartitions.
    fn partitions_by_key(&self) -> bool {
        !self.stores().is_empty()
    }
    /// A fresh operator for one task (one input partition).
    fn build(&self) -> Box<dyn Operator>;
    /// A fresh operator for task `task.partition`, with the tables the runtime holds; fails
    /// when a table it reads cannot be had.
    fn build_for(&self, task: &TaskContext<'_>) -> Result<Box<dyn Operator>, StateError> {
        let _ = task;
        Ok(self.build())
    }
}

/// What the topology tells the planner besides the stream: its topics.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// Every topic of the topology by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// Partitions of the stage's input (and so of its repartition topics), when known.
    pub input_partitions: Option<u32>,
}

/// What the topology tells the planner about a topic.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    /// The record type of its values, when it has a `schema:`.
    pub value: Option<RecordType>,
    pub partitions: u32,
}

/// The tables a process holds, by topic.
pub trait Tables {
    /// The view task `partition` reads of `topic`'s table: all of it (`global`) or its
    /// partition `partition` (`co_partitioned`), once loaded up to the topic's end.
    fn view(
        &self,
        topic: &str,
        scope: Scope,
        partition: i32,
    ) -> Result<Arc<dyn TableView>, StateError>;
}

/// What an operator of one task is built with.
pub struct TaskContext<'a> {
    /// The task's input partition.
    pub partition: i32,
    pub tables: &'a dyn Tables,
}

/// A running operator of one task. Deterministic given its restored state and its input: no
/// wall clock, no randomness (docs/EXACTLY_ONCE.md).
pub trait Operator: Send {
    /// Processes one record, appending what it hands on to `out` (none, one or several).
    fn process(&mut self, rec: Record, out: &mut Vec<Record>) -> Result<(), OpError>;
    /// Its tables, in the order of [`Planned::stores`].
    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        Vec::new()
    }
    /// The task has had no input for `idle_for_ms` of wall clock (since its last record or
    /// its last recorded tick). An operator that closes things by stream time (a window with
    /// `idle_timeout`) first hands on what a tick committed earlier closes, then may record
    /// a new tick in its state, to take effect after the next commit (so a replay repeats
    /// it). Returns whether it recorded one (the runtime restarts its idle clock).
    fn idle(&mut self, idle_for_ms: i64, out: &mut Vec<Record>) -> Result<bool, StateError> {
        let _ = (idle_for_ms, out);
        Ok(false)
    }
    /// Whether it holds something only a commit takes in though no record came (a join
    /// whose table moved since its snapshot): the runtime then commits the quiet task.
    fn wants_commit(&self) -> bool {
        false
    }
}

/// A problem for every key of `map` not in `keys` (a did-you-mean over them, or a non-name
/// key); `what` names the operator in messages.
pub(crate) fn unknown_keys(
    map: &serde_yaml::Mapping,
    keys: &[&str],
    what: &str,
    problems: &mut Vec<Problem>,
) {
    let allowed = keys.join(", ");
    for k in map.keys() {
        match k.as_str() {
            Some(name) if keys.contains(&name) => {}
            Some(name) => {
                let fix = match crate::types::did_you_mean(name, keys.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? (allowed: {allowed})"),
                    None => format!("remove it; allowed: {allowed}"),
                };
                problems.push(Problem::new(name, format!("unknown key `{name}`"), fix));
            }
            None => problems.push(Problem::new(
                "",
                format!("a key of {what} is not a name: {}", yaml_text(k)),
                format!("the keys are {allowed}"),
            )),
        }
    }
}

/// A YAML value as written, on one line where it fits.
pub(crate) fn yaml_text(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| format!("{v:?}"))
}

/// A serde_yaml error as a problem: unknown keys get a did-you-mean over `allowed`, an
/// unknown value (`kind: hoping`) one over the values serde lists, at the key holding it in
/// `spec`.
pub(crate) fn yaml_problem(
    e: &serde_yaml::Error,
    allowed: &str,
    spec: &serde_yaml::Mapping,
) -> Problem {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    if let Some(field) = between(&msg, "unknown field `", "`") {
        let names: Vec<&str> = allowed.split(", ").collect();
        let fix = match crate::types::did_you_mean(field, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? (allowed: {allowed})"),
            None => format!("remove it; allowed: {allowed}"),
        };
        return Problem::new(field, format!("unknown key `{field}`"), fix);
    }
    if let Some(value) = between(&msg, "unknown variant `", "`") {
        let expected: Vec<&str> = msg
            .find("expected")
            .map(|i| msg[i..].split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let key = spec
            .iter()
            .find(|(_, v)| v.as_str() == Some(value))
            .and_then(|(k, _)| k.as_str())
            .unwrap_or("");
        let fix = match crate::types::did_you_mean(value, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("use one of {}", expected.join(", ")),
        };
        return Problem::new(key, format!("unknown value `{value}`"), fix);
    }
    let key = msg
        .split_once(": ")
        .filter(|(k, _)| !k.contains(' '))
        .map(|(k, _)| k.to_string())
        .unwrap_or_default();
    Problem::new(key, msg, format!("allowed keys: {allowed}"))
}

pub(crate) fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(&s[i..i + j])
}

/// A checked list of operators.
#[derive(Debug)]
pub struct Chain {
    pub ops: Vec<(String, Box<dyn Planned>)>,
    pub output: StreamType,
    /// Position of the first operator in the stage's list (a chain split at a `key_by`
    /// keeps its operators' positions, hence their store names).
    pub first: usize,
}

impl Chain {
    /// Checks `operators` (a YAML list of one-key mappings, `- filter: ...`) against the
    /// input type. Problem keys are `[i]` or `[i].<key>`, relative to the list.
    pub fn plan(operators: &[serde_yaml::Value], input: StreamType) -> Result<Chain, Vec<Problem>> {
        Chain::plan_in(operators, input, &PlanContext::default())
    }

    /// [`Chain::plan`] knowing the topology's topics (for joins).
    pub fn plan_in(
        operators: &[serde_yaml::Value],
        input: StreamType,
        ctx: &PlanContext,
    ) -> Result<Chain, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut ops = Vec::new();
        let mut cur = input;
        for (i, item) in operators.iter().enumerate() {
            let at = format!("[{i}]");
            let Some((name, spec)) = item
                .as_mapping()
                .filter(|m| m.len() == 1)
                .and_then(|m| m.iter().next())
                .and_then(|(k, v)| Some((k.as_str()?, v)))
            else {
                problems.push(Problem::new(
                    at,
                    "an operator is a mapping with one key, its kind",
                    format!(
                        "write e.g. `- filter: \"temperature > 30\"`; kinds: {}",
                        kind_names().join(", ")
                    ),
                ));
                continue;
            };
            let Some(kind) = kind(name) else {
                let fix = match crate::types::did_you_mean(name, kind_names()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("use one of {}", kind_names().join(", ")),
                };
                problems.push(Problem::new(
                    format!("{at}.{name}"),
                    format!("unknown operator `{name}`"),
                    fix,
                ));
                continue;
            };
            match kind.plan_in(spec, &cur, ctx) {
                Ok(p) => {
                    cur = p.output().clone();
                    ops.push((name.to_string(), p));
                }
                Err(ps) => {
                    let base = format!("{at}.{name}");
                    problems.extend(ps.into_iter().map(|p| p.under(&base)));
                    // Go on checking the rest when this kind's output does not depend on its
                    // spec (a filter's is its input); otherwise the rest would only repeat
                    // the confusion.
                    match kind.output_despite_errors(&cur) {
                        Some(next) => cur = next,
                        None => break,
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(Chain {
                ops,
                output: cur,
                first: 0,
            })
        } else {
            Err(problems)
        }
    }

    /// Store names of every operator, prefixed with the operator's position so two windows
    /// of one stage keep apart: `<i>-<kind>-<store>`.
    pub fn stores(&self) -> Vec<String> {
        self.ops
            .iter()
            .enumerate()
            .flat_map(|(i, (name, p))| {
                let i = i + self.first;
                p.stores()
                    .into_iter()
                    .map(move |s| format!("{i}-{name}-{s}"))
            })
            .collect()
    }

    /// Where the chain must be cut for a repartition: after the first `key_by` that a
    /// stateful operator follows. State is per input partition, so records re-keyed inside a
    /// stage must first be written to a topic partitioned by the new key and read back by a
    /// second consumer group (Kafka Streams' repartition topics) before anything groups them.
    pub fn repartition_after(&self) -> Option<usize> {
        let k = self.ops.iter().position(|(name, _)| name == "key_by")?;
        self.ops[k + 1..]
            .iter()
            .any(|(_, p)| p.partitions_by_key())
            .then_some(k)
    }

    /// Splits after operator `k`: the first part ends with it (its output is what the
    /// repartition topic carries), the second starts with the operator after it.
    pub fn split_after(mut self, k: usize) -> (Chain, Chain) {
        let tail = self.ops.split_off(k + 1);
        let mid = self.ops[k].1.output().clone();
        let second = Chain {
            ops: tail,
            output: self.output,
            first: self.first + k + 1,
        };
        let first = Chain {
            ops: self.ops,
            output: mid,
            first: self.first,
        };
        (first, second)
    }

    /// Each operator's label, `<position>-<kind>` (as in its store names).
    pub fn op_labels(&self) -> Vec<String> {
        self.ops
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{}-{name}", i + self.first))
            .collect()
    }

    /// The tables the operators look values up in, each once.
    pub fn lookups(&self) -> Vec<TableUse> {
        let mut all: Vec<TableUse> = Vec::new();
        for u in self.ops.iter().flat_map(|(_, p)| p.lookups()) {
            if !all.contains(&u) {
                all.push(u);
            }
        }
        all
    }

    /// The operators of one task of a process that holds no tables (a join then fails
    /// every record as a state error).
    pub fn build(&self) -> Running {
        self.running(self.ops.iter().map(|(_, p)| p.build()).collect())
    }

    /// The operators of task `task.partition`, joins reading `task.tables`.
    pub fn build_for(&self, task: &TaskContext<'_>) -> Result<Running, StateError> {
        let ops = self
            .ops
            .iter()
            .map(|(_, p)| p.build_for(task))
            .collect::<Result<_, _>>()?;
        Ok(self.running(ops))
    }

    fn running(&self, ops: Vec<Box<dyn Operator>>) -> Running {
        Running {
            counts: vec![[0; 2]; self.ops.len()],
            ops,
            bufs: (0..=self.ops.len()).map(|_| Vec::new()).collect(),
        }
    }
}

/// A chain's operators for one task.
pub struct Running {
    ops: Vec<Box<dyn Operator>>,
    /// Records into and out of each operator since the last `take_counts`.
    counts: Vec<[u64; 2]>,
    /// One buffer per hop, reused record after record.
    bufs: Vec<Vec<Record>>,
}

impl Running {
    /// Runs `rec` through every operator; what comes out of the last one is appended to
    /// `out`, in order. A record an operator rejects stops there and its reason is appended
    /// to `rejected` (the caller dead-letters the input record with it); what the operators
    /// handed on before (e.g. windows the late record's stream time closed) still flows.
    pub fn process(
        &mut self,
        rec: Record,
        out: &mut Vec<Record>,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), StateError> {
        if self.ops.is_empty() {
            out.push(rec);
            return Ok(());
        }
        self.bufs[0].clear();
        self.bufs[0].push(rec);
        for i in 0..self.ops.len() {
            let (head, tail) = self.bufs.split_at_mut(i + 1);
            let (input, next) = (&mut head[i], &mut tail[0]);
            next.clear();
            self.counts[i][0] += input.len() as u64;
            for r in input.drain(..) {
                match self.ops[i].process(r, next) {
                    Ok(()) => {}
                    Err(OpError::Reject { class, message }) => {
                        rejected.push(Rejection { class, message })
                    }
                    Err(OpError::State(e)) => return Err(e),
                }
            }
            self.counts[i][1] += next.len() as u64;
        }
        out.append(&mut self.bufs[self.ops.len()]);
        Ok(())
    }

    /// The task has been idle for `idle_for_ms` (see [`Operator::idle`]): what operators
    /// hand on runs through the rest of the chain into `out`. Returns whether a tick was
    /// recorded.
    pub fn idle(
        &mut self,
        idle_for_ms: i64,
        out: &mut Vec<Record>,
        rejected: &mut Vec<Rejection>,
    ) -> Result<bool, StateError> {
        let mut ticked = false;
        for i in 0..self.ops.len() {
            let mut produced = Vec::new();
            ticked |= self.ops[i].idle(idle_for_ms, &mut produced)?;
            self.counts[i][1] += produced.len() as u64;
            self.run_from(i + 1, produced, out, rejected)?;
        }
        Ok(ticked)
    }

    /// Runs `records` through the operators from `first` on, appending the results to `out`.
    fn run_from(
        &mut self,
        first: usize,
        mut records: Vec<Record>,
        out: &mut Vec<Record>,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), StateError> {
        for (op, counts) in self.ops[first..]
            .iter_mut()
            .zip(self.counts[first..].iter_mut())
        {
            if records.is_empty() {
                return Ok(());
            }
            counts[0] += records.len() as u64;
            let mut next = Vec::new();
            for r in records.drain(..) {
                match op.process(r, &mut next) {
                    Ok(()) => {}
                    Err(OpError::Reject { class, message }) => {
                        rejected.push(Rejection { class, message })
                    }
                    Err(OpError::State(e)) => return Err(e),
                }
            }
            counts[1] += next.len() as u64;
            records = next;
        }
        out.append(&mut records);
        Ok(())
    }

    /// Whether an operator wants a commit though no record came ([`Operator::wants_commit`]).
    pub fn wants_commit(&self) -> bool {
        self.ops.iter().any(|o| o.wants_commit())
    }

    /// Records into and out of each operator since the last call, in operator order; the
    /// counts restart at zero.
    pub fn take_counts(&mut self) -> Vec<[u64; 2]> {
        let n = self.counts.len();
        std::mem::replace(&mut self.counts, vec![[0; 2]; n])
    }

    /// Every operator's tables, in the order of [`Chain::stores`].
    pub fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        self.ops.iter_mut().flat_map(|o| o.tables()).collect()
    }
}
