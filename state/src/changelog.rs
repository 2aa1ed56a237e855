//! Changelog wire format: data records, commit markers, fences and the local checkpoint.
//!
//! Every record sluice writes to a changelog carries exactly one of two headers:
//! - [`TAG_HEADER`] on data records: the store key and value (or a tombstone) plus a [`Tag`]
//!   naming the commit that wrote it;
//! - [`MARKER_HEADER`] on markers: the fixed key [`MARKER_KEY`] and a [`Marker`] as value.
//!
//! All encodings start with a version byte and use LEB128 varints (zigzag for signed
//! offsets), so a marker is ~10 bytes and a tag ~6. Decoders reject unknown versions rather
//! than guess: a newer writer must be rolled back, not half-understood.

use crate::codec::{put_varint, unzigzag, zigzag, Reader};
use crate::StateError;

/// Header naming a record as a marker; its value is the single byte [`FORMAT_VERSION`].
pub const MARKER_HEADER: &str = "sluice.marker";
/// Header carrying the encoded [`Tag`] of a data record.
pub const TAG_HEADER: &str = "sluice.tag";
/// Key of every marker. Fixed, so compaction keeps only the newest marker per partition;
/// store keys must not equal it (they never start with a NUL byte in sluice).
pub const MARKER_KEY: &[u8] = b"\0sluice.marker";
/// Version byte written first in every encoding of this module.
pub const FORMAT_VERSION: u8 = 1;
/// Version byte of a marker that carries a [`Rebuild`] (`sluice replay`). Markers without one
/// are still written as version 1, so a changelog no replay touched reads the same in older
/// versions of sluice; a build older than this one cannot restore a task while it rebuilds.
const MARKER_REBUILD_VERSION: u8 = 2;

/// Name of the changelog topic of one store: `{app}-{stage}-{store}-changelog`.
/// It has one partition per input partition and is created with `cleanup.policy=compact`
/// and `min.compaction.lag.ms` (see docs/EXACTLY_ONCE.md, "Compaction").
pub fn changelog_topic(app: &str, stage: &str, store: &str) -> String {
    format!("{app}-{stage}-{store}-changelog")
}

/// What a marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    /// Commit `commit_seq` of `epoch` is complete in every store of the task (written in step
    /// 3 of a commit, or after a restore to restate the commit it restored to).
    Commit,
    /// Written first by a restore: records of lower epochs after it are zombie writes.
    Fence,
}

/// The marker record's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub kind: MarkerKind,
    pub commit_seq: u64,
    pub epoch: u64,
    /// Next input offset to read after this commit.
    pub input_offset: i64,
    /// Next output sequence number after this commit.
    pub output_seq: u64,
    /// Data records this commit wrote to this store's changelog.
    pub records: u32,
    /// Set while the task rebuilds after `sluice replay`; [`Rebuild::NONE`] otherwise.
    pub rebuild: Rebuild,
}

/// A task rebuilding its state after `sluice replay` (docs/REPLAY.md): its markers carry this
/// until its input reaches `first_run_end`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuild {
    /// What the task emits while everything it read is below this offset was written by the
    /// first run: numbered (so later outputs get the first run's ids), not written. 0: none.
    pub quiet_below: i64,
    /// The next input offset of the first run when the stage was rewound ...
    pub first_run_end: i64,
    /// ... and the last output sequence it had used: once the input reaches `first_run_end`
    /// the numbering goes on from at least this, so no id the first run gave is given to
    /// another output (a rebuild that emits fewer outputs than the first run did).
    pub first_run_seq: u64,
}

impl Rebuild {
    pub const NONE: Rebuild = Rebuild {
        quiet_below: 0,
        first_run_end: 0,
        first_run_seq: 0,
    };

    pub fn is_active(&self) -> bool {
        self.first_run_end > 0
    }

    /// What a marker at `input_offset` carries: this, while the input is below
    /// `first_run_end`; nothing once it has reached it.
    pub fn at(self, input_offset: i64) -> Rebuild {
        if input_offset < self.first_run_end {
            self
        } else {
            Rebuild::NONE
        }
    }
}

