//! The planner: what a topology needs on the broker and how each stage runs.

use crate::model::Topology;
use crate::stage::StageSpec;

/// A topic to create, with its configs.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPlan {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// The topic config `min.insync.replicas` (in [`TopicPlan::all_configs`], not `configs`).
    pub min_insync_replicas: i32,
    /// Topic configs other than `min.insync.replicas`.
    pub configs: Vec<(&'static str, String)>,
}

impl TopicPlan {
    /// Every topic config to set at creation: `min.insync.replicas`, then `configs`.
    pub fn all_configs(&self) -> Vec<(&'static str, String)> {
        let mut all = vec![(MIN_INSYNC_REPLICAS, self.min_insync_replicas.to_string())];
        all.extend(self.configs.iter().cloned());
        all
    }
}

/// The topic config that, with `acks=all`, decides how many copies an acknowledged write has.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// One stage as it runs: its group, its stores and their changelogs.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub name: String,
    pub group_id: String,
    /// Input partitions; the stage runs one task per partition.
    pub partitions: i32,
    pub stores: Vec<StorePlan>,
}

#[derive(Debug, Clone)]
pub struct StorePlan {
    pub name: String,
    pub changelog: String,
}

/// Changelogs keep every key's last value; uncommitted tails must survive long enough to be
/// rewritten after a restart (docs/EXACTLY_ONCE.md).
pub const CHANGELOG_MIN_COMPACTION_LAG_MS: u64 = 86_400_000;

impl Topology {
    /// Consumer group of a stage: `<app>-<stage>`.
    pub fn group_id(&self, stage: &str) -> String {
        format!("{}-{stage}", self.metadata.name)
    }

    /// Changelog topic of a store: `<app>-<stage>-<store>-changelog`.
    pub fn changelog_topic(&self, stage: &str, store: &str) -> String {
        format!("{}-{stage}-{store}-changelog", self.metadata.name)
    }

