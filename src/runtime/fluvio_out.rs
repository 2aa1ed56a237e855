//! A stage's outputs on Fluvio, exactly once without headers (docs/FLUVIO.md, "Stages
//! writing Fluvio").
//!
//! Task `p` is the only writer of partition `p` of each Fluvio output. What it emits waits in
//! memory until the commit flushes it: one acknowledged request at a time, so after a failure
//! the partition holds a prefix of what was asked (`PartitionWriter`). The partition's end
//! after the flush goes into the task's [`POSITIONS_STORE`](sluice_topology::POSITIONS_STORE)
//! table and is committed with the marker, like any state.
//!
//! After a crash the task restores that end `E` and reads what the partition holds past it:
//! records of a flush whose commit was lost. Processing the same input again emits the same
//! records in the same order, so each one found there is skipped instead of written again,
//! until none is left. Something that does not match (another writer, e.g. a zombie instance
//! that flushed after this one restored) is logged and counted, then left in place, and the
//! task writes on after it: a copy rather than a loss.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use prometheus::IntCounter;
use sluice_connectors::fluvio::{FluvioClient, Landed, PartitionWriter};
use sluice_state::table::{AnyTable, Codec, Encode, OrderedTable};
use sluice_state::StateError;

use super::RuntimeError;
use crate::metrics::METRICS;

/// A crash for the tests: `SLUICE_CRASH_AFTER_FLUVIO_FLUSH=N` aborts the process right after
/// its `N`-th flush that wrote records, before the commit's markers, which is the one point
/// where a restored task finds its own records past the committed end (tests/fluvio.rs).
static CRASH_AFTER_FLUSH: LazyLock<Option<u64>> = LazyLock::new(|| {
    std::env::var("SLUICE_CRASH_AFTER_FLUVIO_FLUSH")
        .ok()
        .and_then(|v| v.parse().ok())
});
static FLUSHES: AtomicU64 = AtomicU64::new(0);

/// What a stage needs to write its Fluvio outputs.
#[derive(Clone)]
pub struct FluvioOutputs {
    pub client: Arc<FluvioClient>,
    pub rt: tokio::runtime::Handle,
    /// By output port: the topic of an output on Fluvio, `None` for one on Kafka.
    pub ports: Vec<Option<String>>,
}

/// The most records a restored task reads past its committed end (one commit's flush is
/// at most `max_batch` inputs' outputs).
const MAX_FOUND: i64 = 5_000_000;

/// A partition end in the positions table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End(pub i64);

impl Encode for End {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}

impl Codec for End {
    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let b: [u8; 8] = bytes.try_into().map_err(|_| StateError::Decode {
            what: "a Fluvio position",
            reason: format!("{} bytes, not 8", bytes.len()),
        })?;
        Ok(End(i64::from_be_bytes(b)))
    }
}

/// One Fluvio output of one task: where its records stand in the partition, without I/O.
#[derive(Debug, Default)]
pub(crate) struct Port {
    /// The offset after this task's last record in the partition (found or written).
    end: i64,
    /// Records the partition held past the restored end, not yet emitted again.
    found: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Emitted since the last flush, to be written.
    pending: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What became of an emitted record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Emitted {
    /// Queued for the next flush.
    Queued,
    /// Already in the partition (written before the crash): skipped.
    Found,
    /// The partition held `n` records past this task's end that are not what it emits now;
    /// they are left in place, and the record is queued after them.
    Conflict { n: usize },
}

/// Offsets a flush got that do not follow this task's end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unexpected {
    /// Another writer's `foreign` records came in between: the end follows what was written.
    Interleaved { expected: i64, foreign: i64 },
    /// Below the end: the partition is not the one the end was committed for (deleted and
    /// created again?). Nothing can be said of what it holds.
    Behind { expected: i64, got: i64 },
}

impl Port {
    /// After a restore: the committed end, and the records the partition holds past it.
    pub(crate) fn restored(end: i64, found: Vec<(Vec<u8>, Vec<u8>)>) -> Port {
        Port {
            end,
            found: found.into(),
            pending: Vec::new(),
        }
    }

