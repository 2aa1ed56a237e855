//! The byte-level encoding shared by tags, markers and checkpoints: a version byte, then
//! LEB128 varints (zigzag for signed values).

use crate::changelog::FORMAT_VERSION;
use crate::StateError;

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Cursor over an encoding that checks the version byte first and trailing bytes last.
pub(crate) struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Result<Self, StateError> {
        Self::with_version(what, bytes, FORMAT_VERSION)
    }

    /// A reader of an encoding whose first byte must be `expected`.
    pub(crate) fn with_version(
        what: &'static str,
        bytes: &'a [u8],
        expected: u8,
    ) -> Result<Self, StateError> {
        let mut r = Reader { what, bytes };
        let version = r.byte()?;
        if version != expected {
            return Err(StateError::decode(
                what,
                format!("version {version}, this build reads {expected}"),
            ));
        }
        Ok(r)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, StateError> {
        let (&b, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| StateError::decode(self.what, "truncated"))?;
        self.bytes = rest;
        Ok(b)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, StateError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(StateError::decode(self.what, "varint longer than 10 bytes"))
    }

    pub(crate) fn end(&self) -> Result<(), StateError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(StateError::decode(self.what, "trailing bytes"))
        }
    }
}
