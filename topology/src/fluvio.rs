//! Topics on a Fluvio cluster: `connections.fluvio`, a topic's `broker: fluvio`, what may
//! read or write such a topic, and the Kafka-side claim topic that spreads its partitions.
//!
//! A stage reads a Fluvio topic, and may write its outputs there: task `p` is then the only
//! writer of the output's partition `p`, and keeps that partition's end in a store of its own
//! ([`POSITIONS_STORE`]). Changelogs, commit markers, dead letters and the consumer group
//! whose assignment says which instance reads which Fluvio partition stay on the
//! Kafka-compatible broker (docs/FLUVIO.md, docs/ARCHITECTURE.md).

use serde::Deserialize;

use crate::ingest::IngestSpec;
use crate::model::{Guarantee, Stage, Topology};
use crate::plan::TopicPlan;

/// The store a stage writing Fluvio keeps each Fluvio output's end in (per task: the end of
/// the partition it writes after its last commit), changelogged and committed with the
/// stage's other stores, so a restored task knows which of its outputs are there already.
pub const POSITIONS_STORE: &str = "fluvio_positions";

/// Where a topic lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Broker {
    /// The Kafka-compatible broker of `connections.brokers` (the default).
    #[default]
    Kafka,
    /// The Fluvio cluster of `connections.fluvio`.
    Fluvio,
}

/// `connections.fluvio`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FluvioConnection {
    /// The SC's public address, `host:port` (Fluvio's default port is 9003).
    pub endpoint: String,
}

/// Fluvio's rule for topic names: lowercase letters, digits and `-`, at most 63 characters,
/// starting and ending with a letter or digit.
pub fn valid_fluvio_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| ok_char(c) || c == '-')
        && name.starts_with(ok_char)
        && name.ends_with(ok_char)
}

impl Topology {
    /// Where topic `name` lives (undeclared topics, e.g. internal ones, are on Kafka).
    pub fn broker_of(&self, name: &str) -> Broker {
        self.topics.get(name).map(|t| t.broker).unwrap_or_default()
    }

    /// The Kafka topic through which stage `stage`'s group spreads the partitions of Fluvio
    /// topic `topic`: empty, with as many partitions; the member assigned its partition `p`
    /// reads Fluvio partition `p`, and commits its Fluvio position there as the offset.
    pub fn claim_topic(&self, stage: &str, topic: &str) -> String {
        format!("{}-{stage}-{topic}-fluvio-claims", self.metadata.name)
    }

    /// The outputs of `stage` that are on Fluvio, by port: the stage's output ports
    /// (`output`, and `alerts` for `detect`), not its dead letters, which stay on Kafka.
    pub fn fluvio_outputs(&self, stage: &Stage) -> Vec<(&'static str, String)> {
        stage
            .spec
            .outputs()
            .into_iter()
            .filter(|(field, topic)| {
                *field != "dead_letter" && self.broker_of(topic) == Broker::Fluvio
            })
            .map(|(field, topic)| (field, topic.to_string()))
            .collect()
    }

    /// The stores of `stage`, each changelogged to its own topic: the kind's, then
    /// [`POSITIONS_STORE`] when the stage writes a Fluvio topic.
    pub fn stage_stores(&self, stage: &Stage) -> Vec<String> {
        let mut v = stage.spec.stores();
        if !self.fluvio_outputs(stage).is_empty() {
            v.push(POSITIONS_STORE.to_string());
        }
        v
    }

    /// The topics to create on the Fluvio cluster, with the topology's replication.
    pub fn fluvio_topic_plans(&self) -> Vec<TopicPlan> {
        let d = self.topic_defaults;
        self.topics
            .iter()
            .filter(|(_, t)| t.broker == Broker::Fluvio)
            .map(|(name, t)| TopicPlan {
                name: name.clone(),
                partitions: t.partitions,
                replication: t.replication.unwrap_or(d.replication),
                min_insync_replicas: 1,
                configs: vec![],
            })
            .collect()
    }

    /// The claim topics of every stage input on Fluvio: (stage, Fluvio topic, claim topic).
    pub fn claim_topics(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for s in &self.stages {
            for (_, input) in s.spec.inputs() {
                if self.broker_of(input) == Broker::Fluvio {
                    out.push((
                        s.name.clone(),
                        input.to_string(),
                        self.claim_topic(&s.name, input),
                    ));
                }
            }
        }
        out
    }
}

