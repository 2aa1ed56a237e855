//! `sluice replay FILE --stage S --from TIME|earliest`: rewinds a stage of the live topology
//! (the reset tool). The stage must be stopped everywhere; its state is cleared by a commit
//! written through the exactly-once protocol, its group goes back to the input's first
//! offset, and when it starts again it rebuilds its state from the input's beginning. What
//! it emits for input below `--from` was written by the first run and is only numbered
//! again (the `Rebuild` its markers carry); from `--from` on its outputs are written again,
//! with the ids they had, so the TSDB sink upserts its rows and stages that already applied
//! them drop them by id. How and why: docs/REPLAY.md, "Rewinding the live topology".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{consumer_config, producer_config, TrackedProducer};
use sluice_state::table::AnyTable;
use sluice_state::{KeyRange, KvStore, Rebuild, RocksConfig, RocksEnv, StateError};
use sluice_topology::{Broker, Guarantee, StageSpec, Topology};

use crate::runtime::bounds::{self, Bound};
use crate::runtime::{commit_task, restore_task, LogEnv};

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The live topology file.
    pub file: PathBuf,
    /// The stage to rewind. Stop every instance running it first.
    #[arg(long)]
    pub stage: String,
    /// Where its outputs are written again from: `earliest` (all of them) or an RFC 3339
    /// time: from the first input record stamped at or after it, per partition. The state
    /// is rebuilt from the input's beginning either way.
    #[arg(long)]
    pub from: String,
    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where one input partition of the stage stands before the replay.
#[derive(Debug)]
struct Partition {
    topic: String,
    partition: i32,
    /// The group's committed offset, if any.
    committed: Option<i64>,
    low: i64,
    end: i64,
    /// The first offset stamped at or after `--from` (the low watermark for `earliest`).
    from: i64,
}

impl Partition {
    /// Where a stage with no state starts again: `--from`, or earlier if it never got there.
    fn stateless_restart(&self) -> i64 {
        self.from.min(self.committed.unwrap_or(self.low))
    }
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let from = Bound::parse_from(&a.from)?;
    let loaded = super::validate::load_checked(&a.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &loaded.topology;
    let (inputs, stores) = stage_inputs(t, &a)?;
    let mut opts = crate::connections::client_options(&t.connections)?;
    // As `sluice run` reads them: restores must not see records of aborted transactions.
    opts.read_committed = t.processing.guarantee == Guarantee::ExactlyOnceTransactional;
    let group = t.group_id(&a.stage);
    let consumer: BaseConsumer = consumer_config(&opts, &group)
        .set("enable.auto.commit", "false")
        .create()
        .with_context(|| format!("connecting to the broker at {}", t.connections.brokers))?;
    refuse_members(&consumer, &group, &a.stage)?;

    let range = bounds::capture(
        &opts,
        &inputs,
        (from, &a.from),
        (Bound::Now, "now"),
        bounds::now_ms(),
    )?;
    let committed = committed_offsets(&consumer, &range)?;
    let mut parts = Vec::new();
    for p in &range.partitions {
        let (low, end) = consumer
            .fetch_watermarks(&p.topic, p.partition, TIMEOUT)
            .with_context(|| format!("reading the offsets of {} [{}]", p.topic, p.partition))?;
        anyhow::ensure!(
            stores.is_empty() || low == 0,
            "{} partition {} no longer holds its first records (its earliest offset is {low}): \
             stage {}'s state and output ids can only be rebuilt from the input's beginning. \
             Recompute the range into a namespace of its own with `sluice backfill {} --from {} --version V` instead",
            p.topic,
            p.partition,
            a.stage,
            a.file.display(),
            a.from
        );
        parts.push(Partition {
            topic: p.topic.clone(),
            partition: p.partition,
            committed: committed.get(&(p.topic.clone(), p.partition)).copied(),
            low,
            end,
            from: p.start,
        });
    }
    print_plan(&a, &stores, &parts);
    if a.dry_run {
        println!("--dry-run: nothing changed.");
        return Ok(ExitCode::SUCCESS);
    }

    // The group first: with the old markers still in place a start skips what they cover,
    // so a replay cut short here leaves the stage as it was, and a rerun finishes it.
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let to = if stores.is_empty() {
            p.stateless_restart()
        } else {
            0
        };
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(to))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .with_context(|| format!("moving group {group} to the rewind point"))?;

