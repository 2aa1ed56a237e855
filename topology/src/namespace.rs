//! A topology renamed into a namespace of its own (`sluice backfill --version V`), so it can
//! run beside the live one without sharing anything it writes: the application id (and with
//! it every consumer group, changelog, repartition topic and local state folder) becomes
//! `<app>-V`, every topic the namespaced stages produce gets a `.V` suffix (and its registry
//! subject with it), built-in TSDB tables `_V`, S3 prefixes `-V`. The topics those stages
//! read but do not produce (the first stages' inputs, tables) keep their names: they are
//! what the namespace reads. A pure function of the parsed topology, applied before
//! pipelines are planned so their derived topics and sinks follow.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Topology;
use crate::stage::StageSpec;

/// A namespace version: letters, digits and `_`, so it fits topic, group and table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    version: String,
    /// Only these stages' outputs are renamed (`--stage`); `None`: every stage's.
    stages: Option<BTreeSet<String>>,
    /// Topics renamed whoever writes them (`--source archive` restores one into the
    /// namespace, even an input no stage writes).
    topics: BTreeSet<String>,
}

/// Why a version cannot name a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version `{0}` cannot name a namespace: use 1 to 32 letters, digits or `_`, e.g. `v2`")]
pub struct BadVersion(pub String);

impl Namespace {
    pub fn new(version: &str) -> Result<Namespace, BadVersion> {
        let ok = !version.is_empty()
            && version.len() <= 32
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(BadVersion(version.to_string()));
        }
        Ok(Namespace {
            version: version.to_string(),
            stages: None,
            topics: BTreeSet::new(),
        })
    }

    /// Renames only what `stages` produce: the other stages' outputs are read as they are
    /// (a backfill of `detect` alone reads the live `telemetry.valid`).
    pub fn only(mut self, stages: impl IntoIterator<Item = String>) -> Namespace {
        self.stages = Some(stages.into_iter().collect());
        self
    }

    /// Renames `topic` too, for every stage that reads or writes it.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Namespace {
        self.topics.insert(topic.into());
        self
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The application id in the namespace: `<app>-V`.
    pub fn app(&self, app: &str) -> String {
        format!("{app}-{}", self.version)
    }

    /// A produced topic in the namespace: `<topic>.V`.
    pub fn topic(&self, topic: &str) -> String {
        format!("{topic}.{}", self.version)
    }

    /// A TSDB table in the namespace: `<table>_V`.
    pub fn table(&self, table: &str) -> String {
        format!("{table}_{}", self.version)
    }

    /// An S3 prefix in the namespace: `<prefix>-V`.
    pub fn prefix(&self, prefix: &str) -> String {
        format!("{}-{}", prefix.trim_end_matches('/'), self.version)
    }

    /// A registry subject of a renamed topic: `<new topic>-value` when it followed the
    /// topic-name strategy, else `<subject>.V`.
    fn subject(&self, old_topic: &str, subject: &str) -> String {
        if subject == format!("{old_topic}-value") {
            format!("{}-value", self.topic(old_topic))
        } else {
            format!("{subject}.{}", self.version)
        }
    }

    /// `t` renamed into the namespace. Pipelines must not be planned yet (their plans name
    /// topics and sinks); [`crate::load_namespaced`] applies it at the right moment.
    ///
    /// The `ingest:` bridges are left out: they feed the live pipeline's inputs from the
    /// devices, which a backfill reads and never writes.
    pub fn apply(&self, t: &Topology) -> Topology {
        let mut t = t.clone();
        t.ingest.clear();
        let produced: BTreeSet<String> = t
            .stages
            .iter()
            .filter(|s| {
                self.stages
                    .as_ref()
                    .is_none_or(|only| only.contains(&s.name))
            })
            .flat_map(|s| s.spec.outputs().into_iter().map(|(_, o)| o.to_string()))
            .chain(self.topics.iter().cloned())
            .collect();
        let rename = |topic: &mut String| {
            if produced.contains(topic.as_str()) {
                *topic = self.topic(topic);
            }
        };
        let mut subjects: BTreeMap<String, String> = BTreeMap::new();
        t.topics = std::mem::take(&mut t.topics)
            .into_iter()
            .map(|(name, mut spec)| {
                if !produced.contains(&name) {
                    return (name, spec);
                }
                if let Some(subject) = spec.subject.as_mut() {
                    let new = self.subject(&name, subject);
                    subjects.insert(subject.clone(), new.clone());
                    *subject = new;
                }
                (self.topic(&name), spec)
            })
            .collect();
        let resubject = |s: &mut String| {
            if let Some(new) = subjects.get(s.as_str()) {
                *s = new.clone();
            }
        };
        t.metadata.name = self.app(&t.metadata.name);
        for stage in &mut t.stages {
            match &mut stage.spec {
                StageSpec::Validate(v) => {
                    rename(&mut v.input);
                    rename(&mut v.output);
                    rename(&mut v.dead_letter);
                    resubject(&mut v.output_subject);
                }
                StageSpec::Aggregate(a) => {
                    rename(&mut a.input);
                    rename(&mut a.output);
                    rename(&mut a.dead_letter);
                    resubject(&mut a.output_subject);
                }
                StageSpec::Detect(d) => {
                    rename(&mut d.input);
                    rename(&mut d.output);
                    rename(&mut d.alerts);
                    resubject(&mut d.output_subject);
                    resubject(&mut d.alerts_subject);
                }
                StageSpec::QuestdbSink(q) => {
                    q.inputs.iter_mut().for_each(rename);
                    q.aggregates_table = self.table(&q.aggregates_table);
                    q.anomalies_table = self.table(&q.anomalies_table);
                }
                StageSpec::S3ParquetSink(s) => {
                    rename(&mut s.input);
                    s.prefix = self.prefix(&s.prefix);
                }
                StageSpec::Pipeline(p) => {
                    rename(&mut p.input);
                    if let Some(o) = p.output.as_mut() {
                        rename(o);
                    }
                    for b in &mut p.branches {
                        rename(&mut b.output);
                    }
                    if let Some(d) = p.dead_letter.as_mut() {
                        rename(d);
                    }
                    if let Some(sink) = p.sink.as_mut() {
                        self.sink(sink);
                    }
                }
            }
        }
        t
    }

    /// A pipeline's `sink:` mapping: a `questdb` table gets `_V`, an `s3_parquet` prefix `-V`.
    fn sink(&self, sink: &mut serde_yaml::Value) {
        let edit = |v: Option<&mut serde_yaml::Value>, f: &dyn Fn(&str) -> String| {
            if let Some(v) = v {
                if let Some(s) = v.as_str() {
                    *v = serde_yaml::Value::String(f(s));
                }
            }
        };
        if let Some(q) = sink.get_mut("questdb") {
            edit(q.get_mut("table"), &|s| self.table(s));
        }
        if let Some(p) = sink.get_mut("s3_parquet") {
            edit(p.get_mut("prefix"), &|s| self.prefix(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::load::{load_namespaced_str, load_str};

    const FILE: &str = r#"
apiVersion: sluice/v1
kind: Topology
metadata: { name: iot }
connections: { brokers: "127.0.0.1:9092", registry: "http://127.0.0.1:8081", ilp: "tcp::addr=127.0.0.1:9009;", s3: { bucket: b } }
topics:
  raw:   { partitions: 2 }
  valid: { partitions: 2, subject: valid-value }
  dlq:   { partitions: 1 }
  aggs:  { partitions: 2, subject: aggs-value }
  anoms: { partitions: 2, subject: anomaly-subject }
  alerts: { partitions: 2, subject: alerts-value }
stages:
  validate:
    kind: validate
    input: raw
    output: valid
    output_subject: valid-value
    dead_letter: dlq
    reader_schema: x.avsc
  aggregate:
    kind: aggregate
    input: valid
    output: aggs
    output_subject: aggs-value
    dead_letter: dlq
  detect:
    kind: detect
    input: valid
    output: anoms
    output_subject: anomaly-subject
    alerts: alerts
    alerts_subject: alerts-value
    detector: { kind: zscore }
  tsdb:
    kind: questdb_sink
    inputs: [aggs, anoms]
  archive:
    kind: s3_parquet_sink
    input: valid
    prefix: telemetry
"#;

    fn parsed() -> Topology {
        // The plain load checks the stages; the namespace works on what it parsed.
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/telemetry-v2.avsc");
        match load_str(
            Path::new("t.yaml"),
            &FILE.replace("x.avsc", schema),
            &|_| None,
        ) {
            Ok(l) => l.topology,
            Err(e) => panic!("{e}"),
        }
    }

    fn spec<'a>(t: &'a Topology, name: &str) -> &'a StageSpec {
        t.stage(name).unwrap_or_else(|| panic!("no stage {name}"))
    }

    #[test]
    fn everything_written_is_renamed_and_the_first_input_is_not() {
        let ns = Namespace::new("v2").unwrap();
        let t = ns.apply(&parsed());
        assert_eq!(t.metadata.name, "iot-v2");
        assert_eq!(t.group_id("validate"), "iot-v2-validate");
        assert_eq!(
            t.changelog_topic("aggregate", "windows"),
            "iot-v2-aggregate-windows-changelog"
        );
        let names: Vec<&str> = t.topics.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "aggs.v2",
                "alerts.v2",
                "anoms.v2",
                "dlq.v2",
                "raw",
                "valid.v2"
            ]
        );
        let StageSpec::Validate(v) = spec(&t, "validate") else {
            panic!()
        };
        assert_eq!(
            (v.input.as_str(), v.output.as_str(), v.dead_letter.as_str()),
            ("raw", "valid.v2", "dlq.v2")
        );
        assert_eq!(v.output_subject, "valid.v2-value");
        let StageSpec::Detect(d) = spec(&t, "detect") else {
            panic!()
        };
        assert_eq!(d.input, "valid.v2");
        assert_eq!(
            (d.output.as_str(), d.alerts.as_str()),
            ("anoms.v2", "alerts.v2")
        );
        // A subject that did not follow the topic's name is suffixed, and the stage follows.
        assert_eq!(d.output_subject, "anomaly-subject.v2");
        assert_eq!(
            t.topics["anoms.v2"].subject.as_deref(),
            Some("anomaly-subject.v2")
        );
        let StageSpec::QuestdbSink(q) = spec(&t, "tsdb") else {
            panic!()
        };
        assert_eq!(q.inputs, ["aggs.v2", "anoms.v2"]);
        assert_eq!(
            (q.aggregates_table.as_str(), q.anomalies_table.as_str()),
            ("aggregates_v2", "anomalies_v2")
        );
        let StageSpec::S3ParquetSink(s) = spec(&t, "archive") else {
            panic!()
        };
        assert_eq!(
            (s.input.as_str(), s.prefix.as_str()),
            ("valid.v2", "telemetry-v2")
        );
    }

    #[test]
    fn a_topic_added_is_renamed_for_its_readers_even_when_no_stage_writes_it() {
        // `--source archive --stage detect` restores the archive into `valid.v2`, and an
        // archive of the raw input into `raw.v2`.
        let ns = Namespace::new("v2")
            .unwrap()
            .only(["detect".to_string()])
            .with_topic("valid")
            .with_topic("raw");
        let t = ns.apply(&parsed());
        let StageSpec::Detect(d) = spec(&t, "detect") else {
            panic!()
        };
        assert_eq!(
            (d.input.as_str(), d.output.as_str()),
            ("valid.v2", "anoms.v2")
        );
        let StageSpec::Validate(v) = spec(&t, "validate") else {
            panic!()
        };
        assert_eq!(
            (v.input.as_str(), v.output.as_str()),
            ("raw.v2", "valid.v2")
        );
        // Not in `only`: its outputs are read as the live pipeline wrote them.
        assert_eq!(v.dead_letter, "dlq");
        assert!(t.topics.contains_key("raw.v2") && !t.topics.contains_key("raw"));
    }

    #[test]
    fn the_live_topology_is_left_as_it_was() {
        let live = parsed();
        let _ = Namespace::new("v2").unwrap().apply(&live);
        assert_eq!(live.metadata.name, "iot");
        assert!(live.topics.contains_key("valid"));
    }

    #[test]
    fn one_stage_alone_reads_the_live_topics_of_the_others() {
        let ns = Namespace::new("v3").unwrap().only(["detect".to_string()]);
        let t = ns.apply(&parsed());
        let StageSpec::Detect(d) = spec(&t, "detect") else {
            panic!()
        };
        assert_eq!(d.input, "valid");
        assert_eq!(d.output, "anoms.v3");
        let StageSpec::QuestdbSink(q) = spec(&t, "tsdb") else {
            panic!()
        };
        assert_eq!(q.inputs, ["aggs", "anoms.v3"]);
    }

    #[test]
    fn versions_that_do_not_fit_names_are_refused() {
        for bad in ["", "v-2", "v.2", "v 2", "ü", &"x".repeat(33)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
        for good in ["v2", "V_2", "2026_12"] {
            assert!(Namespace::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn pipelines_are_planned_in_the_namespace() {
        let file = r#"
apiVersion: sluice/v1
kind: Topology
metadata: { name: app }
connections: { brokers: "b:9092", registry: "http://r", ilp: "tcp::addr=127.0.0.1:9009;" }
topics:
  readings: { partitions: 2, schema: SCHEMA }
  totals:   { partitions: 2 }
stages:
  sum:
    kind: pipeline
    input: readings
    operators:
      - key_by: [site]
      - window: { kind: tumbling, size: 1m, timestamp: ts, aggregate: { total: sum(value) } }
    output: totals
  rows:
    kind: pipeline
    input: totals
    sink:
      questdb: { table: site_totals, symbols: [site], columns: [total], timestamp: window_start }
"#;
        let dir = tempfile::tempdir().unwrap();
        let schema = dir.path().join("r.avsc");
        std::fs::write(
            &schema,
            r#"{"type":"record","name":"R","fields":[{"name":"site","type":"string"},{"name":"value","type":"double"},{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
        )
        .unwrap();
        let file = file.replace("SCHEMA", &schema.display().to_string());
        let ns = Namespace::new("v2").unwrap();
        let loaded = load_namespaced_str(Path::new("t.yaml"), &file, &|_| None, &ns)
            .unwrap_or_else(|e| panic!("{e}"));
        let t = &loaded.topology;
        let StageSpec::Pipeline(first) = spec(t, "sum") else {
            panic!()
        };
        assert_eq!(first.input, "readings");
        assert_eq!(first.writes(), Some("app-v2-sum-repartition"));
        let rekeyed = t
            .stages
            .iter()
            .find(|s| s.part_of.as_deref() == Some("sum"))
            .expect("the part after the repartition");
        let StageSpec::Pipeline(second) = &rekeyed.spec else {
            panic!()
        };
        assert_eq!(second.writes(), Some("totals.v2"));
        let StageSpec::Pipeline(rows) = spec(t, "rows") else {
            panic!()
        };
        assert_eq!(rows.input, "totals.v2");
        match rows.sink_plan() {
            Some(sluice_ops::sink::SinkPlan::Questdb(q)) => assert_eq!(q.table, "site_totals_v2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_reference_topology_loads_namespaced_without_its_ingest_bridges() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("iot.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let live = load_str(&path, &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !live.topology.ingest.is_empty(),
            "iot.yaml has ingest bridges"
        );
        let ns = Namespace::new("v2").unwrap();
        // The bridges name the live dead-letter topic, which the namespace renames: kept,
        // they would not validate.
        let loaded =
            load_namespaced_str(&path, &text, &|_| None, &ns).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.topology.ingest.is_empty());
        assert_eq!(loaded.topology.metadata.name, "iot-v2");
    }
}
