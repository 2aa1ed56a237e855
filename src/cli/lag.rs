//! `sluice lag FILE [--wait]`: how far each stage's consumer group is behind its input, read
//! from the broker (the group's committed offsets against each partition's high watermark),
//! so it works with no stage running and says nothing a stage merely believes about itself.
//!
//! A stage commits its offsets only after its outputs are acknowledged (docs/EXACTLY_ONCE.md),
//! so when the stages are read upstream first, a stage at zero lag has already written
//! everything its downstream stages will be measured against: one pass that finds every
//! stage at zero means the pipeline has drained what its sources held when the pass began.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::consumer_config;
use sluice_topology::Topology;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub file: PathBuf,
    /// Only these stages (repeatable); default: every stage.
    #[arg(long = "stage")]
    pub stages: Vec<String>,
    /// Keep measuring, with a progress line, until every stage has committed all of its input;
    /// exit 0 then.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up (exit 1, naming the stages behind) when no stage's committed
    /// position has moved for this long while some are behind.
    #[arg(long, default_value = "2m")]
    pub stall: humantime::Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One input partition of a stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The partition's first offset still held by the broker.
    pub start: i64,
    /// The high watermark: the offset the next record will get.
    pub end: i64,
    /// What the group committed; `None` when it never committed on this partition.
    pub committed: Option<i64>,
}

impl PartitionLag {
    /// Records the group has still to commit: from its committed offset, or from the first
    /// offset held when it never committed (stages start at the earliest record).
    pub(crate) fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(self.start).max(self.start)).max(0)
    }
}

/// One stage: its group and its input partitions.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct StageLag {
    pub stage: String,
    pub group: String,
    pub partitions: Vec<PartitionLag>,
}

