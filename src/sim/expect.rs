//! What the reference topology must output for a simulation, computed directly from the
//! generated input: tests compare what landed in topics, the TSDB and S3 against this.

use std::collections::{BTreeMap, HashMap};

use sluice_detectors::{AnyDetector, DetectorSpec};
use sluice_schemas::records::{Aggregate, Alert, Anomaly, Telemetry};

use super::generator::{Kind, SimConfig, SimRecord, Simulator};

/// The validate and aggregate settings the expectation depends on.
#[derive(Debug, Clone)]
pub struct Rules {
    pub windows_ms: Vec<i64>,
    pub grace_ms: i64,
    pub max_clock_skew_ms: i64,
}

/// Expected outputs of one simulation.
#[derive(Debug, Default)]
pub struct Expected {
    /// Every record, as generated.
    pub records: Vec<SimRecord>,
    /// Valid telemetry as the validate stage writes it (clock re-stamped), in input order.
    pub valid: Vec<Telemetry>,
    /// Dead letters by (device id, class).
    pub dead_letters: BTreeMap<(String, String), u64>,
    /// Closed windows by (device, metric, window_ms, window_start).
    pub aggregates: BTreeMap<(String, String, i64, i64), Aggregate>,
    pub injected: Vec<super::InjectedAnomaly>,
}

/// Runs the generator and derives every expected output.
pub fn expected(cfg: &SimConfig, rules: &Rules) -> Expected {
    let mut sim = Simulator::new(cfg.clone());
    let mut records = Vec::new();
    while !sim.done() {
        sim.step(&mut records);
    }
    let last_time = cfg.start_ms + (cfg.steps as i64 - 1) * cfg.step_ms;
    let mut e = Expected {
        injected: sim.injected.clone(),
        ..Expected::default()
    };
    let mut windows: HashMap<(String, String, i64, i64), Vec<f64>> = HashMap::new();
    for r in &records {
        if let Some(class) = r.kind.dead_letter_class() {
            *e.dead_letters
                .entry((r.telemetry.device_id.clone(), class.to_string()))
                .or_default() += 1;
            if r.kind != Kind::Late {
                continue;
            }
        }
        if r.kind == Kind::Duplicate {
            continue;
        }
        let mut t = r.telemetry.clone();
        if (t.event_time - r.kafka_ts).abs() > rules.max_clock_skew_ms {
            t.event_time = r.kafka_ts;
        }
        if r.kind != Kind::Late {
            for &w in &rules.windows_ms {
                let start = t.event_time.div_euclid(w) * w;
                windows
                    .entry((t.device_id.clone(), t.metric.clone(), w, start))
                    .or_default()
                    .push(t.value);
            }
        }
        e.valid.push(t);
    }
    for ((device, metric, w, start), xs) in windows {
        if start + w + rules.grace_ms > last_time {
            continue; // still open at the end of the run
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let agg = Aggregate {
            device_id: device.clone(),
            metric: metric.clone(),
            window_start: start,
            window_ms: w,
            count: xs.len() as i64,
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean,
            stddev: var.sqrt(),
        };
        e.aggregates.insert((device, metric, w, start), agg);
    }
    e.records = records;
    e
}

/// Whether two aggregates agree (floating-point sums in another order differ in the last bits).
pub fn same_aggregate(a: &Aggregate, b: &Aggregate) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs()));
    a.device_id == b.device_id
        && a.metric == b.metric
        && a.window_start == b.window_start
        && a.window_ms == b.window_ms
        && a.count == b.count
        && a.min == b.min
        && a.max == b.max
        && close(a.mean, b.mean)
        && close(a.stddev, b.stddev)
}

/// The `detect` stage's settings the expected anomalies and alerts depend on.
#[derive(Debug, Clone)]
pub struct DetectRules {
    pub detector: DetectorSpec,
    pub threshold: f64,
    pub suppression_ms: i64,
}

/// Anomalies and alerts the `detect` stage must emit for `valid` (in input order), computed
/// here with a fresh detector per device and metric run over the whole series: the stage,
/// whatever crashed and restored in between, must score bit for bit the same.
#[derive(Debug, Default)]
pub struct Detections {
    pub anomalies: Vec<Anomaly>,
    pub alerts: Vec<Alert>,
}

pub fn expected_detections(valid: &[Telemetry], rules: &DetectRules) -> Detections {
    let mut detectors: HashMap<(&str, &str), AnyDetector> = HashMap::new();
    // Suppression is per device and rule: (last alert's event time, suppressed since).
    let mut last_alert: HashMap<&str, (i64, i64)> = HashMap::new();
    let rule = rules.detector.name().to_string();
    let mut out = Detections::default();
    for t in valid {
        let det = detectors
            .entry((t.device_id.as_str(), t.metric.as_str()))
            .or_insert_with(|| rules.detector.build());
        let score = det.update(t.event_time, t.value);
        if score < rules.threshold {
            continue;
        }
        out.anomalies.push(Anomaly {
            device_id: t.device_id.clone(),
            metric: t.metric.clone(),
            event_time: t.event_time,
            value: t.value,
            score,
            detector: rule.clone(),
        });
        let s = last_alert
            .entry(t.device_id.as_str())
            .or_insert((i64::MIN, 0));
        if s.0 != i64::MIN && t.event_time.saturating_sub(s.0) < rules.suppression_ms {
            s.1 += 1;
            continue;
        }
        out.alerts.push(Alert {
            device_id: t.device_id.clone(),
            metric: t.metric.clone(),
            rule: rule.clone(),
            event_time: t.event_time,
            value: t.value,
            score,
            suppressed_since_last: s.1,
        });
        *s = (t.event_time, 0);
    }
    out
}
