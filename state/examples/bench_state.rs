//! Benchmarks of the state layer that matter for operations:
//! - restore rate: changelog records per second from decoded records into RocksDB, for a
//!   store of `--keys` keys (default 1,000,000), through the real `Restorer`;
//! - cached-table write throughput: updates per second through a `CachedTable` over a
//!   `RocksStore`, including each commit's drain of dirty entries and RocksDB batch.
//!
//! Run: `cargo run --release -p sluice-state --example bench_state -- [keys] [value_bytes]`
//! Prints one line per figure and the peak RSS (VmHWM) of the process.

use std::time::Instant;

use sluice_state::table::{AnyTable, CachedTable, Codec, Encode};
use sluice_state::{
    ChangelogRecord, Checkpoint, KvStore, Marker, MarkerKind, Restorer, RocksConfig, RocksEnv,
    RocksStore, StateError, Tag, WriteBatch,
};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A changelog as a consumer would see it after compaction: one record per key, commit
/// markers every 10,000 records, then the fence of the restoring epoch.
fn changelog(keys: usize, value_bytes: usize, fence_epoch: u64) -> Vec<ChangelogRecord> {
    let mut log = Vec::with_capacity(keys + keys / 10_000 + 2);
    let per_commit = 10_000;
    for i in 0..keys {
        let commit = (i / per_commit) as u64 + 1;
        let tag = Tag {
            epoch: 1 << 16,
            commit_seq: commit,
            input_end: (commit * per_commit as u64) as i64,
        };
        let mut value = vec![0u8; value_bytes];
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        log.push(ChangelogRecord::data(
            format!("device-{i:010}").into_bytes(),
            Some(value),
            &tag,
        ));
        if (i + 1) % per_commit == 0 || i + 1 == keys {
            log.push(ChangelogRecord::marker(&Marker {
                kind: MarkerKind::Commit,
                commit_seq: commit,
                epoch: 1 << 16,
                input_offset: (i + 1) as i64,
                output_seq: (i + 1) as u64,
                records: (i % per_commit + 1) as u32,
                rebuild: sluice_state::Rebuild::NONE,
            }));
        }
    }
    log.push(ChangelogRecord::marker(&Marker::fence(fence_epoch)));
    log
}

fn bench_restore(keys: usize, value_bytes: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = RocksEnv::new(&RocksConfig::default());
    let mut store = RocksStore::open(&env, dir.path().join("store"), "bench").expect("open");
    let fence = 2 << 16;
    let log = changelog(keys, value_bytes, fence);
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let mut r = Restorer::new(1);
    r.set_total(0, log.len() as u64);
    r.expect_fence(fence);
    for (offset, rec) in log.iter().enumerate() {
        let entry = rec.entry(0, offset as i64).expect("decode");
        r.feed(0, offset as i64, entry).expect("feed");
        if r.ready_len(0) >= 16_384 {
            store.write(r.take_ready(0), None).expect("write");
        }
    }
    store.write(r.take_ready(0), None).expect("write");
    let plan = r.finish().expect("finish");
    store
        .write(plan.stores[0].apply.clone(), None)
        .expect("write");
    store
        .write(
            WriteBatch::new(),
            Some(&Checkpoint {
                marker_offset: log.len() as i64,
                commit_seq: plan.commit_seq,
                epoch: fence,
            }),
        )
        .expect("cp");
    store.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(plan.stores[0].applied_records as usize, keys);
    let probe = format!("device-{:010}", keys / 2);
    assert!(store.get(probe.as_bytes()).expect("get").is_some());
    println!(
        "restore: {keys} keys x {value_bytes} B values into RocksDB in {secs:.2} s = {:.0} records/s (incl. decode + flush); peak RSS {:.0} MiB (changelog held in memory before start: {rss_before:.0} MiB)",
        log.len() as f64 / secs,
        peak_rss_mib()
    );
}

/// A value as the bench keeps it: bytes.
struct Blob(Vec<u8>);

impl Encode for Blob {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Codec for Blob {
    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        Ok(Blob(bytes.to_vec()))
    }
}

fn bench_cached_writes(puts: usize, distinct: usize, value_bytes: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = RocksEnv::new(&RocksConfig::default());
    let store = RocksStore::open(&env, dir.path().join("store"), "bench").expect("open");
    let mut t = CachedTable::<Blob>::new(10_000);
    t.attach(Box::new(store)).expect("attach");
    let per_commit = 10_000;
    let mut changelog_records = 0usize;
    let mut commits = 0usize;
    let mut dirty = Vec::new();
    let started = Instant::now();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..puts {
        // xorshift: a uniform key spread, the worst case for cache hits.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("device-{:010}", x % distinct as u64);
        let value = t
            .get_mut(key.as_bytes(), || Blob(vec![0u8; value_bytes]))
            .expect("get");
        value.0[0] = value.0[0].wrapping_add(1);
        if (i + 1) % per_commit == 0 {
            // What a commit does with a table: drain the dirty entries (the changelog
            // records), then one engine batch with the checkpoint.
            let seq = (i / per_commit) as u64 + 1;
            t.drain_dirty(&mut dirty);
            changelog_records += dirty.len();
            let mut batch = WriteBatch::with_capacity(dirty.len());
            for (k, v) in dirty.drain(..) {
                batch.push(k, v);
            }
            let engine = t.engine_mut().expect("attached");
            engine
                .write(
                    batch,
                    Some(&Checkpoint {
                        marker_offset: i as i64,
                        commit_seq: seq,
                        epoch: 1,
                    }),
                )
                .expect("commit");
            commits += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "cached table writes: {puts} get_mut over {distinct} keys in {secs:.2} s = {:.0} updates/s; {commits} commits, {changelog_records} changelog records ({:.1} updates per record); peak RSS {:.0} MiB",
        puts as f64 / secs,
        puts as f64 / changelog_records.max(1) as f64,
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let keys = args.first().copied().unwrap_or(1_000_000);
    let value_bytes = args.get(1).copied().unwrap_or(64).max(8);
    bench_cached_writes(keys, 10_000, value_bytes);
    bench_cached_writes(keys, keys / 2, value_bytes);
    bench_restore(keys, value_bytes);
}
