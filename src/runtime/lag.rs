//! What a stage is behind by, off the hot path: `sluice_consumer_lag` per input partition,
//! and `sluice_latency_ms` from each input record's timestamp to the commit that made its
//! outputs visible.
//!
//! Lag is computed when librdkafka hands over its statistics (`statistics.interval.ms`,
//! served by the stage's own `poll`, so no thread and no network call of ours): the
//! partition's end as the broker last reported it in a fetch response (the high watermark,
//! or the last stable offset under `read_committed`) minus the stage's committed position.
//! The committed position is the later of what this run committed and what librdkafka knows
//! the group committed (fetched at assignment; a transactional commit does not update it).
//! A group that never committed counts from the partition's start. Reading one statistics
//! document (4-12 KiB) takes 38 µs at the median, once a second per stage (BENCHMARKS.md,
//! "Observability").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::Histogram;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use crate::metrics::METRICS;

/// How often librdkafka hands a stage's consumer statistics over, in ms: the lag gauge's
/// refresh period.
pub(crate) const STATS_INTERVAL_MS: &str = "1000";

/// One stage's lag gauges, shared by its consumer context (statistics) and its commit path.
pub(crate) struct StageLag {
    stage: String,
    read_committed: bool,
    state: Mutex<LagState>,
}

#[derive(Default)]
struct LagState {
    /// The input partitions the stage has tasks for.
    owned: BTreeSet<(String, i32)>,
    /// What this run committed, by (topic, partition).
    committed: BTreeMap<(String, i32), i64>,
    /// The label sets of `sluice_consumer_lag` this stage has set, to remove when a
    /// partition leaves it.
    shown: BTreeSet<(String, i32)>,
    /// Claim topics of inputs on Fluvio (`runtime/fluvio.rs`): never fetched, so not in the
    /// statistics; their lag is set by [`StageLag::fluvio_end`], labelled with the Fluvio
    /// topic.
    claims: BTreeSet<String>,
    /// Fluvio gauges set, by (claim topic, partition), with the Fluvio topic they show.
    shown_fluvio: BTreeMap<(String, i32), String>,
}

/// The part of librdkafka's statistics JSON lag needs (unknown fields are skipped).
#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: BTreeMap<String, TopicStats>,
}

#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: BTreeMap<String, PartitionStats>,
}

#[derive(Deserialize)]
struct PartitionStats {
    partition: i32,
    committed_offset: i64,
    lo_offset: i64,
    hi_offset: i64,
    ls_offset: i64,
}

impl StageLag {
    pub(crate) fn new(stage: &str, read_committed: bool) -> Self {
        StageLag {
            stage: stage.to_string(),
            read_committed,
            state: Mutex::new(LagState::default()),
        }
    }

    /// Names the claim topics of the stage's Fluvio inputs.
    pub(crate) fn claims(&self, claims: impl Iterator<Item = String>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.claims = claims.collect();
    }

    /// A Fluvio partition's end (`fluvio` topic, read through `claim`) as the SC last
    /// reported it: its lag is the end minus the position committed (or started from).
    pub(crate) fn fluvio_end(&self, fluvio: &str, claim: &str, partition: i32, end: i64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (claim.to_string(), partition);
        if !st.owned.contains(&key) {
            return;
        }
        let from = st.committed.get(&key).copied().unwrap_or(0);
        METRICS
            .consumer_lag
            .with_label_values(&[&self.stage, fluvio, &partition.to_string()])
            .set((end - from).max(0));
        st.shown_fluvio.insert(key, fluvio.to_string());
    }

    /// The input partitions the stage now owns (after a rebalance): only theirs are shown.
    pub(crate) fn owned(&self, partitions: impl Iterator<Item = (String, i32)>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.owned = partitions.collect();
        let LagState {
            owned, committed, ..
        } = &mut *st;
        // A partition that left may come back with another member's commits.
        committed.retain(|k, _| owned.contains(k));
        let gone: Vec<_> = st
            .shown_fluvio
            .keys()
            .filter(|k| !st.owned.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(topic) = st.shown_fluvio.remove(&k) {
                let _ = METRICS.consumer_lag.remove_label_values(&[
                    &self.stage,
                    &topic,
                    &k.1.to_string(),
                ]);
            }
        }
    }

