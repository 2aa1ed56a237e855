//! Topics on a Fluvio cluster: `connections.fluvio`, a topic's `broker: fluvio`, what may
//! read or write such a topic, and the Kafka-side claim topic that spreads its partitions.
//!
//! A stage reads a Fluvio topic; everything it keeps and writes stays on the Kafka-compatible
//! broker: outputs, changelogs, commit markers, and the consumer group whose assignment says
//! which instance reads which Fluvio partition (docs/FLUVIO.md, docs/ARCHITECTURE.md).

use serde::Deserialize;

use crate::ingest::IngestSpec;
use crate::model::Topology;
use crate::plan::TopicPlan;

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
    let writes_fluvio = "sluice writes Kafka topics only: a Fluvio record has no headers to \
                         carry the `sluice.id` that makes a repeated write detectable";
    for s in &t.stages {
        for (field, topic) in s.spec.outputs() {
            if on_fluvio(topic) {
                push(
                    format!("stages.{}.{field}", s.name),
                    format!(
                        "stage `{}` writes `{topic}`, which is on Fluvio; {writes_fluvio}",
                        s.name
                    ),
                    "write to a Kafka topic; Fluvio topics are stage inputs (docs/FLUVIO.md)"
                        .into(),
                );
            }
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
