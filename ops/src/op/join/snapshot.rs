//! The join's store: the table position its records are read at.

use std::sync::Arc;

use sluice_state::table::AnyTable;
use sluice_state::{KvStore, StateError};

use super::TableView;

/// The `snapshot` store: the table position the task's records are joined at, replaced at
/// every commit by where the table's reader is then. As a table it is one entry; draining it
/// (what a commit does) takes the new position, so the changelog records of commit *k*
/// carry the snapshot of the records after it, and a task restored from commit *k* joins
/// them with the same table.
pub(super) struct Snapshot {
    /// `None` when the runtime has not materialised the table: every lookup fails as a state
    /// error (the task stops and says so) instead of silently dropping records.
    pub(super) view: Option<Arc<dyn TableView>>,
    /// The position records are joined at now; `None` until restored or first used.
    pub(super) at: Option<Vec<i64>>,
    /// The position last handed to the changelog.
    pub(super) written: Option<Vec<i64>>,
    pub(super) engine: Option<Box<dyn KvStore>>,
}

const SNAPSHOT_KEY: &[u8] = b"at";

fn encode_position(at: &[i64]) -> Vec<u8> {
    at.iter().flat_map(|o| o.to_be_bytes()).collect()
}

fn decode_position(b: &[u8]) -> Result<Vec<i64>, StateError> {
    if b.len() % 8 != 0 {
        return Err(StateError::decode(
            "join snapshot",
            "not a list of 8-byte offsets",
        ));
    }
    Ok(b.chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

impl AnyTable for Snapshot {
    fn drain_dirty(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let Some(view) = &self.view else {
            return;
        };
        let now = view.position();
        if self.written.as_ref() != Some(&now) {
            out.push((SNAPSHOT_KEY.to_vec(), Some(encode_position(&now))));
            self.written = Some(now.clone());
        }
        self.at = Some(now);
    }

    fn attach(&mut self, engine: Box<dyn KvStore>) -> Result<(), StateError> {
        self.at = engine
            .get(SNAPSHOT_KEY)?
            .map(|b| decode_position(&b))
            .transpose()?;
        self.written = self.at.clone();
        self.engine = Some(engine);
        Ok(())
    }

    fn engine_mut(&mut self) -> Option<&mut Box<dyn KvStore>> {
        self.engine.as_mut()
    }

    fn detach(&mut self) -> Option<Box<dyn KvStore>> {
        self.at = None;
        self.written = None;
        self.engine.take()
    }

    fn len(&self) -> usize {
        usize::from(self.written.is_some())
    }
}
