//! One test per crash point of the commit protocol, plus zombies and checkpoint mismatches.
//! Each ends with the same assertion: the store contents equal a crash-free run's, and the
//! de-duplicated outputs are exactly the crash-free outputs.

use super::sim::*;
use crate::{ChangelogRecord, Entry, Marker, MarkerKind, Restorer, StateError, Tag};

const N: usize = 120;
const BATCH: usize = 10;

fn reference() -> (Broker, Task) {
    clean_run(toy_input(42, N), BATCH)
}

/// Runs `commits` clean commits on a fresh task.
fn start(commits: usize) -> (Broker, Task) {
    let mut broker = Broker::new(toy_input(42, N));
    let mut task = restore(&mut broker, fresh_engines(), 1, Crash::None)
        .unwrap()
        .unwrap();
    for _ in 0..commits {
        step(&mut broker, &mut task, Crash::None);
    }
    (broker, task)
}

fn step(broker: &mut Broker, task: &mut Task, crash: Crash) -> bool {
    task.process(broker, BATCH);
    task.commit(broker, crash)
}

/// Runs to the end of the input and checks everything against the reference.
fn finish_and_check(mut broker: Broker, mut task: Task) {
    while task.input_pos < broker.input.len() {
        step(&mut broker, &mut task, Crash::None);
    }
    let (ref_broker, ref_task) = reference();
    assert_eq!(
        task.snapshots(),
        ref_task.snapshots(),
        "store contents differ from a crash-free run"
    );
    assert_eq!(
        deduplicated(&broker.output),
        ref_broker.output,
        "outputs differ after de-duplication"
    );
    check_plain_output(&broker.output);
    assert_eq!(
        restored_snapshots(&broker),
        ref_task.snapshots(),
        "a restore from the changelogs alone differs"
    );
    let compacted = Broker {
        changelogs: broker.changelogs.iter().map(|l| compact(l)).collect(),
        ..broker.clone()
    };
    assert_eq!(
        restored_snapshots(&compacted),
        ref_task.snapshots(),
        "a restore from compacted changelogs differs"
    );
}

fn crash_then_restore(crash: Crash, expect_commit: u64) {
    let (mut broker, mut task) = start(4);
    assert!(!step(&mut broker, &mut task, crash));
    let restored = restore(&mut broker, task.into_engines(), 2, Crash::None)
        .unwrap()
        .unwrap();
    assert_eq!(
        restored.commit_seq(),
        expect_commit,
        "restored to the wrong commit after {crash:?}"
    );
    let (_, at) = start(expect_commit as usize);
    assert_eq!(
        (restored.input_pos, restored.output_seq),
        (at.input_pos, at.output_seq),
        "resumed input or output numbering away from commit {expect_commit} after {crash:?}"
    );
    finish_and_check(broker, restored);
}

#[test]
fn crash_after_outputs_replays_the_commit() {
    crash_then_restore(Crash::AfterOutputs, 4);
}

#[test]
fn crash_after_changelog_records_discards_them() {
    crash_then_restore(Crash::AfterRecords, 4);
}

#[test]
fn crash_with_marker_in_one_store_only_rolls_back() {
    crash_then_restore(Crash::MidMarkers, 4);
}

#[test]
fn crash_after_markers_keeps_the_commit() {
    crash_then_restore(Crash::AfterMarkers, 5);
}

#[test]
fn crash_between_engine_writes_keeps_the_commit() {
    crash_then_restore(Crash::MidEngine, 5);
}

#[test]
fn crash_after_engine_keeps_the_commit() {
    crash_then_restore(Crash::AfterEngine, 5);
}

#[test]
fn crash_during_restore_then_restore_again() {
    for commit_crash in COMMIT_CRASHES {
        for restore_crash in RESTORE_CRASHES {
            let (mut broker, mut task) = start(3);
            assert!(!step(&mut broker, &mut task, commit_crash));
            // The crashed restore may have half-written its engines; the next one starts from them.
            let Err(engines) = restore(&mut broker, task.into_engines(), 2, restore_crash).unwrap()
            else {
                panic!("restore did not crash at {restore_crash:?}")
            };
            let task = restore(&mut broker, engines, 3, Crash::None)
                .unwrap()
                .unwrap();
            finish_and_check(broker, task);
        }
    }
}