/// What the topology does with its Fluvio topics: only stages read them.
pub(crate) fn check(t: &Topology, push: &mut impl FnMut(String, String, String)) {
    let on_fluvio = |name: &str| t.broker_of(name) == Broker::Fluvio;
    let mut any = false;
    for (name, spec) in &t.topics {
        if spec.broker != Broker::Fluvio {
            continue;
        }
        any = true;
        if !valid_fluvio_name(name) {
            push(
                format!("topics.{name}"),
                format!("`{name}` is not a valid Fluvio topic name"),
                format!(
                    "Fluvio names are lowercase letters, digits and `-` (at most 63): e.g. `{}`",
                    name.replace(['.', '_'], "-").to_ascii_lowercase()
                ),
            );
        }
        if spec.min_insync_replicas.is_some() {
            push(
                format!("topics.{name}.min_insync_replicas"),
                format!("`{name}` is on Fluvio, which has no `min.insync.replicas`"),
                "remove the key; Fluvio acknowledges a write once its in-sync replicas have it"
                    .into(),
            );
        }
    }
    if any && t.connections.fluvio.is_none() {
        let first = t
            .topics
            .iter()
            .find(|(_, s)| s.broker == Broker::Fluvio)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        push(
            format!("topics.{first}.broker"),
            format!("topic `{first}` is on Fluvio, but `connections.fluvio` is not set"),
            "add `connections.fluvio: { endpoint: HOST:9003 }` (the SC's public address)".into(),
        );
    }
    for s in &t.stages {
        check_stage_outputs(t, s, push);
    }
    // A stage's Fluvio output has that stage's tasks as its only writers.
    let mut writers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in &t.stages {
        for (field, topic) in t.fluvio_outputs(s) {
            writers
                .entry(topic)
                .or_default()
                .push(format!("stages.{}.{field}", s.name));
        }
    }
    for b in &t.ingest {
        let (out, _) = b.spec.output_and_device_field();
        if let Some(w) = writers.get_mut(out) {
            w.push(format!("ingest.{}.output", b.name));
        }
    }
    for (topic, w) in writers {
        if w.len() > 1 {
            push(
                w[1].clone(),
                format!(
                    "`{topic}` is on Fluvio and written by {}; a stage's Fluvio output must have one writer, its own tasks, which find their records there after a crash by position",
                    w.join(" and ")
                ),
                "give each writer its own topic, or put the topic on Kafka".into(),
            );
        }
    }
    for topic in t.table_topics() {
        if on_fluvio(&topic) {
            push(
                format!("topics.{topic}.broker"),
                format!("`{topic}` is read as a table, which needs a compacted Kafka topic"),
                "keep table topics on Kafka (remove `broker: fluvio`)".into(),
            );
        }
    }
    for b in &t.ingest {
        let base = format!("ingest.{}", b.name);
        // The output may be on Fluvio (its repeats are dropped by (device, seq), no header
        // needed); dead letters carry their reason in headers, and token topics are
        // compacted: those stay on Kafka.
        let mut io: Vec<(&str, &str)> = b.spec.inputs();
        if let IngestSpec::Mqtt(m) = &b.spec {
            io.push(("dead_letter", &m.dead_letter));
        }
        for (field, topic) in io {
            if on_fluvio(topic) {
                push(
                    format!("{base}.{field}"),
                    format!("bridge `{}` uses `{topic}`, which is on Fluvio; only a bridge's output may be (dead letters need headers, token topics compaction)", b.name),
                    "keep this topic on Kafka (remove its `broker: fluvio`)".into(),
                );
            }
        }
    }
}

/// A stage may write a Fluvio topic when its task `p` can be the only writer of the topic's
/// partition `p` (docs/FLUVIO.md, "Stages writing Fluvio"): one input, as many partitions.
/// Dead letters carry their reason in headers and stay on Kafka.
fn check_stage_outputs(t: &Topology, s: &Stage, push: &mut impl FnMut(String, String, String)) {
    let on_fluvio = |name: &str| t.broker_of(name) == Broker::Fluvio;
    let mut writes = false;
    for (field, topic) in s.spec.outputs() {
        if !on_fluvio(topic) {
            continue;
        }
        let key = format!("stages.{}.{field}", s.name);
        if field == "dead_letter" {
            push(
                key,
                format!(
                    "stage `{}` writes its dead letters to `{topic}`, which is on Fluvio; a dead letter carries its reason in record headers, which Fluvio records do not have",
                    s.name
                ),
                "keep the dead-letter topic on Kafka (remove its `broker: fluvio`)".into(),
            );
            continue;
        }
        writes = true;
        let inputs = s.spec.inputs();
        if inputs.len() != 1 {
            push(
                key,
                format!(
                    "stage `{}` writes `{topic}` on Fluvio but reads {} topics; each task writes the Fluvio partition of its input partition, so two inputs would give a partition two writers",
                    s.name,
                    inputs.len()
                ),
                "give the stage one input, or write a Kafka topic".into(),
            );
            continue;
        }
        let input = inputs[0].1;
        let (Some(have), Some(want)) = (
            t.topics.get(input).map(|i| i.partitions),
            t.topics.get(topic).map(|o| o.partitions),
        ) else {
            continue;
        };
        if have != want {
            push(
                format!("topics.{topic}.partitions"),
                format!(
                    "`{topic}` is on Fluvio and written by stage `{}`, whose input `{input}` has {have} partitions, but it has {want}; task `p` writes partition `p`, so the two must match",
                    s.name
                ),
                format!("give `{topic}` {have} partitions"),
            );
        }
    }
    if writes && t.processing.guarantee == Guarantee::ExactlyOnceTransactional {
        push(
            "processing.guarantee".into(),
            format!(
                "stage `{}` writes a Fluvio topic, which a Kafka transaction cannot include",
                s.name
            ),
            "use `exactly_once`: a stage writing Fluvio keeps each partition's end with its commit instead (docs/FLUVIO.md)".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fluvio_names() {
        for ok in ["telemetry-raw", "a", "t1234abcd-telemetry-raw", "0x"] {
            assert!(valid_fluvio_name(ok), "{ok}");
        }
        for bad in [
            "telemetry.raw",
            "Raw",
            "-raw",
            "raw-",
            "raw_x",
            "",
            &"a".repeat(64),
        ] {
            assert!(!valid_fluvio_name(bad), "{bad}");
        }
    }
}
