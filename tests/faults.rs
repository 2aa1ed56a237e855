//! Exactly-once under faults, on the real broker with durable storage: kill -9 at random
//! moments, an instance lost for good, a broker restart, S3 and TSDB outages. After each, every
//! output is read back from where it landed and must equal what the input determines, once.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use sluice::sim::expect::{expected, Expected};
use sluice::sim::generator::Rng;
use sluice::sim::{produce, SimConfig};
use sluice_connectors::kafka::ClientOptions;

/// These tests restart shared services; one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn setup(devices: u32, steps: u64) -> (TestTopology, SimConfig, Expected) {
    let topo = TestTopology::new(|t| t);
    let cfg = SimConfig {
        devices,
        steps,
        bad_prob: 0.003,
        anomaly_prob: 0.4,
        device_prefix: format!("{}-d", topo.suffix),
        ..SimConfig::default()
    };
    let exp = expected(&cfg, &rules());
    (topo, cfg, exp)
}

/// Produces the simulation on a background thread.
fn produce_in_background(topo: &TestTopology, cfg: &SimConfig) -> std::thread::JoinHandle<u64> {
    let brokers = env("SLUICE_BROKERS");
    let raw = topo.topic("telemetry.raw");
    wait_for_topic(&brokers, &raw);
    let ids = registry_ids(&format!("{raw}-value"));
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        produce(
            &ClientOptions::new(&brokers),
            &raw,
            cfg,
            ids,
            4000,
            &mut |_, _| {},
        )
        .unwrap()
        .records
    })
}

fn log_of(topo: &TestTopology, name: &str) -> std::path::PathBuf {
    topo.dir.path().join(format!("{name}.log"))
}

fn stack(args: &[&str]) {
    let st = Command::new(repo().join("scripts/stack"))
        .args(args)
        .status()
        .expect("scripts/stack runs");
    assert!(st.success(), "scripts/stack {args:?} failed");
}

fn stack_pid(service: &str) -> String {
    let dir = std::env::var("SLUICE_STACK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo().join(".stack"));
    std::fs::read_to_string(dir.join("run").join(format!("{service}.pid")))
        .unwrap_or_else(|e| {
            panic!("no pid file for {service} ({e}); was the stack started by scripts/stack up?")
        })
        .trim()
        .to_string()
}

#[test]
fn kill_9_at_random_moments_still_gives_every_result_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (topo, cfg, exp) = setup(20, 300);
    let path = topo.path.display().to_string();
    let mut run = Sluice::spawn(&["run", &path, "--quiet"], &log_of(&topo, "run-0"));
    let producer = produce_in_background(&topo, &cfg);
    // The fault schedule: 12 kill -9s at seeded random moments, each followed by a restart.
    let mut rng = Rng::new(0x5eed);
    for i in 1..=12 {
        std::thread::sleep(Duration::from_millis(400 + rng.below(2500)));
        run.kill9();
        run = Sluice::spawn(
            &["run", &path, "--quiet"],
            &log_of(&topo, &format!("run-{i}")),
        );
    }
    assert_eq!(producer.join().unwrap() as usize, exp.records.len());
    let last = log_of(&topo, "run-12");
    verify::check_outputs(&topo, &cfg, &exp, &mut || match run.exited() {
        None => Ok(()),
        Some(st) => Err(format!(
            "sluice exited ({st}):\n{}",
            std::fs::read_to_string(&last).unwrap_or_default()
        )),
    });
}

#[test]
fn three_instances_one_lost_for_good_the_others_take_over() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (topo, cfg, exp) = setup(20, 240);
    let path = topo.path.display().to_string();
    let mut instances: Vec<Sluice> = (0..3)
        .map(|i| {
            let listen = format!("127.0.0.1:{}", free_port());
            let id = format!("inst{i}");
            Sluice::spawn(
                &[
                    "run",
                    &path,
                    "--quiet",
                    "--instance-id",
                    &id,
                    "--metrics-listen",
                    &listen,
                ],
                &log_of(&topo, &id),
            )
        })
        .collect();
    let producer = produce_in_background(&topo, &cfg);
    std::thread::sleep(Duration::from_secs(4));
    instances[0].kill9();
    assert_eq!(producer.join().unwrap() as usize, exp.records.len());
    let (a, b) = instances.split_at_mut(2);
    let (one, two) = (&mut a[1], &mut b[0]);
    verify::check_outputs(&topo, &cfg, &exp, &mut || {
        for (n, s) in [(1, &mut *one), (2, &mut *two)] {
            if let Some(st) = s.exited() {
                return Err(format!(
                    "instance {n} exited ({st}):\n{}",
                    std::fs::read_to_string(log_of(&topo, &format!("inst{n}"))).unwrap_or_default()
                ));
            }
        }
        Ok(())
    });
}

#[test]
fn a_broker_restart_mid_run_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (topo, cfg, exp) = setup(20, 240);
    let path = topo.path.display().to_string();
    let log = log_of(&topo, "run");
    let mut run = Sluice::spawn(&["run", &path, "--quiet"], &log);
    let producer = produce_in_background(&topo, &cfg);
    std::thread::sleep(Duration::from_secs(3));
    stack(&["restart-broker"]);
    assert_eq!(producer.join().unwrap() as usize, exp.records.len());
    verify::check_outputs(&topo, &cfg, &exp, &mut || match run.exited() {
        None => Ok(()),
        Some(st) => Err(format!(
            "sluice exited ({st}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )),
    });
}

#[test]
fn s3_and_tsdb_outages_back_off_and_resume_with_every_row_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (topo, cfg, exp) = setup(20, 240);
    let path = topo.path.display().to_string();
    let log = log_of(&topo, "run");
    let mut run = Sluice::spawn(&["run", &path, "--quiet"], &log);
    let producer = produce_in_background(&topo, &cfg);
    std::thread::sleep(Duration::from_secs(2));
    // The S3 server keeps objects in memory, so it is frozen (SIGSTOP), not restarted: to
    // the sink it is unreachable, and what it held before is still there afterwards.
    let s3 = stack_pid("s3");
    assert!(Command::new("kill")
        .args(["-STOP", &s3])
        .status()
        .unwrap()
        .success());
    stack(&["stop-service", "tsdb"]);
    std::thread::sleep(Duration::from_secs(8));
    assert!(Command::new("kill")
        .args(["-CONT", &s3])
        .status()
        .unwrap()
        .success());
    stack(&["start-service", "tsdb"]);
    assert_eq!(producer.join().unwrap() as usize, exp.records.len());
    verify::check_outputs(&topo, &cfg, &exp, &mut || match run.exited() {
        None => Ok(()),
        Some(st) => Err(format!(
            "sluice exited ({st}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )),
    });
}
