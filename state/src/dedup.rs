//! Downstream de-duplication by message id (`sluice.id`).
//!
//! A replayed commit regenerates the same records with the same ids (processing is
//! deterministic), so a consumer keeps, per producing (stage, partition), the highest sequence
//! it has accepted and drops anything at or below it. The marks live in a table ([`IdsTable`]),
//! so they are changelogged and restored with the rest of the consumer's state and move with it
//! under the same commit protocol.
//!
//! On the wire an id is 13 bytes and the stage name: a version byte (1), the producing
//! partition (i32, big-endian), the sequence (u64, big-endian), then the stage's UTF-8 name.
//! Writing one is a copy of 12 bytes into a buffer made once per stage ([`IdWriter`]);
//! reading one is a few bounds checks. Ids written as text (`<stage>/<partition>/<seq>`, before
//! December 2026) are still read, so topics written by an older version de-duplicate alike.

use crate::table::{CachedTable, Codec, Encode};
use crate::StateError;

/// Header carrying the message id on every record a stage writes.
pub const ID_HEADER: &str = "sluice.id";

/// First byte of a binary id. Never the first byte of a text id: stage names start with a
/// letter or digit (the topology validator's rule).
const BINARY_V1: u8 = 1;
/// Version, partition and sequence: the part of an id before the stage name.
const PREFIX: usize = 1 + 4 + 8;

/// A parsed `sluice.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageId<'a> {
    pub stage: &'a str,
    pub partition: i32,
    pub seq: u64,
}

impl<'a> MessageId<'a> {
    /// Reads an id in either form: binary (what sluice writes) or text (what it wrote before).
    pub fn decode(b: &'a [u8]) -> Result<Self, StateError> {
        if b.first() == Some(&BINARY_V1) {
            let bad = |why: &str| StateError::decode("sluice.id header", why.to_string());
            if b.len() <= PREFIX {
                return Err(bad("binary id shorter than 14 bytes"));
            }
            let partition = i32::from_be_bytes(b[1..5].try_into().expect("4 bytes"));
            let seq = u64::from_be_bytes(b[5..PREFIX].try_into().expect("8 bytes"));
            let stage =
                std::str::from_utf8(&b[PREFIX..]).map_err(|_| bad("stage name is not UTF-8"))?;
            return Ok(MessageId {
                stage,
                partition,
                seq,
            });
        }
        let s = std::str::from_utf8(b)
            .map_err(|_| StateError::decode("sluice.id header", "neither binary nor UTF-8"))?;
        Self::parse(s)
    }

    /// Parses the text form `<stage>/<partition>/<seq>`; the stage name may itself contain `/`.
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

    /// The binary form, as [`IdWriter`] writes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = IdWriter::new(self.stage);
        w.id(self.partition, self.seq).to_vec()
    }
}

impl std::fmt::Display for MessageId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.stage, self.partition, self.seq)
    }
}

/// Writes the binary ids of one stage: the stage name is laid down once, each id overwrites
/// only the partition and sequence.
#[derive(Debug, Clone)]
pub struct IdWriter {
    buf: Vec<u8>,
}

impl IdWriter {
    pub fn new(stage: &str) -> Self {
        let mut buf = Vec::with_capacity(PREFIX + stage.len());
        buf.push(BINARY_V1);
        buf.extend_from_slice(&[0; PREFIX - 1]);
        buf.extend_from_slice(stage.as_bytes());
        IdWriter { buf }
    }

    /// The header value for record `seq` of `partition`.
    pub fn id(&mut self, partition: i32, seq: u64) -> &[u8] {
        self.buf[1..5].copy_from_slice(&partition.to_be_bytes());
        self.buf[5..PREFIX].copy_from_slice(&seq.to_be_bytes());
        &self.buf
    }
}

/// The high-water mark of one producing (stage, partition) in the ids table: the highest
/// sequence applied (0: none yet, since sequences start at 1).
pub struct Hwm(pub u64);

impl Encode for Hwm {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
}

