//! A simulated broker and task running the commit protocol of docs/EXACTLY_ONCE.md, with a
//! deterministic toy processor and crash injection at every step.

pub(crate) use super::sim_restore::{restore, restore_with};
use crate::{
    CacheConfig, CachedStore, ChangelogRecord, Checkpoint, HighWaterMarks, Marker, MarkerKind,
    MemStore, MessageId, Tag,
};

pub(crate) const STORES: usize = 2;

/// Deterministic PRNG (splitmix64), so every failure reproduces from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default, Clone)]
pub(crate) struct Broker {
    pub(crate) input: Vec<(u8, u32)>,
    /// One changelog partition per store; a record's offset is its index.
    pub(crate) changelogs: Vec<Vec<ChangelogRecord>>,
    pub(crate) output: Vec<(String, Vec<u8>)>,
}

impl Broker {
    pub(crate) fn new(input: Vec<(u8, u32)>) -> Self {
        Broker {
            input,
            changelogs: vec![Vec::new(); STORES],
            output: Vec::new(),
        }
    }
}

/// Where a commit or a restore stops when the process "crashes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    None,
    AfterOutputs,
    AfterRecords,
    /// Marker acked in store 0 only.
    MidMarkers,
    AfterMarkers,
    /// Engine of store 0 written, store 1 not.
    MidEngine,
    AfterEngine,
    RestoreAfterFence,
    RestoreMidRepair,
    RestoreBeforeCheckpoint,
}

pub(crate) const COMMIT_CRASHES: [Crash; 6] = [
    Crash::AfterOutputs,
    Crash::AfterRecords,
    Crash::MidMarkers,
    Crash::AfterMarkers,
    Crash::MidEngine,
    Crash::AfterEngine,
];
pub(crate) const RESTORE_CRASHES: [Crash; 3] = [
    Crash::RestoreAfterFence,
    Crash::RestoreMidRepair,
    Crash::RestoreBeforeCheckpoint,
];

pub(crate) struct Task {
    pub(crate) stores: Vec<CachedStore<MemStore>>,
    pub(crate) epoch: u64,
    pub(crate) commit_seq: u64,
    pub(crate) input_pos: usize,
    pub(crate) output_seq: u64,
    pub(crate) pending_outputs: Vec<(String, Vec<u8>)>,
}

fn read_u64(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

impl Task {
    /// The toy processor: a count per key (store 0) and a running sum per key that a value
    /// divisible by 5 deletes (store 1); one output per input with both.
    pub(crate) fn process(&mut self, input: &[(u8, u32)], n: usize) {
        let end = (self.input_pos + n).min(input.len());
        for &(k, v) in &input[self.input_pos..end] {
            let key = vec![b'k', k];
            let count = read_u64(self.stores[0].get(&key).unwrap()) + 1;
            self.stores[0].put(key.clone(), count.to_le_bytes().to_vec());
            let sum = if v % 5 == 0 {
                self.stores[1].delete(key.clone());
                0
            } else {
                let s = read_u64(self.stores[1].get(&key).unwrap()) + u64::from(v);
                self.stores[1].put(key.clone(), s.to_le_bytes().to_vec());
                s
            };
            let id = MessageId {
                stage: "toy",
                partition: 0,
                seq: self.output_seq,
            }
            .to_string();
            self.pending_outputs
                .push((id, format!("{k}:{count}:{sum}").into_bytes()));
            self.output_seq += 1;
        }
        self.input_pos = end;
    }

    /// Runs steps 1-4 of a commit; returns false if it crashed at `crash`.
    pub(crate) fn commit(&mut self, broker: &mut Broker, crash: Crash) -> bool {
        broker.output.append(&mut self.pending_outputs);
        if crash == Crash::AfterOutputs {
            return false;
        }
        let c = self.commit_seq + 1;
        let tag = Tag {
            epoch: self.epoch,
            commit_seq: c,
            input_end: self.input_pos as i64,
        };
        let mut counts = [0u32; STORES];
        for (i, s) in self.stores.iter().enumerate() {
            let recs = s.dirty_records(&tag);
            counts[i] = recs.len() as u32;
            broker.changelogs[i].extend(recs);
        }
        if crash == Crash::AfterRecords {
            return false;
        }
        let mut offsets = [0i64; STORES];
        for i in 0..STORES {
            let m = Marker {
                kind: MarkerKind::Commit,
                commit_seq: c,
                epoch: self.epoch,
                input_offset: self.input_pos as i64,
                output_seq: self.output_seq,
                records: counts[i],
            };
            offsets[i] = broker.changelogs[i].len() as i64;
            broker.changelogs[i].push(ChangelogRecord::marker(&m));
            if i == 0 && crash == Crash::MidMarkers {
                return false;
            }
        }
        if crash == Crash::AfterMarkers {
            return false;
        }
        for (i, s) in self.stores.iter_mut().enumerate() {
            s.commit(&Checkpoint {
                marker_offset: offsets[i],
                commit_seq: c,
                epoch: self.epoch,
            })
            .unwrap();
            if i == 0 && crash == Crash::MidEngine {
                return false;
            }
        }
        self.commit_seq = c;
        crash != Crash::AfterEngine
    }

    /// What survives a crash: the local engines, without the cache.
    pub(crate) fn into_engines(self) -> Vec<MemStore> {
        self.stores
            .into_iter()
            .map(CachedStore::into_engine)
            .collect()
    }

    pub(crate) fn snapshots(&self) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        self.stores
            .iter()
            .map(|s| s.engine().snapshot().into_iter().collect())
            .collect()
    }
}

