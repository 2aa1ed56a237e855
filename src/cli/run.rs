//! `sluice run FILE`: runs a topology's stages in this process, with metrics, health
//! endpoints and a live summary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::producer::FutureProducer;
use sluice_connectors::kafka::{ensure_topics, producer_config, ClientOptions, TopicToCreate};
use sluice_state::{RocksConfig, RocksEnv};
use sluice_topology::{Broker, Guarantee, StageSpec, Topology};

use crate::http::{self, Health};
use crate::metrics::METRICS;
use crate::runtime::tables::{TableEnv, TableHost};
use crate::runtime::{run_supervised, transactional_id, LogEnv, Processor, RuntimeError, StageDef};
use crate::stages::{
    aggregate, archive, detect, pipeline, tsdb, validate, RegistrySchemas, SchemaSource,
};
use sluice_ops::op::TaskContext;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file.
    pub file: PathBuf,
    /// Run only this stage (with the parts sluice adds to it after a repartition); repeat
    /// for several. Default: every stage.
    #[arg(long = "stage")]
    pub stages: Vec<String>,
    /// Static group membership id, stable across restarts of this instance
    /// (e.g. the pod name); a rolling restart then keeps partition assignments.
    #[arg(long, env = "SLUICE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// No live summary on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Stop after this long (`30s`, `5m`); default: until Ctrl-C.
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// Serve metrics and health here instead of the topology's `metrics.listen` (several
    /// instances on one machine).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT, how long the stages get to finish their batch, flush their sinks
    /// and commit before the process exits anyway (what was not committed is processed
    /// again at the next start). Keep it below the orchestrator's grace period (Kubernetes:
    /// `terminationGracePeriodSeconds`, 60 s in k8s/).
    #[arg(long, default_value = "30s")]
    pub shutdown_timeout: humantime::Duration,
    /// Leave the consumer groups on shutdown even with `--instance-id` (scale-in: the
    /// instance is not coming back, so its partitions move at once instead of after the
    /// session timeout). Without it a static member stays, so a restart within the session
    /// timeout gets its partitions back without a rebalance.
    #[arg(long)]
    pub leave_group: bool,
}

/// What every stage of this process shares.
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) loaded_path: PathBuf,
    pub(crate) schema_ids: HashMap<String, u32>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) instance_id: Option<String>,
    pub(crate) nonce: u16,
    /// Leave the groups on a clean stop even as a static member (`--leave-group`).
    pub(crate) leave_group: bool,
    /// The tables the pipelines' joins read, loaded on first use.
    pub(crate) tables: Arc<TableHost>,
    /// The Fluvio cluster, when some stage input is there.
    pub(crate) fluvio: Option<Arc<sluice_connectors::fluvio::FluvioClient>>,
}

