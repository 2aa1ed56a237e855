//! `aggregate`: tumbling windows per device and metric in event time, emitted once when
//! stream time passes the window's end plus the grace period.
//!
//! Determinism: a record is late for a window when `end + grace <= stream time` *before* the
//! window is looked up, so whether a record counts never depends on when the close scan ran.
//! Windows close in key order `(end, length, device, metric)`, so outputs come out in the
//! same order however the input was batched.

use sluice_schemas::codec::{AvroRecord, TelemetryDecoder};
use sluice_schemas::records::{Aggregate as AggregateRecord, Telemetry};
use sluice_state::StateError;
use sluice_topology::AggregateSpec;

use super::natural_key;
use super::schemas::{decode_input, SchemaSource};
use crate::metrics::METRICS;
use crate::runtime::{
    AnyTable, Codec, Emit, Encode, Input, OrderedTable, ProcessError, Processor, Rejection,
};

pub const PORT_AGGREGATES: usize = 0;

/// Key of the stream-time entry; sorts after every window key (those start with an i64 end).
const STREAM_TIME_KEY: &[u8] = b"\xffstream_time";

/// Running count, min, max, mean and M2 (Welford) of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acc {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Acc {
    fn new() -> Self {
        Acc {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
        }
    }

    pub fn add(&mut self, x: f64) {
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let d = x - self.mean;
        self.mean += d / self.count as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Population standard deviation.
    pub fn stddev(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0).sqrt()
        }
    }
}

/// A table value: a window accumulator or the stream time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Window(Acc),
    StreamTime(i64),
}

