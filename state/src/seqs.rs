//! The recent sequence numbers of one source (a device's message counter), for dropping
//! retransmissions without a clock: the built-in `validate` stage and the `dedup` operator's
//! `sequence` mode keep one per source, in a table.

use crate::table::{Codec, Encode};
use crate::StateError;

/// The last `window` sequence numbers of one source, as a bitmap ending at the highest seen.
/// `window` is rounded up to a multiple of 64 (`w`). A number `w` or more below the highest
/// is too old to tell and counts as seen. `i64::MIN` marks "nothing seen yet", so a record
/// numbered `i64::MIN` is not recorded (it always passes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqWindow {
    max_seq: i64,
    bits: Vec<u64>,
}

impl SeqWindow {
    /// Nothing seen yet; remembers the last `window` numbers (at least 64).
    pub fn new(window: u32) -> Self {
        SeqWindow {
            max_seq: i64::MIN,
            bits: vec![0; window.max(1).div_ceil(64) as usize],
        }
    }

    /// How many numbers are remembered: the highest and those below it.
    pub fn window(&self) -> i64 {
        self.bits.len() as i64 * 64
    }

    /// Records `seq`; false if it was seen (or is too old to tell, which counts as seen).
    pub fn insert(&mut self, seq: i64) -> bool {
        let w = self.window();
        if seq == i64::MIN {
            return true;
        }
        if self.max_seq == i64::MIN {
            self.max_seq = seq;
            self.bits.fill(0);
            self.set(seq);
            return true;
        }
        if seq > self.max_seq {
            let shift = seq.saturating_sub(self.max_seq);
            if shift >= w {
                self.bits.fill(0);
            } else {
                for s in (seq - shift + 1)..=seq {
                    self.clear(s);
                }
            }
            self.max_seq = seq;
            self.set(seq);
            return true;
        }
        if self.max_seq.saturating_sub(seq) >= w {
            return false;
        }
        if self.get(seq) {
            return false;
        }
        self.set(seq);
        true
    }

    fn slot(&self, seq: i64) -> (usize, u64) {
        let i = seq.rem_euclid(self.window()) as usize;
        (i / 64, 1u64 << (i % 64))
    }
    fn get(&self, seq: i64) -> bool {
        let (w, b) = self.slot(seq);
        self.bits[w] & b != 0
    }
    fn set(&mut self, seq: i64) {
        let (w, b) = self.slot(seq);
        self.bits[w] |= b;
    }
    fn clear(&mut self, seq: i64) {
        let (w, b) = self.slot(seq);
        self.bits[w] &= !b;
    }
}

/// The highest number (8 bytes, big-endian), then the bitmap's words (little-endian).
impl Encode for SeqWindow {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.max_seq.to_be_bytes());
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

impl Codec for SeqWindow {
    fn decode(b: &[u8]) -> Result<Self, StateError> {
        if b.len() < 16 || (b.len() - 8) % 8 != 0 {
            return Err(StateError::decode(
                "sequence window",
                format!("{} bytes: not 8 plus a positive multiple of 8", b.len()),
            ));
        }
        let max_seq = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let bits = b[8..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(SeqWindow { max_seq, bits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_numbers_too_old_are_seen_gaps_are_not() {
        let mut w = SeqWindow::new(64);
        assert!(w.insert(10));
        assert!(!w.insert(10));
        assert!(w.insert(12));
        // A gap filled late is new; filled twice, it is a repeat.
        assert!(w.insert(11));
        assert!(!w.insert(11));
        // A jump forward clears what it passes over.
        assert!(w.insert(200));
        assert!(w.insert(199));
        // 200 - 64 = 136 is too old to tell.
        assert!(!w.insert(136));
        assert!(w.insert(137));
        assert!(!w.insert(12));
    }

    #[test]
    fn the_window_rounds_up_and_round_trips() {
        let mut w = SeqWindow::new(100);
        assert_eq!(w.window(), 128);
        for s in [5, 9, 70, 131] {
            assert!(w.insert(s));
        }
        let mut b = Vec::new();
        w.encode(&mut b);
        let back = SeqWindow::decode(&b).unwrap();
        assert_eq!(back, w);
        assert!(SeqWindow::decode(&b[..11]).is_err());
        assert!(SeqWindow::decode(&b[..8]).is_err());
    }

    #[test]
    fn extreme_numbers_neither_overflow_nor_stick() {
        let mut w = SeqWindow::new(64);
        // i64::MIN is "nothing seen": it passes and is not recorded.
        assert!(w.insert(i64::MIN));
        assert!(w.insert(i64::MIN));
        assert!(w.insert(-5));
        assert!(w.insert(100));
        assert!(w.insert(64), "not left over from an earlier record");
        assert!(w.insert(i64::MAX));
        assert!(!w.insert(i64::MAX));
        assert!(!w.insert(-5), "far below the highest: too old");
        assert!(w.insert(i64::MAX - 63));
        assert!(!w.insert(i64::MAX - 64));
    }
}
