//! [`AvroRecord`] for the shared record structs: slot setters for decoding and hand-written
//! encoders in each `.avsc`'s field order.

use super::read::{put_double, put_long, put_str};
use super::{AvroRecord, Val};
use crate::records::{Aggregate, Alert, Anomaly, Telemetry};

/// Replaces a string's contents, keeping its allocation.
#[inline]
fn assign(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

impl AvroRecord for Telemetry {
    const SCHEMA_JSON: &'static str = include_str!("../../telemetry-v2.avsc");

    #[inline]
    fn set(&mut self, slot: usize, value: Val<'_>) {
        match (slot, value) {
            (0, Val::Str(s)) => assign(&mut self.device_id, s),
            (1, Val::Str(s)) => assign(&mut self.metric, s),
            (2, Val::Long(v)) => self.event_time = v,
            (3, Val::Double(v)) => self.value = v,
            (4, Val::Long(v)) => self.seq = v,
            (5, Val::Int(v)) => self.quality = v,
            _ => debug_assert!(false, "plan gave slot {slot} a {value:?}"),
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_str(out, &self.device_id);
        put_str(out, &self.metric);
        put_long(out, self.event_time);
        put_double(out, self.value);
        put_long(out, self.seq);
        put_long(out, i64::from(self.quality));
    }
}

impl AvroRecord for Aggregate {
    const SCHEMA_JSON: &'static str = include_str!("../../aggregate.avsc");

    #[inline]
    fn set(&mut self, slot: usize, value: Val<'_>) {
        match (slot, value) {
            (0, Val::Str(s)) => assign(&mut self.device_id, s),
            (1, Val::Str(s)) => assign(&mut self.metric, s),
            (2, Val::Long(v)) => self.window_start = v,
            (3, Val::Long(v)) => self.window_ms = v,
            (4, Val::Long(v)) => self.count = v,
            (5, Val::Double(v)) => self.min = v,
            (6, Val::Double(v)) => self.max = v,
            (7, Val::Double(v)) => self.mean = v,
            (8, Val::Double(v)) => self.stddev = v,
            _ => debug_assert!(false, "plan gave slot {slot} a {value:?}"),
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_str(out, &self.device_id);
        put_str(out, &self.metric);
        put_long(out, self.window_start);
        put_long(out, self.window_ms);
        put_long(out, self.count);
        put_double(out, self.min);
        put_double(out, self.max);
        put_double(out, self.mean);
        put_double(out, self.stddev);
    }
}

impl AvroRecord for Anomaly {
    const SCHEMA_JSON: &'static str = include_str!("../../anomaly.avsc");

    #[inline]
    fn set(&mut self, slot: usize, value: Val<'_>) {
        match (slot, value) {
            (0, Val::Str(s)) => assign(&mut self.device_id, s),
            (1, Val::Str(s)) => assign(&mut self.metric, s),
            (2, Val::Long(v)) => self.event_time = v,
            (3, Val::Double(v)) => self.value = v,
            (4, Val::Double(v)) => self.score = v,
            (5, Val::Str(s)) => assign(&mut self.detector, s),
            _ => debug_assert!(false, "plan gave slot {slot} a {value:?}"),
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_str(out, &self.device_id);
        put_str(out, &self.metric);
        put_long(out, self.event_time);
        put_double(out, self.value);
        put_double(out, self.score);
        put_str(out, &self.detector);
    }
}

impl AvroRecord for Alert {
    const SCHEMA_JSON: &'static str = include_str!("../../alert.avsc");

    #[inline]
    fn set(&mut self, slot: usize, value: Val<'_>) {
        match (slot, value) {
            (0, Val::Str(s)) => assign(&mut self.device_id, s),
            (1, Val::Str(s)) => assign(&mut self.metric, s),
            (2, Val::Str(s)) => assign(&mut self.rule, s),
            (3, Val::Long(v)) => self.event_time = v,
            (4, Val::Double(v)) => self.value = v,
            (5, Val::Double(v)) => self.score = v,
            (6, Val::Long(v)) => self.suppressed_since_last = v,
            _ => debug_assert!(false, "plan gave slot {slot} a {value:?}"),
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_str(out, &self.device_id);
        put_str(out, &self.metric);
        put_str(out, &self.rule);
        put_long(out, self.event_time);
        put_double(out, self.value);
        put_double(out, self.score);
        put_long(out, self.suppressed_since_last);
    }
}