    if !stores.is_empty() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        // Beside the stage's own state (a disk sized for it), removed when done.
        let state_dir = sluice_topology::resolve_state_dir(&loaded.path, &t.state_dir);
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("replay-{}-", a.stage))
            .tempdir_in(&state_dir)
            .with_context(|| format!("creating a scratch directory in {}", state_dir.display()))?;
        let env = LogEnv {
            app: t.metadata.name.clone(),
            stage: a.stage.clone(),
            stores: stores
                .iter()
                .map(|s| (s.clone(), t.changelog_topic(&a.stage, s)))
                .collect(),
            opts: opts.clone(),
            state_dir: scratch.path().to_path_buf(),
            rocks: RocksEnv::new(&RocksConfig::default()),
            marker_producer: producer_config(&opts).create::<FutureProducer>()?,
            rt: rt.handle().clone(),
            nonce: rand::random(),
        };
        let mut producer = TrackedProducer::new(&opts)?;
        for p in &parts {
            let (cleared, rebuild) = clear_partition(&env, &mut producer, p)?;
            let writes = if rebuild.is_active() {
                format!(
                    "numbers without writing below offset {}, writes from there (the first run stood at {}, output {})",
                    rebuild.quiet_below, rebuild.first_run_end, rebuild.first_run_seq
                )
            } else {
                "had processed nothing: writes everything".to_string()
            };
            println!(
                "  partition {}: state cleared ({} keys: {}); rebuilds from offset 0, {writes}",
                p.partition,
                cleared.iter().sum::<usize>(),
                stores
                    .iter()
                    .zip(&cleared)
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    // A member may have joined while we worked: its commits could undo the rewind.
    refuse_members(&consumer, &group, &a.stage).context(
        "the rewind is written, but an instance joined meanwhile: stop it, delete its state \
         directory for this stage, and run the replay again",
    )?;
    println!(
        "Rewound stage {} in {:.1?}. Start it again (sluice run {} --stage {}); `sluice lag {}` shows it catching up.",
        a.stage,
        started.elapsed(),
        a.file.display(),
        a.stage,
        a.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The stage's inputs and stores, checked: it exists, is not a part sluice added (a
/// repartition), reads Kafka, and a rebuild can keep what it writes from being written twice
/// (outputs through the runner, or the archive's batches).
fn stage_inputs(t: &Topology, a: &Args) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let names: Vec<&str> = t
        .stages
        .iter()
        .filter(|s| s.part_of.is_none())
        .map(|s| s.name.as_str())
        .collect();
    let Some(stage) = t
        .stages
        .iter()
        .find(|s| s.name == a.stage && s.part_of.is_none())
    else {
        anyhow::bail!(
            "no stage `{}` in {}; stages: {}",
            a.stage,
            a.file.display(),
            names.join(", ")
        );
    };
    if let Some(part) = t
        .stages
        .iter()
        .find(|s| s.part_of.as_deref() == Some(&a.stage))
    {
        anyhow::bail!(
            "stage {} is split at a repartition ({} is its second part): replaying a split stage is not supported; recompute it with `sluice backfill`",
            a.stage,
            part.name
        );
    }
    match &stage.spec {
        StageSpec::Pipeline(p) if p.sink.is_some() => anyhow::bail!(
            "stage {} ends in a sink, which writes outside the runner: a replay cannot keep it from writing the rebuilt range again; recompute it with `sluice backfill` instead",
            a.stage
        ),
        _ => {}
    }
    let stores = stage.spec.stores();
    let inputs: Vec<String> = stage
        .spec
        .inputs()
        .into_iter()
        .map(|(_, i)| i.to_string())
        .collect();
    anyhow::ensure!(
        stores.is_empty() || inputs.len() == 1,
        "stage {} reads {} topics; a replay rebuilds the state of a stage with one input",
        a.stage,
        inputs.len()
    );
    if let Some(f) = inputs.iter().find(|i| t.broker_of(i) == Broker::Fluvio) {
        anyhow::bail!(
            "stage {} reads {f} on Fluvio, whose positions live in its claim topic: a replay rewinds Kafka inputs only",
            a.stage
        );
    }
    if let Some((_, f)) = t.fluvio_outputs(stage).first() {
        anyhow::bail!(
            "stage {} writes {f} on Fluvio, where a record cannot carry the id that lets readers drop a rewritten copy: a replay would append the rebuilt range again; recompute it with `sluice backfill` into a Kafka topic instead",
            a.stage
        );
    }
    Ok((inputs, stores))
}

/// Refuses while any instance is in the stage's group, naming each.
fn refuse_members(consumer: &BaseConsumer, group: &str, stage: &str) -> anyhow::Result<()> {
    let list = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .with_context(|| format!("describing consumer group {group}"))?;
    let members: Vec<String> = list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .map(|m| {
            format!(
                "{} (client {}, host {})",
                m.id(),
                m.client_id(),
                m.client_host()
            )
        })
        .collect();
    anyhow::ensure!(
        members.is_empty(),
        "stage {stage} is still running: group {group} has {} member(s): {}. Stop every instance running it, then replay (a static member, `--instance-id`, stays in the group until its session times out unless it was stopped with --leave-group)",
        members.len(),
        members.join("; ")
    );
    Ok(())
}

fn committed_offsets(
    consumer: &BaseConsumer,
    range: &bounds::Range,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in &range.partitions {
        tpl.add_partition(&p.topic, p.partition);
    }
    let got = consumer
        .committed_offsets(tpl, TIMEOUT)
        .context("reading the group's committed offsets")?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

fn print_plan(a: &Args, stores: &[String], parts: &[Partition]) {
    println!(
        "Replay of stage {} from {} ({}):",
        a.stage,
        a.from,
        if stores.is_empty() {
            "no state".to_string()
        } else {
            format!("stores {}", stores.join(", "))
        }
    );
    for p in parts {
        let at = p
            .committed
            .map_or("never committed".to_string(), |c| format!("at {c}"));
        if stores.is_empty() {
            println!(
                "  {} partition {}: {at} of {}; reads again from offset {}",
                p.topic,
                p.partition,
                p.end,
                p.stateless_restart()
            );
        } else {
            println!(
                "  {} partition {}: {at} of {}; rebuilds from offset 0, writes again from offset {} (or from where it stood, if earlier)",
                p.topic, p.partition, p.end, p.from
            );
        }
    }
}

/// Restores task `p.partition`'s stores from their changelogs (into scratch engines, through
/// the protocol's restore: fence, repairs, base marker) and commits a tombstone for every
/// key, with a marker that sends the task back to input offset 0 and output sequence 0 and
/// carries the [`Rebuild`]: quiet below `--from` or where the first run stood, whichever is
/// earlier (what the first run never read, it never wrote), and the first run's position.
/// A later restore anywhere (a local store from its checkpoint, a standby, a fresh
/// instance) reads the tombstones after what it holds and starts empty. Returns the keys
/// cleared per store and the rebuild.
fn clear_partition(
    env: &LogEnv,
    producer: &mut TrackedProducer,
    p: &Partition,
) -> anyhow::Result<(Vec<usize>, Rebuild)> {
    let mut tables: Vec<Clearing> = env.stores.iter().map(|_| Clearing::default()).collect();
    let mut dyns: Vec<&mut dyn AnyTable> =
        tables.iter_mut().map(|t| t as &mut dyn AnyTable).collect();
    let (log, resume) = restore_task(env, p.partition, &mut dyns, &mut |_| {})
        .with_context(|| format!("restoring partition {} of stage {}", p.partition, env.stage))?;
    let stood = resume.input_offset.unwrap_or(0);
    let rebuild = Rebuild {
        quiet_below: p.from.min(stood),
        first_run_end: stood,
        first_run_seq: resume.output_seq,
    };
    let mut log = log.with_rebuild(rebuild);
    let mut cleared = Vec::with_capacity(tables.len());
    for t in &mut tables {
        cleared.push(t.mark_all()?);
    }
    let dyns: Vec<&mut dyn AnyTable> = tables.iter_mut().map(|t| t as &mut dyn AnyTable).collect();
    commit_task(env, producer, &mut log, dyns, 0, 0).with_context(|| {
        format!(
            "writing the rewind of partition {} of stage {}",
            p.partition, env.stage
        )
    })?;
    Ok((cleared, rebuild))
}

/// A table whose only change is the deletion of every key its engine holds.
#[derive(Default)]
struct Clearing {
    engine: Option<Box<dyn KvStore>>,
    keys: Vec<Vec<u8>>,
}

impl Clearing {
    /// Marks every key of the restored engine for deletion; returns how many.
    fn mark_all(&mut self) -> Result<usize, StateError> {
        let Some(e) = self.engine.as_ref() else {
            return Ok(0);
        };
        self.keys = e
            .scan(KeyRange::all())?
            .map(|kv| kv.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        Ok(self.keys.len())
    }
}

impl AnyTable for Clearing {
    fn drain_dirty(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        out.extend(self.keys.drain(..).map(|k| (k, None)));
    }

    fn attach(&mut self, engine: Box<dyn KvStore>) -> Result<(), StateError> {
        self.engine = Some(engine);
        Ok(())
    }

    fn engine_mut(&mut self) -> Option<&mut Box<dyn KvStore>> {
        self.engine.as_mut()
    }

    fn detach(&mut self) -> Option<Box<dyn KvStore>> {
        self.keys.clear();
        self.engine.take()
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}
