//! `sluice dlq replay`: re-inject dead letters into the topic they came from, after a fix
//! (a schema registered, a range widened). Progress is kept in a consumer group, so a second
//! replay continues where the first stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{consumer_config, dlq, header_str, ClientOptions, TrackedProducer};
use sluice_topology::StageSpec;

/// Header on a re-injected record naming the dead letter it came from.
pub(crate) const REPLAYED_FROM: &str = "sluice.dlq.replayed_from";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Re-inject dead letters into their source topics.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The topology whose dead-letter topic and brokers are used.
    #[arg(long, default_value = "topology/iot.yaml")]
    pub topology: PathBuf,
    /// Dead-letter topic; default: the validate stage's.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only dead letters of this error class (repeatable); default: all.
    #[arg(long = "class")]
    pub classes: Vec<String>,
    /// Consumer group that remembers how far replay got.
    #[arg(long)]
    pub group: Option<String>,
}

pub(crate) fn run(c: Command) -> anyhow::Result<ExitCode> {
    let Command::Replay(a) = c;
    let loaded = sluice_topology::load(&a.topology).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &loaded.topology;
    let topic = match &a.topic {
        Some(t) => t.clone(),
        None => t
            .stages
            .iter()
            .find_map(|s| match &s.spec {
                StageSpec::Validate(v) => Some(v.dead_letter.clone()),
                _ => None,
            })
            .context("no --topic given and the topology has no validate stage")?,
    };
    let group = a
        .group
        .clone()
        .unwrap_or_else(|| format!("{}-dlq-replay", t.metadata.name));
    let opts = crate::connections::client_options(&t.connections)?;
    let report = replay(&opts, &topic, &group, &a.classes, true)?;
    for (class, n) in &report.by_class {
        println!("{class}: {n} replayed");
    }
    println!(
        "replayed {} of {} dead letters from {topic} (skipped {} by class)",
        report.replayed, report.read, report.skipped
    );
    Ok(ExitCode::SUCCESS)
}

/// Counts of one replay.
#[derive(Debug, Default)]
pub(crate) struct ReplayReport {
    pub read: u64,
    pub replayed: u64,
    pub skipped: u64,
    pub by_class: BTreeMap<String, u64>,
}

/// Replays `topic` from the group's position to the end it had when replay started.
pub(crate) fn replay(
    opts: &ClientOptions,
    topic: &str,
    group: &str,
    classes: &[String],
    show_progress: bool,
) -> anyhow::Result<ReplayReport> {
    let brokers = opts.brokers.as_str();
    let consumer: BaseConsumer = consumer_config(opts, group).create()?;
    let mut producer = TrackedProducer::new(opts)?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading metadata of {topic} from {brokers}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {topic} does not exist on {brokers}"
    );
    let committed = consumer.committed_offsets(
        {
            let mut l = TopicPartitionList::new();
            for p in &partitions {
                l.add_partition(topic, *p);
            }
            l
        },
        Duration::from_secs(10),
    )?;
    // Where to start: the group's position, else the beginning. Where to stop: when nothing
    // new arrives for three seconds. High watermarks would be the usual end, but the local
    // broker (tansu 0.6.0) reports wrong ones (docs/BROKER_GAPS.md).
    let mut assign = TopicPartitionList::new();
    for p in &partitions {
        let start = match committed.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        assign.add_partition_offset(topic, *p, start)?;
    }
    let mut report = ReplayReport::default();
    consumer.assign(&assign)?;
    let bar = if show_progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} dlq replay: {pos} dead letters read, {per_sec}")
            .expect("valid template"),
    );
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut quiet = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            bar.tick();
            continue;
        };
        let m = m?;
        quiet = std::time::Instant::now();
        let p = m.partition();
        next.insert(p, m.offset() + 1);
        report.read += 1;
        bar.inc(1);
        let Some(h) = m.headers() else {
            report.skipped += 1;
            continue;
        };
        let class = header_str(h, dlq::ERROR_CLASS)
            .unwrap_or("unknown")
            .to_string();
        let Some(source) = header_str(h, dlq::SOURCE_TOPIC).map(str::to_string) else {
            report.skipped += 1;
            continue;
        };
        if !classes.is_empty() && !classes.contains(&class) {
            report.skipped += 1;
            continue;
        }
        // An ingest bridge's dead letters came from MQTT (partition -1), not from a topic
        // they could go back to; they are the device's payloads, for a person to read.
        if header_str(h, dlq::SOURCE_PARTITION) == Some("-1") {
            report.skipped += 1;
            continue;
        }
        let from = format!("{topic}/{p}/{}", m.offset());
        let headers = OwnedHeaders::new().insert(Header {
            key: REPLAYED_FROM,
            value: Some(from.as_bytes()),
        });
        let mut rec = BaseRecord::to(&source).headers(headers);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(v) = m.payload() {
            rec = rec.payload(v);
        }
        if let Some(ts) = m.timestamp().to_millis() {
            rec = rec.timestamp(ts);
        }
        producer.send(rec)?;
        report.replayed += 1;
        *report.by_class.entry(class).or_default() += 1;
    }
    producer.flush(Duration::from_secs(300))?;
    let mut commit = TopicPartitionList::new();
    for (p, o) in &next {
        commit.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    if commit.count() > 0 {
        consumer.commit(&commit, CommitMode::Sync)?;
    }
    bar.finish_and_clear();
    Ok(report)
}
