//! `sluice backfill FILE --from TIME|earliest --to TIME|now --version V [--stage S]`: runs a
//! topology over a bounded past range of its input, in a namespace of its own (groups,
//! changelogs, state, output topics, TSDB tables and S3 prefixes renamed with the version;
//! `sluice_topology::Namespace`), beside the live pipeline, and stops by itself with a
//! summary. How it works and what it guarantees: docs/REPLAY.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::{consumer_config, ClientOptions};
use sluice_topology::{Namespace, Topology};

mod archive;

use super::run::{create_topics_keeping, print_destinations, serve_stages, stage_def, Shared};
use crate::metrics::METRICS;
use crate::runtime::bounds::{self, Bound, Range};
use crate::runtime::{run_supervised, Ends, StageBounds};
use sluice_topology::Broker;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file (the live one, or a changed version of it).
    pub file: PathBuf,
    /// Start of the range: `earliest` (the first record the input topics still hold) or an
    /// RFC 3339 time (`2026-12-06T10:00:00Z`): the first record stamped at or after it.
    #[arg(long)]
    pub from: String,
    /// End of the range: `now` (the input topics' ends when the backfill first starts) or a
    /// time: records stamped before it are in.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// The namespace: groups, changelogs and state `<app>-V`, output topics `<topic>.V`,
    /// TSDB tables `<table>_V`, S3 prefixes `<prefix>-V`. Rerunning with the same version and
    /// range resumes an interrupted backfill.
    #[arg(long)]
    pub version: String,
    /// Backfill only this stage (with the parts sluice adds after a repartition); the topics
    /// it reads that other stages write are read as the live pipeline wrote them. Repeat for
    /// several. Default: every stage.
    #[arg(long = "stage")]
    pub stages: Vec<String>,
    /// Where the range is read: `topic` (the input topics, as long as they hold it) or
    /// `archive` (the S3 Parquet archive, for ranges older than the topics' retention: it
    /// is restored into the namespace's copy of the archived topic, and the stages
    /// downstream of that topic run).
    #[arg(long, value_enum, default_value_t = Source::Topic)]
    pub source: Source,
    /// With `--source archive`: the archive stage to read, when the topology has several.
    #[arg(long)]
    pub archive: Option<String>,
    /// Serve metrics here instead of the topology's `metrics.listen` (which the live
    /// pipeline may hold on this machine).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// No progress bars; the summary is still printed.
    #[arg(long)]
    pub quiet: bool,
}

