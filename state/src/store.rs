//! The engine-neutral store trait. No RocksDB type appears here (TiKV's `engine_traits`
//! shape): the runtime, the cache and the restore logic see only [`KvStore`].

use std::ops::Bound;

use crate::{Checkpoint, StateError};

/// An owned key/value pair as returned by scans.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// The iterator a scan returns: ascending key order, borrowing the store.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StateError>> + 'a>;

/// A half-open or closed key range for [`KvStore::scan`], compared bytewise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// `start <= key < end`.
    pub fn between(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end: match prefix_successor(prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        }
    }

    /// True when no key can be in the range (start after end, or `(x, x)` exclusive).
    pub fn is_empty(&self) -> bool {
        use Bound::{Excluded, Included};
        match (&self.start, &self.end) {
            (Included(s), Included(e)) => s > e,
            (Included(s) | Excluded(s), Excluded(e)) | (Excluded(s), Included(e)) => s >= e,
            _ => false,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let after_start = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        after_start && self.before_end(key)
    }

    /// True while `key` has not passed the end bound (scans stop at the first false).
    pub fn before_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        }
    }

    /// `(start, end)` borrowed, in the form `BTreeMap::range` takes.
    pub fn as_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_ref_bound(&self.start), as_ref_bound(&self.end))
    }
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key with this prefix, `None` if there is none (all 0xff).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Puts and deletes applied together by [`KvStore::write`]; later operations on the same key win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        WriteBatch {
            ops: Vec::with_capacity(n),
        }
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// A put (`Some`) or a delete (`None`).
    pub fn push(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.ops.push((key, value));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// A local key/value store of one task, one instance per store.
///
/// Contract (checked by the conformance suite in `conformance.rs` for every engine):
/// - `write` applies the whole batch and the checkpoint atomically, also across a crash: after
///   a restart the store holds the data of some prefix of its writes and exactly the
///   checkpoint written with the last batch of that prefix;
/// - `scan` yields keys in ascending bytewise order within the range;
/// - `wipe` removes all data and the checkpoint.
pub trait KvStore: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>, StateError>;

    /// Applies `batch`, and when `checkpoint` is given records it in the same atomic write.
    /// `None` leaves the previous checkpoint in place (restore batches use it: replaying the
    /// changelog from that checkpoint again is idempotent).
    fn write(
        &mut self,
        batch: WriteBatch,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StateError>;

    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError>;

    fn wipe(&mut self) -> Result<(), StateError>;

    /// Makes every completed write survive a process crash (not needed for correctness: the
    /// changelog is the authority; it saves restore time, e.g. at shutdown or task revocation).
    fn flush(&self) -> Result<(), StateError>;
}

/// Lets the runtime pick the engine at run time (`Box<dyn KvStore>`).
impl<S: KvStore + ?Sized> KvStore for Box<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        (**self).get(key)
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>, StateError> {
        (**self).scan(range)
    }

    fn write(
        &mut self,
        batch: WriteBatch,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StateError> {
        (**self).write(batch, checkpoint)
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        (**self).checkpoint()
    }

    fn wipe(&mut self) -> Result<(), StateError> {
        (**self).wipe()
    }

    fn flush(&self) -> Result<(), StateError> {
        (**self).flush()
    }
}
