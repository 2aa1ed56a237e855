//! `CachedStore`: the write-back record cache in front of an engine (Kafka Streams' record
//! cache). Reads hit the cache; puts and deletes only mark keys dirty; a commit turns the dirty
//! set into changelog records and one engine batch. So a key updated 1,000 times between two
//! commits costs one changelog record and one RocksDB write.
//!
//! Commits are two calls because the protocol needs the changelog acked before the engine is
//! written (docs/EXACTLY_ONCE.md): [`CachedStore::dirty_records`] (produce them, then the
//! markers), then [`CachedStore::commit`] with the checkpoint naming the acked marker. Nothing
//! may be processed in between. If producing fails the task must restart and restore: which of
//! the records reached the broker is unknown.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::iter::Peekable;

use serde::Deserialize;

use crate::size::ByteSize;
use crate::{
    ChangelogRecord, Checkpoint, KeyRange, KvPair, KvStore, ScanIter, StateError, Tag, WriteBatch,
};

/// Per-entry bookkeeping counted against the budget besides key and value bytes.
const ENTRY_OVERHEAD: usize = 64;

/// Cache sizing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory budget for cached entries, clean and dirty. Default `16MiB`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// When dirty entries exceed this, [`CachedStore::needs_commit`] asks for an early commit
    /// (dirty entries cannot be evicted). Default `8MiB`.
    #[serde(default = "default_commit_bytes")]
    pub commit_at_dirty_bytes: ByteSize,
}

fn default_max_bytes() -> ByteSize {
    ByteSize::mib(16)
}
fn default_commit_bytes() -> ByteSize {
    ByteSize::mib(8)
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: default_max_bytes(),
            commit_at_dirty_bytes: default_commit_bytes(),
        }
    }
}

/// Counters for metrics (the runtime exports them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub commits: u64,
    pub records_committed: u64,
}

struct Clean {
    /// `None` caches "absent in the engine", which window stores ask about constantly.
    value: Option<Vec<u8>>,
    referenced: bool,
}

pub struct CachedStore<S> {
    engine: S,
    /// Key order, so commits emit sorted batches and scans can merge.
    dirty: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    dirty_bytes: usize,
    clean: HashMap<Vec<u8>, Clean>,
    /// CLOCK order of clean keys; may hold keys no longer clean (skipped when popped).
    clock: VecDeque<Vec<u8>>,
    clean_bytes: usize,
    config: CacheConfig,
    stats: CacheStats,
}

fn entry_size(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
}

