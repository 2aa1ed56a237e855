//! `sluice graph`: for every topology in the repository, both formats name every element the
//! planner knows (stages with their derived `-rekeyed` parts, topics, repartition topics,
//! stores, changelogs, tables, dead-letter topics, sinks) and connect them as the records
//! flow. The DOT output is read back by Graphviz's own parser (`dot -Tjson`); the Mermaid
//! output by a reader of the node and edge lines it writes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluice_topology::{StageSpec, Topology};

const TOPOLOGIES: &[&str] = &[
    "topology/iot.yaml",
    "examples/energy/energy.yaml",
    "examples/factory/factory.yaml",
    "examples/fleet/fleet.yaml",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn graph(file: &Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["graph", file.to_str().unwrap(), "--format", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice graph {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a drawing must show, from the topology itself: node labels and (from, to) edges
/// between labels.
struct Expect {
    labels: BTreeSet<String>,
    edges: BTreeSet<(String, String)>,
}

fn expect(t: &Topology) -> Expect {
    let mut labels = BTreeSet::new();
    let mut edges = BTreeSet::new();
    labels.extend(t.topics.keys().cloned());
    let plans = t.stage_plans();
    for s in &t.stages {
        let stage = match &s.part_of {
            Some(of) => format!("{} ({}, part of {of})", s.name, s.spec.kind()),
            None => format!("{} ({})", s.name, s.spec.kind()),
        };
        labels.insert(stage.clone());
        for (_, topic) in s.spec.inputs() {
            edges.insert((topic.to_string(), stage.clone()));
        }
        for (_, topic) in s.spec.outputs() {
            edges.insert((stage.clone(), topic.to_string()));
        }
        if let StageSpec::Pipeline(p) = &s.spec {
            for u in p.plan().chain.lookups() {
                edges.insert((u.topic.clone(), stage.clone()));
            }
        }
        let plan = plans.iter().find(|p| p.name == s.name).unwrap();
        for store in &plan.stores {
            let node = format!("{} store of {}", store.name, s.name);
            labels.insert(node.clone());
            labels.insert(store.changelog.clone());
            edges.insert((stage.clone(), node.clone()));
            edges.insert((node, store.changelog.clone()));
        }
        let sink = match &s.spec {
            StageSpec::QuestdbSink(_) => Some("QuestDB (ILP)".to_string()),
            StageSpec::S3ParquetSink(a) => Some(format!(
                "S3 Parquet s3://{}/{}/",
                t.connections.s3.as_ref().unwrap().bucket,
                a.prefix
            )),
            _ => None,
        };
        if let Some(sink) = sink {
            labels.insert(sink.clone());
            edges.insert((stage, sink));
        }
    }
    for e in &edges {
        labels.insert(e.0.clone());
        labels.insert(e.1.clone());
    }
    Expect { labels, edges }
}

fn check(file: &str, format: &str, nodes: &BTreeMap<String, String>, edges: &[(String, String)]) {
    let t = sluice_topology::load(&repo().join(file)).unwrap().topology;
    let exp = expect(&t);
    let labels: BTreeSet<&String> = nodes.values().collect();
    for l in &exp.labels {
        assert!(
            labels.contains(l),
            "{format} of {file}: no node `{l}` among {labels:?}"
        );
    }
    let drawn: BTreeSet<(String, String)> = edges
        .iter()
        .map(|(a, b)| {
            let label = |id: &String| {
                nodes
                    .get(id)
                    .unwrap_or_else(|| panic!("{format} of {file}: edge to undeclared node {id}"))
                    .clone()
            };
            (label(a), label(b))
        })
        .collect();
    for e in &exp.edges {
        assert!(
            drawn.contains(e),
            "{format} of {file}: no edge {} -> {}",
            e.0,
            e.1
        );
    }
    assert_eq!(
        nodes.len(),
        exp.labels.len(),
        "{format} of {file}: nodes other than the topology's: {:?}",
        labels
            .iter()
            .filter(|l| !exp.labels.contains(l.as_str()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn dot_output_parses_in_graphviz_and_names_every_element() {
    for file in TOPOLOGIES {
        let text = graph(&repo().join(file), "dot");
        let mut child = Command::new("dot")
            .arg("-Tjson")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Graphviz's `dot` is installed (scripts/setup installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dot rejected the graph of {file}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut by_gvid = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for o in doc["objects"].as_array().unwrap() {
            let id = o["name"].as_str().unwrap().to_string();
            by_gvid.insert(o["_gvid"].as_u64().unwrap(), id.clone());
            nodes.insert(id, o["label"].as_str().unwrap().to_string());
        }
        let edges: Vec<(String, String)> = doc["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    by_gvid[&e["tail"].as_u64().unwrap()].clone(),
                    by_gvid[&e["head"].as_u64().unwrap()].clone(),
                )
            })
            .collect();
        check(file, "dot", &nodes, &edges);
    }
}

#[test]
fn mermaid_output_declares_every_element_once_and_links_only_declared_nodes() {
    for file in TOPOLOGIES {
        let text = graph(&repo().join(file), "mermaid");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("flowchart LR"), "{file}");
        let mut nodes = BTreeMap::new();
        let mut edges = Vec::new();
        for line in lines.map(str::trim) {
            if line.starts_with("%%") || line.starts_with("classDef ") || line.starts_with("class ")
            {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() >= 3 && (words[1].starts_with("-->") || words[1].starts_with("-.->")) {
                let to = words.last().unwrap();
                edges.push((words[0].to_string(), to.to_string()));
                continue;
            }
            // A node: an id, then a shape around a quoted label.
            let id_end = line
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or_else(|| panic!("{file}: unreadable line {line}"));
            let (id, shape) = line.split_at(id_end);
            let open = shape.find('"').unwrap();
            let close = shape.rfind('"').unwrap();
            let (before, after) = (&shape[..open], &shape[close + 1..]);
            let closing: String = before
                .chars()
                .rev()
                .map(|c| match c {
                    '[' => ']',
                    '(' => ')',
                    '{' => '}',
                    c => c,
                })
                .collect();
            assert_eq!(after, closing, "{file}: unbalanced shape in {line}");
            let label = shape[open + 1..close].replace("#quot;", "\"");
            assert!(
                nodes.insert(id.to_string(), label).is_none(),
                "{file}: node {id} declared twice"
            );
        }
        check(file, "mermaid", &nodes, &edges);
    }
}
