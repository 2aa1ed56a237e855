//! Several `sluice run` processes of one test topology under simulated input streaming in the
//! background, for the tests that restart, kill and pause instances (tests/restarts.rs).
//! The same shape as tests/faults.rs' `Scenario` and `Instance`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use sluice::sim::expect::{expected, Expected};
use sluice::sim::{produce, SimConfig};
use sluice_connectors::kafka::ClientOptions;

use super::*;

/// The reference topology's stages and the topics each reads.
pub const STAGE_INPUTS: [(&str, &[&str]); 5] = [
    ("validate", &["telemetry.raw"]),
    ("aggregate", &["telemetry.valid"]),
    ("detect", &["telemetry.valid"]),
    ("tsdb", &["iot.aggregates", "iot.anomalies"]),
    ("archive", &["telemetry.valid"]),
];

/// One test's topology, input and expectation, and the input streaming in the background.
pub struct Scenario {
    pub topo: TestTopology,
    pub cfg: SimConfig,
    pub exp: Expected,
    pub sent: Arc<AtomicU64>,
    producer: Option<JoinHandle<u64>>,
}

impl Scenario {
    /// `devices` × 4 metrics × `steps` records; the topology text is `edit`ed first.
    pub fn new(devices: u32, steps: u64, edit: impl Fn(String) -> String) -> Scenario {
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

    pub fn total(&self) -> u64 {
        self.exp.records.len() as u64
    }

    pub fn path(&self) -> String {
        self.topo.path.to_str().unwrap().to_string()
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.topo.dir.path().join(format!("{name}.log"))
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Starts producing the input at `rate` records/s once the pipeline created its topics.
    pub fn start_input(&mut self, rate: u64) {
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
    pub fn wait_sent(&self, n: u64) {
        eventually(
            &format!("{n} input records to be sent"),
            6000,
            Duration::from_millis(100),
            || (self.sent() >= n).then_some(()),
        );
    }

    /// Waits for the producer to send (and have acknowledged) the whole input.
    pub fn finish_input(&mut self) {
        let records = self.producer.take().unwrap().join().unwrap();
        assert_eq!(records, self.total(), "input records produced");
    }

    pub fn input_done(&self) -> bool {
        self.producer.as_ref().is_none_or(|p| p.is_finished())
    }

    /// True when every stage's group has committed the end of each partition of its inputs:
    /// everything the input determines is written, flushed and committed.
    pub fn finished(&self) -> bool {
        let brokers = env("SLUICE_BROKERS");
        STAGE_INPUTS.iter().all(|(stage, inputs)| {
            let group = format!("{}-{stage}", self.topo.app);
            inputs.iter().all(|t| {
                let topic = self.topo.topic(t);
                let done = committed_offsets(&brokers, &group, &topic);
                end_offsets(&brokers, &topic)
                    .into_iter()
                    .all(|(p, end)| done.get(&p).copied().unwrap_or(0) >= end)
            })
        })
    }
}

/// A `sluice run` process of the whole topology with the arguments to start it again.
pub struct Instance {
    pub name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub proc: Option<Sluice>,
}

impl Instance {
    /// Every stage, its own state directory (as a pod with its volume); a static group
    /// member (`--instance-id name`) when `static_member`, else a dynamic one.
    pub fn new(s: &Scenario, name: &str, static_member: bool) -> Instance {
        let metrics_port = free_port();
        let mut args = vec![
            "run".to_string(),
            s.path(),
            "--quiet".into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        if static_member {
            args.extend(["--instance-id".to_string(), name.to_string()]);
        }
        let state = s.topo.dir.path().join(format!("state-{name}"));
        Instance {
            name: name.into(),
            args,
            envs: vec![("SLUICE_STATE_DIR".into(), state.display().to_string())],
            log: s.log(name),
            metrics_port,
            proc: None,
        }
    }

    pub fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.proc = Some(Sluice::spawn_with_env(&args, &envs, &self.log));
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").pid()
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// SIGTERM; returns how the process exited.
    pub fn terminate(&mut self) -> ExitStatus {
        self.proc.take().expect("running").terminate()
    }

    pub fn signal(&self, sig: &str) {
        self.proc.as_ref().expect("running").signal(sig);
    }

    /// `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        http_status(self.metrics_port, "/readyz") == Some(200)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(self.metrics_port, name)
    }

    pub fn exited(&mut self) -> bool {
        self.proc.as_mut().is_none_or(|p| p.exited().is_some())
    }

    pub fn check_alive(&mut self) -> Result<(), String> {
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

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// When a sample was taken, and each partition's end offset then.
type Sample = (Instant, BTreeMap<i32, i64>);

/// Samples the high watermark of every partition of a topic in the background, to see when
/// each partition stopped and started advancing again.
pub struct EndSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

impl EndSampler {
    pub fn start(topic: &str, every: Duration) -> EndSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", env("SLUICE_BROKERS"))
            .create()
            .unwrap();
        let parts: Vec<i32> = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap()
            .topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let (topic, st, sa) = (topic.to_string(), stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let mut ends = BTreeMap::new();
                for &p in &parts {
                    if let Ok((_, high)) =
                        consumer.fetch_watermarks(&topic, p, Duration::from_secs(2))
                    {
                        ends.insert(p, high);
                    }
                }
                if ends.len() == parts.len() {
                    sa.lock().unwrap().push((Instant::now(), ends));
                }
                std::thread::sleep(every);
            }
        });
        EndSampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// The longest time, from `from`, that a partition went without advancing, over the
    /// stalls that began before `until` (a stall that outlasts `until` counts whole). None
    /// when some such partition has not advanced since `from` yet.
    pub fn longest_stall(&self, from: Instant, until: Instant) -> Option<Duration> {
        let samples = self.samples.lock().unwrap();
        let parts: Vec<i32> = samples.first()?.1.keys().copied().collect();
        let mut longest = Duration::ZERO;
        for p in parts {
            // When partition p's end moved, in sample order.
            let mut moved = Vec::new();
            for w in samples.windows(2) {
                if w[1].1[&p] > w[0].1[&p] {
                    moved.push(w[1].0);
                }
            }
            let mut last = from;
            let mut done = false;
            for t in moved.into_iter().filter(|t| *t > from) {
                longest = longest.max(t - last);
                if t >= until {
                    done = true;
                    break;
                }
                last = t;
            }
            if !done {
                return None;
            }
        }
        Some(longest)
    }
}

impl Drop for EndSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Median and maximum, in whole milliseconds.
pub fn median_max(v: &[Duration]) -> (u128, u128) {
    let mut ms: Vec<u128> = v.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    if ms.is_empty() {
        return (0, 0);
    }
    (ms[ms.len() / 2], *ms.last().unwrap())
}

/// The consumers' `session.timeout.ms`, read from the runtime's Kafka client settings.
pub fn session_timeout() -> Duration {
    let src = std::fs::read_to_string(repo().join("connectors/src/kafka/client.rs"))
        .expect("connectors/src/kafka/client.rs");
    let ms = src
        .lines()
        .find_map(|l| {
            let rest = l.split("\"session.timeout.ms\"").nth(1)?;
            rest.split('"').nth(1)?.parse::<u64>().ok()
        })
        .expect("connectors/src/kafka/client.rs sets session.timeout.ms");
    Duration::from_millis(ms)
}