impl Shared {
    pub(crate) fn new(
        loaded: &sluice_topology::Loaded,
        schema_ids: HashMap<String, u32>,
        rt: tokio::runtime::Handle,
        instance_id: Option<String>,
        leave_group: bool,
    ) -> anyhow::Result<Shared> {
        let t = &loaded.topology;
        let mut schemas = HashMap::new();
        for topic in t.table_topics() {
            let Some(path) = t.topics.get(&topic).and_then(|s| s.schema.as_ref()) else {
                continue; // `sluice validate` reported it
            };
            let path = loaded.resolve(path);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let schema = apache_avro::Schema::parse_str(&text)
                .with_context(|| format!("{} is not an Avro schema", path.display()))?;
            schemas.insert(topic, sluice_ops::codec::leak(schema));
        }
        let registry = crate::connections::registry_client(&t.connections.registry)?;
        let rt2 = rt.clone();
        let tables = TableHost::new(TableEnv {
            app: t.metadata.name.clone(),
            instance_id: instance_id.clone(),
            opts: crate::connections::client_options(&t.connections)?,
            state_dir: sluice_topology::resolve_state_dir(&loaded.path, &t.state_dir),
            rocks: RocksEnv::new(&RocksConfig::default()),
            schemas,
            registry: Box::new(move || {
                Box::new(RegistrySchemas::new(registry.clone(), rt2.clone()))
                    as Box<dyn SchemaSource>
            }),
        });
        let writes_fluvio = t.stages.iter().any(|s| !t.fluvio_outputs(s).is_empty());
        let fluvio = if t.claim_topics().is_empty() && !writes_fluvio {
            None
        } else {
            rt.block_on(crate::connections::fluvio_client(&t.connections))?
        };
        Ok(Shared {
            fluvio,
            topology: t.clone(),
            loaded_path: loaded.path.clone(),
            schema_ids,
            rt,
            instance_id,
            nonce: rand::random(),
            leave_group,
            tables: Arc::new(tables),
        })
    }
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = super::validate::load_checked(&a.file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t = &loaded.topology;
    for s in &a.stages {
        anyhow::ensure!(
            t.stage(s).is_some(),
            "no stage `{s}` in {}; stages: {}",
            a.file.display(),
            t.stages
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    rt.block_on(create_topics(t))?;
    let schema_ids = rt.block_on(super::schemas::push_topology(&loaded))?;
    let shared = Arc::new(Shared::new(
        &loaded,
        schema_ids,
        rt.handle().clone(),
        a.instance_id.clone(),
        a.leave_group,
    )?);
    // A stage named on the command line runs with the parts sluice added to it (the
    // operators after a repartition).
    let names: Vec<String> = if a.stages.is_empty() {
        t.stages.iter().map(|s| s.name.clone()).collect()
    } else {
        let mut names = Vec::new();
        for want in &a.stages {
            names.extend(
                t.stages
                    .iter()
                    .filter(|s| &s.name == want || s.part_of.as_ref() == Some(want))
                    .map(|s| s.name.clone()),
            );
            if !t.stages.iter().any(|s| &s.name == want) {
                names.push(want.clone()); // reported as unknown where stages are built
            }
        }
        names
    };

    let metrics_addr = a.metrics_listen.unwrap_or(t.metrics.listen);
    let (health, stop) = serve_stages(
        &rt,
        metrics_addr,
        names.len(),
        "stages finish their batch, flush their sinks and commit.",
        "What the stages processed since their last commit is processed again at the next start.",
    )?;

    let mut threads = Vec::new();
    let mut ready_flags = Vec::new();
    for name in names.clone() {
        let shared = shared.clone();
        let stop = stop.clone();
        let ready = Arc::new(AtomicBool::new(false));
        ready_flags.push(ready.clone());
        let thread = std::thread::Builder::new()
            .name(format!("stage-{name}"))
            .spawn(move || run_supervised(|| stage_def(&shared, &name, ready.clone()), &stop))?;
        threads.push(thread);
    }
    if !a.quiet {
        eprintln!(
            "sluice: running {} from {} (metrics on http://{metrics_addr}/metrics)",
            names.join(", "),
            a.file.display()
        );
    }
    let started = Instant::now();
    let deadline = a.duration.map(|d| started + Duration::from(d));
    let shutdown_timeout = Duration::from(a.shutdown_timeout);
    let mut stopping_since: Option<Instant> = None;
    let mut summary = Summary::default();
    while !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let ready = ready_flags
            .iter()
            .filter(|r| r.load(Ordering::Relaxed))
            .count();
        health.stages_ready.store(ready, Ordering::Relaxed);
        if deadline.is_some_and(|d| Instant::now() >= d) && !stop.load(Ordering::Relaxed) {
            tracing::info!("Run duration reached; stopping.");
            health.stopping.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            crate::runtime::shutdown::request();
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= shutdown_timeout {
                let unfinished: Vec<&str> = threads
                    .iter()
                    .zip(&names)
                    .filter(|(t, _)| !t.is_finished())
                    .map(|(_, n)| n.as_str())
                    .collect();
                tracing::error!(stages = ?unfinished, timeout = %a.shutdown_timeout, "Shutdown timed out: these stages did not finish their final commit. What they processed since their last commit is not committed and is processed again at the next start; nothing is lost.");
                eprintln!(
                    "sluice: shutdown timed out after {}; not committed: stages {}",
                    a.shutdown_timeout,
                    unfinished.join(", ")
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        if !a.quiet && summary.due() {
            eprintln!("{}", summary.line(started));
        }
    }
    let mut failed = false;
    for (t, name) in threads.into_iter().zip(&names) {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed = true;
                eprintln!("stage {name} failed: {e}");
            }
            Err(_) => {
                failed = true;
                eprintln!("stage {name} panicked");
            }
        }
    }
    // The tables' readers write what they read to disk, so a restart reads on from there.
    shared.tables.shutdown();
    if stop.load(Ordering::Relaxed) {
        if failed {
            tracing::warn!("Shutdown finished; the stages above did not commit their last batch, which is processed again at the next start.");
        } else {
            tracing::info!(stages = ?names, "Shutdown complete: every stage committed what it processed.");
        }
    }
    if !a.quiet {
        eprintln!("{}", summary.line(started));
        print_destinations(&shared.topology);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What `sluice run` and `sluice backfill` set up around their stages: `/metrics`,
/// `/healthz` and `/readyz` on `addr`, and the signal handling; returns the health and the
/// flag the stages stop on.
pub(crate) fn serve_stages(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    stages: usize,
    stopping: &'static str,
    at_once: &'static str,
) -> anyhow::Result<(Arc<Health>, Arc<AtomicBool>)> {
    let health = Arc::new(Health::default());
    health.stages_total.store(stages, Ordering::Relaxed);
    let h = health.clone();
    rt.spawn(async move {
        if let Err(e) = http::serve(addr, h).await {
            tracing::error!(error = %e, "Metrics endpoint failed.");
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    listen_for_signals(rt, health.clone(), stopping, at_once, move || {
        stop_flag.store(true, Ordering::Relaxed);
        crate::runtime::shutdown::request();
    })?;
    Ok((health, stop))
}

/// SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C): the first makes `/readyz` unready,
/// logs `stopping` and calls `stop` (the command finishes what it holds and exits); a second
/// logs `at_once` and exits at once. As PID 1 in a container a signal without a handler is
/// ignored, so both are handled here explicitly. Shared by `sluice run` and `sluice ingest`.
pub(crate) fn listen_for_signals(
    rt: &tokio::runtime::Runtime,
    health: Arc<Health>,
    stopping: &'static str,
    at_once: &'static str,
    stop: impl Fn() + Send + 'static,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _guard = rt.enter();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    rt.spawn(async move {
        let mut received = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            received += 1;
            if received > 1 {
                tracing::warn!(signal = name, "Second signal: exiting at once. {at_once}");
                std::process::exit(130);
            }
            tracing::info!(
                signal = name,
                "Shutting down: {stopping} Send the signal again to exit at once."
            );
            health.stopping.store(true, Ordering::Relaxed);
            stop();
        }
    });
    Ok(())
}

/// Creates the topology's missing topics (`topic_plans()`: partitions, replication,
/// `min.insync.replicas` and the other configs); returns each plan with what was done.
pub(crate) async fn create_topics(
    t: &Topology,
) -> anyhow::Result<
    Vec<(
        sluice_topology::TopicPlan,
        sluice_connectors::kafka::TopicOutcome,
    )>,
> {
    create_topics_keeping(t, &[]).await
}

/// As [`create_topics`], and the topics in `keep` (those created now) get
/// `retention.ms=-1`: a backfill from the archive writes records stamped with old event
/// times, which time-based retention would delete at its next check.
pub(crate) async fn create_topics_keeping(
    t: &Topology,
    keep: &[String],
) -> anyhow::Result<
    Vec<(
        sluice_topology::TopicPlan,
        sluice_connectors::kafka::TopicOutcome,
    )>,
> {
    let plans = t.topic_plans();
    let topics: Vec<TopicToCreate> = plans
        .iter()
        .map(|p| {
            let mut configs: Vec<(String, String)> = p
                .all_configs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if keep.contains(&p.name) {
                configs.retain(|(k, _)| k != "retention.ms");
                configs.push(("retention.ms".to_string(), "-1".to_string()));
            }
            TopicToCreate {
                name: p.name.clone(),
                partitions: p.partitions,
                replication: p.replication,
                configs,
            }
        })
        .collect();
    // A wrong password or CA would otherwise leave librdkafka reconnecting forever; this
    // turns it into one error naming the connection, within a bounded time.
    let opts = crate::connections::client_options(&t.connections)?;
    let check = opts.clone();
    tokio::task::spawn_blocking(move || {
        sluice_connectors::kafka::check_connection(
            &check,
            crate::connections::CONNECT_CHECK_TIMEOUT,
        )
    })
    .await??;
    let outcomes = ensure_topics(&opts, &topics).await.with_context(|| {
        format!(
            "creating the topology's topics on the broker at {}",
            t.connections.brokers
        )
    })?;
    for (p, o) in plans.iter().zip(&outcomes) {
        if *o == sluice_connectors::kafka::TopicOutcome::Created {
            tracing::info!(
                topic = %p.name,
                partitions = p.partitions,
                replication = p.replication,
                min_insync_replicas = p.min_insync_replicas,
                "Created topic."
            );
        }
    }
    let mut done: Vec<_> = plans.into_iter().zip(outcomes).collect();
    let fluvio_plans = t.fluvio_topic_plans();
    if let Some(client) = crate::connections::fluvio_client(&t.connections).await? {
        let wanted: Vec<(String, i32, i32)> = fluvio_plans
            .iter()
            .map(|p| (p.name.clone(), p.partitions, p.replication))
            .collect();
        let outcomes = client.ensure_topics(&wanted).await?;
        for (p, o) in fluvio_plans.iter().zip(&outcomes) {
            if *o == sluice_connectors::kafka::TopicOutcome::Created {
                tracing::info!(topic = %p.name, partitions = p.partitions, replication = p.replication, fluvio = %client.endpoint(), "Created Fluvio topic.");
            }
        }
        done.extend(fluvio_plans.into_iter().zip(outcomes));
    }
    Ok(done)
}

fn client_options(shared: &Shared, stage: &str) -> Result<ClientOptions, RuntimeError> {
    let mut opts = crate::connections::client_options(&shared.topology.connections)
        .map_err(|e| RuntimeError::Config(e.to_string()))?;
    opts.instance_id = shared.instance_id.as_ref().map(|i| format!("{i}-{stage}"));
    // Inputs and changelog restores must not see records of aborted transactions.
    opts.read_committed =
        shared.topology.processing.guarantee == Guarantee::ExactlyOnceTransactional;
    Ok(opts)
}

fn schema_id(shared: &Shared, subject: &str) -> Result<u32, RuntimeError> {
    shared.schema_ids.get(subject).copied().ok_or_else(|| {
        RuntimeError::Config(format!(
            "subject `{subject}` is not registered: give its topic a `schema:` in the topology"
        ))
    })
}

/// Builds the runtime definition of stage `name` (again after each restart).
pub(crate) fn stage_def(
    shared: &Arc<Shared>,
    name: &str,
    ready: Arc<AtomicBool>,
) -> Result<StageDef, RuntimeError> {
    let t = &shared.topology;
    let spec = t
        .stage(name)
        .ok_or_else(|| RuntimeError::Config(format!("no stage {name}")))?
        .clone();
    let opts = client_options(shared, name)?;
    let registry = crate::connections::registry_client(&t.connections.registry)
        .map_err(|e| RuntimeError::Config(e.to_string()))?;
    let rt = shared.rt.clone();
    let schemas = move || Box::new(RegistrySchemas::new(registry.clone(), rt.clone()));
    let stage = name.to_string();
    let (inputs, outputs, dead_letter, dedup_ids, factory): (
        Vec<String>,
        Vec<String>,
        Option<String>,
        bool,
        crate::runtime::ProcessorFactory,
    ) = match &spec {
        StageSpec::Validate(v) => {
            let id = schema_id(shared, &v.output_subject)?;
            let v2 = v.clone();
            (
                vec![v.input.clone()],
                vec![v.output.clone()],
                Some(v.dead_letter.clone()),
                false,
                Box::new(move |_| {
                    Ok(
                        Box::new(validate::Validate::new(&stage, v2.clone(), id, schemas()))
                            as Box<dyn Processor>,
                    )
                }),
            )
        }
        StageSpec::Aggregate(a) => {
            let id = schema_id(shared, &a.output_subject)?;
            let a2 = a.clone();
            (
                vec![a.input.clone()],
                vec![a.output.clone()],
                Some(a.dead_letter.clone()),
                true,
                Box::new(move |_| {
                    Ok(
                        Box::new(aggregate::Aggregate::new(&stage, &a2, id, schemas()))
                            as Box<dyn Processor>,
                    )
                }),
            )
        }
        StageSpec::Detect(d) => {
            let ids = detect::DetectSchemas {
                anomaly: schema_id(shared, &d.output_subject)?,
                alert: schema_id(shared, &d.alerts_subject)?,
            };
            let det = super::validate::detector_spec(&d.detector)
                .map_err(|e| RuntimeError::Config(e.to_string()))?;
            let d2 = d.clone();
            (
                vec![d.input.clone()],
                vec![d.output.clone(), d.alerts.clone()],
                None,
                true,
                Box::new(move |_| {
                    Ok(Box::new(detect::Detect::new(
                        &stage,
                        &d2,
                        det.clone(),
                        ids,
                        schemas(),
                    )) as Box<dyn Processor>)
                }),
            )
        }
        StageSpec::QuestdbSink(q) => {
            let addr = q
                .addr
                .clone()
                .or_else(|| t.connections.ilp.clone())
                .unwrap_or_default();
            let kinds = tsdb_kinds(t, &q.inputs)?;
            let tables = (q.aggregates_table.clone(), q.anomalies_table.clone());
            let rt = shared.rt.clone();
            (
                q.inputs.clone(),
                vec![],
                None,
                false,
                Box::new(move |_| {
                    Ok(Box::new(tsdb::TsdbSink::new(
                        &stage,
                        &addr,
                        (&tables.0, &tables.1),
                        &kinds,
                        schemas(),
                        rt.clone(),
                    )?) as Box<dyn Processor>)
                }),
            )
        }
        StageSpec::Pipeline(p) => {
            let plan = p.plan.clone().ok_or_else(|| {
                RuntimeError::Config(format!("stage {name} was not checked against its schema"))
            })?;
            let id = match p.writes() {
                Some(_) => schema_id(shared, &plan.output_subject)?,
                None => 0, // ends in a sink: no output topic, no subject
            };
            let branch_ids = plan
                .branches
                .iter()
                .map(|b| schema_id(shared, &b.output_subject))
                .collect::<Result<Vec<u32>, _>>()?;
            let tables = shared.tables.clone();
            let (ilp, s3) = (t.connections.ilp.clone(), t.connections.s3.clone());
            let (input, rt) = (p.input.clone(), shared.rt.clone());
            let outputs = p.port_topics();
            let writes_topic = p.writes().is_some();
            (
                vec![p.input.clone()],
                outputs,
                p.dead_letter.clone(),
                true,
                Box::new(move |partition| {
                    let task = TaskContext {
                        partition,
                        tables: &*tables,
                    };
                    let output = if writes_topic || plan.sink.is_some() {
                        pipeline_output(
                            &stage,
                            &input,
                            partition,
                            &plan,
                            id,
                            ilp.as_deref(),
                            s3.as_ref(),
                            &rt,
                        )?
                    } else {
                        pipeline::Output::Branches
                    };
                    Ok(Box::new(pipeline::Pipeline::new(
                        &stage,
                        plan.clone(),
                        output,
                        &branch_ids,
                        schemas(),
                        &task,
                    )?) as Box<dyn Processor>)
                }),
            )
        }
        StageSpec::S3ParquetSink(s) => {
            let conn = t
                .connections
                .s3
                .clone()
                .ok_or_else(|| RuntimeError::Config("connections.s3 is missing".into()))?;
            let s2 = s.clone();
            let rt = shared.rt.clone();
            (
                vec![s.input.clone()],
                vec![],
                None,
                true,
                Box::new(move |p| {
                    Ok(Box::new(archive::Archive::new(
                        &stage,
                        &s2,
                        &conn,
                        p,
                        schemas(),
                        rt.clone(),
                    )?) as Box<dyn Processor>)
                }),
            )
        }
    };
    let stage_spec = t
        .stages
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| RuntimeError::Config(format!("no stage {name}")))?;
    let stores: Vec<(String, String)> = t
        .stage_stores(stage_spec)
        .into_iter()
        .map(|s| {
            let topic = t.changelog_topic(name, &s);
            (s, topic)
        })
        .collect();
    let log = if stores.is_empty() {
        None
    } else {
        let marker_producer: FutureProducer = producer_config(&opts).create()?;
        let state_dir = sluice_topology::resolve_state_dir(&shared.loaded_path, &t.state_dir);
        Some(LogEnv {
            app: t.metadata.name.clone(),
            stage: name.to_string(),
            stores,
            opts: opts.clone(),
            state_dir,
            rocks: RocksEnv::new(&RocksConfig::default()),
            marker_producer,
            rt: shared.rt.clone(),
            nonce: shared.nonce,
        })
    };
    let claims: Vec<Option<String>> = inputs
        .iter()
        .map(|i| (t.broker_of(i) == Broker::Fluvio).then(|| t.claim_topic(name, i)))
        .collect();
    let fluvio = match (&shared.fluvio, claims.iter().any(Option::is_some)) {
        (_, false) => None,
        (Some(client), true) => Some(crate::runtime::fluvio::FluvioInputs {
            client: client.clone(),
            rt: shared.rt.clone(),
            claims,
        }),
        (None, true) => {
            return Err(RuntimeError::Config(format!(
            "stage {name} reads a Fluvio topic, but no Fluvio client was made (connections.fluvio)"
        )))
        }
    };
    // Outputs on Fluvio, by port (`runtime/fluvio_out.rs`).
    let on_fluvio: Vec<Option<String>> = outputs
        .iter()
        .map(|o| (t.broker_of(o) == Broker::Fluvio).then(|| o.clone()))
        .collect();
    let fluvio_outputs = match (&shared.fluvio, on_fluvio.iter().any(Option::is_some)) {
        (_, false) => None,
        (Some(client), true) => Some(crate::runtime::fluvio_out::FluvioOutputs {
            client: client.clone(),
            rt: shared.rt.clone(),
            ports: on_fluvio,
        }),
        (None, true) => {
            return Err(RuntimeError::Config(format!(
                "stage {name} writes a Fluvio topic, but no Fluvio client was made (connections.fluvio)"
            )))
        }
    };
    Ok(StageDef {
        fluvio,
        fluvio_outputs,
        app: t.metadata.name.clone(),
        name: name.to_string(),
        inputs,
        outputs,
        dead_letter,
        guarantee: t.processing.guarantee,
        transactional_id: (t.processing.guarantee == Guarantee::ExactlyOnceTransactional)
            .then(|| transactional_id(&t.metadata.name, name, shared.instance_id.as_deref())),
        commit_interval: t.processing.commit_interval,
        max_batch: t.processing.max_batch,
        standby_replicas: t.processing.standby_replicas,
        dedup_ids,
        opts,
        log,
        factory,
        on_restore: None,
        ready,
        leave_group: shared.leave_group,
        bounds: None,
    })
}

/// Where a pipeline task's results go: its output topic, or its sink with a client built
/// from `connections`.
#[allow(clippy::too_many_arguments)]
fn pipeline_output(
    stage: &str,
    input: &str,
    partition: i32,
    plan: &sluice_topology::PipelinePlan,
    schema_id: u32,
    ilp: Option<&str>,
    s3: Option<&sluice_topology::S3Connection>,
    rt: &tokio::runtime::Handle,
) -> Result<pipeline::Output, RuntimeError> {
    use crate::stages::sinks::{Ilp, ParquetWriter, QuestdbWriter};
    use sluice_ops::sink::SinkPlan;
    Ok(match &plan.sink {
        None => pipeline::Output::Topic { schema_id },
        Some(SinkPlan::Questdb(q)) => {
            let addr = q.addr.as_deref().or(ilp).ok_or_else(|| {
                RuntimeError::Config(format!(
                    "stage {stage}: no ILP address (connections.ilp or the sink's addr)"
                ))
            })?;
            let target = Ilp::new(stage, addr, q.flush_rows, rt.clone())?;
            pipeline::Output::Sink(Box::new(QuestdbWriter::new(
                stage,
                q.clone(),
                Box::new(target),
            )))
        }
        Some(SinkPlan::S3Parquet(pq)) => {
            let conn = s3.ok_or_else(|| {
                RuntimeError::Config(format!("stage {stage}: connections.s3 is missing"))
            })?;
            let config = crate::stages::archive::s3_config(conn, &pq.prefix, pq.rows_per_file);
            let sink = sluice_connectors::s3::S3ArchiveSink::new(config, METRICS.s3.clone())
                .map_err(|e| {
                    RuntimeError::Config(format!("s3_parquet sink of stage {stage}: {e}"))
                })?;
            pipeline::Output::Sink(Box::new(ParquetWriter::new(
                stage,
                input,
                partition,
                pq.clone(),
                plan.output_schema,
                sink,
                rt.clone(),
            )?))
        }
    })
}

/// What each TSDB input carries, from the stage that writes it.
fn tsdb_kinds(
    t: &Topology,
    inputs: &[String],
) -> Result<Vec<(String, tsdb::TsdbKind)>, RuntimeError> {
    inputs
        .iter()
        .map(|topic| {
            let kind = t.stages.iter().find_map(|s| match &s.spec {
                StageSpec::Aggregate(a) if &a.output == topic => Some(tsdb::TsdbKind::Aggregates),
                StageSpec::Detect(d) if &d.output == topic => Some(tsdb::TsdbKind::Anomalies),
                _ => None,
            });
            kind.map(|k| (topic.clone(), k)).ok_or_else(|| {
                RuntimeError::Config(format!(
                    "the QuestDB sink reads {topic}, but no aggregate or detect stage writes it"
                ))
            })
        })
        .collect()
}

/// A one-line live summary from the metrics, every two seconds.
#[derive(Default)]
struct Summary {
    last: Option<Instant>,
    last_in: u64,
}

fn sum(c: &prometheus::IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    c.collect()
        .iter()
        .flat_map(|mf| {
            mf.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
        })
        .sum()
}

impl Summary {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < Duration::from_secs(2)) {
            return false;
        }
        self.last = Some(now);
        true
    }

    fn line(&mut self, started: Instant) -> String {
        let m = &*METRICS;
        let input = sum(&m.records_in);
        let rate = input.saturating_sub(self.last_in) / 2;
        self.last_in = input;
        format!(
            "[{:>5}s] in {input} ({rate}/s) | out {} | windows closed {} | anomalies {} | alerts {} | dead letters {} | duplicates dropped {} | commits {}",
            started.elapsed().as_secs(),
            sum(&m.records_out),
            sum(&m.windows_closed),
            sum(&m.anomalies),
            sum(&m.alerts),
            sum(&m.dead_letters),
            sum(&m.duplicates_dropped),
            sum(&m.commits),
        )
    }
}

pub(crate) fn print_destinations(t: &Topology) {
    eprintln!("outputs:");
    for s in &t.stages {
        match &s.spec {
            StageSpec::Validate(v) => eprintln!(
                "  {}: valid -> topic {}, dead letters -> topic {}",
                s.name, v.output, v.dead_letter
            ),
            StageSpec::Aggregate(a) => eprintln!("  {}: aggregates -> topic {}", s.name, a.output),
            StageSpec::Detect(d) => eprintln!(
                "  {}: anomalies -> topic {}, alerts -> topic {}",
                s.name, d.output, d.alerts
            ),
            StageSpec::QuestdbSink(q) => eprintln!(
                "  {}: {} -> ILP at {}",
                s.name,
                q.inputs.join(", "),
                q.addr
                    .as_deref()
                    .or(t.connections.ilp.as_deref())
                    .unwrap_or("?")
            ),
            StageSpec::Pipeline(p) => eprintln!(
                "  {}: {} operators -> {}{}{}",
                s.name,
                p.operators.len(),
                match (p.writes(), p.sink_plan()) {
                    (Some(topic), _) => format!("topic {topic}"),
                    (None, Some(sluice_ops::sink::SinkPlan::Questdb(q))) => format!(
                        "QuestDB table {} at {}",
                        q.table,
                        q.addr
                            .as_deref()
                            .or(t.connections.ilp.as_deref())
                            .unwrap_or("?")
                    ),
                    (None, Some(sluice_ops::sink::SinkPlan::S3Parquet(pq))) => format!(
                        "s3://{}/{}/...parquet",
                        t.connections.s3.as_ref().map_or("?", |c| c.bucket.as_str()),
                        pq.prefix
                    ),
                    (None, None) if !p.branches.is_empty() => "its branches".into(),
                    (None, None) => "nothing".into(),
                },
                p.branches
                    .iter()
                    .map(|b| format!(
                        ", branch of {} operators -> topic {}",
                        b.operators.len(),
                        b.output
                    ))
                    .collect::<String>(),
                p.dead_letter
                    .as_deref()
                    .map(|d| format!(", dead letters -> topic {d}"))
                    .unwrap_or_default()
            ),
            StageSpec::S3ParquetSink(p) => {
                if let Some(c) = &t.connections.s3 {
                    eprintln!(
                        "  {}: {} -> s3://{}/{}/date=.../hour=.../*.parquet at {}",
                        s.name, p.input, c.bucket, p.prefix, c.endpoint
                    );
                }
            }
        }
    }
}
