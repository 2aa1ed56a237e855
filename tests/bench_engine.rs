//! `sluice bench engine` keeps running: a tiny run prints every scenario's rate, breakdown
//! and state lines, and the targets. No timing is checked (the machine is shared).

use std::process::Command;

#[test]
fn bench_engine_runs_every_scenario() {
    // 10 devices: 200 s of event time, so tumbling and hopping windows close.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bench", "engine", "--records", "2000", "--devices", "10"])
        .args(["--rounds", "1", "--commit-every", "500"])
        .output()
        .expect("sluice starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sluice bench engine failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str, has: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains(has))
            .unwrap_or_else(|| panic!("no line `{prefix}...{has}...` in:\n{stdout}"))
            .to_string()
    };
    assert!(stdout.starts_with("# sluice bench engine: 2,000 records (10 devices"));
    let mut join_outputs = Vec::new();
    for s in [
        "decode_only",
        "tumbling",
        "hopping",
        "hopping_sketches",
        "join",
        "join_rocksdb_uncached",
        "join_rocksdb",
    ] {
        let rate = line(&format!("{s}: "), " rec/s (median of 1;");
        assert!(rate.contains(" ns/record, "), "{rate}");
        if s.starts_with("join") {
            join_outputs.push(
                rate.split(" outputs ")
                    .next()
                    .unwrap()
                    .rsplit(", ")
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        // Every reading is in order: nothing is late, nothing is a dead letter.
        assert!(rate.contains(", 0 dead letters, "), "{rate}");
        line(&format!("{s}: breakdown "), " decode ");
        line(&format!("{s}: of decode, resolving "), " ns/record ");
        let state = line(&format!("{s}: state: "), "peak RSS");
        if s == "decode_only" {
            assert!(rate.contains(" 2,000 outputs "), "{rate}");
            assert!(state.contains("no tables"), "{state}");
        } else {
            assert!(!rate.contains(" 0 outputs "), "windows closed: {rate}");
            assert!(state.contains(" B per open window encoded "), "{state}");
        }
    }
    // The table in memory, in RocksDB, and in RocksDB behind the cache: the same join.
    assert!(
        join_outputs.windows(2).all(|w| w[0] == w[1]) && join_outputs[0] != "0",
        "joined outputs of join, join_rocksdb_uncached, join_rocksdb: {join_outputs:?}"
    );
    line("target tumbling: ", "2,000,000 rec/s wanted");
    line("target hopping: ", "1,000,000 rec/s wanted");
}
