//! The QuestDB sink against a real ILP server (VictoriaMetrics: it maps ILP
//! `table,tags field=..` to series `table_field{tags}`). It runs without server-side dedup, so
//! every row written shows up as a sample: a row written twice is two samples, and a test that
//! compares samples sees it (QuestDB's `DEDUP UPSERT KEYS`, which would hide it, is created
//! by `sluice tsdb init` and checked in `tests/setup_commands.rs`).
//!
//! Values are chosen with at most 12 significant digits: VictoriaMetrics stores samples
//! rounded to 12 (QuestDB keeps the full f64; the ILP text is checked bit-exact in the unit
//! tests of `questdb::encode`).

mod common;

use std::collections::BTreeMap;

use common::{poll, shared_tsdb, unique, PrivateVm, Series, Tsdb};
use sluice_connectors::questdb::{QuestDbConfig, QuestDbMetrics, QuestDbSink};
use sluice_schemas::records::{Aggregate, Anomaly};

const T0: i64 = 1_700_000_040_000;

fn aggregates(run: &str, n: usize) -> Vec<Aggregate> {
    (0..n)
        .map(|i| Aggregate {
            device_id: format!("{run}-dev-{}", i % 5),
            metric: if i % 2 == 0 {
                "temp".into()
            } else {
                "hum".into()
            },
            window_start: T0 + (i as i64 / 10) * 60_000,
            window_ms: if i % 3 == 0 { 300_000 } else { 60_000 },
            count: 10 + i as i64,
            min: -12.25 + i as f64,
            max: 40.125 + i as f64,
            mean: 21.5 + i as f64 / 8.0,
            stddev: 0.75 + i as f64 / 1024.0,
        })
        .collect()
}

fn anomalies(run: &str, n: usize) -> Vec<Anomaly> {
    (0..n)
        .map(|i| Anomaly {
            device_id: format!("{run}-dev-{}", i % 3),
            metric: "temp".into(),
            event_time: T0 + i as i64 * 1_000,
            value: 98.5 + i as f64,
            score: 4.0625 + i as f64 / 16.0,
            detector: "zscore".into(),
        })
        .collect()
}

/// (series name, sorted labels, ts) -> value, from the export.
fn samples(series: &[Series]) -> BTreeMap<(String, String, i64), Vec<f64>> {
    let mut out: BTreeMap<_, Vec<f64>> = BTreeMap::new();
    for s in series {
        for (ts, v) in s.timestamps.iter().zip(&s.values) {
            out.entry((s.name.clone(), s.labels.to_string(), *ts))
                .or_default()
                .push(*v);
        }
    }
    out
}

fn window(ms: i64) -> &'static str {
    if ms == 300_000 {
        "5m"
    } else {
        "1m"
    }
}

/// What the export must hold for these rows, one value per key.
fn expected(
    agg_table: &str,
    an_table: &str,
    aggs: &[Aggregate],
    ans: &[Anomaly],
) -> BTreeMap<(String, String, i64), Vec<f64>> {
    let mut out = BTreeMap::new();
    for a in aggs {
        let labels = serde_json::json!({"device_id": a.device_id, "metric": a.metric, "window": window(a.window_ms)}).to_string();
        for (field, v) in [
            ("count", a.count as f64),
            ("min", a.min),
            ("max", a.max),
            ("mean", a.mean),
            ("stddev", a.stddev),
        ] {
            out.insert(
                (
                    format!("{agg_table}_{field}"),
                    labels.clone(),
                    a.window_start,
                ),
                vec![v],
            );
        }
    }
    for a in ans {
        let labels = serde_json::json!({"detector": a.detector, "device_id": a.device_id, "metric": a.metric}).to_string();
        for (field, v) in [("value", a.value), ("score", a.score)] {
            out.insert(
                (format!("{an_table}_{field}"), labels.clone(), a.event_time),
                vec![v],
            );
        }
    }
    out
}

fn sink_for(addr: String, run: &str) -> (QuestDbSink, String, String) {
    let mut c = QuestDbConfig::new(addr);
    c.aggregates_table = format!("{run}_agg");
    c.anomalies_table = format!("{run}_anom");
    c.retry_initial = std::time::Duration::from_millis(50);
    c.retry_max = std::time::Duration::from_millis(500);
    let (a, b) = (c.aggregates_table.clone(), c.anomalies_table.clone());
    (
        QuestDbSink::new(c, QuestDbMetrics::unregistered()).unwrap(),
        a,
        b,
    )
}

