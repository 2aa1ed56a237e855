//! `validate`: decode raw telemetry through the registry, drop retransmissions, check
//! ranges, re-stamp skewed device clocks, and write valid records with the reader schema.

use sluice_schemas::codec::{AvroRecord, TelemetryDecoder};
use sluice_schemas::records::Telemetry;
use sluice_state::StateError;
use sluice_topology::{UnknownMetrics, ValidateSpec};

use super::schemas::{decode_input, SchemaSource};
use crate::metrics::METRICS;
use crate::runtime::{
    AnyTable, CachedTable, Codec, Emit, Encode, Input, ProcessError, Processor, Rejection,
};

/// Output port of valid records.
pub const PORT_VALID: usize = 0;

/// The last `window` sequence numbers of one device, as a bitmap ending at `max_seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenSeqs {
    max_seq: i64,
    bits: Vec<u64>,
}

impl SeenSeqs {
    fn new(window: u32) -> Self {
        SeenSeqs {
            max_seq: i64::MIN,
            bits: vec![0; window.div_ceil(64) as usize],
        }
    }

    fn window(&self) -> i64 {
        self.bits.len() as i64 * 64
    }

    /// Records `seq`; false if it was seen (or is too old to tell, which counts as seen).
    pub fn insert(&mut self, seq: i64) -> bool {
        let w = self.window();
        if self.max_seq == i64::MIN {
            self.max_seq = seq;
            self.set(seq);
            return true;
        }
        if seq > self.max_seq {
            let shift = (seq - self.max_seq).min(w);
            for s in (seq - shift + 1)..=seq {
                self.clear(s);
            }
            self.max_seq = seq;
            self.set(seq);
            return true;
        }
        if self.max_seq - seq >= w {
            return false;
        }
        if self.get(seq) {
            return false;
        }
        self.set(seq);
        true
    }

    fn slot(&self, seq: i64) -> (usize, u64) {
        let i = seq.rem_euclid(self.window()) as usize;
        (i / 64, 1u64 << (i % 64))
    }
    fn get(&self, seq: i64) -> bool {
        let (w, b) = self.slot(seq);
        self.bits[w] & b != 0
    }
    fn set(&mut self, seq: i64) {
        let (w, b) = self.slot(seq);
        self.bits[w] |= b;
    }
    fn clear(&mut self, seq: i64) {
        let (w, b) = self.slot(seq);
        self.bits[w] &= !b;
    }
}

impl Encode for SeenSeqs {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.max_seq.to_be_bytes());
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

impl Codec for SeenSeqs {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        if b.len() < 8 || (b.len() - 8) % 8 != 0 {
            return Err(StateError::decode("dedup entry", "bad length"));
        }
        let max_seq = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let bits = b[8..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(SeenSeqs { max_seq, bits })
    }
}

/// One task of a validate stage.
pub struct Validate {
    stage: String,
    spec: ValidateSpec,
    output_schema_id: u32,
    decoder: TelemetryDecoder,
    schemas: Box<dyn SchemaSource>,
    dedup: CachedTable<SeenSeqs>,
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
            .get_mut(self.record.device_id.as_bytes(), || SeenSeqs::new(window))?;
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

    #[test]
    fn retransmissions_are_seen_and_old_ones_too() {
        let mut s = SeenSeqs::new(128);
        assert!(s.insert(10));
        assert!(!s.insert(10));
        assert!(s.insert(12));
        assert!(s.insert(11));
        assert!(!s.insert(11));
        assert!(s.insert(500));
        assert!(!s.insert(12), "older than the window counts as seen");
        assert!(s.insert(499));
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(SeenSeqs::decode(&b).unwrap(), s);
    }
}