/// Where a backfill reads its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Topic,
    Archive,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let now_ms = crate::runtime::bounds::now_ms();
    let from = Bound::parse_from(&a.from)?;
    let to = Bound::parse_to(&a.to)?;
    bounds::check_order(from, to, (&a.from, &a.to), now_ms)?;
    let live = super::validate::load_checked(&a.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let file_stages: Vec<&str> = live
        .topology
        .stages
        .iter()
        .filter(|s| s.part_of.is_none())
        .map(|s| s.name.as_str())
        .collect();
    for s in &a.stages {
        anyhow::ensure!(
            file_stages.contains(&s.as_str()),
            "no stage `{s}` in {}; stages: {}",
            a.file.display(),
            file_stages.join(", ")
        );
    }
    let archive = match a.source {
        Source::Archive => Some(archive::Archive::find(
            &live.topology,
            &a.file,
            a.archive.as_deref(),
        )?),
        Source::Topic => {
            anyhow::ensure!(
                a.archive.is_none(),
                "--archive {} names the archive to read with --source archive",
                a.archive.as_deref().unwrap_or_default()
            );
            None
        }
    };
    let mut ns = Namespace::new(&a.version)?;
    if !a.stages.is_empty() {
        ns = ns.only(a.stages.iter().cloned());
    }
    if let Some(ar) = &archive {
        ns = ns.with_topic(&ar.topic);
    }
    let restored = archive.as_ref().map(|ar| ns.topic(&ar.topic));
    let loaded = super::validate::load_checked_namespaced(&a.file, &ns)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &loaded.topology;
    let names: Vec<String> = match (&archive, &restored) {
        (Some(ar), Some(restored)) => ar.stages(t, restored, &a.stages, &a.file)?,
        _ => t
            .stages
            .iter()
            .filter(|s| {
                a.stages.is_empty()
                    || a.stages.contains(&s.name)
                    || s.part_of.as_ref().is_some_and(|p| a.stages.contains(p))
            })
            .map(|s| s.name.clone())
            .collect(),
    };
    let flow = Flow::of(t, &names);
    if let Some(restored) = &restored {
        anyhow::ensure!(
            t.broker_of(restored) != Broker::Fluvio,
            "{}: `{restored}` would be on Fluvio; the archive is restored into a Kafka topic only",
            a.file.display()
        );
    }
    if let Some(topic) = flow
        .external
        .iter()
        .find(|topic| t.broker_of(topic) == Broker::Fluvio)
    {
        anyhow::bail!(
            "{}: the backfill reads `{topic}`, a topic on Fluvio; a bounded range is captured from Kafka's offsets only, and a backfill from Fluvio is not built (docs/FLUVIO.md). Backfill the stages downstream of it with --stage.",
            a.file.display()
        );
    }

    if let Some((stage, topic)) = names.iter().find_map(|n| {
        let s = t.stages.iter().find(|s| &s.name == n)?;
        let (_, topic) = t.fluvio_outputs(s).into_iter().next()?;
        Some((n, topic))
    }) {
        anyhow::bail!(
            "{}: stage {stage} writes `{topic}` on Fluvio; a backfill writes a versioned copy of each output, and a backfill to Fluvio is not built (docs/FLUVIO.md). Put its output on Kafka for the backfill, or leave the stage out with --stage.",
            a.file.display()
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The topology's TLS and SASL settings, as `sluice run` connects.
    let opts = crate::connections::client_options(&t.connections)?;
    let state_dir = sluice_topology::resolve_state_dir(&loaded.path, &t.state_dir);
    let dir = state_dir.join(&t.metadata.name);
    // From the archive: which objects hold the range, found and saved before anything is
    // written, like a topic range.
    let archived = match (&archive, &restored) {
        (Some(ar), Some(restored)) => {
            let partitions = t.topics.get(restored).map(|s| s.partitions).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: topic `{}` is not declared under `topics:`; the archive is restored into a copy with its partitions",
                    a.file.display(),
                    ar.topic
                )
            })?;
            let (r, resumed) = bounds::load_or_capture(
                &dir.join(archive::ARCHIVE_RANGE_FILE),
                &a.from,
                &a.to,
                || archive::capture(ar, &opts, partitions, (from, &a.from), (to, &a.to), &rt),
            )?;
            eprintln!(
                "sluice: backfill from the archive {} of {}: {} batches, offsets spanning {} records{}, restored into {restored}",
                r.archive,
                r.topic,
                r.batches(),
                r.span(),
                if resumed {
                    format!(", resumed: captured {}", bounds::format_ms(r.captured_at_ms))
                } else {
                    String::new()
                }
            );
            anyhow::ensure!(
                r.archive == ar.url() && r.topic == ar.topic,
                "this namespace was started from the archive {} of `{}` (saved in {}); rerun with the same archive to resume it, or pick another --version",
                r.archive,
                r.topic,
                dir.join(archive::ARCHIVE_RANGE_FILE).display()
            );
            Some(r)
        }
        _ => None,
    };
    let capture_topics = |from: (Bound, &str), to: (Bound, &str)| {
        bounds::load_or_capture(&dir.join(bounds::RANGE_FILE), &a.from, &a.to, || {
            bounds::capture(&opts, &flow.external, from, to, now_ms)
        })
    };
    let topic_range = if archived.is_none() {
        Some(capture_topics((from, &a.from), (to, &a.to))?)
    } else {
        None
    };

    // From the archive, the restored copy and what the stages make of it carry the archive's
    // old event times: kept whatever the retention, or it would delete them.
    let keep: Vec<String> = match &restored {
        Some(restored) => std::iter::once(restored.clone())
            .chain(names.iter().flat_map(|n| {
                t.stage(n)
                    .map(|s| {
                        s.outputs()
                            .into_iter()
                            .map(|(_, o)| o.to_string())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            }))
            .collect(),
        None => Vec::new(),
    };
    rt.block_on(create_topics_keeping(t, &keep))?;
    let schema_ids = rt.block_on(super::schemas::push_topology(&loaded))?;
    let shared = Arc::new(Shared::new(
        &loaded,
        schema_ids,
        rt.handle().clone(),
        None,
        false,
    )?);

    let (_health, stop) = serve_stages(
        &rt,
        a.metrics_listen.unwrap_or(t.metrics.listen),
        names.len(),
        "stages finish their batch, flush their sinks and commit; run the same command again to resume the range.",
        "What the stages processed since their last commit is processed again when the backfill resumes.",
    )?;

    let mut restored_summary = None;
    if let (Some(ar), Some(restored), Some(r)) = (&archive, &restored, &archived) {
        let done_file = dir.join(archive::RESTORED_FILE);
        if done_file.exists() {
            eprintln!("sluice: the archive was restored into {restored} by an earlier run");
        } else {
            let subject = t.topics[restored].subject.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: topic `{}` has no `subject` (and `schema`) under `topics:`; the restored records are written with its schema",
                    a.file.display(),
                    ar.topic
                )
            })?;
            let schema_id = *shared.schema_ids.get(&subject).ok_or_else(|| {
                anyhow::anyhow!("subject `{subject}` of `{restored}` is not registered: give the topic a `schema:`")
            })?;
            let started = Instant::now();
            let done = archive::restore(ar, r, &opts, restored, schema_id, &rt, &stop, a.quiet)?;
            if !done.interrupted && done.records + done.resumed == 0 {
                anyhow::bail!(
                    "the archive {} holds no record of `{}` in --from {} --to {}: the range's batches hold only other offsets",
                    r.archive,
                    r.topic,
                    a.from,
                    a.to
                );
            }
            if done.interrupted {
                eprintln!(
                    "backfill stopped while restoring the archive ({} of its records restored); rerun the same command to resume",
                    done.records + done.resumed
                );
                return Ok(ExitCode::FAILURE);
            }
            std::fs::write(&done_file, format!("{}\n", done.records + done.resumed))
                .with_context(|| format!("writing {}", done_file.display()))?;
            restored_summary = Some((done, started.elapsed().as_secs_f64()));
        }
    }
    let (range, resumed) = match topic_range {
        Some(r) => r,
        // The restored copy is the range: all of it.
        None => capture_topics((Bound::Earliest, &a.from), (Bound::Now, &a.to))?,
    };
    // A namespace started from the topics cannot be resumed from the archive, nor the
    // other way round: the saved range is over other topics.
    if let Some(p) = range
        .partitions
        .iter()
        .find(|p| !flow.external.contains(&p.topic))
    {
        anyhow::bail!(
            "this namespace's saved range is over `{}`, which this backfill does not read (it was started with another --source or --stage; saved in {}); pick another --version",
            p.topic,
            dir.join(bounds::RANGE_FILE).display()
        );
    }
    eprintln!(
        "sluice: backfill {} of {} as {} over {} .. {} ({} input records{}; range in {})",
        names.join(", "),
        a.file.display(),
        t.metadata.name,
        a.from,
        a.to,
        range.records(),
        if resumed {
            format!(
                ", resumed: captured {}",
                bounds::format_ms(range.captured_at_ms)
            )
        } else {
            String::new()
        },
        dir.join(bounds::RANGE_FILE).display()
    );
    start_first_stages_at(&opts, t, &flow, &range)?;

    let ends = range.ends();
    let mut stages: Vec<Running> = Vec::new();
    for name in &names {
        let b = Arc::new(if flow.upstream[name].is_empty() {
            StageBounds::fixed(
                ends.iter()
                    .filter(|((topic, _), _)| flow.inputs[name].contains(topic))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            )
        } else {
            StageBounds::open()
        });
        let (shared, stop, bounds) = (shared.clone(), stop.clone(), b.clone());
        let ready = Arc::new(AtomicBool::new(false));
        let n = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("stage-{name}"))
            .spawn(move || {
                run_supervised(
                    || {
                        let mut def = stage_def(&shared, &n, ready.clone())?;
                        def.bounds = Some(bounds.clone());
                        Ok(def)
                    },
                    &stop,
                )
            })?;
        stages.push(Running {
            name: name.clone(),
            bounds: b,
            thread: Some(thread),
            result: None,
        });
    }

    let bars = Bars::new(&stages, a.quiet);
    let mut failed = false;
    while stages.iter().any(|s| s.result.is_none()) {
        std::thread::sleep(Duration::from_millis(200));
        for s in stages.iter_mut() {
            if s.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let r = match s.thread.take().expect("checked").join() {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("panicked".to_string()),
                };
                if let Err(e) = &r {
                    failed = true;
                    eprintln!("sluice: stage {} failed: {e}", s.name);
                    stop.store(true, Ordering::Relaxed);
                    crate::runtime::shutdown::request();
                }
                s.result = Some(r);
            }
        }
        // A downstream stage's range ends where its upstream stages' outputs ended.
        let finished: BTreeSet<&str> = stages
            .iter()
            .filter(|s| matches!(s.result, Some(Ok(()))))
            .map(|s| s.name.as_str())
            .collect();
        for s in &stages {
            if s.bounds.ends().is_some() || stop.load(Ordering::Relaxed) {
                continue;
            }
            if flow.upstream[&s.name]
                .iter()
                .all(|u| finished.contains(u.as_str()))
            {
                let ends = high_watermarks(&opts, &flow.inputs[&s.name])?;
                tracing::info!(stage = %s.name, ends = ?ends, "Upstream stages finished: the stage's range ends here.");
                s.bounds.close(ends);
            }
        }
        bars.tick(&stages);
    }
    bars.finish(&stages);
    shared.tables.shutdown();
    let interrupted = stop.load(Ordering::Relaxed) && !failed;
    summary(t, &names, started, interrupted || failed);
    if let Some((r, secs)) = &restored_summary {
        eprintln!(
            "  archive restored: {} records from {} objects in {secs:.1} s ({:.0}/s){}",
            r.records + r.resumed,
            r.objects,
            r.records as f64 / secs.max(1e-3),
            if r.resumed > 0 {
                format!(", {} of them by an earlier run", r.resumed)
            } else {
                String::new()
            }
        );
    }
    if !interrupted && !failed {
        print_destinations(t);
    }
    Ok(if failed || interrupted {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A stage thread of the backfill.
struct Running {
    name: String,
    bounds: Arc<StageBounds>,
    thread: Option<std::thread::JoinHandle<Result<(), crate::runtime::RuntimeError>>>,
    result: Option<Result<(), String>>,
}

/// How the backfilled stages feed each other.
struct Flow {
    /// Topics the stages read that none of them writes: the range is captured on these.
    external: Vec<String>,
    /// Each stage's input topics.
    inputs: HashMap<String, Vec<String>>,
    /// Each stage's upstream stages (among the backfilled ones); empty for a first stage.
    upstream: HashMap<String, Vec<String>>,
}

impl Flow {
    fn of(t: &Topology, names: &[String]) -> Flow {
        let specs: Vec<(&String, &sluice_topology::StageSpec)> = names
            .iter()
            .filter_map(|n| t.stage(n).map(|s| (n, s)))
            .collect();
        let writers: HashMap<String, &String> = specs
            .iter()
            .flat_map(|(n, s)| {
                s.outputs()
                    .into_iter()
                    .map(move |(_, o)| (o.to_string(), *n))
            })
            .collect();
        let mut external = BTreeSet::new();
        let mut inputs = HashMap::new();
        let mut upstream = HashMap::new();
        for (n, s) in &specs {
            let ins: Vec<String> = s.inputs().iter().map(|(_, t)| t.to_string()).collect();
            let mut ups = BTreeSet::new();
            for i in &ins {
                match writers.get(i) {
                    Some(w) => {
                        ups.insert((*w).clone());
                    }
                    None => {
                        external.insert(i.clone());
                    }
                }
            }
            inputs.insert((*n).clone(), ins);
            upstream.insert((*n).clone(), ups.into_iter().collect());
        }
        Flow {
            external: external.into_iter().collect(),
            inputs,
            upstream,
        }
    }
}

/// Commits the range's start offsets for the first stages' groups where the group has not
/// committed anything yet (a rerun keeps what it committed): a fresh namespace starts at
/// `--from`.
fn start_first_stages_at(
    opts: &ClientOptions,
    t: &Topology,
    flow: &Flow,
    range: &Range,
) -> anyhow::Result<()> {
    for (stage, ups) in &flow.upstream {
        if !ups.is_empty() {
            continue;
        }
        let group = t.group_id(stage);
        let consumer: BaseConsumer = consumer_config(opts, &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        let mine: Vec<_> = range
            .partitions
            .iter()
            .filter(|p| flow.inputs[stage].contains(&p.topic))
            .collect();
        for p in &mine {
            tpl.add_partition(&p.topic, p.partition);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .with_context(|| format!("reading the offsets group {group} committed"))?;
        let mut start = TopicPartitionList::new();
        for p in &mine {
            let has = committed
                .find_partition(&p.topic, p.partition)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(_)));
            if !has {
                start.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.start))?;
            }
        }
        if start.count() > 0 {
            consumer
                .commit(&start, CommitMode::Sync)
                .with_context(|| format!("setting group {group}'s start offsets"))?;
        }
    }
    Ok(())
}

