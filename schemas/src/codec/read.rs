//! Primitive Avro readers over a byte slice. Every read is bounds-checked and returns a
//! [`DecodeError`] instead of panicking, because bodies come from outside.

use super::DecodeError;

/// A forward-only cursor over an Avro body.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads a zig-zag varint of at most 10 bytes (a 64-bit long).
    #[inline]
    pub(crate) fn long(&mut self) -> Result<i64, DecodeError> {
        let mut raw: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(DecodeError::Truncated { what: "varint" });
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::InvalidBody(
                    "varint longer than 64 bits".into(),
                ));
            }
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// Reads an Avro int: a varint that must fit in 32 bits.
    #[inline]
    pub(crate) fn int(&mut self) -> Result<i32, DecodeError> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| DecodeError::InvalidBody(format!("int out of range: {v}")))
    }

    #[inline]
    pub(crate) fn float(&mut self) -> Result<f32, DecodeError> {
        let b = self.take(4, "float")?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(crate) fn double(&mut self) -> Result<f64, DecodeError> {
        let b = self.take(8, "double")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    #[inline]
    pub(crate) fn boolean(&mut self) -> Result<bool, DecodeError> {
        match self.take(1, "boolean")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidBody(format!("boolean byte {b}"))),
        }
    }

    /// Reads a length-prefixed byte string.
    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.len_prefix()?;
        self.take(len, "bytes")
    }

    /// Reads a length-prefixed UTF-8 string.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map_err(|e| DecodeError::InvalidBody(format!("string is not UTF-8: {e}")))
    }

    /// A length or count; negative lengths are corrupt for bytes and strings.
    #[inline]
    pub(crate) fn len_prefix(&mut self) -> Result<usize, DecodeError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| DecodeError::InvalidBody(format!("negative length {n}")))
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads an array or map block count. A negative count is followed by the block's byte
    /// size, which we read and ignore. Returns the number of items in the block.
    pub(crate) fn block_count(&mut self) -> Result<usize, DecodeError> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
            // i64::MIN has no positive counterpart.
            n.checked_neg()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| DecodeError::InvalidBody(format!("block count {n}")))
        } else {
            Ok(n as usize)
        }
    }
}

/// Zig-zag varint writers.
pub(crate) fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_double(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, i32::MAX as i64, i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            put_long(&mut buf, v);
            let mut c = Cursor::new(&buf);
            assert_eq!(c.long().unwrap(), v);
            assert_eq!(c.remaining(), 0);
        }
    }

    #[test]
    fn corrupt_varints_and_lengths_are_errors() {
        assert_eq!(
            Cursor::new(&[0xff; 11]).long().unwrap_err().class(),
            "invalid_body"
        );
        assert_eq!(
            Cursor::new(&[0x80]).long().unwrap_err().class(),
            "truncated"
        );
        // Length 1 (zig-zag 2) but no byte follows.
        assert_eq!(Cursor::new(&[2]).bytes().unwrap_err().class(), "truncated");
        // Length -1.
        assert_eq!(
            Cursor::new(&[1]).bytes().unwrap_err().class(),
            "invalid_body"
        );
        // Huge length.
        let mut buf = Vec::new();
        put_long(&mut buf, i64::MAX);
        assert_eq!(Cursor::new(&buf).str().unwrap_err().class(), "truncated");
    }
}