    pub(crate) fn emit(&mut self, key: &[u8], value: &[u8]) -> Emitted {
        let mut out = Emitted::Queued;
        if let Some((k, v)) = self.found.front() {
            if k == key && v == value {
                self.found.pop_front();
                self.end += 1;
                return Emitted::Found;
            }
            let n = self.found.len();
            self.end += n as i64;
            self.found.clear();
            out = Emitted::Conflict { n };
        }
        self.pending.push((key.to_vec(), value.to_vec()));
        out
    }

    /// The records taken with [`take_pending`](Self::take_pending) landed as `landed` says:
    /// the end moves past them. Records that do not follow the end are reported; past it,
    /// the end follows what was written.
    pub(crate) fn flushed(&mut self, landed: Option<Landed>) -> Result<(), Unexpected> {
        let Some(Landed { first, last, count }) = landed else {
            return Ok(());
        };
        let expected = self.end;
        if first < expected || last - first + 1 < count as i64 {
            return Err(Unexpected::Behind {
                expected,
                got: first,
            });
        }
        self.end = last + 1;
        // Offsets not ours between the end and the last record written.
        let foreign = (last + 1 - expected) - count as i64;
        if foreign > 0 {
            return Err(Unexpected::Interleaved { expected, foreign });
        }
        Ok(())
    }

    /// The records emitted since the last flush, to be written.
    pub(crate) fn take_pending(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.pending)
    }

    pub(crate) fn end(&self) -> i64 {
        self.end
    }

    pub(crate) fn pending(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.pending
    }

    /// Records found past the restored end that were not emitted again yet.
    #[cfg(test)]
    pub(crate) fn found_left(&self) -> usize {
        self.found.len()
    }
}

struct Open {
    topic: String,
    writer: PartitionWriter,
    port: Port,
    written: IntCounter,
    found: IntCounter,
    conflicts: IntCounter,
}

/// A task's Fluvio outputs and the table their ends are committed in.
pub(crate) struct TaskOutputs {
    outputs: FluvioOutputs,
    stage: String,
    partition: i32,
    /// By port; opened after the restore ([`TaskOutputs::open`]).
    ports: Vec<Option<Open>>,
    table: OrderedTable<End>,
}

impl TaskOutputs {
    pub(crate) fn new(outputs: &FluvioOutputs, stage: &str, partition: i32) -> TaskOutputs {
        TaskOutputs {
            outputs: outputs.clone(),
            stage: stage.to_string(),
            partition,
            ports: Vec::new(),
            table: OrderedTable::default(),
        }
    }

    /// The positions table, last among the task's tables.
    pub(crate) fn table(&mut self) -> &mut dyn AnyTable {
        &mut self.table
    }

    /// Once the table is restored: opens a writer per Fluvio output and reads what its
    /// partition holds past the committed end. `committed`: the task committed before (its
    /// markers gave an input position).
    pub(crate) fn open(&mut self, committed: bool) -> Result<(), RuntimeError> {
        let FluvioOutputs { client, rt, ports } = &self.outputs;
        let mut opened = Vec::with_capacity(ports.len());
        for topic in ports {
            let Some(topic) = topic else {
                opened.push(None);
                continue;
            };
            let parts = rt.block_on(client.partitions(topic))?;
            let Some(state) = parts.get(&self.partition) else {
                return Err(RuntimeError::Config(format!(
                    "stage {} writes partition {} of Fluvio topic {topic} (task p writes partition p), which has {} partitions: give it as many as the stage's input",
                    self.stage,
                    self.partition,
                    parts.len()
                )));
            };
            // Committed, but with no position (the output moved to Fluvio, or the positions
            // changelog was lost): what is there is not known to be ours, and the task
            // writes after it.
            let unknown = committed && self.table.get(topic.as_bytes()).is_none();
            let end = match self.table.get(topic.as_bytes()) {
                Some(e) => e.0,
                // Never committed: everything there came from this task's first flush.
                None if !committed => 0,
                None => state.end,
            };
            // Past the end there is at most one commit's flush of this task; a partition far
            // longer than that holds another writer's records.
            if state.end - end > MAX_FOUND {
                return Err(RuntimeError::Config(format!(
                    "partition {} of Fluvio topic {topic} holds {} records past stage {}'s committed end {end}, more than one commit writes: another producer writes it, and a stage's Fluvio output must have no other writer (docs/FLUVIO.md)",
                    self.partition,
                    state.end - end,
                    self.stage
                )));
            }
            let mut found = rt.block_on(client.read_to_end(topic, self.partition, end))?;
            let writer = rt.block_on(client.partition_writer(topic, self.partition))?;
            let mut end = end;
            if unknown {
                // The SC's end trails the leader's: what was read past it is not ours either.
                end += found.len() as i64;
                found.clear();
                tracing::warn!(stage = %self.stage, topic = %topic, partition = self.partition, end, "No committed position for this Fluvio output although the task committed before; writing after the partition's current end.");
            }
            if !found.is_empty() {
                tracing::info!(stage = %self.stage, topic = %topic, partition = self.partition, end, found = found.len(), "Fluvio output holds records past the last commit (a flush whose commit was lost); the ones emitted again are skipped.");
            }
            let found = found
                .into_iter()
                .map(|r| (r.key.unwrap_or_default(), r.value))
                .collect();
            let labels = [self.stage.as_str(), topic.as_str()];
            opened.push(Some(Open {
                topic: topic.clone(),
                writer,
                port: Port::restored(end, found),
                written: METRICS.fluvio_output_records.with_label_values(&labels),
                found: METRICS.fluvio_output_found.with_label_values(&labels),
                conflicts: METRICS.fluvio_output_conflicts.with_label_values(&labels),
            }));
        }
        self.ports = opened;
        Ok(())
    }