impl<S: KvStore> CachedStore<S> {
    pub fn new(engine: S, config: CacheConfig) -> Self {
        CachedStore {
            engine,
            dirty: BTreeMap::new(),
            dirty_bytes: 0,
            clean: HashMap::new(),
            clock: VecDeque::new(),
            clean_bytes: 0,
            config,
            stats: CacheStats::default(),
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.dirty.get(key) {
            self.stats.hits += 1;
            return Ok(v.clone());
        }
        if let Some(c) = self.clean.get_mut(key) {
            self.stats.hits += 1;
            c.referenced = true;
            return Ok(c.value.clone());
        }
        self.stats.misses += 1;
        let value = self.engine.get(key)?;
        self.insert_clean(key.to_vec(), value.clone());
        Ok(value)
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.set_dirty(key.into(), Some(value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.set_dirty(key.into(), None);
    }

    fn set_dirty(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if let Some(old) = self.clean.remove(&key) {
            self.clean_bytes -= entry_size(&key, old.value.as_deref());
        }
        self.dirty_bytes += entry_size(&key, value.as_deref());
        if let Some(old) = self.dirty.insert(key.clone(), value) {
            self.dirty_bytes -= entry_size(&key, old.as_deref());
        }
        self.evict();
    }

    /// Ordered scan of the committed engine contents overlaid with uncommitted changes.
    pub fn scan(&self, range: KeyRange) -> Result<MergedScan<'_>, StateError> {
        let dirty: DirtyIter<'_> = if range.is_empty() {
            Box::new(std::iter::empty())
        } else {
            Box::new(self.dirty.range::<[u8], _>(range.as_bounds()))
        };
        Ok(MergedScan {
            engine: self.engine.scan(range)?.peekable(),
            dirty: dirty.peekable(),
        })
    }

    /// The changelog records of the current commit, in key order, each tagged with `tag`.
    pub fn dirty_records(&self, tag: &Tag) -> Vec<ChangelogRecord> {
        self.dirty
            .iter()
            .map(|(k, v)| ChangelogRecord::data(k.clone(), v.clone(), tag))
            .collect()
    }

    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// True when the dirty set has outgrown its share of memory and the runtime should commit.
    pub fn needs_commit(&self) -> bool {
        self.dirty_bytes >= self.config.commit_at_dirty_bytes.0 as usize
    }

    /// Writes the dirty set and `checkpoint` to the engine in one atomic batch and keeps the
    /// entries as clean cache. Call only after the dirty records and the marker named by
    /// `checkpoint` are acked by the broker. Returns the number of records written.
    pub fn commit(&mut self, checkpoint: &Checkpoint) -> Result<usize, StateError> {
        let dirty = std::mem::take(&mut self.dirty);
        let n = dirty.len();
        let mut batch = WriteBatch::with_capacity(n);
        for (k, v) in &dirty {
            batch.push(k.clone(), v.clone());
        }
        if let Err(e) = self.engine.write(batch, Some(checkpoint)) {
            self.dirty = dirty;
            return Err(e);
        }
        self.dirty_bytes = 0;
        for (k, v) in dirty {
            self.insert_clean(k, v);
        }
        self.stats.commits += 1;
        self.stats.records_committed += n as u64;
        Ok(n)
    }

    /// Forgets every cached entry, dirty ones included (after a failed commit, before a restore).
    pub fn clear_cache(&mut self) {
        self.dirty.clear();
        self.clean.clear();
        self.clock.clear();
        self.dirty_bytes = 0;
        self.clean_bytes = 0;
    }

    pub fn engine(&self) -> &S {
        &self.engine
    }

    /// The engine, for restore. Clears the cache first so it cannot serve stale entries.
    pub fn engine_mut(&mut self) -> &mut S {
        self.clear_cache();
        &mut self.engine
    }

    pub fn into_engine(self) -> S {
        self.engine
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Bytes held (clean + dirty, with per-entry overhead).
    pub fn cached_bytes(&self) -> usize {
        self.clean_bytes + self.dirty_bytes
    }

    fn insert_clean(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.clean_bytes += entry_size(&key, value.as_deref());
        self.clock.push_back(key.clone());
        if let Some(old) = self.clean.insert(
            key.clone(),
            Clean {
                value,
                referenced: false,
            },
        ) {
            self.clean_bytes -= entry_size(&key, old.value.as_deref());
        }
        self.evict();
    }

    /// CLOCK eviction of clean entries until the budget holds: an entry read since it last
    /// came around gets a second chance.
    fn evict(&mut self) {
        let max = self.config.max_bytes.0 as usize;
        while self.clean_bytes + self.dirty_bytes > max {
            let Some(key) = self.clock.pop_front() else {
                break;
            };
            match self.clean.get_mut(&key) {
                Some(c) if c.referenced => {
                    c.referenced = false;
                    self.clock.push_back(key);
                }
                Some(_) => {
                    let c = self.clean.remove(&key).expect("entry seen just above");
                    self.clean_bytes -= entry_size(&key, c.value.as_deref());
                    self.stats.evictions += 1;
                }
                None => {}
            }
        }
        // Stale queue slots (keys that turned dirty) must not grow without bound.
        if self.clock.len() > 2 * self.clean.len() + 1024 {
            let clean = &self.clean;
            self.clock.retain(|k| clean.contains_key(k));
        }
    }
}

/// Dirty entries in key order; `None` is a pending delete.
type DirtyIter<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a>;

/// Iterator returned by [`CachedStore::scan`]: engine rows and dirty entries merged by key,
/// dirty winning, tombstones hiding the key.
pub struct MergedScan<'a> {
    engine: Peekable<ScanIter<'a>>,
    dirty: Peekable<DirtyIter<'a>>,
}

impl Iterator for MergedScan<'_> {
    type Item = Result<KvPair, StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_dirty = match (self.engine.peek(), self.dirty.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.engine.next(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(Ok((ek, _))), Some((dk, _))) => {
                    if ek == *dk {
                        self.engine.next(); // shadowed by the dirty entry
                        true
                    } else {
                        *dk < ek
                    }
                }
            };
            if !take_dirty {
                return self.engine.next();
            }
            let (k, v) = self.dirty.next().expect("peeked");
            if let Some(v) = v {
                return Some(Ok((k.clone(), v.clone())));
            }
        }
    }
}
