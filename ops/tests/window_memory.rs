//! Memory and changelog bytes per open window, for a typical set of aggregations.
//! `cargo test -p sluice-ops --test window_memory -- --nocapture` prints the figures (memory
//! as growth of the resident set over 20 000 windows: an estimate, allocator slack included).

use apache_avro::types::Value;
use sluice_ops::window::{Aggregates, Input, WindowOp, WindowSpec};

/// Resident memory of this process (Linux), in bytes; 0 elsewhere.
fn rss() -> isize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<isize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn bytes_per_open_window() {
    // Operators stay alive so the second does not reuse the first one's freed memory.
    let mut keep = Vec::new();
    for (label, aggs) in [
        (
            "count,sum,min,max,mean",
            "n: count\ntotal: sum(power_w)\nlo: min(power_w)\nhi: max(power_w)\navg: mean(power_w)\n",
        ),
        (
            "count,sum,min,max,mean,p95,count_distinct",
            "n: count\ntotal: sum(power_w)\nlo: min(power_w)\nhi: max(power_w)\navg: mean(power_w)\np95: p95(power_w)\nsensors: count_distinct(sensor)\n",
        ),
    ] {
        let spec: WindowSpec = serde_yaml::from_str("kind: tumbling\nsize: 1m\n").unwrap();
        let aggs: Aggregates = serde_yaml::from_str(aggs).unwrap();
        let mut w = WindowOp::new(&spec, &aggs.0).unwrap();
        let n_aggs = w.aggs().len();
        let devices = 20_000usize;
        let keys: Vec<Vec<u8>> = (0..devices).map(|d| format!("device-{d:04}").into_bytes()).collect();
        let powers: Vec<Value> = (0..500).map(|i| Value::Double(200.0 + f64::from(i))).collect();
        let sensors: Vec<Value> = (0..3).map(|i| Value::String(format!("sensor-{i}"))).collect();
        let mut out = Vec::new();
        // Drain once so the table's dirty set is empty again before measuring.
        let mut dirty = Vec::new();
        let before = rss();
        for s in 0..30i64 {
            for (d, key) in keys.iter().enumerate() {
                let p = &powers[(d * 7 + s as usize * 13) % powers.len()];
                let mut inputs = vec![Input::Val(p); n_aggs];
                if n_aggs == 7 {
                    inputs[6] = Input::Val(&sensors[d % 3]);
                }
                w.add(key, s * 1000, &inputs, &mut out).unwrap();
            }
        }
        for t in w.tables() {
            t.drain_dirty(&mut dirty);
        }
        let encoded: usize = dirty
            .iter()
            .filter(|(k, _)| k.len() > 8 && k[8] == 0)
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        drop(dirty);
        let live = rss() - before;
        assert_eq!(w.open_windows(), devices);
        println!(
            "{label}: {} bytes in memory, {} bytes encoded (key + value) per open window of 30 readings",
            live / devices as isize,
            encoded / devices
        );
        assert!(encoded / devices < 1024);
        keep.push(w);
    }
}
