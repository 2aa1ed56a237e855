//! The in-memory engine: a `BTreeMap`, for tests and for stages whose state is small enough
//! to rebuild from the changelog at every start.

use std::collections::BTreeMap;

use crate::{Checkpoint, KeyRange, KvStore, ScanIter, StateError, WriteBatch};

#[derive(Debug, Default, Clone)]
pub struct MemStore {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    checkpoint: Option<Checkpoint>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// All contents, for comparing stores in tests.
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.data.clone()
    }
}

impl KvStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.data.get(key).cloned())
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>, StateError> {
        // BTreeMap::range panics on inverted ranges; an empty result is what callers mean.
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let items: Vec<_> = self
            .data
            .range::<[u8], _>(range.as_bounds())
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect();
        Ok(Box::new(items.into_iter()))
    }

    fn write(
        &mut self,
        batch: WriteBatch,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StateError> {
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => self.data.insert(k, v),
                None => self.data.remove(&k),
            };
        }
        if let Some(cp) = checkpoint {
            self.checkpoint = Some(*cp);
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        Ok(self.checkpoint)
    }

    fn wipe(&mut self) -> Result<(), StateError> {
        self.data.clear();
        self.checkpoint = None;
        Ok(())
    }

    fn flush(&self) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    fn open() -> ((), super::MemStore) {
        ((), super::MemStore::new())
    }

    crate::conformance::conformance_suite!(open);
}