    /// Records the offsets a commit just made durable.
    pub(crate) fn committed(&self, tpl: &TopicPartitionList) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for el in tpl.elements() {
            if let Offset::Offset(o) = el.offset() {
                st.committed
                    .insert((el.topic().to_string(), el.partition()), o);
            }
        }
    }

    /// Sets the gauge of every input partition the stage owns, from one statistics
    /// document, and removes those of partitions it no longer has.
    pub(crate) fn on_stats(&self, json: &[u8]) {
        let started = std::time::Instant::now();
        let stats: Stats = match serde_json::from_slice(json) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(stage = %self.stage, error = %e, "Unreadable consumer statistics; lag not refreshed.");
                return;
            }
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = BTreeSet::new();
        for (topic, t) in &stats.topics {
            for p in t.partitions.values() {
                let key = (topic.clone(), p.partition);
                if !st.owned.contains(&key) || st.claims.contains(topic) {
                    continue;
                }
                let ours = st.committed.get(&key).copied();
                let Some(lag) = lag(p, ours, self.read_committed) else {
                    continue;
                };
                METRICS
                    .consumer_lag
                    .with_label_values(&[&self.stage, topic, &p.partition.to_string()])
                    .set(lag);
                seen.insert(key);
            }
        }
        for gone in st.shown.difference(&seen) {
            let _ = METRICS.consumer_lag.remove_label_values(&[
                &self.stage,
                &gone.0,
                &gone.1.to_string(),
            ]);
        }
        st.shown = seen;
        tracing::trace!(stage = %self.stage, bytes = json.len(), micros = started.elapsed().as_micros() as u64, "Lag refreshed from consumer statistics.");
    }
}

impl Drop for StageLag {
    /// A stopped stage reports no lag (a restarted one sets it again).
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let fluvio = st.shown_fluvio.iter().map(|((_, p), t)| (t, p));
        for (topic, partition) in st.shown.iter().map(|(t, p)| (t, p)).chain(fluvio) {
            let _ = METRICS.consumer_lag.remove_label_values(&[
                &self.stage,
                topic,
                &partition.to_string(),
            ]);
        }
    }
}

/// A partition's lag: its end minus the committed position, or `None` while the end is not
/// known yet (no fetch response so far).
fn lag(p: &PartitionStats, ours: Option<i64>, read_committed: bool) -> Option<i64> {
    let end = if read_committed && p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    if end < 0 {
        return None;
    }
    // librdkafka's negative offsets are "none yet" (-1001).
    let committed = ours
        .into_iter()
        .chain([p.committed_offset])
        .filter(|o| *o >= 0)
        .max();
    let from = match committed {
        Some(c) => c,
        // Never committed: everything from the start is still to be read.
        None if p.lo_offset >= 0 => p.lo_offset,
        None => 0,
    };
    Some((end - from).max(0))
}

/// The input timestamps (ms) of one task's records since its last commit.
#[derive(Default)]
pub(crate) struct BatchTimes(Vec<i64>);

impl BatchTimes {
    /// A record without a timestamp is not counted.
    #[inline]
    pub(crate) fn push(&mut self, ts: Option<i64>) {
        if let Some(ts) = ts.filter(|t| *t > 0) {
            self.0.push(ts);
        }
    }

    /// The batch was committed at `now_ms`: one observation per record.
    pub(crate) fn committed(&mut self, hist: &Histogram, now_ms: i64) {
        if self.0.is_empty() {
            return;
        }
        let local = hist.local();
        for ts in self.0.drain(..) {
            local.observe((now_ms - ts).max(0) as f64);
        }
        local.flush();
    }
}