impl Codec for Hwm {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        let a: [u8; 8] = b
            .try_into()
            .map_err(|_| StateError::decode("high-water mark", "expected 8 bytes"))?;
        Ok(Hwm(u64::from_le_bytes(a)))
    }
}

/// The `ids` store: per producing (stage, partition), the highest `sluice.id` sequence
/// applied. It is the first table of every task that drops replayed upstream records, and is
/// changelogged and committed with the task's other stores.
pub type IdsTable = CachedTable<Hwm>;

/// An empty ids table, keeping up to 10,000 clean marks in memory.
pub fn ids_table() -> IdsTable {
    CachedTable::new(10_000)
}

/// True the first time `id` (or a higher sequence of its producer) is seen, and records it:
/// the record must be processed. False for a replay: drop the record. `key` is a buffer the
/// caller keeps, so the hot path allocates nothing.
pub fn accept_id(
    table: &mut IdsTable,
    id: &MessageId<'_>,
    key: &mut Vec<u8>,
) -> Result<bool, StateError> {
    key.clear();
    key.extend_from_slice(id.stage.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&id.partition.to_be_bytes());
    let hwm = table.get_mut(key, || Hwm(0))?;
    if id.seq <= hwm.0 {
        return Ok(false);
    }
    hwm.0 = id.seq;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(MessageId::decode(&[0xff, b'/', b'1', b'/', b'2']).is_err());
        assert_eq!(MessageId::decode(b"enrich/by-site/3/17").unwrap(), id);
    }

    #[test]
    fn binary_ids_round_trip_and_short_ones_are_rejected() {
        let mut w = IdWriter::new("validate");
        for (p, seq) in [(0, 1), (3, 17), (i32::MAX, u64::MAX), (-1, 0)] {
            let bytes = w.id(p, seq).to_vec();
            assert_eq!(bytes.len(), 13 + "validate".len());
            let id = MessageId::decode(&bytes).unwrap();
            assert_eq!((id.stage, id.partition, id.seq), ("validate", p, seq));
            assert_eq!(id.encode(), bytes);
        }
        let full = w.id(2, 9).to_vec();
        for cut in 0..=13 {
            assert!(MessageId::decode(&full[..cut]).is_err(), "{cut} bytes");
        }
        let mut not_utf8 = full.clone();
        not_utf8.push(0xff);
        assert!(MessageId::decode(&not_utf8).is_err());
    }

    #[test]
    fn replays_are_rejected_and_marks_survive_commit() {
        use crate::table::AnyTable;
        use crate::{Checkpoint, KvStore, MemStore, WriteBatch};
        let mut h = ids_table();
        h.attach(Box::new(MemStore::new())).unwrap();
        let mut key = Vec::new();
        let mut accept = |h: &mut IdsTable, p, seq| {
            let id = MessageId {
                stage: "agg",
                partition: p,
                seq,
            };
            accept_id(h, &id, &mut key).unwrap()
        };
        assert!(accept(&mut h, 0, 1));
        assert!(accept(&mut h, 0, 5));
        assert!(!accept(&mut h, 0, 5));
        assert!(!accept(&mut h, 0, 3));
        assert!(accept(&mut h, 1, 1), "partitions are independent");
        assert!(accept(&mut h, 0, 6));
        let mut dirty = Vec::new();
        h.drain_dirty(&mut dirty);
        assert_eq!(dirty.len(), 2);
        let mut engine = h.detach().unwrap();
        let mut batch = WriteBatch::new();
        for (k, v) in dirty {
            batch.push(k, v);
        }
        let cp = Checkpoint {
            marker_offset: 0,
            commit_seq: 1,
            epoch: 1,
        };
        engine.write(batch, Some(&cp)).unwrap();
        // A fresh table over the same engine: the marks come from the engine now.
        let mut h = ids_table();
        h.attach(engine).unwrap();
        assert!(!accept(&mut h, 0, 6));
        assert!(accept(&mut h, 0, 7));
    }
}
