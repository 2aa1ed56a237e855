//! Property-style test of the production protocol: random batch sizes, random crash points
//! in commits and restores, random loss of the local stores; every run must end
//! byte-identical to a crash-free run, and what a plain consumer read must be repeats only,
//! identical copies with ids continuing from exactly each restored point.

use super::sim::*;

const INPUTS: usize = 300;

fn run(seed: u64) {
    let input = toy_input(seed, INPUTS);
    let (ref_broker, ref_task) = clean_run(input.clone(), 9);
    let mut rng = Rng(seed ^ 0xdead_beef);
    let mut broker = Broker::new(input.clone());
    let mut nonce = 1u16;
    let mut engines = fresh_engines();
    let mut crashes = 0;
    let task = loop {
        // Restores crash too, now and then.
        let crash = if rng.below(4) == 0 {
            RESTORE_CRASHES[rng.below(3) as usize]
        } else {
            Crash::None
        };
        nonce += 1;
        let mut task =
            match restore(&mut broker, std::mem::take(&mut engines), nonce, crash).unwrap() {
                Ok(task) => task,
                Err(left) => {
                    crashes += 1;
                    engines = if rng.below(3) == 0 {
                        fresh_engines()
                    } else {
                        left
                    };
                    continue;
                }
            };
        if run_until_crash(&mut task, &mut broker, &mut rng, 3, |_, _| {}) {
            break task;
        }
        crashes += 1;
        // The partition moves to a machine without local state a third of the time.
        engines = if rng.below(3) == 0 {
            fresh_engines()
        } else {
            task.into_engines()
        };
    };
    assert!(
        crashes > 0 || seed > 1000,
        "seed {seed}: no crash happened, the test proves nothing"
    );
    assert_eq!(
        task.snapshots(),
        ref_task.snapshots(),
        "seed {seed}: store contents"
    );
    assert_eq!(
        deduplicated(&broker.output),
        ref_broker.output,
        "seed {seed}: outputs"
    );
    check_plain_output(&broker.output);
    assert_eq!(
        restored_snapshots(&broker),
        ref_task.snapshots(),
        "seed {seed}: restore from changelogs"
    );
    let compacted = Broker {
        changelogs: broker.changelogs.iter().map(|l| compact(l)).collect(),
        ..broker.clone()
    };
    assert_eq!(
        restored_snapshots(&compacted),
        ref_task.snapshots(),
        "seed {seed}: restore from compacted changelogs"
    );
}

#[test]
fn random_crashes_end_byte_identical_to_a_clean_run() {
    for seed in 0..60 {
        run(seed);
    }
}
