//! Standby replicas (`processing.standby_replicas`, as Kafka Streams' `num.standby.replicas`):
//! warm copies of store partitions this instance does not own.
//!
//! Placement comes from the group itself. After each rebalance, and every [`PLACE_EVERY`],
//! the instance describes its consumer group and ranks the members per partition by
//! rendezvous hashing ([`rendezvous`]; no member's assignment is needed). A standby task
//! opens the local RocksDB directories the owner would use and tails each store's changelog
//! with a plain assigned consumer into `sluice_state::protocol::StandbyTask`, which writes
//! only commits no restore can roll back, with their checkpoint (the same code the simulated
//! broker's standby proof runs). When the group later gives
//! the partition to this instance, the standby closes first and the normal restore starts
//! from that checkpoint, reading only the changelog's tail (docs/EXACTLY_ONCE.md, "Standby
//! replicas").

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_connectors::kafka::consumer_config;
use sluice_state::protocol::{Applied, StandbyTask};
use sluice_state::{KvStore, RocksStore};

use super::changelog::{changelog_entry, LogEnv};
use super::RuntimeError;
use crate::metrics::METRICS;

/// How often placement is recomputed without a rebalance (other members' joins and
/// restarts show in the group's description after ours).
pub(crate) const PLACE_EVERY: Duration = Duration::from_secs(10);
/// How soon placement is tried again while the group is rebalancing.
const RETRY_PLACE: Duration = Duration::from_secs(1);
/// How often the stage's loop hands the standbys a turn.
pub(crate) const TICK_EVERY: Duration = Duration::from_millis(100);
/// Most changelog records applied per turn, so the owned tasks are not starved.
const BUDGET: usize = 20_000;

/// The standby tasks of one stage instance.
pub(crate) struct Standbys {
    replicas: usize,
    group: String,
    /// This instance's `client.id` and `group.instance.id`: a member id starts with one of
    /// them, which is how it finds itself among the group's members.
    names: Vec<String>,
    /// The input topic, whose partitions are the tasks.
    input: String,
    consumer: Option<BaseConsumer>,
    tasks: BTreeMap<i32, StandbyTask<RocksStore>>,
    /// When to describe the group next; None: at the next turn.
    place_at: Option<Instant>,
}

impl Standbys {
    pub(crate) fn new(replicas: u32, group: String, names: Vec<String>, input: String) -> Self {
        Standbys {
            replicas: replicas as usize,
            group,
            names,
            input,
            consumer: None,
            tasks: BTreeMap::new(),
            place_at: None,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.replicas > 0
    }

    /// Closes partition `p`'s standby (its engines' RocksDB locks included) before this
    /// instance restores it as owner; asks for a new placement.
    pub(crate) fn release(&mut self, env: &LogEnv, p: i32) -> Result<(), RuntimeError> {
        self.place_at = None;
        if let Some(task) = self.tasks.remove(&p) {
            // RocksDB runs without a WAL: flush, or the restore that opens these stores next
            // would find an older checkpoint.
            for e in task.engines() {
                e.flush()?;
            }
            drop(task);
            tracing::info!(stage = %env.stage, partition = p, "Standby promoted: the restore starts from its checkpoint.");
            self.show(env);
            self.assign(env)?;
        }
        Ok(())
    }

    /// Drops every standby task (after a failure); placement starts over.
    pub(crate) fn reset(&mut self, env: &LogEnv) {
        self.tasks.clear();
        self.consumer = None;
        self.place_at = Some(Instant::now() + PLACE_EVERY);
        self.show(env);
    }

    /// Asks for a new placement at the next turn (after a rebalance).
    pub(crate) fn replace_soon(&mut self) {
        self.place_at = None;
    }

    /// One turn: placement when due, then up to [`BUDGET`] changelog records applied.
    pub(crate) fn tick<C: ConsumerContext>(
        &mut self,
        env: &LogEnv,
        group_consumer: &BaseConsumer<C>,
        owned: &BTreeSet<i32>,
    ) -> Result<(), RuntimeError> {
        if self.place_at.is_none_or(|t| Instant::now() >= t) {
            match self.placement(group_consumer, owned) {
                Some(want) => {
                    self.place_at = Some(Instant::now() + PLACE_EVERY);
                    self.place(env, &want)?;
                }
                // A rebalance in progress, or the broker did not answer: soon again.
                None => self.place_at = Some(Instant::now() + RETRY_PLACE),
            }
        }
        self.apply(env)
    }

    /// The partitions this instance should keep warm, or None when the group is not stable
    /// or cannot be described (keep what we have).
    fn placement<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        owned: &BTreeSet<i32>,
    ) -> Option<BTreeSet<i32>> {
        let timeout = Duration::from_secs(5);
        let list = consumer
            .fetch_group_list(Some(&self.group), timeout)
            .map_err(|e| tracing::debug!(group = %self.group, error = %e, "Describing the group for standby placement failed; retrying soon."))
            .ok()?;
        let g = list.groups().iter().find(|g| g.name() == self.group)?;
        if g.state() != "Stable" {
            return None;
        }
        let md = consumer.fetch_metadata(Some(&self.input), timeout).ok()?;
        let partitions = md.topics().first()?.partitions().len() as i32;
        let keys: Vec<&str> = g.members().iter().map(|m| member_key(m.id())).collect();
        let me = g
            .members()
            .iter()
            .position(|m| is_me(m.id(), m.client_id(), &self.names))?;
        let mut want = rendezvous(&keys, me, partitions, self.replicas);
        // Never a standby for what we own.
        want.retain(|p| !owned.contains(p));
        Some(want)
    }