impl Marker {
    /// A fence for `epoch`; the other fields are unused and zero.
    pub fn fence(epoch: u64) -> Self {
        Marker {
            kind: MarkerKind::Fence,
            commit_seq: 0,
            epoch,
            input_offset: 0,
            output_seq: 0,
            records: 0,
            rebuild: Rebuild::NONE,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        let rebuild = self.rebuild.is_active();
        out.push(if rebuild {
            MARKER_REBUILD_VERSION
        } else {
            FORMAT_VERSION
        });
        out.push(match self.kind {
            MarkerKind::Commit => 0,
            MarkerKind::Fence => 1,
        });
        put_varint(&mut out, self.commit_seq);
        put_varint(&mut out, self.epoch);
        put_varint(&mut out, zigzag(self.input_offset));
        put_varint(&mut out, self.output_seq);
        put_varint(&mut out, u64::from(self.records));
        if rebuild {
            put_varint(&mut out, zigzag(self.rebuild.quiet_below));
            put_varint(&mut out, zigzag(self.rebuild.first_run_end));
            put_varint(&mut out, self.rebuild.first_run_seq);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let rebuild = bytes.first() == Some(&MARKER_REBUILD_VERSION);
        let mut r = if rebuild {
            Reader::with_version("marker", bytes, MARKER_REBUILD_VERSION)?
        } else {
            Reader::new("marker", bytes)?
        };
        let kind = match r.byte()? {
            0 => MarkerKind::Commit,
            1 => MarkerKind::Fence,
            k => return Err(StateError::decode("marker", format!("unknown kind {k}"))),
        };
        let marker = Marker {
            kind,
            commit_seq: r.varint()?,
            epoch: r.varint()?,
            input_offset: unzigzag(r.varint()?),
            output_seq: r.varint()?,
            records: u32::try_from(r.varint()?)
                .map_err(|_| StateError::decode("marker", "record count exceeds u32"))?,
            rebuild: Rebuild::NONE,
        };
        let marker = if rebuild {
            Marker {
                rebuild: Rebuild {
                    quiet_below: unzigzag(r.varint()?),
                    first_run_end: unzigzag(r.varint()?),
                    first_run_seq: r.varint()?,
                },
                ..marker
            }
        } else {
            marker
        };
        r.end()?;
        Ok(marker)
    }
}

/// The commit a data record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub epoch: u64,
    pub commit_seq: u64,
    /// The input offset this commit intends to reach (its marker's `input_offset`); a restore
    /// that discards the record reports it so the runtime can tell how far the lost commit got.
    pub input_end: i64,
}

impl Tag {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.push(FORMAT_VERSION);
        put_varint(&mut out, self.epoch);
        put_varint(&mut out, self.commit_seq);
        put_varint(&mut out, zigzag(self.input_end));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader::new("tag", bytes)?;
        let tag = Tag {
            epoch: r.varint()?,
            commit_seq: r.varint()?,
            input_end: unzigzag(r.varint()?),
        };
        r.end()?;
        Ok(tag)
    }
}

/// Where a local store stands: the commit marker (by its changelog offset) whose state it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offset of the commit marker in this store's changelog partition.
    pub marker_offset: i64,
    pub commit_seq: u64,
    pub epoch: u64,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.push(FORMAT_VERSION);
        put_varint(&mut out, zigzag(self.marker_offset));
        put_varint(&mut out, self.commit_seq);
        put_varint(&mut out, self.epoch);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader::new("checkpoint", bytes)?;
        let cp = Checkpoint {
            marker_offset: unzigzag(r.varint()?),
            commit_seq: r.varint()?,
            epoch: r.varint()?,
        };
        r.end()?;
        Ok(cp)
    }
}

/// A record to produce to a changelog partition (key, value or tombstone, one header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    pub key: Vec<u8>,
    /// `None` is a tombstone (Kafka null value).
    pub value: Option<Vec<u8>>,
    pub header_name: &'static str,
    pub header_value: Vec<u8>,
}

impl ChangelogRecord {
    pub fn data(key: Vec<u8>, value: Option<Vec<u8>>, tag: &Tag) -> Self {
        ChangelogRecord {
            key,
            value,
            header_name: TAG_HEADER,
            header_value: tag.encode(),
        }
    }

    /// Reads this record back as a consumer would (tests, benches, tools).
    pub fn entry(&self, store: usize, offset: i64) -> Result<Entry<'_>, StateError> {
        Entry::decode(
            store,
            offset,
            [(self.header_name, Some(&self.header_value[..]))],
            &self.key,
            self.value.as_deref(),
        )
    }

    pub fn marker(marker: &Marker) -> Self {
        ChangelogRecord {
            key: MARKER_KEY.to_vec(),
            value: Some(marker.encode()),
            header_name: MARKER_HEADER,
            header_value: vec![FORMAT_VERSION],
        }
    }
}