    /// Whether output `port` is on Fluvio.
    pub(crate) fn has(&self, port: usize) -> bool {
        matches!(self.outputs.ports.get(port), Some(Some(_)))
    }

    /// Takes an output of port `port` (on Fluvio).
    pub(crate) fn emit(&mut self, port: usize, key: &[u8], value: &[u8]) {
        let Some(Some(o)) = self.ports.get_mut(port) else {
            unreachable!("a task's Fluvio outputs are opened before it processes anything");
        };
        match o.port.emit(key, value) {
            Emitted::Queued => {}
            Emitted::Found => o.found.inc(),
            Emitted::Conflict { n } => {
                o.conflicts.inc_by(n as u64);
                tracing::error!(stage = %self.stage, topic = %o.topic, partition = self.partition, records = n, "Fluvio output holds records past the last commit that this task does not emit: another writer wrote this partition. They stay; the task writes on after them.");
            }
        }
    }

    /// The runtime the writers run on.
    pub(crate) fn rt(&self) -> &tokio::runtime::Handle {
        &self.outputs.rt
    }

    /// Writes what is pending on every Fluvio output, each acknowledged, and records the new
    /// ends in the table, to be committed with the task. The runner awaits every task's
    /// flush at once ([`flush_all`]).
    pub(crate) async fn flush(&mut self) -> Result<(), RuntimeError> {
        for o in self.ports.iter_mut().flatten() {
            if !o.port.pending().is_empty() {
                let landed = o.writer.write(o.port.take_pending()).await?;
                let n = landed.map_or(0, |l| l.count);
                o.written.inc_by(n as u64);
                if let Some(n) = *CRASH_AFTER_FLUSH {
                    if FLUSHES.fetch_add(1, Ordering::Relaxed) + 1 >= n {
                        tracing::error!(stage = %self.stage, topic = %o.topic, partition = self.partition, records = n, "SLUICE_CRASH_AFTER_FLUVIO_FLUSH: aborting after the flush, before the commit.");
                        std::process::abort();
                    }
                }
                match o.port.flushed(landed) {
                    Ok(()) => {}
                    Err(Unexpected::Interleaved { expected, foreign }) => {
                        o.conflicts.inc_by(foreign as u64);
                        tracing::error!(stage = %self.stage, topic = %o.topic, partition = self.partition, expected, foreign, "Fluvio output: another writer's records landed between this task's; they stay, and are counted.");
                    }
                    Err(Unexpected::Behind { expected, got }) => {
                        return Err(RuntimeError::Config(format!(
                            "partition {} of Fluvio topic {} took stage {}'s records at offset {got}, below the end {expected} it committed: the topic was deleted and created again, or another writer's records were removed; what it holds cannot be told apart. Delete the stage's `{}` changelog to start the partition afresh",
                            self.partition,
                            o.topic,
                            self.stage,
                            sluice_topology::POSITIONS_STORE
                        )));
                    }
                }
            }
            let end = o.port.end();
            if self.table.get(o.topic.as_bytes()) != Some(&End(end)) {
                *self.table.entry(o.topic.as_bytes(), || End(end)) = End(end);
            }
        }
        Ok(())
    }
}

