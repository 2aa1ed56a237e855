//! A deterministic generator of device telemetry with injected anomalies and bad records.
//! The same config and seed always yield the same records, so tests regenerate the input to
//! compute what the pipeline must output.

use sluice_schemas::records::Telemetry;

/// A small, fast, seedable PRNG (SplitMix64): the simulator must produce the same stream on
/// every machine and every version, which a library RNG does not promise.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(f64::MIN_POSITIVE);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A metric the simulated devices report: its typical level and noise.
#[derive(Debug, Clone)]
pub struct MetricProfile {
    pub name: &'static str,
    pub base: f64,
    /// Spread of the per-device base level.
    pub device_spread: f64,
    pub noise: f64,
    pub daily_amplitude: f64,
    /// A value certainly outside the validate stage's range for this metric.
    pub out_of_range: f64,
    /// The range `topology/iot.yaml` accepts: genuine readings (an injected drift that runs
    /// for hundreds of steps included) saturate there, as a real sensor would, so only the
    /// bad records of kind `OutOfRange` fall outside it.
    pub range: [f64; 2],
}

/// The metrics of the reference topology, in the ranges `topology/iot.yaml` accepts.
pub const METRICS: &[MetricProfile] = &[
    MetricProfile {
        name: "temperature",
        base: 21.0,
        device_spread: 4.0,
        noise: 0.3,
        daily_amplitude: 2.0,
        out_of_range: 900.0,
        range: [-40.0, 125.0],
    },
    MetricProfile {
        name: "humidity",
        base: 45.0,
        device_spread: 8.0,
        noise: 0.8,
        daily_amplitude: 5.0,
        out_of_range: 250.0,
        range: [0.0, 100.0],
    },
    MetricProfile {
        name: "pressure",
        base: 1013.0,
        device_spread: 5.0,
        noise: 0.5,
        daily_amplitude: 1.5,
        out_of_range: 20.0,
        range: [300.0, 1100.0],
    },
    MetricProfile {
        name: "vibration",
        base: 8.0,
        device_spread: 1.0,
        noise: 0.2,
        daily_amplitude: 0.5,
        out_of_range: 500.0,
        range: [0.0, 50.0],
    },
];

/// Kinds of injected anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Spike,
    LevelShift,
    Drift,
    Stuck,
    Dropout,
}

/// Ground truth for one injected anomaly.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InjectedAnomaly {
    pub device_id: String,
    pub metric: String,
    pub kind: AnomalyKind,
    /// First affected event time (ms).
    pub start: i64,
    /// Last affected event time (ms).
    pub end: i64,
}

/// What a simulated record is, so a test knows what the pipeline must make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A plain reading.
    Normal,
    /// The same message again (same device and seq): must be dropped, not dead-lettered.
    Duplicate,
    /// The device clock is far off; the broker timestamp is the true time.
    Skewed,
    /// A reading that arrives minutes after its event time: late for every window.
    Late,
    /// Value outside the metric's range: dead letter `out_of_range`.
    OutOfRange,
    /// A metric no range covers: dead letter `unknown_metric`.
    UnknownMetric,
    /// Bytes that are not a valid record; the class says how.
    WrongMagic,
    Truncated,
    UnknownSchemaId,
    InvalidBody,
}

impl Kind {
    /// The dead-letter class the pipeline must give this record, if it is a dead letter.
    pub fn dead_letter_class(self) -> Option<&'static str> {
        Some(match self {
            Kind::OutOfRange => "out_of_range",
            Kind::UnknownMetric => "unknown_metric",
            Kind::Late => "late_record",
            Kind::WrongMagic => "wrong_magic",
            Kind::Truncated => "truncated",
            Kind::UnknownSchemaId => "unknown_schema_id",
            Kind::InvalidBody => "invalid_body",
            Kind::Normal | Kind::Duplicate | Kind::Skewed => return None,
        })
    }

    pub fn is_malformed(self) -> bool {
        matches!(
            self,
            Kind::WrongMagic | Kind::Truncated | Kind::UnknownSchemaId | Kind::InvalidBody
        )
    }
}

/// Which schema version the device writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    V1,
    V2,
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct SimRecord {
    pub kind: Kind,
    pub writer: Writer,
    /// The reading as the device sends it (its own clock in `event_time`).
    pub telemetry: Telemetry,
    /// The record's Kafka timestamp: when the gateway received it.
    pub kafka_ts: i64,
    /// The time the reading was really taken.
    pub true_time: i64,
}

