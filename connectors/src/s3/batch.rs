//! One input batch: a contiguous offset range of one input partition and its valid rows.

use std::collections::BTreeMap;

use sluice_schemas::records::Telemetry;

use super::layout::hour_index;

/// Rows to archive from one input partition, with the offset range they came from: telemetry
/// rows for the built-in archive, any record for a pipeline's `s3_parquet` sink.
///
/// The range also covers offsets that were consumed but not archived ([`skip`](Self::skip)),
/// because the caller commits the whole range after a successful write.
#[derive(Debug, Clone)]
pub struct ArchiveBatch<T = Telemetry> {
    topic: String,
    partition: i32,
    range: Option<(i64, i64)>,
    offsets: Vec<i64>,
    rows: Vec<T>,
}

impl<T> ArchiveBatch<T> {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
            range: None,
            offsets: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Adds a valid record read at `offset`. Returns `false`, and adds nothing, when `offset`
    /// does not follow the batch's last offset (a batch is one increasing range).
    pub fn push(&mut self, offset: i64, row: T) -> bool {
        if !self.extend(offset) {
            return false;
        }
        self.offsets.push(offset);
        self.rows.push(row);
        true
    }

    /// Adds a row produced from the record at `offset`, which may be the batch's last offset
    /// already (one input record can produce several rows, e.g. the windows it closes).
    /// Returns `false`, and adds nothing, when `offset` is before the batch's last offset.
    pub fn push_produced(&mut self, offset: i64, row: T) -> bool {
        if self.range.is_some_and(|(_, last)| last == offset) {
            self.offsets.push(offset);
            self.rows.push(row);
            return true;
        }
        self.push(offset, row)
    }

    /// Records that `offset` was consumed but is not archived (e.g. it failed validation).
    pub fn skip(&mut self, offset: i64) -> bool {
        self.extend(offset)
    }

    fn extend(&mut self, offset: i64) -> bool {
        match &mut self.range {
            None => self.range = Some((offset, offset)),
            Some((_, last)) if offset > *last => *last = offset,
            Some(_) => return false,
        }
        true
    }

    /// `(first_offset, last_offset)`, both inclusive; `None` before the first record.
    pub fn offset_range(&self) -> Option<(i64, i64)> {
        self.range
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn rows(&self) -> &[T] {
        &self.rows
    }

    pub fn offsets(&self) -> &[i64] {
        &self.offsets
    }

    /// Rows to archive (skipped offsets not counted).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Empties the batch for the next range, keeping its allocations.
    pub fn clear(&mut self) {
        self.range = None;
        self.offsets.clear();
        self.rows.clear();
    }
}

impl ArchiveBatch<Telemetry> {
    /// Row indices per event-time hour, each in offset order.
    pub(crate) fn hour_groups(&self) -> BTreeMap<i64, Vec<usize>> {
        let mut groups: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, row) in self.rows.iter().enumerate() {
            groups
                .entry(hour_index(row.event_time))
                .or_default()
                .push(i);
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_covers_skipped_offsets_and_refuses_going_back() {
        let mut b = ArchiveBatch::new("raw", 0);
        assert!(b.skip(10));
        assert!(b.push(
            11,
            Telemetry {
                event_time: 3_600_000,
                ..Default::default()
            }
        ));
        assert!(b.push(
            13,
            Telemetry {
                event_time: 5,
                ..Default::default()
            }
        ));
        assert!(!b.push(13, Telemetry::default()));
        assert!(b.skip(14));
        assert_eq!(b.offset_range(), Some((10, 14)));
        assert_eq!(b.len(), 2);
        let groups: Vec<_> = b.hour_groups().into_iter().collect();
        assert_eq!(groups, vec![(0, vec![1]), (1, vec![0])]);
        b.clear();
        assert_eq!(b.offset_range(), None);
    }
}
