//! What the operator tests share: the runtime's commit and restore, reduced to what
//! operators see, and the energy example's input.

// Each test file uses what it needs of this.
#![allow(dead_code)]

use apache_avro::Schema;
use sluice_ops::op::{Chain, KeyShape, Running, StreamType};
use sluice_ops::types::RecordType;
use sluice_state::{KvStore, MemStore, WriteBatch};

/// The energy example's meter readings (examples/energy/meter-reading.avsc), as read from
/// the input topic.
pub(crate) fn energy_input() -> StreamType {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/energy/meter-reading.avsc"
    );
    let schema = Schema::parse_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    StreamType {
        value: RecordType::from_schema(&schema).unwrap(),
        key: KeyShape::Input,
    }
}

/// `operators` (a YAML list) checked against the energy readings.
pub(crate) fn energy_chain(operators: &str) -> Result<Chain, Vec<sluice_ops::Problem>> {
    let ops: Vec<serde_yaml::Value> = serde_yaml::from_str(operators).unwrap();
    Chain::plan(&ops, energy_input())
}

/// The runtime's commit: drains each table of `run` into its store.
pub(crate) fn commit(run: &mut Running, stores: &mut [MemStore]) {
    let tables = run.tables();
    assert_eq!(tables.len(), stores.len());
    for (t, store) in tables.into_iter().zip(stores.iter_mut()) {
        let mut dirty = Vec::new();
        t.drain_dirty(&mut dirty);
        let mut batch = WriteBatch::new();
        for (k, v) in dirty {
            batch.push(k, v);
        }
        store.write(batch, None).unwrap();
    }
}

/// A fresh task of `chain` restored from `stores` (each a copy of what its table's changelog
/// holds).
pub(crate) fn restored(chain: &Chain, stores: &[MemStore]) -> Running {
    let mut run = chain.build();
    for (t, store) in run.tables().into_iter().zip(stores) {
        t.attach(Box::new(store.clone())).unwrap();
    }
    run
}
