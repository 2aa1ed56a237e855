//! Watching a running pipeline on the local stack: lag rises under load and falls back to
//! zero when the input stops, every committed input record is one end-to-end latency
//! observation, commits are timed, every metric the Grafana dashboard queries is really
//! emitted, and `sluice top --once` reads the same numbers from the running instance.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sluice::sim::{produce, SimConfig};
use sluice_connectors::kafka::ClientOptions;

/// One line of `/metrics`: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a running sluice (label values here never hold `,` or `"`).
fn samples(port: u16) -> Vec<Sample> {
    metric_lines(port)
        .iter()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn by_stage(s: &[Sample], name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for x in s.iter().filter(|x| x.name == name) {
        if let Some(stage) = x.labels.get("stage") {
            *out.entry(stage.clone()).or_insert(0.0) += x.value;
        }
    }
    out
}

/// Every stage of the reference topology, its input topics and their partitions.
fn stage_inputs(topo: &TestTopology) -> BTreeMap<String, Vec<(String, i32)>> {
    let t = sluice_topology::load(&topo.path).unwrap().topology;
    t.stages
        .iter()
        .map(|s| {
            let inputs = s
                .spec
                .inputs()
                .into_iter()
                .map(|(_, topic)| (topic.to_string(), t.topics[topic].partitions))
                .collect();
            (s.name.clone(), inputs)
        })
        .collect()
}

/// Telemetry with recent timestamps, so latencies are what the pipeline adds.
fn recent(prefix: String, steps: u64) -> SimConfig {
    let step_ms = 1_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    SimConfig {
        devices: 8,
        steps,
        step_ms,
        start_ms: now - steps as i64 * step_ms,
        warmup_steps: 20,
        bad_prob: 0.01,
        device_prefix: prefix,
        ..SimConfig::default()
    }
}

#[test]
fn lag_rises_under_load_and_drains_to_zero_with_latency_commits_and_dashboard_metrics() {
    let brokers = env("SLUICE_BROKERS");
    let topo = TestTopology::new(|t| t);
    let path = topo.path.to_str().unwrap().to_string();
    let started = topo.start(&brokers);
    let (mut run, log) = (started.run, started.log);
    let (raw, ids) = (started.raw, started.ids);
    let port = topo.metrics_port;
    let stages = stage_inputs(&topo);

    // Load until some stage reports lag, then stop the input.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, raw, brokers, suffix) = (
            stop.clone(),
            raw.clone(),
            brokers.clone(),
            topo.suffix.clone(),
        );
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) && rounds < 200 {
                let cfg = recent(format!("{suffix}-r{rounds}-d"), 120);
                produce(
                    &ClientOptions::new(&brokers),
                    &raw,
                    cfg,
                    ids,
                    0,
                    &mut |_, _| {},
                )
                .expect("produce telemetry");
                rounds += 1;
            }
            rounds
        })
    };
    let alive = |run: &mut Sluice| {
        if let Some(st) = run.exited() {
            panic!(
                "sluice exited ({st}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    let lagging = eventually_or(
        "lag above zero under load",
        1200,
        Duration::from_millis(100),
        || {
            alive(&mut run);
            let s = samples(port);
            s.iter()
                .find(|x| x.name == "sluice_consumer_lag" && x.value > 0.0)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "no lag above zero; lag samples: {:?}",
                        s.iter()
                            .filter(|x| x.name == "sluice_consumer_lag")
                            .collect::<Vec<_>>()
                    )
                })
        },
    );
    eprintln!("lag seen: {lagging:?}");
    stop.store(true, Ordering::Relaxed);
    let rounds = producer.join().unwrap();
    assert!(rounds > 0);

    // Input stopped: every stage drains. Lag is reported for every input partition and
    // is zero everywhere, and every committed input record was one latency observation.
    let drained = eventually_or(
        "every stage's lag back to zero",
        600,
        Duration::from_millis(500),
        || {
            alive(&mut run);
            let s = samples(port);
            let mut missing = Vec::new();
            for (stage, inputs) in &stages {
                for (topic, parts) in inputs {
                    for p in 0..*parts {
                        let lag = s.iter().find(|x| {
                            x.name == "sluice_consumer_lag"
                                && x.labels.get("stage") == Some(stage)
                                && x.labels.get("topic") == Some(topic)
                                && x.labels.get("partition") == Some(&p.to_string())
                        });
                        match lag {
                            Some(x) if x.value == 0.0 => {}
                            other => missing
                                .push(format!("{stage} {topic}/{p}: {:?}", other.map(|x| x.value))),
                        }
                    }
                }
            }
            let records_in = by_stage(&s, "sluice_records_in_total");
            let latency = by_stage(&s, "sluice_latency_ms_count");
            for stage in stages.keys() {
                let n = records_in.get(stage).copied().unwrap_or(0.0);
                let l = latency.get(stage).copied().unwrap_or(0.0);
                if n == 0.0 || l != n {
                    missing.push(format!("{stage}: {n} records in, {l} latency observations"));
                }
            }
            if missing.is_empty() {
                Ok(s)
            } else {
                Err(missing.join("; "))
            }
        },
    );

    // The gauge agrees with the broker: every group committed its inputs' ends.
    let t = sluice_topology::load(&topo.path).unwrap().topology;
    for (stage, inputs) in &stages {
        for (topic, _) in inputs {
            let committed = committed_offsets(&brokers, &t.group_id(stage), topic);
            for (p, end) in end_offsets(&brokers, topic) {
                assert_eq!(
                    committed.get(&p).copied().unwrap_or(0),
                    end,
                    "{stage} reports zero lag on {topic}/{p} but its group did not commit the end"
                );
            }
        }
    }
    // Commit durations observed, and latencies fall in real buckets (the inputs are
    // recent, so not all beyond the last bound).
    let commits = by_stage(&drained, "sluice_commit_seconds_count");
    for stage in stages.keys() {
        assert!(
            commits.get(stage).copied().unwrap_or(0.0) > 0.0,
            "{stage}: no commit durations in {commits:?}"
        );
    }
    let finite = drained.iter().any(|x| {
        x.name == "sluice_latency_ms_bucket"
            && x.labels.get("le").is_some_and(|le| le != "+Inf")
            && x.value > 0.0
    });
    assert!(finite, "no latency below the last bucket bound");

    // Every metric a dashboard panel queries is emitted by this run, with the labels the
    // panel groups by.
    let dir = repo().join("deploy/grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in doc["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or("");
                let (names, by) = query_parts(expr);
                assert!(
                    !names.is_empty(),
                    "panel {title}: no sluice metric in {expr}"
                );
                for name in names {
                    let series: Vec<&Sample> = drained.iter().filter(|x| x.name == name).collect();
                    assert!(
                        !series.is_empty(),
                        "panel {title} of {} queries {name}, which this run never emitted",
                        path.display()
                    );
                    for label in &by {
                        assert!(
                            series.iter().all(|x| x.labels.contains_key(label)),
                            "panel {title} groups {name} by {label}, which it lacks"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 6, "only {checked} dashboard metrics checked");

    // `sluice top --once` reads the same instance (found from the topology's
    // metrics.listen): a row per stage, zero lag, the records counted in.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["top", &path, "--once", "--interval", "1s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("STAGE"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let header = &lines[0];
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let records_in = by_stage(&drained, "sluice_records_in_total");
    for stage in stages.keys() {
        let row = lines
            .iter()
            .find(|r| r[0] == stage.as_str())
            .unwrap_or_else(|| panic!("no row for {stage} in\n{text}"));
        assert_eq!(row.len(), header.len(), "{text}");
        assert_eq!(row[col("LAG")], "0", "{text}");
        assert_eq!(
            row[col("IN")].parse::<f64>().unwrap(),
            records_in[stage],
            "{text}"
        );
        assert_ne!(row[col("COMMIT_p99")], "-", "{text}");
        assert_ne!(row[col("LATENCY_p99")], "-", "{text}");
    }
    run.interrupt();

    // Nobody listening: `--once` fails and says which endpoint is down.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "top",
            "--once",
            "--interval",
            "100ms",
            "--url",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("down: http://127.0.0.1:"));
}

/// The `sluice_*` metrics a PromQL expression reads (histogram suffixes kept), and the
/// labels of its `by (...)` clauses.
fn query_parts(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    for (i, _) in expr.match_indices("sluice_") {
        let name: String = expr[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    let mut by = BTreeSet::new();
    for (i, _) in expr.match_indices("by (") {
        if let Some(end) = expr[i + 4..].find(')') {
            by.extend(
                expr[i + 4..i + 4 + end]
                    .split(',')
                    .map(|l| l.trim().to_string()),
            );
        }
    }
    (names, by)
}
