//! Telemetry rows to Parquet with the low-level column writers (no Arrow), and back.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::RowAccessor;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;

use super::ArchiveBatch;

/// The archive's columns, in file order.
const SCHEMA: &str = "message telemetry {
    required binary device_id (UTF8);
    required binary metric (UTF8);
    required int64 event_time (TIMESTAMP(MILLIS,true));
    required double value;
    required int64 seq;
    required int32 quality;
    required int32 kafka_partition;
    required int64 kafka_offset;
}";

/// One archived row as read back from a Parquet object.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedRow {
    pub device_id: String,
    pub metric: String,
    /// ms since the Unix epoch, UTC.
    pub event_time: i64,
    pub value: f64,
    pub seq: i64,
    pub quality: i32,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// Encodes row subsets of a batch into Parquet files (one row group each, Snappy, page
/// statistics). Keeps its scratch vectors between files so steady state barely allocates:
/// string columns are copied once into one buffer and sliced, not allocated per value.
#[derive(Debug)]
pub struct ParquetEncoder {
    schema: Arc<Type>,
    props: Arc<WriterProperties>,
    strings: Vec<ByteArray>,
    i64s: Vec<i64>,
    i32s: Vec<i32>,
    f64s: Vec<f64>,
}

impl Default for ParquetEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ParquetEncoder {
    pub fn new() -> Self {
        let schema = Arc::new(parse_message_type(SCHEMA).expect("the archive schema parses"));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(concat!("sluice ", env!("CARGO_PKG_VERSION")).into())
            .build();
        Self {
            schema,
            props: Arc::new(props),
            strings: Vec::new(),
            i64s: Vec::new(),
            i32s: Vec::new(),
            f64s: Vec::new(),
        }
    }

    /// Encodes the rows of `batch` at `indices` (in that order) as one Parquet file.
    pub fn encode(&mut self, batch: &ArchiveBatch, indices: &[usize]) -> Result<Vec<u8>> {
        let rows = batch.rows();
        let offsets = batch.offsets();
        let mut writer = SerializedFileWriter::new(
            Vec::with_capacity(indices.len() * 24 + 1024),
            self.schema.clone(),
            self.props.clone(),
        )?;
        let mut group = writer.next_row_group()?;
        let mut column = 0;
        while let Some(mut col) = group.next_column()? {
            match column {
                0 | 1 => {
                    let pick = |i: usize| {
                        if column == 0 {
                            rows[i].device_id.as_bytes()
                        } else {
                            rows[i].metric.as_bytes()
                        }
                    };
                    fill_strings(&mut self.strings, indices.iter().map(|&i| pick(i)));
                    col.typed::<ByteArrayType>()
                        .write_batch(&self.strings, None, None)?;
                    self.strings.clear();
                }
                2 | 4 | 7 => {
                    self.i64s.clear();
                    self.i64s.extend(indices.iter().map(|&i| match column {
                        2 => rows[i].event_time,
                        4 => rows[i].seq,
                        _ => offsets[i],
                    }));
                    col.typed::<Int64Type>()
                        .write_batch(&self.i64s, None, None)?;
                }
                3 => {
                    self.f64s.clear();
                    self.f64s.extend(indices.iter().map(|&i| rows[i].value));
                    col.typed::<DoubleType>()
                        .write_batch(&self.f64s, None, None)?;
                }
                5 | 6 => {
                    self.i32s.clear();
                    let partition = batch.partition();
                    self.i32s.extend(indices.iter().map(|&i| {
                        if column == 5 {
                            rows[i].quality
                        } else {
                            partition
                        }
                    }));
                    col.typed::<Int32Type>()
                        .write_batch(&self.i32s, None, None)?;
                }
                other => return Err(ParquetError::General(format!("unexpected column {other}"))),
            }
            col.close()?;
            column += 1;
        }
        group.close()?;
        writer.into_inner()
    }
}

/// One copy of all values into a single buffer, then cheap reference-counted slices of it.
fn fill_strings<'a>(out: &mut Vec<ByteArray>, values: impl Iterator<Item = &'a [u8]> + Clone) {
    let total: usize = values.clone().map(<[u8]>::len).sum();
    let mut buf = BytesMut::with_capacity(total);
    let mut ends = Vec::new();
    for v in values {
        buf.extend_from_slice(v);
        ends.push(buf.len());
    }
    let buf: Bytes = buf.freeze();
    let mut start = 0;
    out.clear();
    out.extend(ends.into_iter().map(|end| {
        let slice = buf.slice(start..end);
        start = end;
        ByteArray::from(slice)
    }));
}

/// Reads a Parquet object written by [`ParquetEncoder`] back into rows (tests, tools).
pub fn decode_parquet(data: Bytes) -> Result<Vec<ArchivedRow>> {
    let reader = SerializedFileReader::new(data)?;
    let mut out = Vec::with_capacity(reader.metadata().file_metadata().num_rows() as usize);
    for row in reader.get_row_iter(None)? {
        let row = row?;
        out.push(ArchivedRow {
            device_id: row.get_string(0)?.clone(),
            metric: row.get_string(1)?.clone(),
            event_time: row.get_timestamp_millis(2)?,
            value: row.get_double(3)?,
            seq: row.get_long(4)?,
            quality: row.get_int(5)?,
            kafka_partition: row.get_int(6)?,
            kafka_offset: row.get_long(7)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_schemas::records::Telemetry;

    #[test]
    fn rows_round_trip_through_parquet() {
        let mut batch = ArchiveBatch::new("raw", 4);
        for i in 0..1000i64 {
            let t = Telemetry {
                device_id: format!("dev-{}", i % 7),
                metric: if i % 2 == 0 {
                    "temp".into()
                } else {
                    "hum".into()
                },
                event_time: 1_700_000_000_000 + i,
                value: i as f64 * 0.1,
                seq: i,
                quality: (i % 101) as i32,
            };
            assert!(batch.push(100 + i, t));
        }
        let indices: Vec<usize> = (0..batch.len()).step_by(3).collect();
        let mut enc = ParquetEncoder::new();
        let bytes = enc.encode(&batch, &indices).unwrap();
        let back = decode_parquet(Bytes::from(bytes)).unwrap();
        assert_eq!(back.len(), indices.len());
        for (row, &i) in back.iter().zip(&indices) {
            let t = &batch.rows()[i];
            let want = ArchivedRow {
                device_id: t.device_id.clone(),
                metric: t.metric.clone(),
                event_time: t.event_time,
                value: t.value,
                seq: t.seq,
                quality: t.quality,
                kafka_partition: 4,
                kafka_offset: batch.offsets()[i],
            };
            assert_eq!(row, &want);
        }
    }
}
