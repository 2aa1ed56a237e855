//! Throughput of the window operator. Run in release:
//! `cargo test -p sluice-ops --release --test window_bench -- --ignored --nocapture`

use std::time::Instant;

use apache_avro::types::Value;
use sluice_ops::window::{Aggregates, Input, WindowOp, WindowSpec};

fn op(window: &str, aggs: &str) -> WindowOp {
    let spec: WindowSpec = serde_yaml::from_str(window).unwrap();
    let aggs: Aggregates = serde_yaml::from_str(aggs).unwrap();
    WindowOp::new(&spec, &aggs.0).unwrap()
}

/// 1M records over 1000 devices, 10 ms of event time apart (2.8 h in all), slightly out
/// of order; a commit (drain of the dirty entries, encoded) every 10 000 records.
fn run(name: &str, mut w: WindowOp) {
    const N: usize = 1_000_000;
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|d| format!("device-{d}").into_bytes())
        .collect();
    let vals: Vec<Value> = (0..97)
        .map(|i| Value::Double(100.0 + f64::from(i)))
        .collect();
    let n_aggs = w.aggs().len();
    let (mut out, mut dirty) = (Vec::new(), Vec::new());
    let (mut results, mut dirty_entries) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..N {
        let ts = (i as i64) * 10 - (i as i64 % 7) * 20;
        let v = &vals[i % vals.len()];
        let inputs = vec![Input::Val(v); n_aggs];
        w.add(&keys[i % keys.len()], ts, &inputs, &mut out).unwrap();
        results += out.len();
        out.clear();
        if i % 10_000 == 9_999 {
            for t in w.tables() {
                t.drain_dirty(&mut dirty);
            }
            dirty_entries += dirty.len();
            dirty.clear();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: {:.0} records/s ({N} records in {secs:.2} s, {results} results, {dirty_entries} changelog entries, {} windows open at the end)",
        N as f64 / secs,
        w.open_windows()
    );
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn window_throughput() {
    let aggs = "n: count\ntotal: sum(v)\navg: mean(v)\n";
    run(
        "tumbling 1m, count/sum/mean",
        op("kind: tumbling\nsize: 1m\ngrace: 1s\n", aggs),
    );
    run(
        "hopping 5m/1m (5 windows per record), count/sum/mean",
        op("kind: hopping\nsize: 5m\nadvance: 1m\ngrace: 1s\n", aggs),
    );
    run(
        "tumbling 1m, count/sum/min/max/mean/p95/count_distinct",
        op(
            "kind: tumbling\nsize: 1m\ngrace: 1s\n",
            "n: count\ntotal: sum(v)\nlo: min(v)\nhi: max(v)\navg: mean(v)\np95: p95(v)\nuniq: count_distinct(v)\n",
        ),
    );
    run(
        "session gap 5s, count/sum/mean",
        op("kind: session\ngap: 5s\ngrace: 1s\n", aggs),
    );
    run(
        "sliding 1m, count/sum/mean",
        op("kind: sliding\nsize: 1m\ngrace: 1s\n", aggs),
    );
}