/// Wall clock in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(committed: i64, lo: i64, hi: i64, ls: i64) -> PartitionStats {
        PartitionStats {
            partition: 0,
            committed_offset: committed,
            lo_offset: lo,
            hi_offset: hi,
            ls_offset: ls,
        }
    }

    #[test]
    fn lag_counts_from_the_later_of_our_commit_and_the_groups() {
        assert_eq!(lag(&part(40, 0, 100, 100), None, false), Some(60));
        assert_eq!(lag(&part(40, 0, 100, 100), Some(90), false), Some(10));
        // Another member committed further before the partition came here.
        assert_eq!(lag(&part(95, 0, 100, 100), Some(90), false), Some(5));
        assert_eq!(lag(&part(100, 0, 100, 100), None, false), Some(0));
    }

    #[test]
    fn a_group_that_never_committed_counts_from_the_start_and_an_unknown_end_gives_nothing() {
        assert_eq!(lag(&part(-1001, 20, 100, 100), None, false), Some(80));
        assert_eq!(lag(&part(-1001, -1, 100, 100), None, false), Some(100));
        assert_eq!(lag(&part(-1001, -1, -1, -1), None, false), None);
    }

    #[test]
    fn read_committed_measures_to_the_last_stable_offset() {
        assert_eq!(lag(&part(40, 0, 100, 70), None, true), Some(30));
        assert_eq!(lag(&part(40, 0, 100, 70), None, false), Some(60));
        assert_eq!(lag(&part(40, 0, 100, -1), None, true), Some(60));
    }

    #[test]
    fn statistics_set_assigned_partitions_and_drop_those_that_left() {
        let stage = format!("lagtest{:08x}", rand::random::<u32>());
        let l = StageLag::new(&stage, false);
        let doc = r#"{"name":"c","topics":{"in":{"topic":"in","partitions":{
                "0":{"partition":0,"desired":true,"committed_offset":5,"lo_offset":0,"hi_offset":12,"ls_offset":12,"app_offset":12},
                "1":{"partition":1,"desired":false,"committed_offset":-1001,"lo_offset":3,"hi_offset":9,"ls_offset":9},
                "-1":{"partition":-1,"desired":false,"committed_offset":-1001,"lo_offset":-1,"hi_offset":-1,"ls_offset":-1}}},
                "other":{"topic":"other","partitions":{"0":{"partition":0,"desired":true,"committed_offset":0,"lo_offset":0,"hi_offset":50,"ls_offset":50}}}}}"#;
        let get = |topic: &str, p: &str| {
            METRICS
                .consumer_lag
                .get_metric_with_label_values(&[stage.as_str(), topic, p])
                .map(|g| g.get())
                .ok()
        };
        let owned = |ps: &[i32]| {
            ps.iter()
                .map(|p| ("in".to_string(), *p))
                .collect::<Vec<_>>()
        };
        l.owned(owned(&[0, 1]).into_iter());
        l.on_stats(doc.as_bytes());
        assert_eq!(get("in", "0"), Some(7));
        assert_eq!(get("in", "1"), Some(6));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, Offset::Offset(12))
            .unwrap();
        l.committed(&tpl);
        l.owned(owned(&[0]).into_iter());
        l.on_stats(doc.as_bytes());
        assert_eq!(get("in", "0"), Some(0));
        let text = METRICS.render();
        assert!(!text.contains(&format!("stage=\"{stage}\",topic=\"other\"")));
        assert!(
            !text.contains(&format!("partition=\"1\",stage=\"{stage}\"")),
            "{text}"
        );
        drop(l);
        assert!(!METRICS.render().contains(&stage));
    }

    #[test]
    fn every_committed_record_is_one_latency_observation() {
        let h = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("t", "t")).unwrap();
        let mut b = BatchTimes::default();
        b.push(Some(1_000));
        b.push(Some(1_500));
        b.push(None);
        b.push(Some(3_000));
        b.committed(&h, 2_000);
        assert_eq!(h.get_sample_count(), 3);
        // 1000 + 500 + 0 (a timestamp after the commit counts as 0).
        assert_eq!(h.get_sample_sum(), 1_500.0);
        b.committed(&h, 5_000);
        assert_eq!(h.get_sample_count(), 3);
    }
}
