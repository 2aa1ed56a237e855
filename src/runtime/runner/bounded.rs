//! The runner's bounded mode (`sluice backfill`): a stage reads its inputs up to fixed end
//! offsets and stops by itself once it has committed every partition up to its end.
//!
//! A first stage's ends are the range captured when the backfill started
//! (`runtime/bounds.rs`); a downstream stage's are set by the caller once the stages upstream
//! of it have finished (the end offsets of their namespaced outputs at that moment), so
//! until then it runs unbounded. Records at or past a partition's end are not processed, and
//! the partition is paused so the consumer stops fetching the live input beyond it.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::METRICS;

/// A stage's end offsets by (topic, partition): exclusive, `end` itself is not processed.
pub type Ends = HashMap<(String, i32), i64>;

/// The bounds of one stage, shared by the caller (who may set them later) and the runner.
#[derive(Debug, Default)]
pub struct StageBounds {
    ends: OnceLock<Ends>,
}

impl StageBounds {
    /// Bounds known from the start (a first stage).
    pub fn fixed(ends: Ends) -> StageBounds {
        let b = StageBounds::default();
        let _ = b.ends.set(ends);
        b
    }

    /// Bounds set later with [`StageBounds::close`] (a downstream stage).
    pub fn open() -> StageBounds {
        StageBounds::default()
    }

    /// Sets the ends; the first call wins.
    pub fn close(&self, ends: Ends) {
        let _ = self.ends.set(ends);
    }

    pub fn ends(&self) -> Option<&Ends> {
        self.ends.get()
    }
}

/// The runner's side of the bounds: what each partition has committed so far.
pub(super) struct Bounded {
    bounds: std::sync::Arc<StageBounds>,
    /// Committed position by (topic, partition), read from the group when the ends become
    /// known, then advanced by every commit.
    committed: Option<HashMap<(String, i32), i64>>,
    pub(super) records: IntCounter,
    remaining: IntGauge,
    /// Partitions that reached their end and are to be paused.
    pub(super) to_pause: Vec<(String, i32)>,
}

impl Bounded {
    pub(super) fn new(stage: &str, bounds: std::sync::Arc<StageBounds>) -> Bounded {
        Bounded {
            bounds,
            committed: None,
            records: METRICS.backfill_records.with_label_values(&[stage]),
            remaining: METRICS.backfill_remaining.with_label_values(&[stage]),
            to_pause: Vec::new(),
        }
    }

    /// True when the record at `offset` is past the range: it is not processed.
    pub(super) fn past_end(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        let Some(ends) = self.bounds.ends() else {
            return false;
        };
        // A partition not in the ends has nothing in the range (it did not exist then).
        let end = ends
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0);
        if offset >= end {
            self.to_pause.push((topic.to_string(), partition));
            return true;
        }
        false
    }

    /// After a commit of `tpl`.
    pub(super) fn committed(&mut self, tpl: &TopicPartitionList) {
        if let Some(c) = self.committed.as_mut() {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    let at = c.entry((e.topic().to_string(), e.partition())).or_insert(o);
                    *at = (*at).max(o);
                }
            }
        }
    }

    /// Whether every partition is committed up to its end, with `reached` giving each
    /// task's position known to be in its committed state (its restored marker's offset, or
    /// the next offset of a batch committed since). Sets `sluice_backfill_remaining`.
    pub(super) fn done<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        reached: impl Fn(&str, i32) -> Option<i64>,
    ) -> Result<bool, rdkafka::error::KafkaError> {
        let Some(ends) = self.bounds.ends() else {
            return Ok(false);
        };
        if self.committed.is_none() {
            // What the group committed before (a rerun after a crash), read once.
            let mut tpl = TopicPartitionList::new();
            for (t, p) in ends.keys() {
                tpl.add_partition(t, *p);
            }
            let got = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
            self.committed = Some(
                got.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                        _ => None,
                    })
                    .collect(),
            );
        }
        let committed = self.committed.as_ref().expect("read above");
        let mut remaining = 0i64;
        for ((t, p), end) in ends {
            let at = committed
                .get(&(t.clone(), *p))
                .copied()
                .unwrap_or(0)
                .max(reached(t, *p).unwrap_or(0));
            remaining += (end - at).max(0);
        }
        self.remaining.set(remaining);
        Ok(remaining == 0)
    }
}
