//! Reads every output of a test topology back from where it landed and compares it with
//! what the simulated input determines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sluice::sim::expect::{expected_detections, same_aggregate, DetectRules, Expected};
use sluice::sim::generator::AnomalyKind;
use sluice::sim::SimConfig;
use sluice_schemas::codec::Decoder;
use sluice_schemas::records::{Aggregate, Alert, Anomaly, Telemetry};
use sluice_topology::StageSpec;

use super::*;

fn decode_all<T: sluice_schemas::codec::AvroRecord + Clone>(reads: &[Read]) -> Vec<T> {
    let client = sluice_schemas::client::RegistryClient::new(&env("SLUICE_REGISTRY_URL"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut dec: Decoder<T> = Decoder::new();
    reads
        .iter()
        .map(|r| {
            let bytes = r.value.as_deref().expect("value");
            let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
            if !dec.knows(id) {
                let json = rt.block_on(client.schema_by_id(id)).expect("schema by id");
                dec.add_writer_schema_json(id, &json).unwrap();
            }
            let mut out = T::default();
            dec.decode(bytes, &mut out).expect("outputs decode");
            out
        })
        .collect()
}

/// Every check of the reference topology's outputs. `alive` is asked while waiting, so a
/// pipeline that died fails fast with its log.
pub fn check_outputs(
    topo: &TestTopology,
    cfg: &SimConfig,
    exp: &Expected,
    alive: &mut dyn FnMut() -> Result<(), String>,
) {
    let brokers = env("SLUICE_BROKERS");
    // Aggregates: every expected window exactly once (after id dedup), with its values.
    let aggregates_topic = topo.topic("iot.aggregates");
    let want = exp.aggregates.len();
    let (reads, dups) = eventually(
        "every window aggregate",
        1200,
        Duration::from_millis(500),
        || {
            if let Err(e) = alive() {
                panic!("{e}");
            }
            let (r, d) = read_deduplicated(&brokers, &aggregates_topic);
            (r.len() >= want).then_some((r, d))
        },
    );
    let got: Vec<Aggregate> = decode_all(&reads);
    assert_eq!(
        got.len(),
        want,
        "unexpected extra aggregates ({dups} duplicate ids were dropped)"
    );
    let mut seen = HashSet::new();
    for a in &got {
        let key = (
            a.device_id.clone(),
            a.metric.clone(),
            a.window_ms,
            a.window_start,
        );
        assert!(
            seen.insert(key.clone()),
            "window {key:?} emitted twice with different ids"
        );
        let e = exp
            .aggregates
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected window {key:?}"));
        assert!(
            same_aggregate(a, e),
            "window {key:?}: got {a:?}, want {e:?}"
        );
    }

    // Dead letters: every bad record with its reason, once after id dedup, nothing else.
    let (dlq, _) = read_deduplicated(&brokers, &topo.topic("telemetry.dlq"));
    let mut dead: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &dlq {
        let class = r
            .headers
            .get("sluice.dlq.error_class")
            .expect("class header")
            .clone();
        for h in [
            "sluice.dlq.error_message",
            "sluice.dlq.source_topic",
            "sluice.dlq.source_partition",
            "sluice.dlq.source_offset",
            "sluice.dlq.stage",
        ] {
            assert!(
                r.headers.contains_key(h),
                "dead letter without {h}: {:?}",
                r.headers
            );
        }
        let device = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
        *dead.entry((device, class)).or_default() += 1;
    }
    assert_eq!(dead, exp.dead_letters, "dead letters by (device, class)");

    // Anomalies and alerts: exactly those a fresh detector per series computes from the
    // valid input (score bit for bit), each once after id dedup, and every injected spike and
    // level shift among them within five readings.
    let rules = detect_rules(topo);
    let det = expected_detections(&exp.valid, &rules);
    let anomaly_key = |a: &Anomaly| (a.device_id.clone(), a.metric.clone(), a.event_time);
    let want_anomalies: BTreeMap<_, &Anomaly> =
        det.anomalies.iter().map(|a| (anomaly_key(a), a)).collect();
    assert_eq!(want_anomalies.len(), det.anomalies.len());
    let anomalies_topic = topo.topic("iot.anomalies");
    let anomaly_reads = eventually(
        "every expected anomaly",
        240,
        Duration::from_millis(500),
        || {
            if let Err(e) = alive() {
                panic!("{e}");
            }
            let (r, _) = read_deduplicated(&brokers, &anomalies_topic);
            (r.len() >= want_anomalies.len()).then_some(r)
        },
    );
    let anomalies: Vec<Anomaly> = decode_all(&anomaly_reads);
    let mut got_anomalies = BTreeMap::new();
    for a in &anomalies {
        assert!(
            got_anomalies.insert(anomaly_key(a), a).is_none(),
            "anomaly {:?} emitted twice with different ids",
            anomaly_key(a)
        );
    }
    for (k, want) in &want_anomalies {
        let got = got_anomalies
            .get(k)
            .unwrap_or_else(|| panic!("anomaly {k:?} missing (want {want:?})"));
        assert_eq!(*got, *want, "anomaly {k:?}");
    }
    assert_eq!(
        got_anomalies.len(),
        want_anomalies.len(),
        "unexpected extra anomalies"
    );
    let step = cfg.step_ms;
    for inj in exp
        .injected
        .iter()
        .filter(|i| matches!(i.kind, AnomalyKind::Spike | AnomalyKind::LevelShift))
    {
        let found = anomalies.iter().any(|a| {
            a.device_id == inj.device_id
                && a.metric == inj.metric
                && a.event_time >= inj.start
                && a.event_time <= inj.start + 5 * step
        });
        assert!(
            found,
            "injected {:?} on {} {} at {} was not reported",
            inj.kind, inj.device_id, inj.metric, inj.start
        );
    }
    let (alert_reads, _) = read_deduplicated(&brokers, &topo.topic("iot.alerts"));
    let mut alerts: Vec<Alert> = decode_all(&alert_reads);
    let alert_key = |a: &Alert| (a.device_id.clone(), a.event_time, a.metric.clone());
    alerts.sort_by_key(alert_key);
    let mut want_alerts = det.alerts.clone();
    want_alerts.sort_by_key(alert_key);
    assert_eq!(alerts, want_alerts, "alerts after suppression");

    // TSDB: one sample per closed window and field, equal to the topic's values.
    let prefix = &cfg.device_prefix;
    let series = eventually(
        "the TSDB to hold every aggregate",
        240,
        Duration::from_millis(500),
        || {
            let s = tsdb_export(&format!(
                "{{__name__=\"aggregates_count\",device_id=~\"{prefix}.*\"}}"
            ));
            let n: usize = s.iter().map(|(_, v, _)| v.len()).sum();
            (n >= want).then_some(s)
        },
    );
    let mut tsdb_counts = HashMap::new();
    for (labels, values, ts) in &series {
        for (v, t) in values.iter().zip(ts) {
            let w = if labels["window"] == "1m" {
                60_000
            } else {
                300_000
            };
            let key = (labels["device_id"].clone(), labels["metric"].clone(), w, *t);
            assert!(
                tsdb_counts.insert(key.clone(), *v).is_none(),
                "TSDB holds {key:?} twice"
            );
        }
    }
    assert_eq!(tsdb_counts.len(), want, "TSDB aggregate rows");
    for (key, count) in &tsdb_counts {
        let e = exp
            .aggregates
            .get(key)
            .unwrap_or_else(|| panic!("TSDB has unexpected window {key:?}"));
        assert_eq!(*count, e.count as f64, "TSDB count of {key:?}");
    }

    // TSDB: one anomaly row per expected anomaly, with its score.
    let anomaly_series = eventually(
        "the TSDB to hold every anomaly",
        240,
        Duration::from_millis(500),
        || {
            let s = tsdb_export(&format!(
                "{{__name__=\"anomalies_score\",device_id=~\"{prefix}.*\"}}"
            ));
            let n: usize = s.iter().map(|(_, v, _)| v.len()).sum();
            (n >= want_anomalies.len()).then_some(s)
        },
    );
    let mut tsdb_anomalies = HashMap::new();
    for (labels, values, ts) in &anomaly_series {
        for (v, t) in values.iter().zip(ts) {
            let key = (labels["device_id"].clone(), labels["metric"].clone(), *t);
            assert!(
                tsdb_anomalies.insert(key.clone(), *v).is_none(),
                "TSDB holds anomaly {key:?} twice"
            );
        }
    }
    assert_eq!(
        tsdb_anomalies.len(),
        want_anomalies.len(),
        "TSDB anomaly rows"
    );
    for (key, score) in &tsdb_anomalies {
        let want = want_anomalies
            .get(key)
            .unwrap_or_else(|| panic!("TSDB has unexpected anomaly {key:?}"));
        assert!(
            (score - want.score).abs() <= 1e-9,
            "TSDB score of {key:?}: {score} vs {}",
            want.score
        );
    }

    // S3: every valid reading archived exactly once, as Parquet, with its values.
    let want_rows: HashMap<(String, i64), &Telemetry> = exp
        .valid
        .iter()
        .map(|t| ((t.device_id.clone(), t.seq), t))
        .collect();
    let rows = eventually(
        "the archive to hold every valid reading",
        240,
        Duration::from_millis(500),
        || {
            let rows = read_archive(&topo.archive_prefix());
            (rows.len() >= want_rows.len()).then_some(rows)
        },
    );
    let mut archived = HashSet::new();
    for r in &rows {
        let key = (r.device_id.clone(), r.seq);
        assert!(archived.insert(key.clone()), "archive holds {key:?} twice");
        let e = want_rows
            .get(&key)
            .unwrap_or_else(|| panic!("archive has unexpected row {key:?}"));
        assert_eq!(
            (r.event_time, r.value, &r.metric),
            (e.event_time, e.value, &e.metric),
            "archived {key:?}"
        );
    }
    assert_eq!(archived.len(), want_rows.len());
    // The raw topic's valid records went to telemetry.valid too, each once.
    let (valid_reads, _) = read_deduplicated(&brokers, &topo.topic("telemetry.valid"));
    assert_eq!(
        valid_reads.len(),
        exp.valid.len(),
        "telemetry.valid records"
    );
}

/// Every row under `prefix` in the stack's bucket.
fn read_archive(prefix: &str) -> Vec<Telemetry> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let store = s3();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let objects: Vec<_> = store
            .list(Some(&object_store::path::Path::from(prefix)))
            .try_collect()
            .await
            .expect("S3 list");
        let mut rows = Vec::new();
        for o in objects {
            if !o.location.as_ref().ends_with(".parquet") {
                continue;
            }
            let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            for r in sluice_connectors::s3::decode_parquet(bytes).expect("valid parquet") {
                rows.push(Telemetry {
                    device_id: r.device_id,
                    metric: r.metric,
                    event_time: r.event_time,
                    value: r.value,
                    seq: r.seq,
                    quality: r.quality,
                });
            }
        }
        rows
    })
}

/// The detect stage's settings, read from the test's topology file.
pub fn detect_rules(topo: &TestTopology) -> DetectRules {
    let loaded = sluice_topology::load(&topo.path).expect("test topology loads");
    for stage in &loaded.topology.stages {
        if let StageSpec::Detect(d) = &stage.spec {
            return DetectRules {
                detector: serde_yaml::from_value(d.detector.clone()).expect("detector spec"),
                threshold: d.threshold,
                suppression_ms: d.alert_suppression.as_millis() as i64,
            };
        }
    }
    panic!("the test topology has no detect stage");
}