/// The end offset of every partition of `topics`, now.
fn high_watermarks(opts: &ClientOptions, topics: &[String]) -> anyhow::Result<Ends> {
    let consumer: BaseConsumer = consumer_config(opts, "sluice-backfill-ends").create()?;
    let mut ends = Ends::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
            ends.insert((topic.clone(), p.id()), high);
        }
    }
    Ok(ends)
}

/// A progress bar per stage: records of the range processed, records/s and ETA.
struct Bars {
    bars: Vec<ProgressBar>,
    _multi: MultiProgress,
}

impl Bars {
    fn new(stages: &[Running], quiet: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let width = stages.iter().map(|s| s.name.len()).max().unwrap_or(8);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>{width}}} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}} {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> ");
        let bars = stages
            .iter()
            .map(|s| {
                let b = multi.add(ProgressBar::new(0).with_style(style.clone()));
                b.set_prefix(s.name.clone());
                b.set_message("waiting for upstream");
                b
            })
            .collect();
        Bars {
            bars,
            _multi: multi,
        }
    }

    fn tick(&self, stages: &[Running]) {
        for (b, s) in self.bars.iter().zip(stages) {
            let done = METRICS.backfill_records.with_label_values(&[&s.name]).get();
            let left = METRICS
                .backfill_remaining
                .with_label_values(&[&s.name])
                .get()
                .max(0) as u64;
            b.set_position(done);
            if s.bounds.ends().is_some() {
                b.set_length(done + left);
                b.set_message("");
            } else {
                b.set_length(done);
            }
        }
    }

    fn finish(&self, stages: &[Running]) {
        self.tick(stages);
        for (b, s) in self.bars.iter().zip(stages) {
            match &s.result {
                Some(Ok(())) => b.finish_with_message("done"),
                _ => b.abandon_with_message("stopped"),
            }
        }
    }
}

