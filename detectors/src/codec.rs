//! Byte encoding of detector state: little-endian, fixed-width, no allocation on the hot path.
//!
//! Floats are written as their IEEE bits so a restored detector continues with exactly the
//! numbers the original held, which is what makes restore bit-for-bit deterministic.

use crate::Error;

/// Appends fixed-width values to a byte buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub(crate) fn f32(&mut self, v: f32) {
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub(crate) fn f64s(&mut self, vs: &[f64]) {
        for &v in vs {
            self.f64(v);
        }
    }
}

/// Reads what [`Writer`] wrote; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(Error::Truncated { at: self.pos })?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, Error> {
        Ok(f64::from_bits(u64::from_le_bytes(self.take()?)))
    }
    pub(crate) fn f32(&mut self) -> Result<f32, Error> {
        Ok(f32::from_bits(u32::from_le_bytes(self.take()?)))
    }
    pub(crate) fn f64s(&mut self, vs: &mut [f64]) -> Result<(), Error> {
        for v in vs.iter_mut() {
            *v = self.f64()?;
        }
        Ok(())
    }
    /// A length prefix that must equal what the spec implies (ring sizes, slot counts).
    pub(crate) fn expect_len(&mut self, want: usize) -> Result<(), Error> {
        let got = self.u32()? as usize;
        if got != want {
            return Err(Error::Incompatible(format!(
                "state holds {got} entries but the spec asks for {want}"
            )));
        }
        Ok(())
    }
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.pos != self.bytes.len() {
            return Err(Error::Trailing {
                extra: self.bytes.len() - self.pos,
            });
        }
        Ok(())
    }
}