async fn read_both(tsdb: &Tsdb, agg: &str, an: &str) -> BTreeMap<(String, String, i64), Vec<f64>> {
    let mut all = tsdb.export(agg).await;
    all.extend(tsdb.export(an).await);
    samples(&all)
}

/// Polls until the export equals `want` (TCP ILP is ingested asynchronously); returns the last read.
async fn read_until(
    tsdb: &Tsdb,
    agg: &str,
    an: &str,
    want: &BTreeMap<(String, String, i64), Vec<f64>>,
) -> BTreeMap<(String, String, i64), Vec<f64>> {
    let mut got = BTreeMap::new();
    for _ in 0..100 {
        got = read_both(tsdb, agg, an).await;
        if &got == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    got
}

#[tokio::test]
async fn rows_read_back_exactly() {
    let (addr, url) = shared_tsdb().await;
    let run = unique("qdb");
    let (mut sink, agg_t, an_t) = sink_for(addr, &run);
    let (aggs, ans) = (aggregates(&run, 40), anomalies(&run, 25));
    for a in &aggs {
        sink.push_aggregate(a).unwrap();
    }
    for a in &ans {
        sink.push_anomaly(a).unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), 65);
    assert_eq!(sink.metrics().rows_written.get(), 65);
    let want = expected(&agg_t, &an_t, &aggs, &ans);
    let got = read_until(&Tsdb { url }, &agg_t, &an_t, &want).await;
    assert_eq!(got, want);
}

#[tokio::test]
async fn the_same_batch_twice_shows_two_samples_per_row() {
    // A private server, so the outcome does not depend on how the shared one was started.
    let vm = PrivateVm::start().await;
    let run = unique("qdb");
    let (mut sink, agg_t, an_t) = sink_for(vm.ilp_http_conf(), &run);
    let (aggs, ans) = (aggregates(&run, 30), anomalies(&run, 10));
    for _ in 0..2 {
        for a in &aggs {
            sink.push_aggregate(a).unwrap();
        }
        for a in &ans {
            sink.push_anomaly(a).unwrap();
        }
        assert_eq!(sink.flush().await.unwrap(), 40);
    }
    // The TSDB keeps what it is sent: a repeated row is visible, which is what lets the
    // pipeline tests catch one.
    let want: BTreeMap<_, Vec<f64>> = expected(&agg_t, &an_t, &aggs, &ans)
        .into_iter()
        .map(|(k, v)| (k, [v.clone(), v].concat()))
        .collect();
    let tsdb = Tsdb {
        url: vm.query_url(),
    };
    let got = read_until(&tsdb, &agg_t, &an_t, &want).await;
    assert_eq!(got, want, "each row written twice must show as two samples");
}

#[tokio::test]
async fn an_outage_keeps_the_batch_and_loses_nothing() {
    let mut vm = PrivateVm::start().await;
    let tsdb = Tsdb {
        url: vm.query_url(),
    };
    let run = unique("qdb");
    let (mut sink, agg_t, an_t) = sink_for(vm.ilp_http_conf(), &run);
    let aggs = aggregates(&run, 60);
    let ans = anomalies(&run, 20);
    let (before, after) = aggs.split_at(20);

    for a in before {
        sink.push_aggregate(a).unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), 20);

    // SIGTERM: VictoriaMetrics persists what it acknowledged (the sink's job is the rows it
    // has not been able to deliver, not the server's own durability).
    vm.stop();
    for a in after {
        sink.push_aggregate(a).unwrap();
    }
    for a in &ans {
        sink.push_anomaly(a).unwrap();
    }
    let metrics = sink.metrics().clone();
    let flushing = tokio::spawn(async move {
        let rows = sink.flush().await;
        (sink, rows)
    });
    let saw_outage = poll(300, || async {
        metrics.retrying.get() == 1 && metrics.flush_errors.get() >= 2
    })
    .await;
    assert!(
        saw_outage,
        "the sink never reported the outage: errors={}",
        metrics.flush_errors.get()
    );
    assert_eq!(
        metrics.pending_rows.get(),
        60,
        "the batch must stay buffered while the TSDB is down"
    );

    vm.restart().await;
    let (sink, rows) = flushing.await.unwrap();
    assert_eq!(rows.unwrap(), 60);
    assert_eq!(sink.pending_rows(), 0);
    assert_eq!(metrics.retrying.get(), 0);
    assert_eq!(metrics.rows_written.get(), 80);

    let want = expected(&agg_t, &an_t, &aggs, &ans);
    assert_eq!(read_both(&tsdb, &agg_t, &an_t).await, want);
}
