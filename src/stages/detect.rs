//! `detect`: a streaming anomaly detector per device and metric; scores at or above the
//! threshold are anomalies, and an alert is raised unless the same device and rule alerted
//! within the suppression interval (in event time, so replays decide the same way).

use sluice_detectors::{AnyDetector, DetectorSpec};
use sluice_schemas::codec::{AvroRecord, TelemetryDecoder};
use sluice_schemas::records::{Alert, Anomaly, Telemetry};
use sluice_state::StateError;
use sluice_topology::DetectSpec;

use super::natural_key;
use super::schemas::{decode_input, SchemaSource};
use crate::metrics::METRICS;
use crate::runtime::{AnyTable, CachedTable, Codec, Emit, Encode, Input, ProcessError, Processor};

pub const PORT_ANOMALIES: usize = 0;
pub const PORT_ALERTS: usize = 1;

/// A detector's state in the `detectors` table.
pub struct DetectorSlot(pub AnyDetector);

impl Encode for DetectorSlot {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.save(out);
    }
}

/// Alert suppression per device and rule.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Suppression {
    /// Event time of the last alert; `i64::MIN` before the first.
    pub last_alert: i64,
    /// Anomalies suppressed since then.
    pub suppressed: i64,
}

impl Encode for Suppression {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.last_alert.to_le_bytes());
        out.extend_from_slice(&self.suppressed.to_le_bytes());
    }
}

impl Codec for Suppression {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        if b.len() != 16 {
            return Err(StateError::decode("suppression entry", "expected 16 bytes"));
        }
        Ok(Suppression {
            last_alert: i64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            suppressed: i64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
        })
    }
}

/// Schema ids of the two outputs.
#[derive(Debug, Clone, Copy)]
pub struct DetectSchemas {
    pub anomaly: u32,
    pub alert: u32,
}

/// One task of a detect stage.
pub struct Detect {
    stage: String,
    spec: DetectorSpec,
    threshold: f64,
    suppression_ms: i64,
    ids: DetectSchemas,
    decoder: TelemetryDecoder,
    schemas: Box<dyn SchemaSource>,
    detectors: CachedTable<DetectorSlot>,
    suppression: CachedTable<Suppression>,
    record: Telemetry,
    key: Vec<u8>,
    buf: Vec<u8>,
}

impl Detect {
    pub fn new(
        stage: &str,
        spec: &DetectSpec,
        detector: DetectorSpec,
        ids: DetectSchemas,
        schemas: Box<dyn SchemaSource>,
    ) -> Self {
        let restore_spec = detector.clone();
        Detect {
            stage: stage.to_string(),
            threshold: spec.threshold,
            suppression_ms: spec.alert_suppression.as_millis() as i64,
            ids,
            decoder: TelemetryDecoder::new(),
            schemas,
            detectors: CachedTable::with_decoder(
                500_000,
                Box::new(move |b| {
                    restore_spec
                        .restore(b)
                        .map(DetectorSlot)
                        .map_err(|e| StateError::decode("detector state", e.to_string()))
                }),
            ),
            suppression: CachedTable::new(500_000),
            spec: detector,
            record: Telemetry::default(),
            key: Vec::with_capacity(64),
            buf: Vec::with_capacity(128),
        }
    }
}