    fn place(&mut self, env: &LogEnv, want: &BTreeSet<i32>) -> Result<(), RuntimeError> {
        let have: BTreeSet<i32> = self.tasks.keys().copied().collect();
        if &have == want {
            return Ok(());
        }
        self.tasks.retain(|p, _| want.contains(p));
        for &p in want.difference(&have) {
            self.tasks.insert(p, open(env, p)?);
        }
        tracing::info!(stage = %env.stage, partitions = ?want, "Standby replicas placed.");
        self.show(env);
        self.assign(env)
    }

    /// Sets `sluice_standby_partitions` to the tasks held now. Every change of `tasks` calls
    /// it: a promotion that left the gauge behind read as a standby that was not there.
    fn show(&self, env: &LogEnv) {
        METRICS
            .standby_partitions
            .with_label_values(&[&env.stage])
            .set(self.tasks.len() as i64);
    }

    /// Points the changelog consumer at every standby store's next offset.
    fn assign(&mut self, env: &LogEnv) -> Result<(), RuntimeError> {
        if self.consumer.is_none() {
            let mut opts = env.opts.clone();
            opts.instance_id = None;
            let group = format!("{}-{}-standby", env.app, env.stage);
            self.consumer = Some(consumer_config(&opts, &group).create()?);
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, t) in &self.tasks {
            for ((_, topic), &next) in env.stores.iter().zip(t.next()) {
                tpl.add_partition_offset(topic, p, Offset::Offset(next))?;
            }
        }
        self.consumer
            .as_ref()
            .expect("created above")
            .assign(&tpl)?;
        Ok(())
    }

    /// Applies what the changelogs have for the standby tasks, without waiting.
    fn apply(&mut self, env: &LogEnv) -> Result<(), RuntimeError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        let mut wiped = false;
        let mut applied = 0;
        for _ in 0..BUDGET {
            let m = match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(stage = %env.stage, error = %e, "Standby read failed; retrying.");
                    break;
                }
                Some(Ok(m)) => m,
            };
            let Some(i) = env.stores.iter().position(|(_, t)| t == m.topic()) else {
                continue;
            };
            let p = m.partition();
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            let off = m.offset();
            if off < task.next()[i] {
                continue;
            }
            match task.apply(i, off, changelog_entry(i, &m)?)? {
                Applied::Skipped => {}
                Applied::Written(n) => applied += n,
                Applied::Restarted(reason) => {
                    // The local store could not continue from here and starts over.
                    tracing::info!(stage = %env.stage, partition = p, store = env.stores[i].0, reason = %reason, "Standby store restarts from the changelog's beginning.");
                    // Reassign before reading on: records already fetched for this store
                    // are past its new start.
                    wiped = true;
                    break;
                }
            }
        }
        METRICS
            .standby_records
            .with_label_values(&[&env.stage])
            .inc_by(applied as u64);
        if wiped {
            self.assign(env)?;
        }
        Ok(())
    }
}

/// Opens partition `p`'s stores where its owner would keep them, continuing from their
/// checkpoints (a former owner's or an earlier standby's) or from the changelogs' start.
fn open(env: &LogEnv, p: i32) -> Result<StandbyTask<RocksStore>, RuntimeError> {
    let mut engines = Vec::with_capacity(env.stores.len());
    for (name, _) in &env.stores {
        engines.push(env.open_store(p, name)?);
    }
    Ok(StandbyTask::open(engines)?)
}

