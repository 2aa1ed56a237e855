//! Typed state tables: a write-back cache of decoded values over a `KvStore` engine.
//!
//! The hot path works on decoded values (a window accumulator, a detector) without
//! serialising per record; a commit serialises only the entries touched since the last one,
//! which become that commit's changelog records and its RocksDB batch.

use std::collections::{BTreeMap, HashMap};

use crate::{KeyRange, KvStore, StateError};

/// A value a table can keep: bytes in the changelog and the engine, typed in memory.
pub trait Encode: Send {
    fn encode(&self, out: &mut Vec<u8>);
}

/// A value that can be decoded without outside context.
pub trait Codec: Encode + Sized {
    fn decode(bytes: &[u8]) -> Result<Self, StateError>;
}

/// Decodes a table value; a closure when decoding needs context (a detector's spec).
pub type DecodeFn<V> = Box<dyn Fn(&[u8]) -> Result<V, StateError> + Send>;

/// What the runner needs from every table, whatever its value type.
pub trait AnyTable: Send {
    /// Entries changed since the last call, serialised: `None` is a delete.
    fn drain_dirty(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>);
    /// Takes the restored engine as the table's backing store, dropping what was cached.
    fn attach(&mut self, engine: Box<dyn KvStore>) -> Result<(), StateError>;
    /// The backing engine, once attached.
    fn engine_mut(&mut self) -> Option<&mut Box<dyn KvStore>>;
    /// Gives the engine back (task revoked) and forgets the cache.
    fn detach(&mut self) -> Option<Box<dyn KvStore>>;
    /// Entries in memory.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A table whose entries are all in memory, ordered by key (for window closing by time).
/// Bounded by what the stage keeps open; the engine holds the same data for restarts.
pub struct OrderedTable<V> {
    map: BTreeMap<Vec<u8>, V>,
    dirty: HashMap<Vec<u8>, ()>,
    engine: Option<Box<dyn KvStore>>,
}

impl<V> Default for OrderedTable<V> {
    fn default() -> Self {
        OrderedTable {
            map: BTreeMap::new(),
            dirty: HashMap::new(),
            engine: None,
        }
    }
}

impl<V: Codec> OrderedTable<V> {
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.map.get(key)
    }

    /// The value under `key`, created with `init` if absent; marks it dirty.
    pub fn entry(&mut self, key: &[u8], init: impl FnOnce() -> V) -> &mut V {
        if !self.dirty.contains_key(key) {
            self.dirty.insert(key.to_vec(), ());
        }
        if !self.map.contains_key(key) {
            self.map.insert(key.to_vec(), init());
        }
        self.map.get_mut(key).expect("inserted above")
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let v = self.map.remove(key);
        if v.is_some() {
            self.dirty.insert(key.to_vec(), ());
        }
        v
    }

    /// Removes and returns, in key order, every entry with key below `end`.
    pub fn pop_below(&mut self, end: &[u8], mut f: impl FnMut(&[u8], V)) {
        while let Some(first) = self.map.first_key_value().map(|(k, _)| k.clone()) {
            if first.as_slice() >= end {
                break;
            }
            let v = self.map.remove(&first).expect("present");
            f(&first, v);
            self.dirty.insert(first, ());
        }
    }
}

impl<V: Codec> AnyTable for OrderedTable<V> {
    fn drain_dirty(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        for (k, ()) in self.dirty.drain() {
            let v = self.map.get(&k).map(|v| {
                let mut b = Vec::new();
                v.encode(&mut b);
                b
            });
            out.push((k, v));
        }
    }

    fn attach(&mut self, engine: Box<dyn KvStore>) -> Result<(), StateError> {
        self.map.clear();
        self.dirty.clear();
        for kv in engine.scan(KeyRange::all())? {
            let (k, v) = kv?;
            self.map.insert(k, V::decode(&v)?);
        }
        self.engine = Some(engine);
        Ok(())
    }

    fn engine_mut(&mut self) -> Option<&mut Box<dyn KvStore>> {
        self.engine.as_mut()
    }

    fn detach(&mut self) -> Option<Box<dyn KvStore>> {
        self.map.clear();
        self.dirty.clear();
        self.engine.take()
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A table that keeps at most `capacity` clean entries in memory and reads misses from the
/// engine: for state that grows with the number of keys (detectors, dedup, alerts).
pub struct CachedTable<V> {
    map: HashMap<Vec<u8>, (V, bool)>,
    capacity: usize,
    engine: Option<Box<dyn KvStore>>,
    decode: DecodeFn<V>,
}

impl<V: Codec + 'static> CachedTable<V> {
    pub fn new(capacity: usize) -> Self {
        Self::with_decoder(capacity, Box::new(V::decode))
    }
}

impl<V: Encode> CachedTable<V> {
    pub fn with_decoder(capacity: usize, decode: DecodeFn<V>) -> Self {
        CachedTable {
            map: HashMap::new(),
            capacity,
            engine: None,
            decode,
        }
    }

    /// The value under `key` (loaded from the engine on a miss, else `init`); marks it dirty.
    pub fn get_mut(&mut self, key: &[u8], init: impl FnOnce() -> V) -> Result<&mut V, StateError> {
        if !self.map.contains_key(key) {
            let v = match &self.engine {
                Some(e) => match e.get(key)? {
                    Some(b) => (self.decode)(&b)?,
                    None => init(),
                },
                None => init(),
            };
            self.map.insert(key.to_vec(), (v, true));
        }
        let slot = self.map.get_mut(key).expect("inserted above");
        slot.1 = true;
        Ok(&mut slot.0)
    }

    /// Evicts clean entries when over capacity (after a commit made everything clean).
    pub fn evict(&mut self) {
        if self.map.len() > self.capacity {
            self.map.retain(|_, (_, dirty)| *dirty);
        }
    }
}

impl<V: Encode> AnyTable for CachedTable<V> {
    fn drain_dirty(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        for (k, (v, dirty)) in self.map.iter_mut() {
            if *dirty {
                let mut b = Vec::new();
                v.encode(&mut b);
                out.push((k.clone(), Some(b)));
                *dirty = false;
            }
        }
        self.evict();
    }

    fn attach(&mut self, engine: Box<dyn KvStore>) -> Result<(), StateError> {
        self.map.clear();
        self.engine = Some(engine);
        Ok(())
    }

    fn engine_mut(&mut self) -> Option<&mut Box<dyn KvStore>> {
        self.engine.as_mut()
    }

    fn detach(&mut self) -> Option<Box<dyn KvStore>> {
        self.map.clear();
        self.engine.take()
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}
