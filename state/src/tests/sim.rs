//! A simulated broker and process running the production protocol (`crate::protocol`):
//! `SimIo` implements its I/O traits in memory and `SimEngine` its engines, both with crash
//! injection (`sim_io.rs`); a deterministic toy processor keeps its state in the same tables the
//! operators use, drops replayed upstream records with the production ids table and numbers
//! its outputs as the runtime does.

pub(crate) use super::sim_io::{fresh_engines, sim_engines, Disk, SimEngine, WIPES};
use super::sim_io::{Power, SimIo};
use crate::protocol::{self, next_output_seq, Restored, TaskCommit, TaskLog};
use crate::table::{AnyTable, CachedTable, Codec, Encode, OrderedTable};
use crate::{accept_id, ids_table, ChangelogRecord, IdsTable, MessageId, StateError};

/// The toy task's stores: the ids table, a count per key, a running sum per key.
pub(crate) const STORES: usize = 3;

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

/// An input record: key, value, and the upstream `sluice.id` (partition, sequence) it
/// carries; a replayed upstream record repeats an earlier one whole.
pub(crate) type In = (u8, u32, i32, u64);

/// An output record: its `sluice.id` in text form and its payload.
pub(crate) type Out = (String, Vec<u8>);

#[derive(Default, Clone)]
pub(crate) struct Broker {
    pub(crate) input: Vec<In>,
    /// One changelog partition per store; a record's offset is its index.
    pub(crate) changelogs: Vec<Vec<ChangelogRecord>>,
    /// The output topic as a plain consumer reads it.
    pub(crate) output: Vec<Out>,
    /// Outputs sent and not yet acknowledged (the producer's queue).
    pub(crate) queue: Vec<Out>,
}

impl Broker {
    pub(crate) fn new(input: Vec<In>) -> Self {
        Broker {
            input,
            changelogs: vec![Vec::new(); STORES],
            output: Vec::new(),
            queue: Vec::new(),
        }
    }
}

/// Where a commit or a restore stops when the process "crashes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    None,
    /// The flush delivers the outputs, not the changelog records.
    AfterOutputs,
    /// The flush delivers outputs and changelog records, then the process dies.
    AfterRecords,
    /// Marker acked in store 0 only.
    MidMarkers,
    /// Every marker acked; the offset commit (step 5) never happens.
    AfterMarkers,
    /// Engine of store 0 written, the others not.
    MidEngine,
    AfterEngine,
    RestoreAfterFence,
    /// The first write after the fences (repairs, or the base markers) reaches store 0 only.
    RestoreMidRepair,
    /// Base markers acked, no checkpoint written.
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

/// A count or a sum.
struct U64(u64);

impl Encode for U64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
}

impl Codec for U64 {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        let a: [u8; 8] = b
            .try_into()
            .map_err(|_| StateError::decode("u64", "expected 8 bytes"))?;
        Ok(U64(u64::from_le_bytes(a)))
    }
}

pub(crate) struct Task {
    ids: IdsTable,
    /// Few entries kept in memory, so misses read the engine.
    counts: CachedTable<U64>,
    sums: OrderedTable<U64>,
    pub(crate) log: TaskLog,
    /// Next input offset.
    pub(crate) input_pos: usize,
    /// Last output sequence used.
    pub(crate) output_seq: u64,
    disks: Vec<Disk>,
    /// The power of the process running the task (its restore's).
    power: Power,
    id_key: Vec<u8>,
}

impl Task {
    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.ids, &mut self.counts, &mut self.sums]
    }

    /// The commit the task's state is at.
    pub(crate) fn commit_seq(&self) -> u64 {
        self.log.next_commit_seq() - 1
    }

    /// The toy processor over the next `n` input records: replayed upstream ids are dropped;
    /// a count per key and a running sum per key that a value divisible by 5 deletes; one
    /// output per record with both, numbered as the runtime numbers outputs.
    pub(crate) fn process(&mut self, broker: &mut Broker, n: usize) {
        let end = (self.input_pos + n).min(broker.input.len());
        for &(k, v, up_partition, up_seq) in &broker.input[self.input_pos..end] {
            let up = MessageId {
                stage: "up",
                partition: up_partition,
                seq: up_seq,
            };
            if !accept_id(&mut self.ids, &up, &mut self.id_key).unwrap() {
                continue;
            }
            let key = vec![b'k', k];
            let count = {
                let c = self.counts.get_mut(&key, || U64(0)).unwrap();
                c.0 += 1;
                c.0
            };
            let sum = if v % 5 == 0 {
                self.sums.remove(&key);
                0
            } else {
                let s = self.sums.entry(&key, || U64(0));
                s.0 += u64::from(v);
                s.0
            };
            let id = MessageId {
                stage: "toy",
                partition: 0,
                seq: next_output_seq(&mut self.output_seq),
            }
            .to_string();
            broker
                .queue
                .push((id, format!("{k}:{count}:{sum}").into_bytes()));
        }
        self.input_pos = end;
    }

    /// Commits what was processed through the production commit; returns false if the
    /// process crashed at `crash`.
    pub(crate) fn commit(&mut self, broker: &mut Broker, crash: Crash) -> bool {
        let mut io = SimIo::new(broker, crash, self.power.clone());
        let (input_end, output_seq) = (self.input_pos as i64, self.output_seq);
        let Task {
            ids,
            counts,
            sums,
            log,
            ..
        } = self;
        let tables: Vec<&mut dyn AnyTable> = vec![ids, counts, sums];
        let mut tasks = [TaskCommit {
            input: 0,
            partition: 0,
            input_end,
            output_seq,
            state: Some((log, tables)),
        }];
        match protocol::commit(&mut io, &mut tasks) {
            Ok(()) => crash != Crash::AfterEngine,
            Err(e) => {
                assert!(io.crashed, "commit failed without a crash: {e}");
                false
            }
        }
    }

    /// What survives a crash: the local engines.
    pub(crate) fn into_engines(self) -> Vec<Disk> {
        self.disks
    }

    pub(crate) fn snapshots(&self) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        self.disks
            .iter()
            .map(|d| d.lock().unwrap().snapshot().into_iter().collect())
            .collect()
    }
}