/// One changelog record as read back, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    Marker(Marker),
    Data {
        tag: Tag,
        key: &'a [u8],
        value: Option<&'a [u8]>,
    },
}

impl<'a> Entry<'a> {
    /// Classifies a consumed record from its headers, key and value. `store` and `offset` only
    /// serve the error message.
    pub fn decode<'h>(
        store: usize,
        offset: i64,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
        key: &'a [u8],
        value: Option<&'a [u8]>,
    ) -> Result<Self, StateError> {
        let mut tag = None;
        for (name, hv) in headers {
            if name == MARKER_HEADER {
                let bytes =
                    value.ok_or_else(|| StateError::decode("marker", "marker without value"))?;
                return Ok(Entry::Marker(Marker::decode(bytes)?));
            }
            if name == TAG_HEADER {
                tag = Some(Tag::decode(hv.unwrap_or_default())?);
            }
        }
        match tag {
            Some(tag) => Ok(Entry::Data { tag, key, value }),
            None => Err(StateError::MissingTag { store, offset }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_is_compact() {
        let m = Marker {
            kind: MarkerKind::Commit,
            commit_seq: 42,
            epoch: 7 << 16,
            input_offset: -1,
            output_seq: 1_000_000,
            records: 300,
            rebuild: Rebuild::NONE,
        };
        let bytes = m.encode();
        assert!(bytes.len() <= 16, "{} bytes", bytes.len());
        assert_eq!(bytes[0], FORMAT_VERSION, "no rebuild: still version 1");
        assert_eq!(Marker::decode(&bytes).unwrap(), m);
        let q = Marker {
            rebuild: Rebuild {
                quiet_below: 123_456,
                first_run_end: 200_000,
                first_run_seq: 77,
            },
            ..m
        };
        let bytes = q.encode();
        assert_eq!(bytes[0], MARKER_REBUILD_VERSION);
        assert_eq!(Marker::decode(&bytes).unwrap(), q);
        assert_eq!(q.rebuild.at(199_999), q.rebuild);
        assert_eq!(q.rebuild.at(200_000), Rebuild::NONE);
        assert_eq!(
            Marker::decode(&Marker::fence(9).encode()).unwrap(),
            Marker::fence(9)
        );
    }

    #[test]
    fn tag_and_checkpoint_round_trip() {
        let t = Tag {
            epoch: 3,
            commit_seq: u64::MAX,
            input_end: i64::MIN,
        };
        assert_eq!(Tag::decode(&t.encode()).unwrap(), t);
        let c = Checkpoint {
            marker_offset: 123_456_789,
            commit_seq: 5,
            epoch: 1,
        };
        assert_eq!(Checkpoint::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn decoders_reject_bad_bytes() {
        let mut bytes = Marker::fence(1).encode();
        bytes[0] = 3;
        assert!(matches!(
            Marker::decode(&bytes),
            Err(StateError::Decode { .. })
        ));
        let bytes = Tag {
            epoch: 1,
            commit_seq: 2,
            input_end: 3,
        }
        .encode();
        assert!(Tag::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Tag::decode(&long).is_err());
        assert!(Checkpoint::decode(&[]).is_err());
        assert!(Marker::decode(&[
            1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .is_err());
    }

    #[test]
    fn entries_are_classified_by_header() {
        let m = ChangelogRecord::marker(&Marker::fence(4));
        let e = m.entry(0, 0).unwrap();
        assert_eq!(e, Entry::Marker(Marker::fence(4)));
        let tag = Tag {
            epoch: 1,
            commit_seq: 1,
            input_end: 10,
        };
        let d = ChangelogRecord::data(b"k".to_vec(), None, &tag);
        let e = d.entry(0, 0).unwrap();
        assert_eq!(
            e,
            Entry::Data {
                tag,
                key: b"k",
                value: None
            }
        );
        let err = Entry::decode(3, 0, [("other", None)], b"k", Some(b"v")).unwrap_err();
        assert!(matches!(
            err,
            StateError::MissingTag {
                store: 3,
                offset: 0
            }
        ));
        assert_eq!(
            changelog_topic("iot", "agg", "windows"),
            "iot-agg-windows-changelog"
        );
    }
}