    pub fn stage_plans(&self) -> Vec<StagePlan> {
        self.stages
            .iter()
            .map(|s| {
                let partitions = s
                    .spec
                    .inputs()
                    .iter()
                    .filter_map(|(_, t)| self.topics.get(*t).map(|t| t.partitions))
                    .max()
                    .unwrap_or(1);
                StagePlan {
                    name: s.name.clone(),
                    group_id: self.group_id(&s.name),
                    partitions,
                    stores: self
                        .stage_stores(s)
                        .into_iter()
                        .map(|store| StorePlan {
                            changelog: self.changelog_topic(&s.name, &store),
                            name: store,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Every topic the topology needs: declared ones and changelogs. Declared topics take
    /// their replication and `min.insync.replicas` from their own entry, else from
    /// `topic_defaults`; changelogs from `topic_defaults`.
    pub fn topic_plans(&self) -> Vec<TopicPlan> {
        let d = self.topic_defaults;
        // Tables and the HTTP bridges' token topics keep every key's last value.
        let mut tables = self.table_topics();
        tables.extend(
            self.ingest
                .iter()
                .flat_map(|b| b.spec.inputs())
                .map(|(_, t)| t.to_string()),
        );
        let mut out: Vec<TopicPlan> = self
            .topics
            .iter()
            .filter(|(_, t)| t.broker == crate::fluvio::Broker::Kafka)
            .map(|(name, t)| TopicPlan {
                name: name.clone(),
                partitions: t.partitions,
                replication: t.replication.unwrap_or(d.replication),
                min_insync_replicas: t.min_insync_replicas.unwrap_or(d.min_insync_replicas),
                // A table keeps every key's last value: the topic is its changelog.
                configs: if tables.contains(name.as_str()) {
                    vec![("cleanup.policy", "compact".into())]
                } else {
                    vec![]
                },
            })
            .collect();
        // Empty: only their assignment is used (`claim_topic`); the committed offsets are
        // Fluvio positions, kept as long as the group's.
        for (_, topic, claim) in self.claim_topics() {
            let t = &self.topics[&topic];
            out.push(TopicPlan {
                name: claim,
                partitions: t.partitions,
                replication: d.replication,
                min_insync_replicas: d.min_insync_replicas,
                configs: vec![],
            });
        }
        for plan in self.stage_plans() {
            for store in &plan.stores {
                out.push(TopicPlan {
                    name: store.changelog.clone(),
                    partitions: plan.partitions,
                    replication: d.replication,
                    min_insync_replicas: d.min_insync_replicas,
                    configs: vec![
                        ("cleanup.policy", "compact".into()),
                        (
                            "min.compaction.lag.ms",
                            CHANGELOG_MIN_COMPACTION_LAG_MS.to_string(),
                        ),
                        // A tombstone must outlive the lag too, or a restore reusing an old
                        // local store could miss a delete.
                        (
                            "delete.retention.ms",
                            CHANGELOG_MIN_COMPACTION_LAG_MS.to_string(),
                        ),
                    ],
                });
            }
        }
        out
    }

    /// Topics read as tables by a pipeline's `join`.
    pub fn table_topics(&self) -> std::collections::BTreeSet<String> {
        self.stages
            .iter()
            .filter_map(|s| match &s.spec {
                StageSpec::Pipeline(p) => p.plan.as_ref(),
                _ => None,
            })
            .flat_map(|plan| plan.lookups())
            .map(|u| u.topic)
            .collect()
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.name == name).map(|s| &s.spec)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::load::load_str;

    const FILE: &str = r#"
apiVersion: sluice/v1
kind: Topology
metadata: { name: app }
connections: { brokers: "127.0.0.1:9092", registry: "http://127.0.0.1:8081" }
TOPIC_DEFAULTS
topics:
  raw:   { partitions: 2 }
  valid: { partitions: 2, replication: 5, min_insync_replicas: 3 }
  dlq:   { partitions: 1, min_insync_replicas: 1 }
stages:
  agg:
    kind: aggregate
    input: raw
    output: valid
    output_subject: valid-value
    dead_letter: dlq
"#;

    fn plans(defaults: &str) -> Vec<TopicPlan> {
        let text = FILE.replace("TOPIC_DEFAULTS", defaults);
        let loaded =
            load_str(Path::new("t.yaml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        loaded.topology.topic_plans()
    }

    fn durability(plans: &[TopicPlan], name: &str) -> (i32, i32) {
        let p = plans
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no plan for {name}"));
        (p.replication, p.min_insync_replicas)
    }

    #[test]
    fn topics_and_changelogs_carry_the_defaults_unless_a_topic_overrides_them() {
        let plans = plans("topic_defaults: { replication: 4, min_insync_replicas: 3 }");
        assert_eq!(durability(&plans, "raw"), (4, 3));
        assert_eq!(durability(&plans, "valid"), (5, 3));
        assert_eq!(durability(&plans, "dlq"), (4, 1));
        for store in ["ids", "windows"] {
            assert_eq!(
                durability(&plans, &format!("app-agg-{store}-changelog")),
                (4, 3)
            );
        }
    }

    #[test]
    fn without_topic_defaults_topics_get_production_durability() {
        let plans = plans("");
        assert_eq!(durability(&plans, "raw"), (3, 2));
        assert_eq!(durability(&plans, "app-agg-windows-changelog"), (3, 2));
    }

    #[test]
    fn min_insync_replicas_is_a_topic_config_of_every_topic() {
        for p in plans("topic_defaults: { replication: 1, min_insync_replicas: 1 }") {
            let all = p.all_configs();
            assert_eq!(
                all[0],
                (MIN_INSYNC_REPLICAS, p.min_insync_replicas.to_string()),
                "{}",
                p.name
            );
            assert_eq!(&all[1..], &p.configs[..], "{}", p.name);
        }
    }
}