/// The ids a task writes after a restore continue from exactly the restored commit, also when
/// the process dies right after the restore (before any commit, or having written outputs
/// it never committed) and the next restore starts from what that one left.
#[test]
fn crashes_right_after_a_restore_resume_ids_at_the_restored_point() {
    let (_, at3) = start(3);
    for crash in COMMIT_CRASHES {
        let (mut broker, mut task) = start(3);
        assert!(!step(&mut broker, &mut task, crash));
        let mut disks = task.into_engines();
        let want = if matches!(
            crash,
            Crash::AfterOutputs | Crash::AfterRecords | Crash::MidMarkers
        ) {
            3
        } else {
            4
        };
        let (_, at) = start(want);
        for round in 0..3 {
            let mut restored = restore(&mut broker, disks, 10 + round, Crash::None)
                .unwrap()
                .unwrap();
            assert_eq!(
                restored.commit_seq(),
                want as u64,
                "after {crash:?}, round {round}"
            );
            assert_eq!(
                (restored.input_pos, restored.output_seq),
                (at.input_pos, at.output_seq),
                "after {crash:?}, round {round}: resumed away from the restored commit"
            );
            // Round 0 dies at once; the others write outputs and die before their commit.
            if round > 0 {
                let before = broker.output.len();
                assert!(!step(&mut broker, &mut restored, Crash::AfterOutputs));
                let first = seq_of(&broker.output[before]);
                assert_eq!(
                    first,
                    at.output_seq + 1,
                    "after {crash:?}, round {round}: first id after the restore"
                );
            }
            disks = restored.into_engines();
        }
        let task = restore(&mut broker, disks, 20, Crash::None)
            .unwrap()
            .unwrap();
        assert!(task.output_seq >= at3.output_seq);
        finish_and_check(broker, task);
    }
}

/// The sequence of an output's id.
fn seq_of(out: &Out) -> u64 {
    crate::MessageId::parse(&out.0).unwrap().seq
}

#[test]
fn missing_marker_means_discarded_keys_are_repaired_in_the_changelog() {
    let (mut broker, mut task) = start(2);
    assert!(!step(&mut broker, &mut task, Crash::MidMarkers));
    let before = broker.changelogs[1].len();
    let restored = restore(&mut broker, fresh_engines(), 2, Crash::None)
        .unwrap()
        .unwrap();
    assert_eq!(restored.commit_seq(), 2);
    // Store 1: fence, one repair record per key commit 3 touched, base marker.
    let written = &broker.changelogs[1][before..];
    let repairs = written
        .iter()
        .filter(|r| r.header_name == crate::changelog::TAG_HEADER)
        .count();
    assert!(repairs > 0, "no repair records written");
    let last = written.last().unwrap();
    let Ok(Entry::Marker(m)) = last.entry(1, 0) else {
        panic!("log does not end with a marker")
    };
    assert_eq!(
        (m.kind, m.commit_seq, m.records as usize),
        (MarkerKind::Commit, 2, repairs)
    );
    finish_and_check(broker, restored);
}

/// A zombie (the old owner, still running) finishes a commit after the new owner fenced.
#[test]
fn zombie_writes_after_the_fence_are_ignored() {
    let (mut broker, mut zombie) = start(3);
    let mut owner = restore(&mut broker, fresh_engines(), 2, Crash::None)
        .unwrap()
        .unwrap();
    assert_eq!(owner.commit_seq(), 3);
    // The zombie commits 4 with its old epoch; all of it lands after the fence.
    assert!(step(&mut broker, &mut zombie, Crash::None));
    // Its commit differs from the owner's (bigger batch) to make a wrong merge visible.
    zombie.process(&mut broker, 7);
    assert!(zombie.commit(&mut broker, Crash::None));
    step(&mut broker, &mut owner, Crash::None);
    // A third instance restores from scratch: the zombie's records must not count.
    let third = restore(&mut broker, fresh_engines(), 3, Crash::None)
        .unwrap()
        .unwrap();
    assert_eq!(third.commit_seq(), 4);
    assert_eq!(third.snapshots(), owner.snapshots());
    finish_and_check(broker, third);
}

