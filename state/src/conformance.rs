//! The one conformance suite every [`KvStore`] engine must pass.
//!
//! Each check is a generic function; `conformance_suite!(open)` expands to one `#[test]` per
//! check inside the engine's test module, where `open()` returns `(guard, store)` (the guard
//! keeps e.g. a temporary directory alive).

use std::ops::Bound;

use crate::{Checkpoint, KeyRange, KvStore, WriteBatch};

fn keys<S: KvStore>(s: &S, range: KeyRange) -> Vec<Vec<u8>> {
    s.scan(range).unwrap().map(|r| r.unwrap().0).collect()
}

fn put_all<S: KvStore>(s: &mut S, keys: &[&[u8]]) {
    let mut b = WriteBatch::new();
    for k in keys {
        b.put(k.to_vec(), [b"v:".as_slice(), k].concat());
    }
    s.write(b, None).unwrap();
}

pub(crate) fn empty_store<S: KvStore>(s: S) {
    assert_eq!(s.get(b"x").unwrap(), None);
    assert_eq!(s.checkpoint().unwrap(), None);
    assert!(keys(&s, KeyRange::all()).is_empty());
}

pub(crate) fn batch_last_op_wins_and_checkpoint_rides_along<S: KvStore>(mut s: S) {
    let cp1 = Checkpoint {
        marker_offset: 10,
        commit_seq: 1,
        epoch: 1,
    };
    let mut b = WriteBatch::new();
    b.put(b"a".to_vec(), b"1".to_vec());
    b.put(b"b".to_vec(), b"2".to_vec());
    b.delete(b"a".to_vec());
    b.put(b"c".to_vec(), Vec::new());
    b.put(b"b".to_vec(), b"3".to_vec());
    s.write(b, Some(&cp1)).unwrap();
    assert_eq!(s.get(b"a").unwrap(), None);
    assert_eq!(s.get(b"b").unwrap(), Some(b"3".to_vec()));
    assert_eq!(
        s.get(b"c").unwrap(),
        Some(Vec::new()),
        "empty values are values"
    );
    assert_eq!(s.checkpoint().unwrap(), Some(cp1));

    let mut b = WriteBatch::new();
    b.delete(b"b".to_vec());
    s.write(b, None).unwrap();
    assert_eq!(
        s.checkpoint().unwrap(),
        Some(cp1),
        "a batch without checkpoint keeps the old one"
    );
    let cp2 = Checkpoint {
        marker_offset: 20,
        commit_seq: 2,
        epoch: 1,
    };
    s.write(WriteBatch::new(), Some(&cp2)).unwrap();
    assert_eq!(s.checkpoint().unwrap(), Some(cp2));
    assert_eq!(keys(&s, KeyRange::all()), vec![b"c".to_vec()]);
}

pub(crate) fn scans_are_ordered_and_bounded<S: KvStore>(mut s: S) {
    let all: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"a",
        b"ab",
        b"abc",
        b"b",
        b"\xff",
        b"\xff\xff",
    ];
    // Insert out of order, across two batches.
    put_all(&mut s, &all[4..]);
    put_all(&mut s, &all[..4]);
    let got = keys(&s, KeyRange::all());
    assert_eq!(got, all.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
    let (k, v) = s
        .scan(KeyRange::prefix(b"ab"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((k.as_slice(), v.as_slice()), (&b"ab"[..], &b"v:ab"[..]));

    assert_eq!(
        keys(&s, KeyRange::prefix(b"ab")),
        vec![b"ab".to_vec(), b"abc".to_vec()]
    );
    assert_eq!(
        keys(&s, KeyRange::prefix(b"\xff")),
        vec![b"\xff".to_vec(), b"\xff\xff".to_vec()]
    );
    assert_eq!(
        keys(&s, KeyRange::between(b"a".to_vec(), b"b".to_vec())).len(),
        3
    );
    let incl = KeyRange {
        start: Bound::Excluded(b"a".to_vec()),
        end: Bound::Included(b"b".to_vec()),
    };
    assert_eq!(
        keys(&s, incl),
        vec![b"ab".to_vec(), b"abc".to_vec(), b"b".to_vec()]
    );
    let to = KeyRange {
        start: Bound::Unbounded,
        end: Bound::Excluded(b"a".to_vec()),
    };
    assert_eq!(keys(&s, to), vec![b"".to_vec(), b"\x00".to_vec()]);
    assert!(keys(&s, KeyRange::between(b"b".to_vec(), b"a".to_vec())).is_empty());
    assert!(keys(&s, KeyRange::between(b"b".to_vec(), b"b".to_vec())).is_empty());
}

pub(crate) fn wipe_removes_data_and_checkpoint<S: KvStore>(mut s: S) {
    put_all(&mut s, &[b"a", b"b"]);
    s.write(
        WriteBatch::new(),
        Some(&Checkpoint {
            marker_offset: 1,
            commit_seq: 1,
            epoch: 1,
        }),
    )
    .unwrap();
    s.wipe().unwrap();
    assert_eq!(s.checkpoint().unwrap(), None);
    assert!(keys(&s, KeyRange::all()).is_empty());
    put_all(&mut s, &[b"c"]);
    assert_eq!(keys(&s, KeyRange::all()), vec![b"c".to_vec()]);
    s.flush().unwrap();
}

pub(crate) fn many_keys_round_trip<S: KvStore>(mut s: S) {
    let mut b = WriteBatch::new();
    for i in 0u32..5_000 {
        b.put(i.to_be_bytes().to_vec(), (i * 7).to_le_bytes().to_vec());
    }
    s.write(b, None).unwrap();
    let got: Vec<_> = s
        .scan(KeyRange::all())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got.len(), 5_000);
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(k, &(i as u32).to_be_bytes());
        assert_eq!(v, &((i as u32) * 7).to_le_bytes());
    }
    let mid = keys(
        &s,
        KeyRange::between(100u32.to_be_bytes(), 200u32.to_be_bytes()),
    );
    assert_eq!(mid.len(), 100);
}

macro_rules! conformance_suite {
    ($open:expr) => {
        #[test]
        fn conformance_empty_store() {
            let (_g, s) = $open();
            $crate::conformance::empty_store(s);
        }
        #[test]
        fn conformance_batch_last_op_wins_and_checkpoint_rides_along() {
            let (_g, s) = $open();
            $crate::conformance::batch_last_op_wins_and_checkpoint_rides_along(s);
        }
        #[test]
        fn conformance_scans_are_ordered_and_bounded() {
            let (_g, s) = $open();
            $crate::conformance::scans_are_ordered_and_bounded(s);
        }
        #[test]
        fn conformance_wipe_removes_data_and_checkpoint() {
            let (_g, s) = $open();
            $crate::conformance::wipe_removes_data_and_checkpoint(s);
        }
        #[test]
        fn conformance_many_keys_round_trip() {
            let (_g, s) = $open();
            $crate::conformance::many_keys_round_trip(s);
        }
    };
}
pub(crate) use conformance_suite;
