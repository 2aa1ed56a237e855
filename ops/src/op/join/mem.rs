//! Tables held in memory, for `sluice test` and tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use apache_avro::types::Value;
use sluice_state::StateError;

use super::{Scope, TableView};
use crate::op::Tables;

/// Tables held in memory, for `sluice test` and tests: one partition per table, every
/// version kept.
#[derive(Default, Clone)]
pub struct MemTables {
    tables: Arc<RwLock<HashMap<String, Arc<MemTable>>>>,
}

/// One table of [`MemTables`].
#[derive(Default)]
pub struct MemTable {
    inner: RwLock<MemInner>,
}

#[derive(Default)]
struct MemInner {
    /// Per key, its versions: (offset, value or deleted), oldest first.
    versions: BTreeMap<Vec<u8>, Vec<(i64, Option<Value>)>>,
    next_offset: i64,
}

impl MemTables {
    fn table(&self, topic: &str) -> Arc<MemTable> {
        self.tables
            .write()
            .expect("tables lock")
            .entry(topic.to_string())
            .or_default()
            .clone()
    }

    /// Applies an update of `topic`'s table: a value sets `key`, `None` (a tombstone) deletes.
    pub fn apply(&self, topic: &str, key: &[u8], value: Option<Value>) {
        let table = self.table(topic);
        let mut t = table.inner.write().expect("table lock");
        let offset = t.next_offset;
        t.next_offset += 1;
        t.versions
            .entry(key.to_vec())
            .or_default()
            .push((offset, value));
    }

    /// Keys of `topic`'s table with a value now.
    pub fn len(&self, topic: &str) -> usize {
        let table = self.table(topic);
        let t = table.inner.read().expect("table lock");
        t.versions
            .values()
            .filter(|v| v.last().is_some_and(|(_, v)| v.is_some()))
            .count()
    }
}

impl Tables for MemTables {
    fn view(
        &self,
        topic: &str,
        _scope: Scope,
        _partition: i32,
    ) -> Result<Arc<dyn TableView>, StateError> {
        Ok(self.table(topic))
    }
}

impl TableView for MemTable {
    fn position(&self) -> Vec<i64> {
        vec![self.inner.read().expect("table lock").next_offset]
    }

    fn get_at(&self, key: &[u8], at: &[i64]) -> Result<Option<Value>, StateError> {
        let end = at.first().copied().unwrap_or(0);
        let t = self.inner.read().expect("table lock");
        Ok(t.versions.get(key).and_then(|vs| {
            vs.iter()
                .rev()
                .find(|(o, _)| *o < end)
                .and_then(|(_, v)| v.clone())
        }))
    }
}