/// Flushes the Fluvio outputs of `tasks` together: each task writes its own partitions, so
/// their writes go in parallel, each in order.
pub(crate) fn flush_all<'a>(
    tasks: impl Iterator<Item = &'a mut TaskOutputs>,
) -> Result<(), RuntimeError> {
    let mut rt = None;
    let flushes: Vec<_> = tasks
        .map(|t| {
            rt.get_or_insert_with(|| t.rt().clone());
            t.flush()
        })
        .collect();
    let Some(rt) = rt else {
        return Ok(());
    };
    for r in rt.block_on(futures::future::join_all(flushes)) {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(first: i64, last: i64, count: usize) -> Landed {
        Landed { first, last, count }
    }

    fn rec(n: u8) -> (Vec<u8>, Vec<u8>) {
        (vec![b'k', n], vec![b'v', n])
    }

    #[test]
    fn records_found_past_the_end_are_skipped_in_order_then_writing_goes_on() {
        let mut p = Port::restored(10, vec![rec(1), rec(2)]);
        assert_eq!(p.emit(&rec(1).0, &rec(1).1), Emitted::Found);
        assert_eq!(p.end(), 11);
        assert_eq!(p.found_left(), 1);
        // A commit now keeps 11: the record at 11 is still to be emitted again.
        assert_eq!(p.emit(&rec(2).0, &rec(2).1), Emitted::Found);
        assert_eq!(p.emit(&rec(3).0, &rec(3).1), Emitted::Queued);
        assert_eq!(p.pending(), [rec(3)]);
        p.take_pending();
        assert_eq!(p.flushed(Some(at(12, 12, 1))), Ok(()));
        assert_eq!(p.end(), 13);
        assert!(p.pending().is_empty());
    }

    #[test]
    fn a_record_that_does_not_match_leaves_the_rest_in_place_and_is_written_after_it() {
        let mut p = Port::restored(0, vec![rec(1), rec(9), rec(8)]);
        assert_eq!(p.emit(&rec(1).0, &rec(1).1), Emitted::Found);
        assert_eq!(p.emit(&rec(2).0, &rec(2).1), Emitted::Conflict { n: 2 });
        assert_eq!(p.end(), 3);
        assert_eq!(p.emit(&rec(3).0, &rec(3).1), Emitted::Queued);
        assert_eq!(p.take_pending(), [rec(2), rec(3)]);
        assert_eq!(p.flushed(Some(at(3, 4, 2))), Ok(()));
        assert_eq!(p.end(), 5);
    }

    #[test]
    fn same_bytes_twice_are_matched_one_for_one() {
        let mut p = Port::restored(0, vec![rec(1)]);
        assert_eq!(p.emit(&rec(1).0, &rec(1).1), Emitted::Found);
        assert_eq!(p.emit(&rec(1).0, &rec(1).1), Emitted::Queued);
    }

    #[test]
    fn another_writers_records_between_flushes_are_reported_and_the_end_follows() {
        let mut p = Port::restored(5, vec![]);
        p.emit(b"a", b"1");
        p.emit(b"b", b"2");
        p.take_pending();
        assert_eq!(
            p.flushed(Some(at(7, 9, 2))),
            Err(Unexpected::Interleaved {
                expected: 5,
                foreign: 3
            })
        );
        assert_eq!(p.end(), 10);
        p.emit(b"c", b"3");
        p.take_pending();
        assert_eq!(p.flushed(Some(at(10, 10, 1))), Ok(()));
    }

    #[test]
    fn offsets_below_the_end_are_refused() {
        let mut p = Port::restored(5, vec![]);
        p.emit(b"a", b"1");
        p.take_pending();
        assert_eq!(
            p.flushed(Some(at(2, 2, 1))),
            Err(Unexpected::Behind {
                expected: 5,
                got: 2
            })
        );
        assert_eq!(p.end(), 5);
    }

    #[test]
    fn ends_round_trip_and_bad_bytes_are_refused() {
        let mut b = Vec::new();
        End(1 << 40).encode(&mut b);
        assert_eq!(End::decode(&b).unwrap(), End(1 << 40));
        assert!(End::decode(&b[..3]).is_err());
    }
}
