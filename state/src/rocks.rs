//! The RocksDB engine: one RocksDB instance per store.
//!
//! Why one DB per store rather than a column family per store in one DB per task:
//! - every store has its own changelog and therefore its own checkpoint; nothing needs an
//!   atomic write across stores, so one DB per task buys nothing;
//! - we write without a WAL (below). With several column families and no WAL, each family's
//!   memtable flushes independently, so after a crash family A may hold batch 10 and family B
//!   batch 8 (RocksDB's `atomic_flush` exists for that, with its own costs). With a single
//!   family a flush persists one memtable, i.e. a prefix of the write sequence, and a batch
//!   never straddles two memtables: data and checkpoint come back in step;
//! - `wipe` touches one store only, and a store can be dropped from a topology by deleting
//!   its folder.
//!
//! Why no WAL: the changelog already is the durable log. Without a WAL a crash loses the
//! writes still in the memtable, and because the checkpoint key is inside the same
//! `WriteBatch`, the checkpoint rolls back with them; restore then reads a longer changelog
//! tail. The one thing that would break this is a write of data without its checkpoint in a
//! *later* batch surviving while the checkpoint batch did not, which the prefix property
//! above rules out. Clean shutdown flushes memtables (`avoid_flush_during_shutdown` stays false).
//!
//! Keys: user keys are stored behind the byte `0x01`, the checkpoint under `0x00`, so the
//! checkpoint can never collide with or show up in a user scan.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, IteratorMode, Options, ReadOptions, WriteOptions,
    DB,
};
use serde::Deserialize;

use crate::size::ByteSize;
use crate::{Checkpoint, KeyRange, KvStore, ScanIter, StateError, WriteBatch};

const META_CHECKPOINT: &[u8] = b"\x00checkpoint";
const DATA_PREFIX: u8 = 0x01;

/// Tuning of the RocksDB stores. Defaults suit a few hundred thousand keys per task on a
/// small node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RocksConfig {
    /// Memtable size per store; larger means fewer, bigger flushes during restore. Default `32MiB`.
    #[serde(default = "default_write_buffer")]
    pub write_buffer: ByteSize,
    /// Block cache shared by every store opened with the same [`RocksEnv`]. Default `64MiB`.
    #[serde(default = "default_block_cache")]
    pub block_cache: ByteSize,
    /// Bloom filter bits per key; 0 turns filters off. Default 10 (~1% false positives): window
    /// stores look up keys of windows that do not exist yet on every first event, and the
    /// filter answers those misses without reading a block.
    #[serde(default = "default_bloom_bits")]
    pub bloom_bits_per_key: f64,
}

fn default_write_buffer() -> ByteSize {
    ByteSize::mib(32)
}
fn default_block_cache() -> ByteSize {
    ByteSize::mib(64)
}
fn default_bloom_bits() -> f64 {
    10.0
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            write_buffer: default_write_buffer(),
            block_cache: default_block_cache(),
            bloom_bits_per_key: default_bloom_bits(),
        }
    }
}

/// Options and the block cache shared by the stores of one process.
#[derive(Clone)]
pub struct RocksEnv {
    opts: Options,
}