impl StageLag {
    pub(crate) fn lag(&self) -> i64 {
        self.partitions.iter().map(PartitionLag::lag).sum()
    }
    fn committed_sum(&self) -> i64 {
        self.partitions.iter().filter_map(|p| p.committed).sum()
    }
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = sluice_topology::load(&a.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &loaded.topology;
    let stages = stages_upstream_first(t);
    for s in &a.stages {
        anyhow::ensure!(
            stages.iter().any(|(name, _)| name == s),
            "{}: no stage `{s}`; the stages are {}",
            a.file.display(),
            stages
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let stages: Vec<(String, Vec<String>)> = stages
        .into_iter()
        .filter(|(n, _)| a.stages.is_empty() || a.stages.contains(n))
        .collect();
    let meter = Meter::new(t, &stages)?;
    if !a.wait {
        let now = meter.measure()?;
        print(&now, a.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} lag {msg} ({elapsed})").expect("valid template"),
    );
    let stall = Duration::from(a.stall);
    let mut last_moved = Instant::now();
    let mut last_committed: Vec<i64> = Vec::new();
    loop {
        let now = meter.measure()?;
        let committed: Vec<i64> = now.iter().map(StageLag::committed_sum).collect();
        if committed != last_committed {
            last_moved = Instant::now();
            last_committed = committed;
        }
        bar.set_message(
            now.iter()
                .map(|s| format!("{} {}", s.stage, s.lag()))
                .collect::<Vec<_>>()
                .join(" · "),
        );
        bar.tick();
        if now.iter().all(|s| s.lag() == 0) {
            bar.finish_and_clear();
            eprintln!(
                "lag: every stage has committed all of its input ({:.1}s)",
                bar.elapsed().as_secs_f64()
            );
            print(&now, a.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        if last_moved.elapsed() >= stall {
            bar.finish_and_clear();
            print(&now, a.json)?;
            let behind: Vec<String> = now
                .iter()
                .filter(|s| s.lag() > 0)
                .map(|s| format!("{} (group {}, {} behind)", s.stage, s.group, s.lag()))
                .collect();
            eprintln!(
                "lag: no stage committed anything for {} while {} still behind: is `sluice run` running for them?",
                humantime::format_duration(stall),
                behind.join(", ")
            );
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every stage with its input topics, a stage after every stage that writes one of its
/// inputs (cycles, which validation rejects, keep file order).
pub(crate) fn stages_upstream_first(t: &Topology) -> Vec<(String, Vec<String>)> {
    let stages: Vec<(String, Vec<String>, Vec<String>)> = t
        .stages
        .iter()
        .map(|s| {
            let inputs = s.spec.inputs().iter().map(|(_, t)| t.to_string()).collect();
            let outputs = s
                .spec
                .outputs()
                .iter()
                .map(|(_, t)| t.to_string())
                .collect();
            (s.name.clone(), inputs, outputs)
        })
        .collect();
    let mut placed: BTreeSet<usize> = BTreeSet::new();
    let mut order = Vec::with_capacity(stages.len());
    while order.len() < stages.len() {
        let before = order.len();
        for (i, (_, inputs, _)) in stages.iter().enumerate() {
            if placed.contains(&i) {
                continue;
            }
            let waits = stages.iter().enumerate().any(|(j, (_, _, outs))| {
                j != i && !placed.contains(&j) && outs.iter().any(|o| inputs.contains(o))
            });
            if !waits {
                placed.insert(i);
                order.push(i);
            }
        }
        if order.len() == before {
            // A cycle: keep the rest in file order.
            order.extend((0..stages.len()).filter(|i| !placed.contains(i)));
        }
    }
    order
        .into_iter()
        .map(|i| (stages[i].0.clone(), stages[i].1.clone()))
        .collect()
}

/// Reads watermarks and committed offsets; one consumer per group (none joins its group).
struct Meter {
    watermarks: BaseConsumer,
    groups: Vec<Group>,
    brokers: String,
    /// For inputs on Fluvio: the cluster's client (ends) and a runtime to ask it on.
    fluvio: Option<(
        std::sync::Arc<sluice_connectors::fluvio::FluvioClient>,
        tokio::runtime::Runtime,
    )>,
}

/// A stage's group: its name, a client in it, and the input partitions it reads.
struct Group {
    stage: String,
    group: String,
    consumer: BaseConsumer,
    partitions: Vec<(String, i32)>,
    /// Claim topic to Fluvio topic, for inputs on Fluvio (`runtime/fluvio.rs`): the group
    /// commits Fluvio positions on the claim topic.
    claims: BTreeMap<String, String>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Meter {
    fn new(t: &Topology, stages: &[(String, Vec<String>)]) -> anyhow::Result<Self> {
        let brokers = t.connections.brokers.clone();
        let opts = crate::connections::client_options(&t.connections)?;
        let watermarks: BaseConsumer = consumer_config(&opts, &format!("{}-lag", t.metadata.name))
            .create()
            .context("creating a Kafka client")?;
        let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let mut groups = Vec::new();
        let fluvio = if t.claim_topics().is_empty() {
            None
        } else {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = rt
                .block_on(crate::connections::fluvio_client(&t.connections))?
                .context("connections.fluvio")?;
            Some((client, rt))
        };
        for (stage, inputs) in stages {
            let mut claims = BTreeMap::new();
            let inputs: Vec<String> = inputs
                .iter()
                .map(|i| {
                    if t.broker_of(i) == sluice_topology::Broker::Fluvio {
                        let claim = t.claim_topic(stage, i);
                        claims.insert(claim.clone(), i.clone());
                        claim
                    } else {
                        i.clone()
                    }
                })
                .collect();
            let group = t.group_id(stage);
            let consumer: BaseConsumer = consumer_config(&opts, &group)
                .create()
                .context("creating a Kafka client")?;
            let mut tps = Vec::new();
            for topic in &inputs {
                if !partitions.contains_key(topic) {
                    let ids = super::report::partitions(&watermarks, topic, &brokers)?
                        .with_context(|| {
                            format!("topic {topic} (input of stage {stage}) does not exist on {brokers}; `sluice topics create` makes it")
                        })?;
                    partitions.insert(topic.clone(), ids);
                }
                tps.extend(partitions[topic].iter().map(|p| (topic.clone(), *p)));
            }
            groups.push(Group {
                stage: stage.clone(),
                group,
                consumer,
                partitions: tps,
                claims,
            });
        }
        Ok(Meter {
            watermarks,
            groups,
            brokers,
            fluvio,
        })
    }

    /// One pass, upstream stages first (see the module's comment).
    fn measure(&self) -> anyhow::Result<Vec<StageLag>> {
        let mut out = Vec::with_capacity(self.groups.len());
        for Group {
            stage,
            group,
            consumer,
            partitions: tps,
            claims,
        } in &self.groups
        {
            let mut fluvio_ends = BTreeMap::new();
            if let Some((client, rt)) = &self.fluvio {
                for (claim, topic) in claims {
                    let ends = rt.block_on(client.ends(topic))?;
                    fluvio_ends.insert(claim.clone(), (topic.clone(), ends));
                }
            }
            let mut tpl = TopicPartitionList::new();
            for (topic, p) in tps {
                tpl.add_partition(topic, *p);
            }
            let committed = consumer.committed_offsets(tpl, TIMEOUT).with_context(|| {
                format!(
                    "reading the offsets group {group} committed, from the broker at {}",
                    self.brokers
                )
            })?;
            let mut partitions = Vec::with_capacity(tps.len());
            for (topic, p) in tps {
                let (start, end) = if let Some((_, ends)) = fluvio_ends.get(topic) {
                    (0, ends.get(p).copied().unwrap_or(0))
                } else {
                    self.watermarks
                        .fetch_watermarks(topic, *p, TIMEOUT)
                        .with_context(|| {
                            format!(
                                "reading the watermarks of {topic}/{p} from {}",
                                self.brokers
                            )
                        })?
                };
                let committed =
                    committed
                        .find_partition(topic, *p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                partitions.push(PartitionLag {
                    topic: fluvio_ends
                        .get(topic)
                        .map_or_else(|| topic.clone(), |(t, _)| t.clone()),
                    partition: *p,
                    start,
                    end,
                    committed,
                });
            }
            out.push(StageLag {
                stage: stage.clone(),
                group: group.clone(),
                partitions,
            });
        }
        Ok(out)
    }
}

fn print(stages: &[StageLag], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(stages)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<28} {:<28} {:>12} {:>12} {:>10}",
        "stage", "group", "input", "end", "committed", "lag"
    );
    for s in stages {
        let mut by_topic: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
        for p in &s.partitions {
            let e = by_topic.entry(&p.topic).or_default();
            e.0 += p.end;
            e.1 += p.committed.unwrap_or(p.start);
            e.2 += p.lag();
        }
        for (topic, (end, committed, lag)) in by_topic {
            println!(
                "{:<24} {:<28} {:<28} {:>12} {:>12} {:>10}",
                s.stage, s.group, topic, end, committed, lag
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: i64, end: i64, committed: Option<i64>) -> PartitionLag {
        PartitionLag {
            topic: "t".into(),
            partition: 0,
            start,
            end,
            committed,
        }
    }

    #[test]
    fn lag_counts_from_the_commit_or_from_the_first_record_held() {
        assert_eq!(p(0, 10, Some(4)).lag(), 6);
        assert_eq!(p(0, 10, Some(10)).lag(), 0);
        // Never committed: everything held is still to do.
        assert_eq!(p(3, 10, None).lag(), 7);
        // Committed below what retention kept: only what is held counts.
        assert_eq!(p(5, 10, Some(2)).lag(), 5);
        // An empty partition is never behind.
        assert_eq!(p(0, 0, None).lag(), 0);
    }

    #[test]
    fn stages_come_after_the_stages_that_write_their_inputs() {
        let loaded = sluice_topology::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/topology/iot.yaml"
        )))
        .unwrap();
        let order: Vec<String> = stages_upstream_first(&loaded.topology)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let at = |s: &str| order.iter().position(|n| n == s).unwrap();
        assert!(at("validate") < at("aggregate"));
        assert!(at("validate") < at("detect"));
        assert!(at("aggregate") < at("tsdb"));
        assert!(at("detect") < at("tsdb"));
        assert!(at("validate") < at("archive"));
    }
}
