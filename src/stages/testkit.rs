//! Test helpers for the stages: an `Emit` that collects, and schemas by id without a registry.

use sluice_schemas::codec::{AvroRecord, Decoder};
use sluice_schemas::records::Telemetry;

use super::schemas::SchemaSource;
use crate::runtime::{Emit, Input, ProcessError, Rejection};

/// Schema ids the tests write with: the bundled `.avsc` files by position (1 is telemetry v1).
pub(crate) const V2: u32 = 2;
pub(crate) const AGG: u32 = 3;
pub(crate) const ANOMALY: u32 = 4;
pub(crate) const ALERT: u32 = 5;

pub(crate) struct Bundled;

impl SchemaSource for Bundled {
    fn fetch(&mut self, id: u32) -> Result<Option<String>, ProcessError> {
        Ok(sluice_schemas::BUNDLED
            .get(id as usize - 1)
            .map(|(_, json)| json.to_string()))
    }
}

#[derive(Default)]
pub(crate) struct Collect {
    pub(crate) out: Vec<(usize, Vec<u8>, Vec<u8>, i64)>,
    pub(crate) dead: Vec<(i64, &'static str, String)>,
}

impl Emit for Collect {
    fn emit(&mut self, port: usize, key: &[u8], value: &[u8], timestamp: i64) {
        self.out
            .push((port, key.to_vec(), value.to_vec(), timestamp));
    }
    fn dead_letter(&mut self, input: &Input<'_>, why: &Rejection) {
        self.dead
            .push((input.offset, why.class, why.message.clone()));
    }
}

impl Collect {
    /// The outputs of `port` decoded as `T`.
    pub(crate) fn decoded<T: AvroRecord>(&self, port: usize) -> Vec<T> {
        let mut dec: Decoder<T> = Decoder::new();
        let mut src = Bundled;
        self.out
            .iter()
            .filter(|o| o.0 == port)
            .map(|o| {
                let mut t = T::default();
                super::schemas::decode_with(&mut dec, &mut src, &o.2, &mut t)
                    .unwrap()
                    .unwrap();
                t
            })
            .collect()
    }
}

/// A v2 telemetry record's bytes.
pub(crate) fn telemetry(device: &str, metric: &str, t: i64, value: f64, seq: i64) -> Vec<u8> {
    let rec = Telemetry {
        device_id: device.into(),
        metric: metric.into(),
        event_time: t,
        value,
        seq,
        quality: 100,
    };
    let mut b = Vec::new();
    rec.encode_wire(V2, &mut b);
    b
}

pub(crate) fn input<'a>(offset: i64, timestamp: i64, value: &'a [u8]) -> Input<'a> {
    Input {
        topic: "in",
        partition: 0,
        offset,
        timestamp,
        key: None,
        value: Some(value),
    }
}
