//! The runner's `Emit`: numbers each output for its `sluice.id` and hands it to the producer.

use prometheus::IntCounter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use sluice_connectors::kafka::{dlq, IdWriter, KafkaError, TrackedProducer, ID_HEADER};
use sluice_state::protocol::next_output_seq;

use super::fluvio_out::TaskOutputs;
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
    /// Holds the stage's name once; numbering a record copies 12 bytes into it.
    pub(crate) id: &'a mut IdWriter,
    pub(crate) error: Option<KafkaError>,
    /// A replay's rebuild below its `quiet_below` (`sluice replay`): outputs are numbered, so
    /// the later ones get the ids of the first run, but not written (the first run wrote them).
    pub(crate) quiet: bool,
    /// The task's outputs on Fluvio: what goes to one of their ports is held there until
    /// the commit flushes it (`runtime/fluvio_out.rs`).
    pub(crate) fluvio: Option<&'a mut TaskOutputs>,
}

impl Emitter<'_> {
    /// The next output's `sluice.id`, numbered as the protocol resumes it after a restore.
    fn next_id(&mut self) -> &[u8] {
        let seq = next_output_seq(self.seq);
        self.id.id(self.partition, seq)
    }
}

impl Emit for Emitter<'_> {
    fn emit(&mut self, port: usize, key: &[u8], value: &[u8], timestamp: i64) {
        if self.quiet {
            // Numbered exactly as when written, not sent.
            if self.with_ids {
                next_output_seq(self.seq);
            }
            return;
        }
        if let Some(f) = self.fluvio.as_deref_mut().filter(|f| f.has(port)) {
            // Numbered like any output (Fluvio records carry no id), held until the commit.
            if self.with_ids {
                next_output_seq(self.seq);
            }
            f.emit(port, key, value);
            self.out_counters[port].inc();
            return;
        }
        let headers = self.with_ids.then(|| {
            OwnedHeaders::new_with_capacity(1).insert(Header {
                key: ID_HEADER,
                value: Some(self.next_id()),
            })
        });
        let mut rec = BaseRecord::to(&self.outputs[port])
            .key(key)
            .payload(value)
            .timestamp(timestamp);
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        if let Err(e) = self.producer.send(rec) {
            self.error.get_or_insert(e);
        }
        self.out_counters[port].inc();
    }

    fn dead_letter(&mut self, input: &Input<'_>, why: &Rejection) {
        if self.quiet {
            // Numbered exactly as when written (only when there is a topic), not sent.
            if self.dead_letter.is_some() {
                next_output_seq(self.seq);
            }
            return;
        }
        METRICS
            .dead_letters
            .with_label_values(&[self.stage, why.class])
            .inc();
        let Some(topic) = self.dead_letter else {
            tracing::warn!(stage = self.stage, class = why.class, message = %why.message, offset = input.offset, "Dropped a bad record: the stage has no dead-letter topic.");
            return;
        };
        let reason = dlq::Reason {
            class: why.class,
            message: &why.message,
            topic: input.topic,
            partition: input.partition,
            offset: input.offset,
            stage: self.stage,
            failed_at: input.timestamp,
        };
        let headers = dlq::headers(&reason, self.next_id());
        let mut rec = BaseRecord::to(topic)
            .headers(headers)
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
