//! `validate`: decode raw telemetry through the registry, drop retransmissions, check
//! ranges, re-stamp skewed device clocks, and write valid records with the reader schema.

use sluice_schemas::codec::{AvroRecord, TelemetryDecoder};
use sluice_schemas::records::Telemetry;
use sluice_state::SeqWindow;
use sluice_topology::{UnknownMetrics, ValidateSpec};

use super::schemas::{decode_input, SchemaSource};
use crate::metrics::METRICS;
use crate::runtime::{AnyTable, CachedTable, Emit, Input, ProcessError, Processor, Rejection};

/// Output port of valid records.
pub const PORT_VALID: usize = 0;

/// One task of a validate stage.
pub struct Validate {
    stage: String,
    spec: ValidateSpec,
    output_schema_id: u32,
    decoder: TelemetryDecoder,
    schemas: Box<dyn SchemaSource>,
    dedup: CachedTable<SeqWindow>,
    record: Telemetry,
    buf: Vec<u8>,
}

impl Validate {
    pub fn new(
        stage: &str,
        spec: ValidateSpec,
        output_schema_id: u32,
        schemas: Box<dyn SchemaSource>,
    ) -> Self {
        Validate {
            stage: stage.to_string(),
            spec,
            output_schema_id,
            decoder: TelemetryDecoder::new(),
            schemas,
            dedup: CachedTable::new(1_000_000),
            record: Telemetry::default(),
            buf: Vec::with_capacity(128),
        }
    }

    fn check(&self, t: &Telemetry) -> Option<Rejection> {
        if !t.value.is_finite() {
            return Some(Rejection::new(
                "out_of_range",
                format!("{} is not a finite number", t.value),
            ));
        }
        match self.spec.ranges.get(&t.metric) {
            Some([lo, hi]) if t.value < *lo || t.value > *hi => Some(Rejection::new(
                "out_of_range",
                format!("{} = {} is outside [{lo}, {hi}]", t.metric, t.value),
            )),
            None if self.spec.unknown_metrics == UnknownMetrics::Reject => Some(Rejection::new(
                "unknown_metric",
                format!("metric `{}` has no range in the topology", t.metric),
            )),
            _ => None,
        }
    }
}

impl Processor for Validate {
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError> {
        if !decode_input(
            &mut self.decoder,
            self.schemas.as_mut(),
            input,
            out,
            &mut self.record,
        )? {
            return Ok(());
        }
        // Checks come before de-duplication, so a dead letter's sequence number is not marked
        // seen and the record can be replayed (`sluice dlq replay`) after a fix.
        if let Some(why) = self.check(&self.record) {
            out.dead_letter(input, &why);
            return Ok(());
        }
        let window = self.spec.dedup_window;
        let seen = self
            .dedup
            .get_mut(self.record.device_id.as_bytes(), || SeqWindow::new(window))?;
        if !seen.insert(self.record.seq) {
            METRICS
                .duplicates_dropped
                .with_label_values(&[&self.stage, "retransmission"])
                .inc();
            return Ok(());
        }
        let skew = self.spec.max_clock_skew.as_millis() as i64;
        if (self.record.event_time - input.timestamp).abs() > skew {
            self.record.event_time = input.timestamp;
            METRICS
                .clock_restamped
                .with_label_values(&[&self.stage])
                .inc();
        }
        self.buf.clear();
        self.record
            .encode_wire(self.output_schema_id, &mut self.buf);
        out.emit(
            PORT_VALID,
            self.record.device_id.as_bytes(),
            &self.buf,
            self.record.event_time,
        );
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.dedup]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::testkit::{input, telemetry, Bundled, Collect, V2};

    fn stage() -> Validate {
        let yaml = "kind: validate\ninput: a\noutput: b\ndead_letter: c\nreader_schema: x.avsc\noutput_subject: s\nranges: { temperature: [-40, 125] }\nunknown_metrics: reject\nmax_clock_skew: 15m\n";
        Validate::new(
            "validate",
            serde_yaml::from_str(yaml).unwrap(),
            V2,
            Box::new(Bundled),
        )
    }

    #[test]
    fn good_records_pass_bad_ones_become_dead_letters_with_their_class() {
        let mut v = stage();
        let mut out = Collect::default();
        let t0 = 1_767_225_600_000;
        let cases: Vec<Vec<u8>> = vec![
            telemetry("d1", "temperature", t0, 21.5, 1),
            telemetry("d1", "temperature", t0, 21.5, 1), // retransmission: dropped
            telemetry("d1", "temperature", t0, 900.0, 2), // out of range
            telemetry("d1", "colour", t0, 1.0, 3),       // unknown metric
            telemetry("d1", "temperature", t0 + 7_200_000, 20.0, 4), // clock 2h ahead: re-stamped
            vec![7, 0, 0, 0, 2, 1],                      // wrong magic
            telemetry("d1", "temperature", t0, 21.5, 5)[..9].to_vec(), // truncated
        ];
        for (i, bytes) in cases.iter().enumerate() {
            v.process(&input(i as i64, t0, bytes), &mut out).unwrap();
        }
        let valid: Vec<Telemetry> = out.decoded(PORT_VALID);
        assert_eq!(valid.len(), 2);
        assert_eq!((valid[0].seq, valid[0].event_time), (1, t0));
        assert_eq!(
            (valid[1].seq, valid[1].event_time),
            (4, t0),
            "skewed clock replaced by the broker time"
        );
        let classes: Vec<_> = out.dead.iter().map(|d| (d.0, d.1)).collect();
        assert_eq!(
            classes,
            [
                (2, "out_of_range"),
                (3, "unknown_metric"),
                (5, "wrong_magic"),
                (6, "truncated")
            ]
        );
    }
}