impl RocksEnv {
    pub fn new(config: &RocksConfig) -> Self {
        let cache = Cache::new_lru_cache(config.block_cache.0 as usize);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_format_version(5);
        if config.bloom_bits_per_key > 0.0 {
            table.set_bloom_filter(config.bloom_bits_per_key, false);
            table.set_whole_key_filtering(true);
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_bottommost_compression_type(DBCompressionType::Lz4);
        opts.set_write_buffer_size(config.write_buffer.0 as usize);
        opts.set_level_compaction_dynamic_level_bytes(true);
        RocksEnv { opts }
    }
}

/// One store in its own RocksDB directory.
pub struct RocksStore {
    path: PathBuf,
    name: String,
    db: DB,
    write_opts: WriteOptions,
}

impl RocksStore {
    /// Opens (creating if needed) the store in `path`; `name` appears in errors and logs.
    pub fn open(env: &RocksEnv, path: impl AsRef<Path>, name: &str) -> Result<Self, StateError> {
        let path = path.as_ref().to_path_buf();
        let db = DB::open(&env.opts, &path).map_err(|source| StateError::Rocks {
            store: name.to_owned(),
            source,
        })?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        Ok(RocksStore {
            path,
            name: name.to_owned(),
            db,
            write_opts,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rocksdb::Error) -> StateError {
        StateError::Rocks {
            store: self.name.clone(),
            source,
        }
    }
}

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(key);
    k
}

impl KvStore for RocksStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(data_key(key)).map_err(|e| self.err(e))
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>, StateError> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let lower = match &range.start {
            Bound::Included(s) | Bound::Excluded(s) => data_key(s),
            Bound::Unbounded => vec![DATA_PREFIX],
        };
        // RocksDB's upper bound is exclusive; the smallest key after `e` is `e` + 0x00.
        let upper = match &range.end {
            Bound::Included(e) => {
                let mut u = data_key(e);
                u.push(0);
                u
            }
            Bound::Excluded(e) => data_key(e),
            Bound::Unbounded => vec![DATA_PREFIX + 1],
        };
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.clone());
        ro.set_iterate_upper_bound(upper);
        // Window-close scans read each key once; keep them from evicting hot blocks.
        ro.fill_cache(false);
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(&lower, rocksdb::Direction::Forward), ro);
        let excluded_start = match &range.start {
            Bound::Excluded(s) => Some(s.clone()),
            _ => None,
        };
        let name = self.name.clone();
        Ok(Box::new(iter.filter_map(move |item| match item {
            Ok((k, v)) => {
                let key = &k[1..];
                if excluded_start.as_deref() == Some(key) {
                    return None;
                }
                Some(Ok((key.to_vec(), v.into_vec())))
            }
            Err(source) => Some(Err(StateError::Rocks {
                store: name.clone(),
                source,
            })),
        })))
    }

    fn write(
        &mut self,
        batch: WriteBatch,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StateError> {
        let mut wb = rocksdb::WriteBatch::default();
        let mut buf = Vec::new();
        for (k, v) in batch.iter() {
            buf.clear();
            buf.push(DATA_PREFIX);
            buf.extend_from_slice(k);
            match v {
                Some(v) => wb.put(&buf, v),
                None => wb.delete(&buf),
            }
        }
        if let Some(cp) = checkpoint {
            wb.put(META_CHECKPOINT, cp.encode());
        }
        self.db
            .write_opt(wb, &self.write_opts)
            .map_err(|e| self.err(e))
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        match self.db.get(META_CHECKPOINT).map_err(|e| self.err(e))? {
            Some(bytes) => Ok(Some(Checkpoint::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn wipe(&mut self) -> Result<(), StateError> {
        // One range tombstone over data and checkpoint, written atomically; the compaction
        // afterwards only reclaims disk space.
        let mut wb = rocksdb::WriteBatch::default();
        wb.delete_range(&[0x00][..], &[DATA_PREFIX + 1][..]);
        self.db
            .write_opt(wb, &self.write_opts)
            .map_err(|e| self.err(e))?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        tracing::info!(store = %self.name, path = %self.path.display(), "Wiped local store.");
        Ok(())
    }

    fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, RocksStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(
            &RocksEnv::new(&RocksConfig::default()),
            dir.path().join("s"),
            "s",
        )
        .unwrap();
        (dir, store)
    }

    crate::conformance::conformance_suite!(open);

    #[test]
    fn data_and_checkpoint_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let env = RocksEnv::new(&RocksConfig::default());
        let cp = Checkpoint {
            marker_offset: 9,
            commit_seq: 3,
            epoch: 1,
        };
        {
            let mut s = RocksStore::open(&env, dir.path().join("s"), "s").unwrap();
            let mut b = WriteBatch::new();
            b.put(b"a".to_vec(), b"1".to_vec());
            s.write(b, Some(&cp)).unwrap();
        }
        let s = RocksStore::open(&env, dir.path().join("s"), "s").unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.checkpoint().unwrap(), Some(cp));
    }

    #[test]
    fn config_reads_human_sizes_and_rejects_unknown_keys() {
        let c: RocksConfig = serde_json::from_str(r#"{"write_buffer": "8MiB"}"#).unwrap();
        assert_eq!(c.write_buffer, ByteSize::mib(8));
        assert_eq!(c.block_cache, ByteSize::mib(64));
        assert!(serde_json::from_str::<RocksConfig>(r#"{"wal": true}"#).is_err());
    }
}
