//! Rows to ILP: [`IlpEncoder::push_row`] writes a row of any table; the built-in tables'
//! layouts are one function each, so each is stated in one place.

use questdb::ingress::{Buffer, ProtocolVersion, TimestampMicros, TimestampNanos};
use sluice_schemas::records::{Aggregate, Anomaly};

const NANOS_PER_MS: i64 = 1_000_000;

/// A column value of a row ([`IlpEncoder::push_row`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IlpValue<'a> {
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(&'a str),
    /// Microseconds since the epoch.
    TimestampMicros(i64),
}

/// Encodes records into an ILP [`Buffer`]. A row that fails to encode leaves no trace in the
/// buffer, so one bad record cannot corrupt the batch around it.
#[derive(Debug)]
pub struct IlpEncoder {
    buffer: Buffer,
    aggregates_table: String,
    anomalies_table: String,
    rows: usize,
}

impl IlpEncoder {
    pub fn new(version: ProtocolVersion, aggregates_table: &str, anomalies_table: &str) -> Self {
        Self {
            buffer: Buffer::new(version),
            aggregates_table: aggregates_table.to_owned(),
            anomalies_table: anomalies_table.to_owned(),
            rows: 0,
        }
    }

    /// `aggregates,device_id=..,metric=..,window=1m count=..i,min=..,max=..,mean=..,stddev=.. <window_start>`
    pub fn push_aggregate(&mut self, a: &Aggregate) -> questdb::Result<()> {
        let mut label = [0u8; 24];
        let table = std::mem::take(&mut self.aggregates_table);
        let row = self.push_row(
            &table,
            &[
                ("device_id", Some(a.device_id.as_str())),
                ("metric", Some(a.metric.as_str())),
                ("window", Some(window_label(a.window_ms, &mut label))),
            ],
            &[
                ("count", Some(IlpValue::Long(a.count))),
                ("min", Some(IlpValue::Double(a.min))),
                ("max", Some(IlpValue::Double(a.max))),
                ("mean", Some(IlpValue::Double(a.mean))),
                ("stddev", Some(IlpValue::Double(a.stddev))),
            ],
            a.window_start.saturating_mul(NANOS_PER_MS),
        );
        self.aggregates_table = table;
        row
    }

    /// `anomalies,device_id=..,metric=..,detector=.. value=..,score=.. <event_time>`
    pub fn push_anomaly(&mut self, a: &Anomaly) -> questdb::Result<()> {
        let table = std::mem::take(&mut self.anomalies_table);
        let row = self.push_row(
            &table,
            &[
                ("device_id", Some(a.device_id.as_str())),
                ("metric", Some(a.metric.as_str())),
                ("detector", Some(a.detector.as_str())),
            ],
            &[
                ("value", Some(IlpValue::Double(a.value))),
                ("score", Some(IlpValue::Double(a.score))),
            ],
            a.event_time.saturating_mul(NANOS_PER_MS),
        );
        self.anomalies_table = table;
        row
    }