/// The interleaving that makes "a marker in any store" unsafe: the zombie's marker lands
/// before the fence in store 0, but its data records land after the fence in store 1.
#[test]
fn zombie_commit_straddling_the_fence_is_rolled_back() {
    let (mut broker, mut zombie) = start(3);
    let mut scratch = broker.clone();
    zombie.process(&mut scratch, BATCH);
    assert!(zombie.commit(&mut scratch, Crash::None));
    let late: Vec<ChangelogRecord> = scratch.changelogs[1][broker.changelogs[1].len()..].to_vec();
    broker.changelogs[0] = scratch.changelogs[0].clone();
    broker.output = scratch.output.clone();
    let zombie_engines = zombie.into_engines();
    let owner = restore_with(&mut broker, fresh_engines(), 2, Crash::None, |b| {
        b.changelogs[1].extend(late)
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        owner.commit_seq(),
        3,
        "commit 4 is not complete inside the fence cut"
    );
    // The zombie machine later gets the partition back: its store 0 checkpoint (commit 4)
    // matches the marker at its offset but was rolled back, so it must be wiped.
    let back = restore(&mut broker, zombie_engines, 4, Crash::None)
        .unwrap()
        .unwrap();
    assert_eq!(back.commit_seq(), 3);
    assert_eq!(back.snapshots(), owner.snapshots());
    finish_and_check(broker, back);
}

#[test]
fn checkpoint_that_does_not_match_the_changelog_forces_a_full_restore() {
    let (mut broker, task) = start(5);
    let engines = task.into_engines();
    // Compaction (offsets renumbered in this simulation) moves the markers away from the
    // offsets the checkpoints name.
    broker.changelogs = broker.changelogs.iter().map(|l| compact(l)).collect();
    let restored = restore(&mut broker, engines, 2, Crash::None)
        .unwrap()
        .unwrap();
    assert_eq!(restored.commit_seq(), 5);
    finish_and_check(broker, restored);
}

#[test]
fn a_local_checkpoint_on_a_zombies_commit_does_not_match() {
    // The local store holds commit 4 as a zombie wrote it (epoch 1, input 900); the changelog
    // has commit 4 from a newer restore (epoch 2, input 0: e.g. `sluice replay`'s rewind).
    let marker = |epoch: u64, input_offset: i64, output_seq: u64| Marker {
        kind: MarkerKind::Commit,
        commit_seq: 4,
        epoch,
        input_offset,
        output_seq,
        records: 0,
        rebuild: crate::Rebuild::NONE,
    };
    let at_zombie_checkpoint = || {
        let mut r = Restorer::new(1);
        r.from_checkpoint(
            0,
            crate::Checkpoint {
                marker_offset: 10,
                commit_seq: 4,
                epoch: 1 << 16,
            },
        );
        r.feed(0, 10, Entry::Marker(marker(1 << 16, 900, 70)))
            .unwrap();
        r
    };
    let mut r = at_zombie_checkpoint();
    let err = r
        .feed(0, 11, Entry::Marker(marker(2 << 16, 0, 0)))
        .unwrap_err();
    assert!(
        matches!(err, StateError::CheckpointMismatch { store: 0, .. }),
        "{err}"
    );
    // A restore restating the same commit with the same position is not a mismatch.
    let mut r = at_zombie_checkpoint();
    r.feed(0, 11, Entry::Marker(marker(2 << 16, 900, 70)))
        .unwrap();
}

#[test]
fn restorer_reports_mismatch_on_the_first_record() {
    let mut r = Restorer::new(1);
    r.from_checkpoint(
        0,
        crate::Checkpoint {
            marker_offset: 10,
            commit_seq: 3,
            epoch: 1 << 16,
        },
    );
    let other = Marker {
        kind: MarkerKind::Commit,
        commit_seq: 3,
        epoch: 2 << 16,
        input_offset: 0,
        output_seq: 0,
        records: 0,
        rebuild: crate::Rebuild::NONE,
    };
    let err = r.feed(0, 10, Entry::Marker(other)).unwrap_err();
    assert!(
        matches!(err, StateError::CheckpointMismatch { store: 0, .. }),
        "{err}"
    );
    r.reset_store(0);
    let tag = Tag {
        epoch: 1,
        commit_seq: 1,
        input_end: 1,
    };
    r.feed(
        0,
        0,
        Entry::Data {
            tag,
            key: b"k",
            value: Some(b"v"),
        },
    )
    .unwrap();
}

#[test]
fn restorer_refuses_stores_more_than_one_commit_apart() {
    let mut r = Restorer::new(2);
    let m = |c| {
        Entry::Marker(Marker {
            kind: MarkerKind::Commit,
            commit_seq: c,
            epoch: 1,
            input_offset: c as i64,
            output_seq: c,
            records: 0,
            rebuild: crate::Rebuild::NONE,
        })
    };
    r.feed(0, 0, m(5)).unwrap();
    r.feed(1, 0, m(3)).unwrap();
    r.expect_fence(2);
    assert!(
        matches!(r.finish(), Err(StateError::Usage(_))),
        "finish before the fence"
    );
    r.feed(0, 1, Entry::Marker(Marker::fence(2))).unwrap();
    r.feed(1, 1, Entry::Marker(Marker::fence(2))).unwrap();
    assert!(matches!(r.finish(), Err(StateError::Inconsistent(_))));
}

#[test]
fn progress_callback_counts_records() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut r = Restorer::new(1);
    r.set_total(0, 40_000);
    let s2 = seen.clone();
    r.on_progress(move |p| s2.lock().unwrap().push(*p));
    for i in 0..40_000u32 {
        let tag = Tag {
            epoch: 1,
            commit_seq: 1,
            input_end: 1,
        };
        let key = i.to_be_bytes();
        r.feed(
            0,
            i64::from(i),
            Entry::Data {
                tag,
                key: &key,
                value: None,
            },
        )
        .unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[1].read, seen[1].total), (32_768, 40_000));
    assert_eq!(r.progress(0).read, 40_000);
}