/// What identifies a member across its restarts: its member id without the `-<uuid>` the
/// coordinator appends to the client id or, for static members, the `group.instance.id`.
fn member_key(id: &str) -> &str {
    match id.len().checked_sub(37).map(|i| id.split_at(i)) {
        Some((key, tail)) if is_uuid_tail(tail) => key,
        _ => id,
    }
}

/// `-` followed by a UUID in its 36-character text form.
fn is_uuid_tail(tail: &str) -> bool {
    let b = tail.as_bytes();
    b.len() == 37
        && b[0] == b'-'
        && b[1..].iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Whether a described member is this instance: its client id (where the broker reports it)
/// or its member id made from one of our names.
fn is_me(member_id: &str, client_id: &str, names: &[String]) -> bool {
    names.iter().any(|n| {
        (!client_id.is_empty() && client_id == n)
            || member_id.strip_prefix(n.as_str()).is_some_and(is_uuid_tail)
    })
}

/// Rendezvous placement that needs no one's assignment (some brokers, Nisshi among them,
/// describe members without it): for each partition, the members ranked by a hash of
/// (member key, partition); the first `replicas + 1` keep a copy unless they own it. Whoever
/// the owner is, each partition gets `replicas` or `replicas + 1` standbys, and a member that
/// restarts with the same key keeps its partitions.
fn rendezvous(keys: &[&str], me: usize, partitions: i32, replicas: usize) -> BTreeSet<i32> {
    let take = (replicas + 1).min(keys.len());
    (0..partitions)
        .filter(|&p| {
            let score = |k: &str| mixed_hash(k.as_bytes(), p);
            let mine = score(keys[me]);
            // Our rank: members scoring above us (ties broken by key).
            let above = keys
                .iter()
                .enumerate()
                .filter(|&(i, k)| i != me && (score(k), *k) > (mine, keys[me]))
                .count();
            above < take
        })
        .collect()
}

/// FNV-1a over `bytes` and the partition, then MurmurHash3's 64-bit finaliser (FNV alone
/// barely moves the high bits for the last bytes, so every partition ranked the members
/// alike): stable across processes and builds.
fn mixed_hash(bytes: &[u8], partition: i32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.iter().chain(&partition.to_be_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "-a5b0a550-d614-4e07-8af9-21675eb16ff7";

    #[test]
    fn a_member_is_known_by_its_id_without_the_coordinators_uuid() {
        assert_eq!(member_key(&format!("s0-detect{UUID}")), "s0-detect");
        assert_eq!(member_key("rdkafka-1234"), "rdkafka-1234");
        let names = ["s1-detect".to_string(), "iot-detect-00ff".to_string()];
        assert!(is_me(&format!("s1-detect{UUID}"), "", &names));
        assert!(is_me("whatever", "iot-detect-00ff", &names));
        // A longer name with our name as prefix is someone else.
        assert!(!is_me(&format!("s1-detect-2{UUID}"), "", &names));
        assert!(!is_me(&format!("s10-detect{UUID}"), "", &names));
    }

    #[test]
    fn every_partition_gets_replicas_or_one_more_standbys_whoever_owns_it() {
        let keys = ["a", "b", "c", "d"];
        let partitions = 24;
        for replicas in 1..=2 {
            let sets: Vec<BTreeSet<i32>> = (0..keys.len())
                .map(|me| rendezvous(&keys, me, partitions, replicas))
                .collect();
            for p in 0..partitions {
                let holders: Vec<usize> =
                    (0..keys.len()).filter(|&m| sets[m].contains(&p)).collect();
                assert_eq!(holders.len(), replicas + 1, "partition {p}: {holders:?}");
                for owner in 0..keys.len() {
                    let standbys = holders.iter().filter(|&&m| m != owner).count();
                    assert!(standbys == replicas || standbys == replicas + 1);
                }
            }
            // Spread: nobody holds everything.
            assert!(
                sets.iter().all(|s| s.len() < partitions as usize),
                "{sets:?}"
            );
        }
        // Two members, one replica: each keeps everything (the owner is skipped later).
        assert_eq!(rendezvous(&["a", "b"], 0, 4, 1).len(), 4);
        // Alone: a copy of everything, which the owner check then removes.
        assert_eq!(rendezvous(&["a"], 0, 4, 1).len(), 4);
        // The same keys give the same placement in any order of description.
        let p1 = rendezvous(&["a", "b", "c"], 1, 16, 1);
        let p2 = rendezvous(&["c", "a", "b"], 2, 16, 1);
        assert_eq!(p1, p2);
    }
}
