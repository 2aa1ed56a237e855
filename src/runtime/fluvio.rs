//! A stage's inputs on Fluvio (docs/FLUVIO.md).
//!
//! Fluvio has no consumer groups, so the stage's Kafka group spreads them: the stage
//! subscribes to each Fluvio input's claim topic (`Topology::claim_topic`, empty, with as
//! many partitions), and the member assigned claim partition `p` owns the task of Fluvio
//! partition `p`. Everything else is the Kafka path unchanged: the task restores from its
//! changelogs, its commit writes the Fluvio position into the markers and commits it as the
//! claim partition's offset, and a moved partition's new owner starts reading where the
//! last commit said. The claim partitions are paused at once: nothing is ever fetched there.
//!
//! Each owned partition has a reader on the process's tokio runtime that hands batches to
//! the stage thread through a bounded channel; a batch from a reader that was stopped
//! (revoked, or replaced after a rebalance) carries an old generation and is dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_connectors::fluvio::{FluvioClient, FluvioError, FluvioRecord};
use tokio::sync::mpsc;

/// Records per batch handed from a reader to the stage thread.
const BATCH: usize = 1000;
/// Batches a reader may have waiting for the stage thread (backpressure).
const QUEUED_BATCHES: usize = 8;
/// How often the partitions' ends are asked of the SC, for `sluice_consumer_lag`.
const ENDS_EVERY: Duration = Duration::from_secs(2);

/// What a stage needs to read its Fluvio inputs.
#[derive(Clone)]
pub struct FluvioInputs {
    pub client: Arc<FluvioClient>,
    pub rt: tokio::runtime::Handle,
    /// By input index: the claim topic of an input on Fluvio, `None` for one on Kafka.
    pub claims: Vec<Option<String>>,
}

/// One batch from one reader.
pub(crate) struct Delivery {
    pub input: usize,
    pub partition: i32,
    generation: u64,
    pub batch: Result<Vec<FluvioRecord>, FluvioError>,
}

struct Running {
    generation: u64,
    task: tokio::task::JoinHandle<()>,
}

/// The readers of a stage's owned Fluvio partitions.
pub(crate) struct Readers {
    inputs: FluvioInputs,
    topics: Vec<String>,
    tx: mpsc::Sender<Delivery>,
    rx: mpsc::Receiver<Delivery>,
    running: HashMap<(usize, i32), Running>,
    next_generation: u64,
    /// Partition ends by (input, partition), refreshed in the background.
    ends: Arc<Mutex<BTreeMap<(usize, i32), i64>>>,
    ends_task: tokio::task::JoinHandle<()>,
}

impl Readers {
    /// `topics` are the stage's input names, by index.
    pub(crate) fn new(inputs: FluvioInputs, topics: Vec<String>) -> Readers {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES * 4);
        let ends = Arc::new(Mutex::new(BTreeMap::new()));
        let ends_task = {
            let (client, ends) = (inputs.client.clone(), ends.clone());
            let watched: Vec<(usize, String)> = inputs
                .claims
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_some())
                .map(|(i, _)| (i, topics[i].clone()))
                .collect();
            inputs.rt.spawn(async move {
                loop {
                    for (i, topic) in &watched {
                        match client.ends(topic).await {
                            Ok(e) => {
                                let mut ends = ends.lock().unwrap_or_else(|p| p.into_inner());
                                for (p, end) in e {
                                    ends.insert((*i, p), end);
                                }
                            }
                            Err(e) => {
                                tracing::debug!(topic = %topic, error = %e, "Fluvio partition ends not refreshed.")
                            }
                        }
                    }
                    tokio::time::sleep(ENDS_EVERY).await;
                }
            })
        };
        Readers {
            inputs,
            topics,
            tx,
            rx,
            running: HashMap::new(),
            next_generation: 1,
            ends,
            ends_task,
        }
    }

    /// The claim topic of input `i`, if it is on Fluvio.
    pub(crate) fn claim(&self, i: usize) -> Option<&str> {
        self.inputs.claims.get(i).and_then(|c| c.as_deref())
    }

    /// Starts reading partition `partition` of input `input` at `from` (`None`: the
    /// beginning), replacing a reader already there.
    pub(crate) fn start(&mut self, input: usize, partition: i32, from: Option<i64>) {
        self.stop(input, partition);
        let generation = self.next_generation;
        self.next_generation += 1;
        let client = self.inputs.client.clone();
        let topic = self.topics[input].clone();
        let tx = self.tx.clone();
        let task = self.inputs.rt.spawn(async move {
            let send = |batch| Delivery {
                input,
                partition,
                generation,
                batch,
            };
            let mut reader = match client.reader(&topic, partition, from, BATCH).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(send(Err(e))).await;
                    return;
                }
            };
            let mut reopens = (0, 0);
            loop {
                let batch = reader.next_batch().await;
                let now = reader.reopens();
                if now != reopens {
                    let m = &crate::metrics::METRICS.fluvio_reopens;
                    m.with_label_values(&[&topic, "gap"])
                        .inc_by(now.0 - reopens.0);
                    m.with_label_values(&[&topic, "stall"])
                        .inc_by(now.1 - reopens.1);
                    reopens = now;
                }
                let failed = batch.is_err();
                if tx.send(send(batch)).await.is_err() || failed {
                    return;
                }
            }
        });
        tracing::debug!(topic = %self.topics[input], partition, from = ?from, "Reading Fluvio partition.");
        self.running
            .insert((input, partition), Running { generation, task });
    }

    pub(crate) fn stop(&mut self, input: usize, partition: i32) {
        if let Some(r) = self.running.remove(&(input, partition)) {
            r.task.abort();
        }
    }

    pub(crate) fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
        }
    }

    /// A batch waiting, if any, from a reader that is still current.
    pub(crate) fn next(&mut self) -> Option<Delivery> {
        loop {
            let d = self.rx.try_recv().ok()?;
            let current = self
                .running
                .get(&(d.input, d.partition))
                .is_some_and(|r| r.generation == d.generation);
            if current {
                return Some(d);
            }
        }
    }

    /// The last known end of each owned partition.
    pub(crate) fn ends(&self) -> Vec<(usize, i32, i64)> {
        let ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        self.running
            .keys()
            .filter_map(|&(i, p)| ends.get(&(i, p)).map(|&e| (i, p, e)))
            .collect()
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop_all();
        self.ends_task.abort();
    }
}