/// Generator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub devices: u32,
    pub metrics: usize,
    /// Event time of the first step (ms).
    pub start_ms: i64,
    /// Event time between two readings of one series (ms).
    pub step_ms: i64,
    pub steps: u64,
    pub seed: u64,
    /// Probability that a series gets one injected anomaly.
    pub anomaly_prob: f64,
    /// Probability per reading of each kind of bad record.
    pub bad_prob: f64,
    /// Readings per series before any anomaly, so detectors have learned the series.
    pub warmup_steps: u64,
    /// Device ids are `<prefix><n>`; tests use a fresh prefix to find their own rows.
    pub device_prefix: String,
    /// Inject readings with a skewed device clock (one kind of bad record, re-stamped from
    /// the record's timestamp). Off for a raw topic whose record timestamps are not the
    /// simulated ones: Fluvio's producer stamps its own (docs/FLUVIO.md).
    pub skewed: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            devices: 100,
            metrics: 4,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            step_ms: 10_000,
            steps: 360,
            seed: 42,
            anomaly_prob: 0.3,
            bad_prob: 0.001,
            warmup_steps: 120,
            device_prefix: "dev-".into(),
            skewed: true,
        }
    }
}

/// Late readings are this far behind: beyond the 5-minute window plus grace, within the
/// clock-skew tolerance, so they are late rather than skewed.
pub const LATE_BY_MS: i64 = 8 * 60_000;

struct Series {
    level: f64,
    anomaly: Option<(AnomalyKind, u64, u64)>,
    stuck_value: f64,
}

/// The generator: iterate steps with [`Simulator::step`].
pub struct Simulator {
    cfg: SimConfig,
    rng: Rng,
    series: Vec<Series>,
    seq: Vec<i64>,
    pub injected: Vec<InjectedAnomaly>,
    step: u64,
}