impl Processor for Detect {
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError> {
        if !decode_input(
            &mut self.decoder,
            self.schemas.as_mut(),
            input,
            out,
            &mut self.record,
        )? {
            return Ok(());
        }
        let r = &self.record;
        self.key.clear();
        self.key.extend_from_slice(r.device_id.as_bytes());
        self.key.push(0);
        self.key.extend_from_slice(r.metric.as_bytes());
        let spec = &self.spec;
        let det = self
            .detectors
            .get_mut(&self.key, || DetectorSlot(spec.build()))?;
        let score = det.0.update(r.event_time, r.value);
        if score < self.threshold {
            return Ok(());
        }
        METRICS.anomalies.with_label_values(&[&self.stage]).inc();
        let anomaly = Anomaly {
            device_id: r.device_id.clone(),
            metric: r.metric.clone(),
            event_time: r.event_time,
            value: r.value,
            score,
            detector: self.spec.name().to_string(),
        };
        self.buf.clear();
        anomaly.encode_wire(self.ids.anomaly, &mut self.buf);
        self.key.clear();
        natural_key(
            &mut self.key,
            &(&r.device_id, &r.metric, &anomaly.detector, r.event_time),
        );
        out.emit(PORT_ANOMALIES, &self.key, &self.buf, r.event_time);

        // Suppression is per device and rule (the detector), across the device's metrics.
        self.key.clear();
        self.key.extend_from_slice(r.device_id.as_bytes());
        self.key.push(0);
        self.key.extend_from_slice(self.spec.name().as_bytes());
        let s = self.suppression.get_mut(&self.key, || Suppression {
            last_alert: i64::MIN,
            suppressed: 0,
        })?;
        if s.last_alert != i64::MIN
            && r.event_time.saturating_sub(s.last_alert) < self.suppression_ms
        {
            s.suppressed += 1;
            METRICS
                .alerts_suppressed
                .with_label_values(&[&self.stage])
                .inc();
            return Ok(());
        }
        let alert = Alert {
            device_id: anomaly.device_id,
            metric: anomaly.metric,
            rule: anomaly.detector,
            event_time: r.event_time,
            value: r.value,
            score,
            suppressed_since_last: s.suppressed,
        };
        *s = Suppression {
            last_alert: r.event_time,
            suppressed: 0,
        };
        METRICS.alerts.with_label_values(&[&self.stage]).inc();
        self.buf.clear();
        alert.encode_wire(self.ids.alert, &mut self.buf);
        self.key.clear();
        natural_key(
            &mut self.key,
            &(
                &alert.device_id,
                &alert.metric,
                &alert.rule,
                alert.event_time,
            ),
        );
        out.emit(PORT_ALERTS, &self.key, &self.buf, r.event_time);
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.detectors, &mut self.suppression]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::testkit::{input, telemetry, Bundled, Collect, ALERT, ANOMALY};

    #[test]
    fn a_spike_is_an_anomaly_and_repeats_within_suppression_are_one_alert() {
        let yaml = "kind: detect\ninput: a\noutput: b\noutput_subject: s\nalerts: c\nalerts_subject: t\ndetector: { kind: zscore }\nthreshold: 0.5\nalert_suppression: 5m\n";
        let spec: DetectSpec = serde_yaml::from_str(yaml).unwrap();
        let det = DetectorSpec::from_name("zscore").unwrap();
        let mut d = Detect::new(
            "detect",
            &spec,
            det,
            DetectSchemas {
                anomaly: ANOMALY,
                alert: ALERT,
            },
            Box::new(Bundled),
        );
        let mut out = Collect::default();
        let mut rng = crate::sim::generator::Rng::new(7);
        let t0 = 1_767_225_600_000i64;
        for i in 0..400i64 {
            let mut v = 20.0 + rng.normal() * 0.1;
            if i == 300 || i == 310 || i == 390 {
                v += 50.0;
            }
            let b = telemetry("d", "temperature", t0 + i * 10_000, v, i);
            d.process(&input(i, t0 + i * 10_000, &b), &mut out).unwrap();
        }
        let anomalies: Vec<Anomaly> = out.decoded(PORT_ANOMALIES);
        let alerts: Vec<Alert> = out.decoded(PORT_ALERTS);
        for spike in [300, 310, 390] {
            assert!(
                anomalies
                    .iter()
                    .any(|a| a.event_time == t0 + spike * 10_000),
                "spike {spike} missed: {anomalies:?}"
            );
        }
        // 300 alerts; 310 is 100s later (suppressed); 390 is 900s after 300: alerts again.
        let alerted: Vec<i64> = alerts
            .iter()
            .map(|a| (a.event_time - t0) / 10_000)
            .collect();
        assert!(
            alerted.contains(&300) && alerted.contains(&390) && !alerted.contains(&310),
            "{alerted:?}"
        );
        let second = alerts
            .iter()
            .find(|a| a.event_time == t0 + 3_900_000)
            .unwrap();
        assert!(second.suppressed_since_last >= 1);
    }
}