pub(crate) fn fresh_engines() -> Vec<MemStore> {
    (0..STORES).map(|_| MemStore::new()).collect()
}

/// Restores a task from the broker alone (a new machine) and returns its store contents.
pub(crate) fn restored_snapshots(broker: &Broker) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut b = broker.clone();
    restore(&mut b, fresh_engines(), 7, Crash::None)
        .unwrap()
        .expect("no crash")
        .snapshots()
}

/// Kafka log compaction taken to the limit: the last record of every key survives, in order.
pub(crate) fn compact(log: &[ChangelogRecord]) -> Vec<ChangelogRecord> {
    let mut last = std::collections::HashMap::new();
    for (i, r) in log.iter().enumerate() {
        last.insert(r.key.clone(), i);
    }
    log.iter()
        .enumerate()
        .filter(|(i, r)| last[&r.key] == *i)
        .map(|(_, r)| r.clone())
        .collect()
}

/// The outputs a downstream consumer accepts after de-duplication, in order.
pub(crate) fn deduplicated(output: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut marks = HighWaterMarks::new(CachedStore::new(MemStore::new(), CacheConfig::default()));
    output
        .iter()
        .filter(|(id, _)| marks.accept(&MessageId::parse(id).unwrap()).unwrap())
        .cloned()
        .collect()
}

pub(crate) fn toy_input(seed: u64, n: usize) -> Vec<(u8, u32)> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| (rng.below(12) as u8, rng.below(40) as u32))
        .collect()
}

/// A run without crashes: the reference every crashing run must match.
pub(crate) fn clean_run(input: Vec<(u8, u32)>, batch: usize) -> (Broker, Task) {
    let mut broker = Broker::new(input);
    let mut task = restore(&mut broker, fresh_engines(), 1, Crash::None)
        .unwrap()
        .unwrap();
    while task.input_pos < broker.input.len() {
        let input = std::mem::take(&mut broker.input);
        task.process(&input, batch);
        broker.input = input;
        assert!(task.commit(&mut broker, Crash::None));
    }
    (broker, task)
}

/// Processes the rest of the input in random batches of 1-25, crashing each commit with
/// probability 1/`crash_one_in` at a random step; `after_commit` runs after each commit that
/// went through. Returns false when a commit crashed.
pub(crate) fn run_until_crash(
    task: &mut Task,
    broker: &mut Broker,
    input: &[(u8, u32)],
    rng: &mut Rng,
    crash_one_in: u64,
    mut after_commit: impl FnMut(&Broker, &mut Rng),
) -> bool {
    while task.input_pos < input.len() {
        task.process(input, 1 + rng.below(25) as usize);
        let crash = if rng.below(crash_one_in) == 0 {
            COMMIT_CRASHES[rng.below(6) as usize]
        } else {
            Crash::None
        };
        if !task.commit(broker, crash) {
            return false;
        }
        after_commit(broker, rng);
    }
    true
}
