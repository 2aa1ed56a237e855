//! Proof under faults (docs/EXACTLY_ONCE.md): the reference topology on the real local stack
//! (the broker on durable storage), disturbed while the input streams in, and every output read
//! back from where it landed and compared with what the input determines (`verify`).
//!
//! These tests stop, pause and restart services that the rest of the suite shares, so
//! `scripts/test` runs them on their own, one at a time (`--test faults --test-threads=1`).
//! Faults are placed by the input's progress (records sent), not by the clock, and at
//! positions drawn from a seed that is printed (`SLUICE_FAULT_SEED` replays one).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sluice::sim::expect::{expected, Expected};
use sluice::sim::{produce, SimConfig};
use sluice_connectors::kafka::ClientOptions;

const STAGES: [&str; 5] = ["validate", "aggregate", "detect", "tsdb", "archive"];

/// One test's topology, input and expectation, and the input streaming in the background.
struct Scenario {
    topo: TestTopology,
    cfg: SimConfig,
    exp: Expected,
    sent: Arc<AtomicU64>,
    producer: Option<JoinHandle<u64>>,
}

impl Scenario {
    fn new(devices: u32, steps: u64) -> Scenario {
        Scenario::with_topology(devices, steps, |t| t)
    }

    /// A scenario whose topology text is `edit`ed first.
    fn with_topology(devices: u32, steps: u64, edit: impl Fn(String) -> String) -> Scenario {
        let topo = TestTopology::new(edit);
        let cfg = SimConfig {
            devices,
            steps,
            bad_prob: 0.004,
            anomaly_prob: 0.4,
            device_prefix: format!("{}-d", topo.suffix),
            ..SimConfig::default()
        };
        let exp = expected(&cfg, &rules());
        Scenario {
            topo,
            cfg,
            exp,
            sent: Arc::new(AtomicU64::new(0)),
            producer: None,
        }
    }

    fn total(&self) -> u64 {
        self.exp.records.len() as u64
    }

    fn path(&self) -> String {
        self.topo.path.to_str().unwrap().to_string()
    }

    fn log(&self, name: &str) -> PathBuf {
        self.topo.dir.path().join(format!("{name}.log"))
    }

    /// Starts producing the input at `rate` records/s once the pipeline created its topics.
    fn start_input(&mut self, rate: u64) {
        let brokers = env("SLUICE_BROKERS");
        let raw = self.topo.topic("telemetry.raw");
        wait_for_topic(&brokers, &raw);
        let ids = registry_ids(&format!("{raw}-value"));
        let cfg = self.cfg.clone();
        let sent = self.sent.clone();
        self.producer = Some(std::thread::spawn(move || {
            let summary = produce(
                &ClientOptions::new(&brokers),
                &raw,
                cfg,
                ids,
                rate,
                &mut |n, _| sent.store(n, Ordering::Relaxed),
            )
            .expect("the input is produced (the producer retries through outages)");
            sent.store(summary.records, Ordering::Relaxed);
            summary.records
        }));
    }

    /// Blocks until at least `n` input records were sent.
    fn wait_sent(&self, n: u64) {
        eventually(
            &format!("{n} input records to be sent"),
            2400,
            Duration::from_millis(100),
            || (self.sent.load(Ordering::Relaxed) >= n).then_some(()),
        );
    }

    fn finish_input(&mut self) {
        let records = self.producer.take().unwrap().join().unwrap();
        assert_eq!(records, self.total(), "input records produced");
    }

    /// Reads every output back and compares it with the expectation; `alive` fails fast.
    /// Returns what a plain consumer saw more than once.
    fn verify(&self, alive: &mut dyn FnMut() -> Result<(), String>) -> verify::Outputs {
        verify::check_outputs(&self.topo, &self.cfg, &self.exp, alive)
    }
}

/// Positions (records sent) at which to inject `n` faults, spread over the input.
fn fault_points(rng: &mut impl Rng, total: u64, n: usize) -> Vec<u64> {
    let slot = total / (n as u64 + 1);
    (0..n as u64)
        .map(|i| slot * i + slot / 2 + rng.random_range(0..slot))
        .collect()
}

