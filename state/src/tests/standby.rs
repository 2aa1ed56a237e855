//! Standby replicas against the simulated broker: a warm copy that tails the changelogs
//! while the owner commits, crashes and restores, and that a new owner restores from.

use super::sim::*;
use crate::protocol::{Applied, StandbyTask};
use crate::{Entry, KvStore, MarkerKind, StateError};

/// What an instance that does not own the task keeps: the production standby over its own
/// disks.
struct Standby {
    task: StandbyTask<SimEngine>,
    disks: Vec<Disk>,
}

impl Standby {
    fn new() -> Self {
        let disks = fresh_engines();
        Standby {
            task: StandbyTask::open(sim_engines(&disks)).unwrap(),
            disks,
        }
    }

    /// Reads every changelog to its end, as the runtime's standby turn does.
    fn catch_up(&mut self, broker: &Broker) -> Result<(), StateError> {
        for i in 0..STORES {
            let log = &broker.changelogs[i];
            loop {
                let at = self.task.next()[i];
                if at >= log.len() as i64 {
                    break;
                }
                let entry = log[at as usize].entry(i, at)?;
                if let Applied::Restarted(e) = self.task.apply(i, at, entry)? {
                    panic!("a standby of a crash-free log restarted store {i}: {e}");
                }
            }
        }
        Ok(())
    }

    fn checkpointed(&self) -> bool {
        self.disks
            .iter()
            .all(|d| d.lock().unwrap().checkpoint().unwrap().is_some())
    }
}

/// Like `property::run`, but a third of the partition moves go to the standby's machine:
/// the new owner restores from the standby's engines. Every such restore must use them as
/// they are (no store wiped), and the run must still end byte-identical to a clean run.
fn run(seed: u64) -> (u32, u32) {
    let input = toy_input(seed, 300);
    let (ref_broker, ref_task) = clean_run(input.clone(), 9);
    let mut rng = Rng(seed ^ 0x5eed_cafe);
    let mut broker = Broker::new(input.clone());
    let mut standby = Standby::new();
    let mut nonce = 1u16;
    let mut engines = fresh_engines();
    let mut from_standby = false;
    let (mut promotions, mut warm) = (0u32, 0u32);
    let task = loop {
        nonce += 1;
        let wipes = WIPES.with(|w| w.get());
        let crash = if rng.below(5) == 0 {
            RESTORE_CRASHES[rng.below(3) as usize]
        } else {
            Crash::None
        };
        let restored = restore(&mut broker, std::mem::take(&mut engines), nonce, crash).unwrap();
        if from_standby {
            assert_eq!(
                WIPES.with(|w| w.get()),
                wipes,
                "seed {seed}: a restore from the standby's engines wiped a store"
            );
        }
        let mut task = match restored {
            Ok(task) => task,
            Err(left) => {
                engines = left;
                from_standby = false;
                continue;
            }
        };
        let finished = run_until_crash(&mut task, &mut broker, &mut rng, 4, |b, rng| {
            if rng.below(2) == 0 {
                standby.catch_up(b).unwrap();
            }
        });
        if finished {
            break task;
        }
        standby.catch_up(&broker).unwrap();
        match rng.below(3) {
            0 => {
                // Failover to the standby's machine; the crashed one becomes the standby,
                // starting cold.
                promotions += 1;
                warm += u32::from(standby.checkpointed());
                engines = std::mem::replace(&mut standby, Standby::new()).disks;
                from_standby = true;
            }
            1 => {
                engines = fresh_engines();
                from_standby = false;
            }
            _ => {
                engines = task.into_engines();
                from_standby = false;
            }
        }
    };
    assert_eq!(
        task.snapshots(),
        ref_task.snapshots(),
        "seed {seed}: stores"
    );
    assert_eq!(
        deduplicated(&broker.output),
        ref_broker.output,
        "seed {seed}: outputs"
    );
    check_plain_output(&broker.output);
    // Finally promote the standby once more, from the finished log.
    standby.catch_up(&broker).unwrap();
    let wipes = WIPES.with(|w| w.get());
    let mut b = broker.clone();
    let promoted = restore(&mut b, standby.disks, 99, Crash::None)
        .unwrap()
        .expect("no crash");
    assert_eq!(
        WIPES.with(|w| w.get()),
        wipes,
        "seed {seed}: final promotion wiped a store"
    );
    assert_eq!(
        promoted.snapshots(),
        ref_task.snapshots(),
        "seed {seed}: promoted standby"
    );
    (promotions, warm)
}

#[test]
fn a_new_owner_restores_from_a_standby_without_wiping_and_ends_identical() {
    let (mut promotions, mut warm) = (0, 0);
    for seed in 0..80 {
        let (p, w) = run(seed);
        promotions += p;
        warm += w;
    }
    // The test proves something only if failovers to a standby that held checkpoints
    // happened.
    assert!(promotions >= 20, "only {promotions} failovers to a standby");
    assert!(
        warm >= 10,
        "only {warm} failovers found a checkpointed standby"
    );
}

/// After a clean run the standby's checkpoint is the last commit (settled in every store),
/// and restoring from its engines gives what a restore from nothing gives.
#[test]
fn a_standby_checkpoint_reaches_the_last_commit_every_store_holds() {
    let input = toy_input(7, 200);
    let (broker, _) = clean_run(input, 10);
    let mut standby = Standby::new();
    standby.catch_up(&broker).unwrap();
    for (i, d) in standby.disks.iter().enumerate() {
        let cp = d
            .lock()
            .unwrap()
            .checkpoint()
            .unwrap()
            .expect("checkpointed");
        let log = &broker.changelogs[i];
        let markers_after = log[cp.marker_offset as usize + 1..]
            .iter()
            .enumerate()
            .filter(|(k, r)| {
                matches!(r.entry(i, (cp.marker_offset as usize + 1 + k) as i64),
                    Ok(Entry::Marker(m)) if m.kind == MarkerKind::Commit)
            })
            .count();
        assert_eq!(
            markers_after, 0,
            "store {i}: checkpointed at the last commit"
        );
    }
    let mut a = broker.clone();
    let mut b = broker.clone();
    let warm = restore(&mut a, standby.disks, 3, Crash::None)
        .unwrap()
        .unwrap();
    let cold = restore(&mut b, fresh_engines(), 4, Crash::None)
        .unwrap()
        .unwrap();
    assert_eq!(warm.snapshots(), cold.snapshots());
    assert_eq!(warm.output_seq, cold.output_seq);
    assert_eq!(warm.input_pos, cold.input_pos);
}