/// What the backfill did: records per stage, outputs per topic, time.
fn summary(t: &Topology, names: &[String], started: Instant, unfinished: bool) {
    use prometheus::core::Collector;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} in {secs:.1} s ({}):",
        if unfinished {
            "backfill stopped before the end of its range; rerun the same command to resume"
        } else {
            "backfill done"
        },
        t.metadata.name
    );
    for name in names {
        let n = METRICS.backfill_records.with_label_values(&[name]).get();
        eprintln!(
            "  stage {name}: {n} input records ({:.0}/s)",
            n as f64 / secs.max(1e-3)
        );
    }
    let mut outputs: BTreeMap<String, u64> = BTreeMap::new();
    for mf in METRICS.records_out.collect() {
        for m in mf.get_metric() {
            let topic = m
                .get_label()
                .iter()
                .find(|l| l.name() == "topic")
                .map(|l| l.value().to_string());
            if let Some(topic) = topic {
                *outputs.entry(topic).or_default() += m.get_counter().get_value() as u64;
            }
        }
    }
    for (topic, n) in &outputs {
        eprintln!("  topic {topic}: {n} records written");
    }
    let rows: u64 = {
        let mut total = 0;
        for mf in METRICS.sink_rows.collect() {
            for m in mf.get_metric() {
                total += m.get_counter().get_value() as u64;
            }
        }
        total
    };
    if rows > 0 {
        eprintln!("  sinks: {rows} rows or objects written");
    }
}
