//! Reads every output of a test topology back from where it landed and compares it with
//! what the simulated input determines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sluice::sim::expect::{same_aggregate, Expected};
use sluice::sim::generator::AnomalyKind;
use sluice::sim::SimConfig;
use sluice_schemas::codec::Decoder;
use sluice_schemas::records::{Aggregate, Anomaly, Telemetry};

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

    // Dead letters: every bad record with its reason, nothing else.
    let dlq = read_topic(&brokers, &topo.topic("telemetry.dlq"));
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

    // Anomalies: every injected spike and level shift reported within five readings.
    let (anomaly_reads, _) = read_deduplicated(&brokers, &topo.topic("iot.anomalies"));
    let anomalies: Vec<Anomaly> = decode_all(&anomaly_reads);
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