fn seeded() -> rand::rngs::StdRng {
    let seed = std::env::var("SLUICE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("fault seed: {seed} (SLUICE_FAULT_SEED={seed} replays these fault positions)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A `sluice run` process with the arguments to start it again.
struct Instance {
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    metrics_port: u16,
    proc: Option<Sluice>,
}

impl Instance {
    fn new(s: &Scenario, name: &str, extra: &[&str], envs: &[(&str, String)]) -> Instance {
        let metrics_port = free_port();
        let mut args = vec![
            "run".to_string(),
            s.path(),
            "--quiet".into(),
            "--instance-id".into(),
            name.into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Instance {
            name: name.into(),
            args,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            log: s.log(name),
            metrics_port,
            proc: None,
        }
    }

    /// A whole-topology instance with its own state directory (as a pod with its volume).
    fn with_own_state(s: &Scenario, name: &str) -> Instance {
        let state = s.topo.dir.path().join(format!("state-{name}"));
        Instance::new(
            s,
            name,
            &[],
            &[("SLUICE_STATE_DIR", state.display().to_string())],
        )
    }

    fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.proc = Some(Sluice::spawn_with_env(&args, &envs, &self.log));
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.proc.as_mut().map(|p| p.exited()) {
            Some(Some(st)) => Err(format!(
                "instance {} exited ({st}); log {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            )),
            _ => Ok(()),
        }
    }
}

#[test]
#[ignore = "fault test: stops shared services; scripts/test runs it alone"]
fn fault_kill9_stage_instances_twelve_times_outputs_stay_exactly_once() {
    let mut rng = seeded();
    let mut s = Scenario::new(16, 300);
    // Each stage in its own process (own consumer group member, static membership), as a
    // deployment runs them; each kill takes one stage instance down mid-flight.
    let mut instances: Vec<Instance> = STAGES
        .iter()
        .map(|st| Instance::new(&s, &format!("{st}-0"), &["--stage", st], &[]))
        .collect();
    for i in &mut instances {
        i.start();
    }
    s.start_input(1500);
    let points = fault_points(&mut rng, s.total(), 12);
    // Every stage is killed at least twice; the other two kills and the order are drawn.
    let mut victims: Vec<usize> = (0..STAGES.len()).flat_map(|i| [i, i]).collect();
    victims.extend((0..2).map(|_| rng.random_range(0..STAGES.len())));
    victims.shuffle(&mut rng);
    let mut killed = Vec::new();
    let mut kills = Vec::new();
    for (at, victim) in points.into_iter().zip(victims) {
        s.wait_sent(at);
        for i in &mut instances {
            i.check_alive().unwrap_or_else(|e| panic!("{e}"));
        }
        kills.push(verify::Disruption::now(
            &s.topo,
            &format!("kill -9 of {} at {at} records", instances[victim].name),
            &[STAGES[victim]],
        ));
        instances[victim].kill9();
        instances[victim].start();
        killed.push((at, instances[victim].name.clone()));
    }
    eprintln!("kill -9 at (records sent, instance): {killed:?}");
    assert_eq!(killed.len(), 12);
    s.finish_input();
    let out = s.verify(&mut || {
        for i in &mut instances {
            i.check_alive()?;
        }
        Ok(())
    });
    verify::check_crash_repeats(&s.topo, &out, &kills, "kill9_repeats_per_kill");
}

#[test]
#[ignore = "fault test: stops shared services; scripts/test runs it alone"]
fn fault_three_instances_scale_out_then_one_killed_for_good_outputs_stay_exactly_once() {
    let mut rng = seeded();
    let mut s = Scenario::new(16, 300);
    let mut instances: Vec<Instance> = (0..3)
        .map(|n| Instance::with_own_state(&s, &format!("i{n}")))
        .collect();
    // Scale out: one instance owns everything, then two more join and take partitions (and
    // their state, restored from the changelogs) away from it.
    instances[0].start();
    s.start_input(1200);
    let total = s.total();
    s.wait_sent(total / 4 + rng.random_range(0..total / 10));
    instances[1].start();
    instances[2].start();
    // Then one is lost for good: the others take its partitions once its session expires.
    s.wait_sent(total / 2 + rng.random_range(0..total / 10));
    let victim = rng.random_range(0..3);
    let kill = verify::Disruption::now(&s.topo, &format!("kill -9 of i{victim}"), &[]);
    instances[victim].kill9();
    eprintln!("instance i{victim} killed for good");
    s.finish_input();
    let out = s.verify(&mut || {
        for (n, i) in instances.iter_mut().enumerate() {
            if n != victim {
                i.check_alive()?;
            }
        }
        Ok(())
    });
    verify::check_crash_repeats(&s.topo, &out, &[kill], "kill9_repeats_per_kill");
    let moved: f64 = instances
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != victim)
        .filter_map(|(_, i)| metric(i.metrics_port, "sluice_partitions_owned"))
        .sum();
    assert!(moved > 0.0, "the surviving instances own partitions");
}

/// Sum of metric `name` over the series whose labels contain `label`; 0 when there is none.
fn metric_sum(port: u16, name: &str, label: &str) -> f64 {
    metric_where(port, name, label).unwrap_or(0.0)
}

#[test]
#[ignore = "fault test: stops shared services; scripts/test runs it alone"]
fn fault_standby_replica_takes_over_with_a_short_restore() {
    let mut rng = seeded();
    let mut s = Scenario::with_topology(16, 300, |t| {
        t.replace(
            "max_batch: 50000",
            "max_batch: 50000\n  standby_replicas: 1",
        )
    });
    let mut instances: Vec<Instance> = (0..2)
        .map(|n| Instance::with_own_state(&s, &format!("s{n}")))
        .collect();
    for i in &mut instances {
        i.start();
    }
    s.start_input(1200);
    let total = s.total();
    s.wait_sent(total / 4);
    let victim = rng.random_range(0..2);
    let survivor = 1 - victim;
    let (vp, sp) = (
        instances[victim].metrics_port,
        instances[survivor].metrics_port,
    );
    // Both own partitions and the survivor keeps a standby of every partition the victim
    // owns, and has applied changelog records to them.
    let owned = eventually(
        "the survivor to keep a standby of each of the victim's partitions",
        1200,
        Duration::from_millis(100),
        || {
            eprintln!(
                "victim owns {:?}, survivor owns {:?}, standby {:?}, applied {:?}",
                metric(vp, "sluice_partitions_owned"),
                metric(sp, "sluice_partitions_owned"),
                metric(sp, "sluice_standby_partitions"),
                metric(sp, "sluice_standby_records_total")
            );
            // Task partitions of stateful stages (the TSDB sink keeps no state).
            let owned = metric(vp, "sluice_partitions_owned")?
                - metric_sum(vp, "sluice_partitions_owned", "stage=\"tsdb\"");
            let standby = metric(sp, "sluice_standby_partitions")?;
            let applied = metric(sp, "sluice_standby_records_total")?;

            (owned > 0.0
                && metric(sp, "sluice_partitions_owned")? > 0.0
                && standby == owned
                && applied > 0.0)
                .then_some(owned)
        },
    );
    s.wait_sent(total / 2 + rng.random_range(0..total / 10));
    let local_before = metric_sum(sp, "sluice_restores_total", "from=\"local\"");
    let cold_before = metric_sum(sp, "sluice_restores_total", "from=\"changelog\"");
    let kill = verify::Disruption::now(&s.topo, &format!("kill -9 of s{victim}"), &[]);
    instances[victim].kill9();
    eprintln!("instance s{victim} (owning {owned} task partitions) killed for good");
    s.finish_input();
    let out = s.verify(&mut || instances[survivor].check_alive());
    verify::check_crash_repeats(&s.topo, &out, &[kill], "kill9_repeats_per_kill");
    let local = metric_sum(sp, "sluice_restores_total", "from=\"local\"") - local_before;
    let cold = metric_sum(sp, "sluice_restores_total", "from=\"changelog\"") - cold_before;
    let read = metric_sum(sp, "sluice_restore_read_records_total", "from=\"local\"");
    eprintln!("takeover restores: {local} from standby checkpoints ({read} records read in all local restores), {cold} from the changelog start");
    assert_eq!(
        cold, 0.0,
        "every task taken over restores from its standby, none from the changelog start"
    );
    assert!(
        local >= owned,
        "{local} restores from a local checkpoint, expected one per taken-over partition ({owned})"
    );
}

#[test]
#[ignore = "fault test: stops shared services; scripts/test runs it alone"]
fn fault_broker_restarted_mid_run_loses_and_duplicates_nothing() {
    let mut rng = seeded();
    let mut s = Scenario::new(16, 240);
    let mut inst = Instance::new(&s, "all-0", &[], &[]);
    inst.start();
    s.start_input(1200);
    let at = s.total() / 3 + rng.random_range(0..s.total() / 3);
    s.wait_sent(at);
    eprintln!("restarting the broker after {at} records");
    stack(&["restart-broker"]);
    s.finish_input();
    s.verify(&mut || inst.check_alive());
}

#[test]
#[ignore = "fault test: stops shared services; scripts/test runs it alone"]
fn fault_s3_and_tsdb_unavailable_mid_run_each_row_and_object_lands_once() {
    let mut rng = seeded();
    let mut s = Scenario::new(16, 240);
    let mut inst = Instance::new(&s, "all-0", &[], &[]);
    inst.start();
    s.start_input(1200);
    let total = s.total();
    s.wait_sent(total / 4 + rng.random_range(0..total / 10));
    // The TSDB stops (its data stays on disk); moto keeps objects in memory only, so S3 is
    // frozen instead: it accepts connections and answers nothing, the nastier outage.
    stack(&["stop-service", "tsdb"]);
    stack(&["pause-service", "s3"]);
    let _resume = Resume;
    // Down until the pipeline has felt it (the TSDB sink's flush failed and it is retrying
    // with backoff, keeping its batch) and more input arrived.
    let port = inst.metrics_port;
    eventually(
        "the TSDB sink to notice the TSDB is down",
        1200,
        Duration::from_millis(100),
        || (metric(port, "sluice_questdb_flush_errors_total").unwrap_or(0.0) > 0.0).then_some(()),
    );
    s.wait_sent(total * 3 / 4);
    stack(&["start-service", "tsdb"]);
    stack(&["resume-service", "s3"]);
    s.finish_input();
    s.verify(&mut || inst.check_alive());
}

/// Brings paused or stopped services back even when a test fails half way.
struct Resume;

impl Drop for Resume {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new(repo().join("scripts/stack"))
                .args(["resume-service", "s3"])
                .status();
            let _ = std::process::Command::new(repo().join("scripts/stack"))
                .args(["start-service", "tsdb"])
                .status();
        }
    }
}