impl Encode for Slot {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Slot::Window(a) => {
                out.push(0);
                out.extend_from_slice(&a.count.to_le_bytes());
                for f in [a.min, a.max, a.mean, a.m2] {
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
            Slot::StreamTime(t) => {
                out.push(1);
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
    }
}

impl Codec for Slot {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        let f = |i: usize| f64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        match (b.first(), b.len()) {
            (Some(0), 41) => Ok(Slot::Window(Acc {
                count: u64::from_le_bytes(b[1..9].try_into().expect("8 bytes")),
                min: f(9),
                max: f(17),
                mean: f(25),
                m2: f(33),
            })),
            (Some(1), 9) => Ok(Slot::StreamTime(i64::from_le_bytes(
                b[1..9].try_into().expect("8 bytes"),
            ))),
            _ => Err(StateError::decode(
                "window entry",
                format!("unexpected {} bytes", b.len()),
            )),
        }
    }
}

/// `end (i64 BE, sign-flipped) | length ms (u32 BE) | device | 0 | metric`.
fn window_key(buf: &mut Vec<u8>, end: i64, len_ms: u32, device: &str, metric: &str) {
    buf.clear();
    buf.extend_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    buf.extend_from_slice(&len_ms.to_be_bytes());
    buf.extend_from_slice(device.as_bytes());
    buf.push(0);
    buf.extend_from_slice(metric.as_bytes());
}

fn parse_window_key(k: &[u8]) -> Option<(i64, u32, &str, &str)> {
    let end = (u64::from_be_bytes(k.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let len = u32::from_be_bytes(k.get(8..12)?.try_into().ok()?);
    let rest = std::str::from_utf8(k.get(12..)?).ok()?;
    let (device, metric) = rest.split_once('\0')?;
    Some((end, len, device, metric))
}

/// One task of an aggregate stage.
pub struct Aggregate {
    stage: String,
    windows_ms: Vec<u32>,
    window_labels: Vec<String>,
    grace_ms: i64,
    output_schema_id: u32,
    decoder: TelemetryDecoder,
    schemas: Box<dyn SchemaSource>,
    table: OrderedTable<Slot>,
    record: Telemetry,
    key: Vec<u8>,
    buf: Vec<u8>,
    out_key: Vec<u8>,
    out_rec: AggregateRecord,
}

impl Aggregate {
    pub fn new(
        stage: &str,
        spec: &AggregateSpec,
        output_schema_id: u32,
        schemas: Box<dyn SchemaSource>,
    ) -> Self {
        let windows_ms: Vec<u32> = spec.windows.iter().map(|w| w.as_millis() as u32).collect();
        Aggregate {
            stage: stage.to_string(),
            window_labels: spec
                .windows
                .iter()
                .map(|w| humantime::format_duration(*w).to_string())
                .collect(),
            windows_ms,
            grace_ms: spec.grace.as_millis() as i64,
            output_schema_id,
            decoder: TelemetryDecoder::new(),
            schemas,
            table: OrderedTable::default(),
            record: Telemetry::default(),
            key: Vec::with_capacity(64),
            buf: Vec::with_capacity(128),
            out_key: Vec::with_capacity(64),
            out_rec: AggregateRecord::default(),
        }
    }

    fn stream_time(&self) -> i64 {
        match self.table.get(STREAM_TIME_KEY) {
            Some(Slot::StreamTime(t)) => *t,
            _ => i64::MIN,
        }
    }

    /// Emits and removes every window with `end + grace <= stream time`, in key order.
    fn close_windows(&mut self, out: &mut dyn Emit) {
        let st = self.stream_time();
        if st == i64::MIN {
            return;
        }
        // Windows with end <= st - grace close: every key below end = st - grace + 1.
        let mut bound = Vec::with_capacity(8);
        bound.extend_from_slice(&(((st - self.grace_ms + 1) as u64) ^ (1 << 63)).to_be_bytes());
        let (stage, labels, windows) = (&self.stage, &self.window_labels, &self.windows_ms);
        let (rec, buf, schema_id) = (&mut self.out_rec, &mut self.buf, self.output_schema_id);
        let key = &mut self.out_key;
        self.table.pop_below(&bound, |k, slot| {
            let (Some((end, len, device, metric)), Slot::Window(acc)) = (parse_window_key(k), slot)
            else {
                return;
            };
            rec.device_id.clear();
            rec.device_id.push_str(device);
            rec.metric.clear();
            rec.metric.push_str(metric);
            rec.window_start = end - i64::from(len);
            rec.window_ms = i64::from(len);
            rec.count = acc.count as i64;
            rec.min = acc.min;
            rec.max = acc.max;
            rec.mean = acc.mean;
            rec.stddev = acc.stddev();
            buf.clear();
            rec.encode_wire(schema_id, buf);
            key.clear();
            natural_key(key, &(device, metric, len, rec.window_start));
            out.emit(PORT_AGGREGATES, key, buf, end);
            if let Some(i) = windows.iter().position(|w| *w == len) {
                METRICS
                    .windows_closed
                    .with_label_values(&[stage, &labels[i]])
                    .inc();
            }
        });
    }
}

impl Processor for Aggregate {
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
        let t = self.record.event_time;
        let before = self.stream_time();
        let st = before.max(t);
        *self.table.entry(STREAM_TIME_KEY, || Slot::StreamTime(st)) = Slot::StreamTime(st);
        // Windows close the moment stream time passes their end plus grace, here and not at
        // the end of a batch: what is emitted, and in which order (the `sluice.id`
        // sequence), then depends on the input alone, never on where a commit fell. A task
        // that replays from its last marker renumbers every output the same way.
        if st > before {
            self.close_windows(out);
        }
        let mut counted = false;
        for (i, &len) in self.windows_ms.iter().enumerate() {
            let len64 = i64::from(len);
            let end = t.div_euclid(len64) * len64 + len64;
            if end + self.grace_ms <= st {
                METRICS
                    .late_records
                    .with_label_values(&[&self.stage, &self.window_labels[i]])
                    .inc();
                continue;
            }
            counted = true;
            window_key(
                &mut self.key,
                end,
                len,
                &self.record.device_id,
                &self.record.metric,
            );
            if let Slot::Window(acc) = self.table.entry(&self.key, || Slot::Window(Acc::new())) {
                acc.add(self.record.value);
            }
        }
        if !counted {
            let msg = format!(
                "event time {t} is more than the grace period behind stream time {st} for every window"
            );
            out.dead_letter(input, &Rejection::new("late_record", msg));
        }
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.table]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::testkit::{input, telemetry, Bundled, Collect, AGG};

    fn stage() -> Aggregate {
        let yaml = "kind: aggregate\ninput: a\noutput: b\noutput_subject: s\ndead_letter: c\nwindows: [1m, 5m]\ngrace: 30s\n";
        Aggregate::new(
            "aggregate",
            &serde_yaml::from_str(yaml).unwrap(),
            AGG,
            Box::new(Bundled),
        )
    }

    /// Feeds (event time, value) readings of one series, one batch per slice, and returns
    /// what closed.
    fn run(batches: &[&[(i64, f64)]]) -> (Vec<AggregateRecord>, Collect) {
        let mut a = stage();
        let mut out = Collect::default();
        let mut off = 0;
        for batch in batches {
            for (t, v) in *batch {
                let b = telemetry("d", "m", *t, *v, off);
                a.process(&input(off, *t, &b), &mut out).unwrap();
                off += 1;
            }
            a.end_batch(&mut out).unwrap();
        }
        (out.decoded(PORT_AGGREGATES), out)
    }

    #[test]
    fn a_window_closes_once_stream_time_passes_its_end_plus_grace() {
        // Event time drives closing: 60s window [0, 60s) closes when stream time reaches 90s.
        let (closed, _) = run(&[&[(0, 1.0), (30_000, 3.0), (89_999, 5.0)]]);
        assert!(closed.is_empty(), "grace not over yet: {closed:?}");
        let (closed, _) = run(&[&[(0, 1.0), (30_000, 3.0)], &[(90_000, 5.0)]]);
        assert_eq!(closed.len(), 1);
        let w = &closed[0];
        assert_eq!(
            (w.window_start, w.window_ms, w.count, w.min, w.max, w.mean),
            (0, 60_000, 2, 1.0, 3.0, 2.0)
        );
        assert!((w.stddev - 1.0).abs() < 1e-12);
    }

    /// Everything emitted, in order: (port or "dead letter", key, value or reason).
    fn emitted(batches: &[&[(&str, i64, f64)]]) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        use crate::runtime::{Emit, Input, Rejection};
        struct Log(Vec<(String, Vec<u8>, Vec<u8>)>);
        impl Emit for Log {
            fn emit(&mut self, port: usize, key: &[u8], value: &[u8], _: i64) {
                self.0
                    .push((port.to_string(), key.to_vec(), value.to_vec()));
            }
            fn dead_letter(&mut self, input: &Input<'_>, why: &Rejection) {
                self.0.push((
                    "dead".into(),
                    input.offset.to_le_bytes().to_vec(),
                    why.message.as_bytes().to_vec(),
                ));
            }
        }
        let mut a = stage();
        let mut log = Log(Vec::new());
        let mut off = 0;
        for batch in batches {
            for (device, t, v) in *batch {
                let b = telemetry(device, "m", *t, *v, off);
                a.process(&input(off, *t, &b), &mut log).unwrap();
                off += 1;
            }
            a.end_batch(&mut log).unwrap();
        }
        log.0
    }

    #[test]
    fn outputs_and_dead_letters_come_in_the_same_order_however_the_input_is_batched() {
        // Three devices, out-of-order and late readings: the sequence of everything emitted
        // (which numbers each output's `sluice.id`) must not depend on commit boundaries.
        let mut readings = Vec::new();
        for i in 0..120i64 {
            for (d, device) in ["a", "b", "c"].iter().enumerate() {
                let skew = ((i * 7 + d as i64 * 3) % 5) * 4_000;
                readings.push((*device, i * 10_000 - skew, (i % 11) as f64));
            }
            if i % 17 == 16 {
                readings.push(("b", (i - 40) * 10_000, 99.0)); // late for every window
            }
        }
        let one = emitted(&[&readings]);
        assert!(
            one.iter().any(|e| e.0 == "dead"),
            "the case has late records"
        );
        assert!(one.iter().filter(|e| e.0 == "0").count() > 50);
        for size in [1, 2, 7, 64] {
            let chunks: Vec<&[(&str, i64, f64)]> = readings.chunks(size).collect();
            assert_eq!(emitted(&chunks), one, "batches of {size}");
        }
    }

    #[test]
    fn batching_does_not_change_what_closes_or_in_which_order() {
        let readings: Vec<(i64, f64)> = (0..80).map(|i| (i * 10_000, (i % 7) as f64)).collect();
        let (one, _) = run(&[&readings]);
        let (many, _) = run(&readings.chunks(3).collect::<Vec<_>>());
        assert_eq!(one, many);
        assert!(one.iter().any(|w| w.window_ms == 300_000));
        let ends: Vec<i64> = one.iter().map(|w| w.window_start + w.window_ms).collect();
        assert!(ends.windows(2).all(|p| p[0] <= p[1]), "closed in end order");
    }

    #[test]
    fn a_record_late_for_every_window_is_a_dead_letter() {
        let (_, out) = run(&[&[(0, 1.0), (400_000, 2.0), (10_000, 9.0)]]);
        assert_eq!(out.dead.len(), 1);
        assert_eq!(out.dead[0].1, "late_record");
        // Late for the 1m window only: counted in the 5m window, not a dead letter.
        let (closed, out) = run(&[&[(0, 1.0), (95_000, 2.0), (50_000, 4.0)], &[(400_000, 0.0)]]);
        assert!(out.dead.is_empty());
        let five = closed.iter().find(|w| w.window_ms == 300_000).unwrap();
        assert_eq!(five.count, 3);
        let first = closed
            .iter()
            .find(|w| w.window_ms == 60_000 && w.window_start == 0)
            .unwrap();
        assert_eq!(
            first.count, 1,
            "the late 50s reading missed the closed 1m window"
        );
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [3.0, 7.5, -1.0, 4.25, 10.0];
        let mut a = Acc::new();
        xs.iter().for_each(|x| a.add(*x));
        let mean = xs.iter().sum::<f64>() / 5.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((a.mean - mean).abs() < 1e-12 && (a.stddev() - var.sqrt()).abs() < 1e-12);
        assert_eq!((a.min, a.max, a.count), (-1.0, 10.0, 5));
    }

    #[test]
    fn keys_sort_by_end_then_length_and_round_trip() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        window_key(&mut a, 120_000, 300_000, "d", "m");
        window_key(&mut b, 180_000, 60_000, "a", "m");
        assert!(a < b);
        window_key(&mut b, -60_000, 60_000, "a", "m");
        assert!(b < a, "negative times sort first");
        assert_eq!(parse_window_key(&a), Some((120_000, 300_000, "d", "m")));
        let s = Slot::Window(Acc {
            count: 2,
            min: 1.0,
            max: 2.0,
            mean: 1.5,
            m2: 0.5,
        });
        let mut enc = Vec::new();
        s.encode(&mut enc);
        assert_eq!(Slot::decode(&enc).unwrap(), s);
    }
}
