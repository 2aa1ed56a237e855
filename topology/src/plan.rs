//! The planner: what a topology needs on the broker and how each stage runs.

use crate::model::Topology;
use crate::stage::StageSpec;

/// A topic to create, with its configs.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPlan {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub configs: Vec<(&'static str, String)>,
}

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
    pub name: &'static str,
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
                    stores: s
                        .spec
                        .stores()
                        .iter()
                        .map(|store| StorePlan {
                            name: store,
                            changelog: self.changelog_topic(&s.name, store),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Every topic the topology needs: declared ones and changelogs.
    pub fn topic_plans(&self) -> Vec<TopicPlan> {
        let mut out: Vec<TopicPlan> = self
            .topics
            .iter()
            .map(|(name, t)| TopicPlan {
                name: name.clone(),
                partitions: t.partitions,
                replication: t.replication,
                configs: vec![],
            })
            .collect();
        for plan in self.stage_plans() {
            for store in &plan.stores {
                out.push(TopicPlan {
                    name: store.changelog.clone(),
                    partitions: plan.partitions,
                    replication: 1,
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

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.name == name).map(|s| &s.spec)
    }
}
