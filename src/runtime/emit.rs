//! The runner's `Emit`: numbers each output for its `sluice.id` and hands it to the producer.

use prometheus::IntCounter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use sluice_connectors::kafka::{dlq, KafkaError, TrackedProducer, ID_HEADER};

use super::processor::{Emit, Input, Rejection};
use crate::metrics::METRICS;

pub(crate) struct Emitter<'a> {
    pub(crate) producer: &'a TrackedProducer,
    pub(crate) stage: &'a str,
    pub(crate) partition: i32,
    pub(crate) seq: &'a mut u64,
    pub(crate) outputs: &'a [String],
    pub(crate) out_counters: &'a [IntCounter],
    pub(crate) dead_letter: Option<&'a str>,
    pub(crate) with_ids: bool,
    /// Reused for every `sluice.id`, so numbering a record allocates nothing.
    pub(crate) id: &'a mut String,
    pub(crate) error: Option<KafkaError>,
}

impl Emitter<'_> {
    fn next_id(&mut self) {
        use std::fmt::Write;
        *self.seq += 1;
        self.id.clear();
        let _ = write!(self.id, "{}/{}/{}", self.stage, self.partition, *self.seq);
    }
}

impl Emit for Emitter<'_> {
    fn emit(&mut self, port: usize, key: &[u8], value: &[u8], timestamp: i64) {
        let topic = &self.outputs[port];
        let mut rec = BaseRecord::to(topic)
            .key(key)
            .payload(value)
            .timestamp(timestamp);
        if self.with_ids {
            self.next_id();
            rec = rec.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: ID_HEADER,
                value: Some(self.id.as_bytes()),
            }));
        }
        if let Err(e) = self.producer.send(rec) {
            self.error.get_or_insert(e);
        }
        self.out_counters[port].inc();
    }

    fn dead_letter(&mut self, input: &Input<'_>, why: &Rejection) {
        METRICS
            .dead_letters
            .with_label_values(&[self.stage, why.class])
            .inc();
        let Some(topic) = self.dead_letter else {
            tracing::warn!(stage = self.stage, class = why.class, message = %why.message, offset = input.offset, "Dropped a bad record: the stage has no dead-letter topic.");
            return;
        };
        self.next_id();
        let reason = dlq::Reason {
            class: why.class,
            message: &why.message,
            topic: input.topic,
            partition: input.partition,
            offset: input.offset,
            stage: self.stage,
            failed_at: input.timestamp,
        };
        let mut rec = BaseRecord::to(topic)
            .headers(dlq::headers(&reason, self.id))
            .timestamp(input.timestamp);
        if let Some(k) = input.key {
            rec = rec.key(k);
        }
        if let Some(v) = input.value {
            rec = rec.payload(v);
        }
        if let Err(e) = self.producer.send(rec) {
            self.error.get_or_insert(e);
        }
    }
}