    /// One row of any table: `table,<symbols> <columns> <timestamp>`. A symbol or column
    /// whose value is `None` is left out of the row (QuestDB stores NULL there). Every row
    /// of the built-in tables goes through here too, so there is one ILP encoding.
    pub fn push_row(
        &mut self,
        table: &str,
        symbols: &[(&str, Option<&str>)],
        columns: &[(&str, Option<IlpValue<'_>>)],
        timestamp_nanos: i64,
    ) -> questdb::Result<()> {
        self.buffer.set_marker()?;
        let row = (|| {
            let b = self.buffer.table(table)?;
            for (name, value) in symbols {
                if let Some(v) = value {
                    b.symbol(*name, *v)?;
                }
            }
            for (name, value) in columns {
                match value {
                    None => {}
                    Some(IlpValue::Bool(v)) => {
                        b.column_bool(*name, *v)?;
                    }
                    Some(IlpValue::Long(v)) => {
                        b.column_i64(*name, *v)?;
                    }
                    Some(IlpValue::Double(v)) => {
                        b.column_f64(*name, *v)?;
                    }
                    Some(IlpValue::Str(v)) => {
                        b.column_str(*name, *v)?;
                    }
                    Some(IlpValue::TimestampMicros(v)) => {
                        b.column_ts(*name, TimestampMicros::new(*v))?;
                    }
                }
            }
            b.at(TimestampNanos::new(timestamp_nanos))
        })();
        self.finish_row(row)
    }

    fn finish_row(&mut self, row: questdb::Result<()>) -> questdb::Result<()> {
        match row {
            Ok(()) => {
                self.buffer.clear_marker();
                self.rows += 1;
                Ok(())
            }
            Err(e) => {
                self.buffer.rewind_to_marker()?;
                Err(e)
            }
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn len_bytes(&self) -> usize {
        self.buffer.len()
    }

    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    /// Drops the rows but keeps the allocation.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.rows = 0;
    }
}

/// `60000` -> `1m`, `300000` -> `5m`, `3600000` -> `1h`, `1500` -> `1500ms`, written into
/// `scratch` so the hot path does not allocate.
pub fn window_label(window_ms: i64, scratch: &mut [u8; 24]) -> &str {
    let (n, unit) = match window_ms {
        ms if ms > 0 && ms % 3_600_000 == 0 => (ms / 3_600_000, "h"),
        ms if ms > 0 && ms % 60_000 == 0 => (ms / 60_000, "m"),
        ms if ms > 0 && ms % 1_000 == 0 => (ms / 1_000, "s"),
        ms => (ms, "ms"),
    };
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut scratch[..]);
    // 20 digits and a sign plus a two-letter unit always fit in 24 bytes.
    let _ = write!(cursor, "{n}{unit}");
    let len = cursor.position() as usize;
    std::str::from_utf8(&scratch[..len]).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_labels_are_human() {
        let mut s = [0u8; 24];
        assert_eq!(window_label(60_000, &mut s), "1m");
        assert_eq!(window_label(300_000, &mut s), "5m");
        assert_eq!(window_label(7_200_000, &mut s), "2h");
        assert_eq!(window_label(1_500, &mut s), "1500ms");
        assert_eq!(window_label(i64::MIN, &mut s), "-9223372036854775808ms");
    }

    #[test]
    fn rows_encode_as_ilp_with_full_precision() {
        let mut enc = IlpEncoder::new(ProtocolVersion::V1, "aggregates", "anomalies");
        let agg = Aggregate {
            device_id: "dev 1".into(),
            metric: "temp".into(),
            window_start: 1_700_000_000_000,
            window_ms: 60_000,
            count: 3,
            min: 0.1,
            max: 1.2345678901234567,
            mean: 0.30000000000000004,
            stddev: 0.0,
        };
        enc.push_aggregate(&agg).unwrap();
        let an = Anomaly {
            device_id: "d".into(),
            metric: "m".into(),
            event_time: 5,
            value: -1.5,
            score: 9.0,
            detector: "zscore".into(),
        };
        enc.push_anomaly(&an).unwrap();
        let text = std::str::from_utf8(enc.buffer().as_bytes()).unwrap();
        assert_eq!(
            text,
            "aggregates,device_id=dev\\ 1,metric=temp,window=1m count=3i,min=0.1,max=1.2345678901234567,mean=0.30000000000000004,stddev=0.0 1700000000000000000\n\
             anomalies,device_id=d,metric=m,detector=zscore value=-1.5,score=9.0 5000000\n"
        );
        assert_eq!(enc.rows(), 2);
    }

    #[test]
    fn a_bad_row_leaves_the_buffer_as_it_was() {
        let mut enc = IlpEncoder::new(ProtocolVersion::V1, "aggregates", "anomalies");
        enc.push_anomaly(&Anomaly {
            device_id: "d".into(),
            ..Default::default()
        })
        .unwrap();
        let before = enc.buffer().as_bytes().to_vec();
        // A timestamp before the epoch is refused by the ILP encoder.
        let bad = Anomaly {
            device_id: "d".into(),
            event_time: -5,
            ..Default::default()
        };
        assert!(enc.push_anomaly(&bad).is_err());
        assert_eq!(enc.buffer().as_bytes(), &before[..]);
        assert_eq!(enc.rows(), 1);
    }
}
