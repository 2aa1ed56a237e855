//! `sluice graph FILE [--format mermaid|dot]`: the topology as a diagram, for docs and
//! reviews. Offline: it draws what the planner derives (the `-rekeyed` parts of a pipeline
//! and their repartition topics, every state store and its changelog, the tables joins
//! read, dead-letter topics and the external sinks), not only what the file spells out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use sluice_topology::{StageSpec, Topology};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub file: PathBuf,
    /// `mermaid` (for Markdown) or `dot` (Graphviz: `| dot -Tsvg > topology.svg`).
    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = match super::validate::load_or_exit(&a.file) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let g = Graph::of(&loaded.topology);
    print!(
        "{}",
        match a.format {
            Format::Mermaid => g.mermaid(),
            Format::Dot => g.dot(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// What a node stands for; it decides the node's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    Stage,
    Topic,
    /// A pipeline's internal repartition topic.
    Repartition,
    /// A topic a `join` reads as a table.
    Table,
    DeadLetter,
    Store,
    Changelog,
    /// Outside the broker: the TSDB, the object store.
    Sink,
}

impl NodeKind {
    fn name(self) -> &'static str {
        match self {
            NodeKind::Stage => "stage",
            NodeKind::Topic => "topic",
            NodeKind::Repartition => "repartition",
            NodeKind::Table => "table",
            NodeKind::DeadLetter => "deadletter",
            NodeKind::Store => "store",
            NodeKind::Changelog => "changelog",
            NodeKind::Sink => "sink",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `[A-Za-z0-9_]` only, unique in the graph.
    pub id: String,
    /// The element's name (a topic, stage or store name).
    pub name: String,
    /// What is shown: the name and, for stages and stores, what they are.
    pub label: String,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub label: Option<String>,
    /// State and table reads, as opposed to the record flow.
    pub dashed: bool,
}

/// A topology as nodes and edges, before it is written in either syntax.
#[derive(Debug, Default)]
pub struct Graph {
    pub app: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Node id by (kind group, name): topics of every kind share one group.
    index: BTreeMap<(u8, String), String>,
    ids: BTreeSet<String>,
}

impl Graph {
    /// The topology's stages (with the parts the planner adds), topics, stores, changelogs,
    /// tables, dead-letter topics and sinks.
    pub fn of(t: &Topology) -> Graph {
        let mut g = Graph {
            app: t.metadata.name.clone(),
            ..Graph::default()
        };
        let tables = t.table_topics();
        let dead: BTreeSet<&str> = t
            .stages
            .iter()
            .flat_map(|s| s.spec.outputs())
            .filter(|(k, _)| *k == "dead_letter")
            .map(|(_, topic)| topic)
            .collect();
        let repartition: BTreeSet<&str> = t
            .stages
            .iter()
            .filter(|s| s.part_of.is_some())
            .flat_map(|s| s.spec.inputs())
            .map(|(_, topic)| topic)
            .collect();
        for name in t.topics.keys() {
            let kind = if tables.contains(name) {
                NodeKind::Table
            } else if dead.contains(name.as_str()) {
                NodeKind::DeadLetter
            } else if repartition.contains(name.as_str()) {
                NodeKind::Repartition
            } else {
                NodeKind::Topic
            };
            g.topic(name, kind);
        }
        let plans = t.stage_plans();
        for s in &t.stages {
            let label = match &s.part_of {
                Some(of) => format!("{} ({}, part of {of})", s.name, s.spec.kind()),
                None => format!("{} ({})", s.name, s.spec.kind()),
            };
            let stage = g.node(1, &s.name, label, NodeKind::Stage);
            for (_, topic) in s.spec.inputs() {
                let from = g.topic(topic, NodeKind::Topic);
                g.edge(&from, &stage, None, false);
            }
            for (key, topic) in s.spec.outputs() {
                let to = g.topic(topic, NodeKind::Topic);
                let label = match key {
                    "output" if repartition.contains(topic) => Some("repartition"),
                    "output" => None,
                    "dead_letter" => Some("dead letters"),
                    other => Some(other),
                };
                g.edge(&stage, &to, label.map(str::to_string), false);
            }
            if let StageSpec::Pipeline(p) = &s.spec {
                for u in p.plan.as_ref().map(|p| p.lookups()).unwrap_or_default() {
                    let from = g.topic(&u.topic, NodeKind::Table);
                    g.edge(&from, &stage, Some("join table".into()), true);
                }
            }
            let stores = plans
                .iter()
                .find(|p| p.name == s.name)
                .map(|p| p.stores.clone())
                .unwrap_or_default();
            for store in stores {
                let id = g.node(
                    2,
                    &format!("{}/{}", s.name, store.name),
                    format!("{} store of {}", store.name, s.name),
                    NodeKind::Store,
                );
                g.edge(&stage, &id, None, true);
                let log = g.node(
                    0,
                    &store.changelog,
                    store.changelog.clone(),
                    NodeKind::Changelog,
                );
                g.edge(&id, &log, Some("changelog".into()), true);
            }
            let sink = match &s.spec {
                StageSpec::QuestdbSink(_) => Some("QuestDB (ILP)".to_string()),
                StageSpec::S3ParquetSink(a) => Some(match &t.connections.s3 {
                    Some(s3) => format!("S3 Parquet s3://{}/{}/", s3.bucket, a.prefix),
                    None => format!("S3 Parquet {}/", a.prefix),
                }),
                _ => None,
            };
            if let Some(sink) = sink {
                let id = g.node(3, &sink, sink.clone(), NodeKind::Sink);
                g.edge(&stage, &id, None, false);
            }
        }
        g
    }

    /// The node of a topic, added (as `kind`) on first sight.
    fn topic(&mut self, name: &str, kind: NodeKind) -> String {
        self.node(0, name, name.to_string(), kind)
    }

    fn node(&mut self, group: u8, name: &str, label: String, kind: NodeKind) -> String {
        if let Some(id) = self.index.get(&(group, name.to_string())) {
            return id.clone();
        }
        let base: String = format!("{}_{name}", kind.name())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut id = base.clone();
        let mut n = 2;
        while self.ids.contains(&id) {
            id = format!("{base}_{n}");
            n += 1;
        }
        self.ids.insert(id.clone());
        self.index.insert((group, name.to_string()), id.clone());
        self.nodes.push(Node {
            id: id.clone(),
            name: name.to_string(),
            label,
            kind,
        });
        id
    }

    fn edge(&mut self, from: &str, to: &str, label: Option<String>, dashed: bool) {
        let e = Edge {
            from: from.to_string(),
            to: to.to_string(),
            label,
            dashed,
        };
        if !self.edges.contains(&e) {
            self.edges.push(e);
        }
    }

    /// Mermaid `flowchart LR`, for Markdown (GitHub renders it).
    pub fn mermaid(&self) -> String {
        let esc = |s: &str| s.replace('"', "#quot;");
        let mut out = format!("flowchart LR\n  %% sluice topology `{}`\n", esc(&self.app));
        for n in &self.nodes {
            let l = esc(&n.label);
            let shape = match n.kind {
                NodeKind::Stage => format!("[\"{l}\"]"),
                NodeKind::Store => format!("[(\"{l}\")]"),
                NodeKind::Sink => format!("{{{{\"{l}\"}}}}"),
                _ => format!("([\"{l}\"])"),
            };
            out.push_str(&format!("  {}{shape}\n", n.id));
        }
        for e in &self.edges {
            let arrow = if e.dashed { "-.->" } else { "-->" };
            match &e.label {
                Some(l) => {
                    out.push_str(&format!("  {} {arrow}|\"{}\"| {}\n", e.from, esc(l), e.to))
                }
                None => out.push_str(&format!("  {} {arrow} {}\n", e.from, e.to)),
            }
        }
        for (kind, style) in STYLES {
            let ids: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.kind == *kind)
                .map(|n| n.id.as_str())
                .collect();
            if !ids.is_empty() {
                out.push_str(&format!(
                    "  classDef {} fill:{},stroke:{}\n  class {} {}\n",
                    kind.name(),
                    style.0,
                    style.1,
                    ids.join(","),
                    kind.name()
                ));
            }
        }
        out
    }

    /// Graphviz DOT.
    pub fn dot(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = format!(
            "digraph \"{}\" {{\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11, style=filled];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
            esc(&self.app)
        );
        for n in &self.nodes {
            let shape = match n.kind {
                NodeKind::Stage => "box",
                NodeKind::Store => "cylinder",
                NodeKind::Sink => "hexagon",
                _ => "ellipse",
            };
            let (fill, stroke) = STYLES
                .iter()
                .find(|(k, _)| *k == n.kind)
                .map(|(_, s)| *s)
                .unwrap_or(("#ffffff", "#000000"));
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\", shape={shape}, fillcolor=\"{fill}\", color=\"{stroke}\"];\n",
                n.id,
                esc(&n.label)
            ));
        }
        for e in &self.edges {
            let mut attrs = Vec::new();
            if let Some(l) = &e.label {
                attrs.push(format!("label=\"{}\"", esc(l)));
            }
            if e.dashed {
                attrs.push("style=dashed".to_string());
            }
            let attrs = if attrs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attrs.join(", "))
            };
            out.push_str(&format!("  \"{}\" -> \"{}\"{attrs};\n", e.from, e.to));
        }
        out.push_str("}\n");
        out
    }
}

/// Fill and stroke colours per kind of node.
const STYLES: &[(NodeKind, (&str, &str))] = &[
    (NodeKind::Stage, ("#dbeafe", "#1d4ed8")),
    (NodeKind::Topic, ("#f3f4f6", "#4b5563")),
    (NodeKind::Repartition, ("#fef9c3", "#a16207")),
    (NodeKind::Table, ("#dcfce7", "#15803d")),
    (NodeKind::DeadLetter, ("#fee2e2", "#b91c1c")),
    (NodeKind::Store, ("#ede9fe", "#6d28d9")),
    (NodeKind::Changelog, ("#f5f3ff", "#7c3aed")),
    (NodeKind::Sink, ("#ffedd5", "#c2410c")),
];
