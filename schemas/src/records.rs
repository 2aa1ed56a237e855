//! The record types every stage and sink shares, one per `.avsc` in this folder.
//!
//! They are plain structs so the hot path can reuse them without allocation; the Avro
//! encoders and decoders for them live beside the codec.

/// A sensor reading, as the `telemetry-v2.avsc` reader schema sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    pub device_id: String,
    pub metric: String,
    /// Event time, ms since the Unix epoch.
    pub event_time: i64,
    pub value: f64,
    /// Per-device sequence number; a retransmission repeats it.
    pub seq: i64,
    /// 0-100, 100 when the writer did not send it (v1 writers).
    pub quality: i32,
}

/// A closed tumbling window of one device metric (`aggregate.avsc`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    pub device_id: String,
    pub metric: String,
    /// Window start, ms since the Unix epoch.
    pub window_start: i64,
    /// Window length in ms.
    pub window_ms: i64,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Population standard deviation.
    pub stddev: f64,
}

/// A point the detector scored at or above its threshold (`anomaly.avsc`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Anomaly {
    pub device_id: String,
    pub metric: String,
    pub event_time: i64,
    pub value: f64,
    pub score: f64,
    pub detector: String,
}

/// An anomaly that passed alert suppression (`alert.avsc`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alert {
    pub device_id: String,
    pub metric: String,
    pub rule: String,
    pub event_time: i64,
    pub value: f64,
    pub score: f64,
    pub suppressed_since_last: i64,
}