fn device_id(prefix: &str, d: u32) -> String {
    format!("{prefix}{d:06}")
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let metrics = cfg.metrics.min(METRICS.len());
        let mut series = Vec::new();
        let mut injected = Vec::new();
        let kinds = [
            AnomalyKind::Spike,
            AnomalyKind::LevelShift,
            AnomalyKind::Drift,
            AnomalyKind::Stuck,
            AnomalyKind::Dropout,
        ];
        let room = cfg.steps.saturating_sub(cfg.warmup_steps + 40);
        for d in 0..cfg.devices {
            for p in &METRICS[..metrics] {
                let level = p.base + p.device_spread * (rng.f64() * 2.0 - 1.0);
                let anomaly = if room > 0 && rng.f64() < cfg.anomaly_prob {
                    let kind = kinds[rng.below(kinds.len() as u64) as usize];
                    let at = cfg.warmup_steps + rng.below(room);
                    let len = match kind {
                        AnomalyKind::Spike => 1,
                        AnomalyKind::LevelShift | AnomalyKind::Drift => cfg.steps - at,
                        AnomalyKind::Stuck | AnomalyKind::Dropout => 30.min(cfg.steps - at),
                    };
                    injected.push(InjectedAnomaly {
                        device_id: device_id(&cfg.device_prefix, d),
                        metric: p.name.to_string(),
                        kind,
                        start: cfg.start_ms + at as i64 * cfg.step_ms,
                        end: cfg.start_ms + (at + len - 1) as i64 * cfg.step_ms,
                    });
                    Some((kind, at, at + len))
                } else {
                    None
                };
                series.push(Series {
                    level,
                    anomaly,
                    stuck_value: level,
                });
            }
        }
        Simulator {
            seq: vec![0; cfg.devices as usize],
            cfg: SimConfig { metrics, ..cfg },
            rng,
            series,
            injected,
            step: 0,
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn done(&self) -> bool {
        self.step >= self.cfg.steps
    }

    /// Readings per step, before bad records: devices x metrics.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Appends the records of the next step to `out`.
    pub fn step(&mut self, out: &mut Vec<SimRecord>) {
        let k = self.step;
        self.step += 1;
        let t = self.cfg.start_ms + k as i64 * self.cfg.step_ms;
        let day = 86_400_000f64;
        let phase = (t as f64 % day) / day * std::f64::consts::TAU;
        let m = self.cfg.metrics;
        for d in 0..self.cfg.devices {
            let writer = if d % 2 == 0 { Writer::V1 } else { Writer::V2 };
            for (mi, p) in METRICS[..m].iter().enumerate() {
                let idx = d as usize * m + mi;
                let noise = self.rng.normal() * p.noise;
                let s = &mut self.series[idx];
                let mut value = s.level + p.daily_amplitude * phase.sin() + noise;
                let mut skip = false;
                if let Some((kind, at, until)) = s.anomaly {
                    if k >= at && k < until {
                        let offset = (k - at) as f64;
                        match kind {
                            AnomalyKind::Spike => value += 15.0 * p.noise + 3.0 * p.daily_amplitude,
                            AnomalyKind::LevelShift => {
                                value += 12.0 * p.noise + 2.0 * p.daily_amplitude
                            }
                            AnomalyKind::Drift => value += 0.3 * p.noise * offset,
                            AnomalyKind::Stuck => {
                                if k == at {
                                    s.stuck_value = value;
                                }
                                value = s.stuck_value;
                            }
                            AnomalyKind::Dropout => skip = true,
                        }
                    }
                }
                if skip {
                    continue;
                }
                let telemetry = Telemetry {
                    device_id: device_id(&self.cfg.device_prefix, d),
                    metric: p.name.to_string(),
                    event_time: t,
                    value: round_for(writer, value.clamp(p.range[0], p.range[1])),
                    seq: self.next_seq(d),
                    quality: if writer == Writer::V1 {
                        100
                    } else {
                        90 + (d % 10) as i32
                    },
                };
                let mut rec = SimRecord {
                    kind: Kind::Normal,
                    writer,
                    telemetry,
                    kafka_ts: t,
                    true_time: t,
                };
                if self.rng.f64() < self.cfg.bad_prob && self.cfg.skewed {
                    rec.kind = Kind::Skewed;
                    let skew = (3_600_000 + self.rng.below(30 * 86_400_000)) as i64;
                    rec.telemetry.event_time = if self.rng.f64() < 0.5 {
                        t + skew
                    } else {
                        t - skew
                    };
                }
                let duplicate = self.rng.f64() < self.cfg.bad_prob;
                out.push(rec.clone());
                if duplicate {
                    rec.kind = Kind::Duplicate;
                    out.push(rec);
                }
            }
            self.bad_records(d, t, writer, out);
        }
    }

    fn next_seq(&mut self, d: u32) -> i64 {
        let s = &mut self.seq[d as usize];
        *s += 1;
        *s
    }

    /// Extra records that are wrong in one way each, at `bad_prob` per kind per device-step.
    fn bad_records(&mut self, d: u32, t: i64, writer: Writer, out: &mut Vec<SimRecord>) {
        let extras = [
            Kind::Late,
            Kind::OutOfRange,
            Kind::UnknownMetric,
            Kind::WrongMagic,
            Kind::Truncated,
            Kind::UnknownSchemaId,
            Kind::InvalidBody,
        ];
        let m = self.cfg.metrics;
        for kind in extras {
            // Probability per reading, so scale by the readings of this device-step.
            if self.rng.f64() >= self.cfg.bad_prob * m as f64 {
                continue;
            }
            // Late readings need history to be late against.
            if kind == Kind::Late && t - LATE_BY_MS < self.cfg.start_ms {
                continue;
            }
            let p = &METRICS[self.rng.below(m as u64) as usize];
            let mut telemetry = Telemetry {
                device_id: device_id(&self.cfg.device_prefix, d),
                metric: p.name.to_string(),
                event_time: t,
                value: round_for(writer, p.base),
                seq: self.next_seq(d),
                quality: 100,
            };
            let mut true_time = t;
            match kind {
                Kind::Late => {
                    true_time = t - LATE_BY_MS;
                    telemetry.event_time = true_time;
                }
                Kind::OutOfRange => telemetry.value = round_for(writer, p.out_of_range),
                Kind::UnknownMetric => telemetry.metric = "colour".into(),
                _ => {}
            }
            out.push(SimRecord {
                kind,
                writer,
                telemetry,
                kafka_ts: t,
                true_time,
            });
        }
    }
}

/// v1 carries `float`: round so the value a v2 reader sees equals what the test expects.
fn round_for(writer: Writer, v: f64) -> f64 {
    match writer {
        Writer::V1 => v as f32 as f64,
        Writer::V2 => v,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_ranges_are_those_of_the_reference_topology() {
        let yaml = include_str!("../../topology/iot.yaml");
        for p in METRICS {
            let line = format!("{}: [{}, {}]", p.name, p.range[0], p.range[1]);
            assert!(yaml.contains(&line), "topology/iot.yaml has no `{line}`");
        }
    }

    use super::*;

    fn all(cfg: SimConfig) -> (Vec<SimRecord>, Vec<InjectedAnomaly>) {
        let mut sim = Simulator::new(cfg);
        let mut out = Vec::new();
        while !sim.done() {
            sim.step(&mut out);
        }
        (out, sim.injected)
    }

    #[test]
    fn same_seed_same_records() {
        let cfg = SimConfig {
            devices: 5,
            steps: 200,
            bad_prob: 0.01,
            ..SimConfig::default()
        };
        let (a, ia) = all(cfg.clone());
        let (b, ib) = all(cfg);
        assert_eq!(a.len(), b.len());
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.telemetry == y.telemetry && x.kind == y.kind));
        assert_eq!(ia.len(), ib.len());
    }

    #[test]
    fn every_kind_of_bad_record_appears_with_a_high_rate() {
        let cfg = SimConfig {
            devices: 20,
            steps: 200,
            bad_prob: 0.02,
            ..SimConfig::default()
        };
        let (recs, injected) = all(cfg);
        for kind in [
            Kind::Duplicate,
            Kind::Skewed,
            Kind::Late,
            Kind::OutOfRange,
            Kind::UnknownMetric,
            Kind::WrongMagic,
            Kind::Truncated,
            Kind::UnknownSchemaId,
            Kind::InvalidBody,
        ] {
            assert!(recs.iter().any(|r| r.kind == kind), "{kind:?} missing");
        }
        assert!(!injected.is_empty());
        // Sequence numbers only repeat for duplicates.
        let mut seen = std::collections::HashSet::new();
        for r in &recs {
            let fresh = seen.insert((r.telemetry.device_id.clone(), r.telemetry.seq));
            assert_eq!(fresh, r.kind != Kind::Duplicate, "{r:?}");
        }
    }
}