/// Outcome of a simulated restore: the task, or the local engines as a crash left them.
pub(crate) type Outcome = Result<Task, Vec<Disk>>;

/// The production restore over the simulated broker. `Ok(Err(disks))` when it crashed.
pub(crate) fn restore(
    broker: &mut Broker,
    disks: Vec<Disk>,
    nonce: u16,
    crash: Crash,
) -> Result<Outcome, StateError> {
    restore_with(broker, disks, nonce, crash, |_| {})
}

/// [`restore`] with a hook that runs right after the fences are written (zombie writes).
pub(crate) fn restore_with<'a>(
    broker: &'a mut Broker,
    disks: Vec<Disk>,
    nonce: u16,
    crash: Crash,
    after_fence: impl FnOnce(&mut Broker) + 'a,
) -> Result<Outcome, StateError> {
    let power = Power::on();
    let engines: Vec<SimEngine> = disks
        .iter()
        .map(|disk| SimEngine {
            disk: disk.clone(),
            power: power.clone(),
        })
        .collect();
    let mut io = SimIo::new(broker, crash, power.clone());
    io.after_fence = Some(Box::new(after_fence));
    let restored = protocol::restore(&mut io, 0, engines, nonce, &mut |_| {});
    let Restored {
        log,
        resume,
        engines,
        ..
    } = match restored {
        Ok(r) if !io.crashed => r,
        Ok(_) => return Ok(Err(disks)),
        Err(_) if io.crashed => return Ok(Err(disks)),
        Err(e) => return Err(e),
    };
    assert_eq!(crash, Crash::None, "the restore did not crash at {crash:?}");
    let mut task = Task {
        ids: ids_table(),
        counts: CachedTable::new(4),
        sums: OrderedTable::default(),
        log,
        input_pos: resume.input_offset.unwrap_or(0) as usize,
        output_seq: resume.output_seq,
        disks,
        power,
        id_key: Vec::new(),
    };
    for (t, e) in task.tables().into_iter().zip(engines) {
        t.attach(Box::new(e))?;
    }
    Ok(Ok(task))
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

/// The outputs a downstream consumer accepts after de-duplication with the production ids
/// table, in order.
pub(crate) fn deduplicated(output: &[Out]) -> Vec<Out> {
    let mut marks = ids_table();
    let mut key = Vec::new();
    output
        .iter()
        .filter(|(id, _)| accept_id(&mut marks, &MessageId::parse(id).unwrap(), &mut key).unwrap())
        .cloned()
        .collect()
}

/// What a plain consumer may see after crashes: repeats, but every copy of an id identical
/// to its first, and the ids, as a set, exactly `1..=n` (a restore that resumed numbering
/// past its commit point leaves a gap; one that resumed before it gives an id two payloads).
pub(crate) fn check_plain_output(output: &[Out]) {
    let mut first: std::collections::BTreeMap<u64, &[u8]> = std::collections::BTreeMap::new();
    for (id, payload) in output {
        let seq = MessageId::parse(id).unwrap().seq;
        let f = first.entry(seq).or_insert(payload);
        assert_eq!(
            *f,
            &payload[..],
            "id {id} repeated with a different payload"
        );
    }
    for (want, &got) in (1..).zip(first.keys()) {
        assert_eq!(got, want, "output ids skip from {} to {got}", want - 1);
    }
}

/// Input with upstream ids from two upstream partitions; now and then the last one to three
/// records again, as an upstream replay delivers them.
pub(crate) fn toy_input(seed: u64, n: usize) -> Vec<In> {
    let mut rng = Rng(seed);
    let mut seqs = [0u64; 2];
    let mut fresh: Vec<In> = Vec::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if fresh.len() >= 3 && rng.below(10) == 0 {
            let back = 1 + rng.below(3) as usize;
            out.extend_from_slice(&fresh[fresh.len() - back..]);
            continue;
        }
        let up = rng.below(2) as usize;
        seqs[up] += 1;
        let rec = (
            rng.below(12) as u8,
            rng.below(40) as u32,
            up as i32,
            seqs[up],
        );
        fresh.push(rec);
        out.push(rec);
    }
    out.truncate(n);
    out
}

/// A run without crashes: the reference every crashing run must match.
pub(crate) fn clean_run(input: Vec<In>, batch: usize) -> (Broker, Task) {
    let mut broker = Broker::new(input);
    let mut task = restore(&mut broker, fresh_engines(), 1, Crash::None)
        .unwrap()
        .unwrap();
    while task.input_pos < broker.input.len() {
        task.process(&mut broker, batch);
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
    rng: &mut Rng,
    crash_one_in: u64,
    mut after_commit: impl FnMut(&Broker, &mut Rng),
) -> bool {
    while task.input_pos < broker.input.len() {
        task.process(broker, 1 + rng.below(25) as usize);
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
