//! The `ids` store: per (producing stage, partition), the highest `sluice.id` sequence applied.
//! A replayed upstream record carries an id at or below it and is dropped.

use sluice_connectors::kafka::MessageId;
use sluice_state::StateError;

use sluice_state::table::{CachedTable, Codec, Encode};

/// High-water mark of one upstream (stage, partition).
pub(crate) struct Hwm(pub(crate) u64);

impl Encode for Hwm {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
}

impl Codec for Hwm {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        let a: [u8; 8] = b.try_into().map_err(|_| StateError::Decode {
            what: "high-water mark",
            reason: "expected 8 bytes".into(),
        })?;
        Ok(Hwm(u64::from_le_bytes(a)))
    }
}

pub(crate) type IdsTable = CachedTable<Hwm>;

pub(crate) fn new_ids_table() -> IdsTable {
    CachedTable::new(10_000)
}

/// True if the record is new (and records it); false if already applied.
pub(crate) fn accept(
    table: &mut IdsTable,
    id: &MessageId<'_>,
    key: &mut Vec<u8>,
) -> Result<bool, StateError> {
    key.clear();
    key.extend_from_slice(id.stage.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&id.partition.to_be_bytes());
    let hwm = table.get_mut(key, || Hwm(0))?;
    // Sequences start at 1 so 0 can mean "nothing applied yet".
    if id.seq <= hwm.0 {
        return Ok(false);
    }
    hwm.0 = id.seq;
    Ok(true)
}
