//! Downstream de-duplication by message id (`sluice.id` = `<stage>/<partition>/<seq>`).
//!
//! A replayed commit regenerates the same records with the same ids (processing is
//! deterministic), so a consumer keeps, per producing (stage, partition), the highest sequence
//! it has accepted and drops anything at or below it. The marks live in a [`CachedStore`], so
//! they are changelogged and restored with the rest of the consumer's state and move with it
//! under the same commit protocol.

use crate::{CachedStore, KvStore, StateError};

/// Header carrying the message id on every record a stage writes.
pub const ID_HEADER: &str = "sluice.id";

/// A parsed `sluice.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageId<'a> {
    pub stage: &'a str,
    pub partition: i32,
    pub seq: u64,
}

impl<'a> MessageId<'a> {
    /// Parses `<stage>/<partition>/<seq>`; the stage name may itself contain `/`.
    pub fn parse(s: &'a str) -> Result<Self, StateError> {
        let bad = |why: &str| StateError::decode("sluice.id header", format!("`{s}`: {why}"));
        let (rest, seq) = s
            .rsplit_once('/')
            .ok_or_else(|| bad("expected <stage>/<partition>/<seq>"))?;
        let (stage, partition) = rest
            .rsplit_once('/')
            .ok_or_else(|| bad("expected <stage>/<partition>/<seq>"))?;
        if stage.is_empty() {
            return Err(bad("empty stage"));
        }
        Ok(MessageId {
            stage,
            partition: partition
                .parse()
                .map_err(|_| bad("partition is not an i32"))?,
            seq: seq.parse().map_err(|_| bad("seq is not a u64"))?,
        })
    }

    pub fn parse_bytes(b: &'a [u8]) -> Result<Self, StateError> {
        let s = std::str::from_utf8(b)
            .map_err(|_| StateError::decode("sluice.id header", "not UTF-8"))?;
        Self::parse(s)
    }
}

impl std::fmt::Display for MessageId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.stage, self.partition, self.seq)
    }
}

/// High-water marks per producing (stage, partition).
pub struct HighWaterMarks<S> {
    store: CachedStore<S>,
}

fn mark_key(stage: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(stage.len() + 5);
    k.extend_from_slice(stage.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

impl<S: KvStore> HighWaterMarks<S> {
    pub fn new(store: CachedStore<S>) -> Self {
        HighWaterMarks { store }
    }

    /// True the first time a given id (or a higher sequence of its producer) is seen; the
    /// record must then be processed. False for a replay: drop the record.
    pub fn accept(&mut self, id: &MessageId<'_>) -> Result<bool, StateError> {
        let key = mark_key(id.stage, id.partition);
        if let Some(mark) = self.read(&key)? {
            if id.seq <= mark {
                return Ok(false);
            }
        }
        self.store.put(key, id.seq.to_be_bytes().to_vec());
        Ok(true)
    }

    pub fn high_water_mark(
        &mut self,
        stage: &str,
        partition: i32,
    ) -> Result<Option<u64>, StateError> {
        self.read(&mark_key(stage, partition))
    }

    fn read(&mut self, key: &[u8]) -> Result<Option<u64>, StateError> {
        match self.store.get(key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                    StateError::decode("high-water mark", format!("{} bytes, expected 8", v.len()))
                })?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    /// The underlying store, to commit it with the task's other stores.
    pub fn store_mut(&mut self) -> &mut CachedStore<S> {
        &mut self.store
    }

    pub fn store(&self) -> &CachedStore<S> {
        &self.store
    }

    pub fn into_store(self) -> CachedStore<S> {
        self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CacheConfig, Checkpoint, MemStore};

    #[test]
    fn ids_parse_and_print() {
        let id = MessageId::parse("enrich/by-site/3/17").unwrap();
        assert_eq!(
            id,
            MessageId {
                stage: "enrich/by-site",
                partition: 3,
                seq: 17
            }
        );
        assert_eq!(id.to_string(), "enrich/by-site/3/17");
        for bad in ["", "a/b", "/1/2", "a/x/2", "a/1/-2", "a/1/"] {
            assert!(MessageId::parse(bad).is_err(), "{bad}");
        }
        assert!(MessageId::parse_bytes(&[0xff, b'/', b'1', b'/', b'2']).is_err());
    }

    #[test]
    fn replays_are_rejected_and_marks_survive_commit() {
        let mut h = HighWaterMarks::new(CachedStore::new(MemStore::new(), CacheConfig::default()));
        let id = |p, seq| MessageId {
            stage: "agg",
            partition: p,
            seq,
        };
        assert!(h.accept(&id(0, 0)).unwrap());
        assert!(h.accept(&id(0, 5)).unwrap());
        assert!(!h.accept(&id(0, 5)).unwrap());
        assert!(!h.accept(&id(0, 3)).unwrap());
        assert!(h.accept(&id(1, 1)).unwrap(), "partitions are independent");
        assert!(h.accept(&id(0, 6)).unwrap());
        let cp = Checkpoint {
            marker_offset: 0,
            commit_seq: 1,
            epoch: 1,
        };
        assert_eq!(h.store_mut().commit(&cp).unwrap(), 2);
        // A fresh cache over the same engine: the marks come from the engine now.
        let engine = h.into_store().into_engine();
        let mut h = HighWaterMarks::new(CachedStore::new(engine, CacheConfig::default()));
        assert_eq!(h.high_water_mark("agg", 0).unwrap(), Some(6));
        assert!(!h.accept(&id(0, 6)).unwrap());
        assert!(h.accept(&id(0, 7)).unwrap());
    }
}
