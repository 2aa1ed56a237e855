//! `CachedStore` over both engines.

use crate::{
    ByteSize, CacheConfig, CachedStore, Checkpoint, KeyRange, KvStore, MemStore, RocksConfig,
    RocksEnv, RocksStore, Tag, WriteBatch,
};

/// Runs `f` once over a `MemStore` and once over a `RocksStore`.
fn with_engines(f: impl Fn(Box<dyn KvStore>)) {
    f(Box::new(MemStore::new()));
    let dir = tempfile::tempdir().unwrap();
    let env = RocksEnv::new(&RocksConfig::default());
    f(Box::new(
        RocksStore::open(&env, dir.path().join("s"), "t").unwrap(),
    ));
}

const CP: Checkpoint = Checkpoint {
    marker_offset: 7,
    commit_seq: 1,
    epoch: 1,
};
const TAG: Tag = Tag {
    epoch: 1,
    commit_seq: 1,
    input_end: 10,
};

fn scan_all<S: KvStore>(c: &CachedStore<S>, range: KeyRange) -> Vec<(String, String)> {
    c.scan(range)
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
        })
        .collect()
}

#[test]
fn writes_reach_the_engine_only_at_commit() {
    with_engines(|engine| {
        let mut c = CachedStore::new(engine, CacheConfig::default());
        c.put(b"b".to_vec(), b"1".to_vec());
        c.put(b"a".to_vec(), b"1".to_vec());
        c.put(b"b".to_vec(), b"2".to_vec());
        c.delete(b"z".to_vec());
        assert_eq!(c.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            c.engine().get(b"b").unwrap(),
            None,
            "nothing written before commit"
        );
        let recs = c.dirty_records(&TAG);
        let keys: Vec<_> = recs
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"2".to_vec())),
                (b"z".to_vec(), None)
            ]
        );
        assert!(recs
            .iter()
            .all(|r| crate::Tag::decode(&r.header_value).unwrap() == TAG));
        assert_eq!(c.commit(&CP).unwrap(), 3);
        assert_eq!(c.dirty_len(), 0);
        assert_eq!(c.engine().get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(c.engine().checkpoint().unwrap(), Some(CP));
        assert_eq!(c.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert!(c.dirty_records(&TAG).is_empty());
        let stats = c.stats();
        assert_eq!((stats.commits, stats.records_committed), (1, 3));
    });
}

#[test]
fn scans_merge_dirty_entries_with_the_engine() {
    with_engines(|engine| {
        let mut engine = engine;
        let mut b = WriteBatch::new();
        for k in ["a", "b", "c", "e"] {
            b.put(k.as_bytes().to_vec(), format!("old-{k}").into_bytes());
        }
        engine.write(b, None).unwrap();
        let mut c = CachedStore::new(engine, CacheConfig::default());
        c.put(b"b".to_vec(), b"new-b".to_vec());
        c.delete(b"c".to_vec());
        c.put(b"d".to_vec(), b"new-d".to_vec());
        c.put(b"0".to_vec(), b"new-0".to_vec());
        c.delete(b"zz".to_vec());
        let got = scan_all(&c, KeyRange::all());
        let want = [
            ("0", "new-0"),
            ("a", "old-a"),
            ("b", "new-b"),
            ("d", "new-d"),
            ("e", "old-e"),
        ];
        assert_eq!(got, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
        let mid = scan_all(&c, KeyRange::between(b"b".to_vec(), b"e".to_vec()));
        assert_eq!(
            mid.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["b", "d"]
        );
        assert!(scan_all(&c, KeyRange::between(b"e".to_vec(), b"a".to_vec())).is_empty());
        c.commit(&CP).unwrap();
        assert_eq!(
            scan_all(&c, KeyRange::all()),
            got,
            "same view after the commit"
        );
    });
}

#[test]
fn memory_stays_bounded_and_evicted_keys_read_back() {
    with_engines(|engine| {
        let config = CacheConfig {
            max_bytes: ByteSize(16 << 10),
            commit_at_dirty_bytes: ByteSize(8 << 10),
        };
        let mut c = CachedStore::new(engine, config);
        for round in 0..5u32 {
            for i in 0..80u32 {
                c.put(i.to_be_bytes().to_vec(), vec![round as u8; 100]);
                assert!(
                    c.cached_bytes() <= (16 << 10) + 256,
                    "over budget: {}",
                    c.cached_bytes()
                );
            }
            assert!(
                c.needs_commit(),
                "80 dirty entries of ~170 bytes exceed 8KiB"
            );
            c.commit(&CP).unwrap();
        }
        for i in 0..1_000u32 {
            let v = c.get(&(i % 80).to_be_bytes()).unwrap().unwrap();
            assert_eq!(v, vec![4u8; 100]);
            assert_eq!(c.get(&(1_000 + i).to_be_bytes()).unwrap(), None);
            assert!(c.cached_bytes() <= 16 << 10);
        }
        assert!(c.stats().evictions > 0);
        assert!(c.stats().hits > 0);
    });
}
