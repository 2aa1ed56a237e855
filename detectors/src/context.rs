//! Contextual novelty, in the spirit of CAD OSE: each value is quantised into `levels` bands
//! of the range seen so far, and the last one, two and three bands form contexts. A context
//! never seen before is news; so is a value outside the range seen so far.
//!
//! With at most 16 levels and contexts of at most 3 values there are at most
//! 16 + 16² + 16³ contexts, so "seen" is an exact bit set, not a hash. Two generations of it
//! (the current one becomes the old one every `generation` points) let patterns that stopped
//! occurring be forgotten, and the range is that of the last two generations, so the bands
//! recover after a one-off extreme value; both keep the detector useful on streams that run for years.

use crate::codec::{Reader, Writer};
use crate::Error;

pub(crate) const MAX_LEVELS: u32 = 16;
pub(crate) const MAX_LEN: u32 = 3;

#[derive(Debug, Clone)]
pub(crate) struct Context {
    levels: u32,
    len: u32,
    lo: f64,
    hi: f64,
    /// Range of the current and of the previous generation.
    gen_lo: f64,
    gen_hi: f64,
    old_lo: f64,
    old_hi: f64,
    /// The last `len` bands, newest last: `recent[i]` is the band `len - 1 - i` points ago.
    recent: [u8; MAX_LEN as usize],
    filled: u32,
    cur: Vec<u64>,
    old: Vec<u64>,
    age: u32,
}

/// Bits needed for all contexts of length 1..=len over `levels` bands.
fn bits(levels: u32, len: u32) -> usize {
    (1..=len).map(|l| (levels as usize).pow(l)).sum()
}

impl Context {
    pub(crate) fn new(levels: u32, len: u32) -> Self {
        let levels = levels.clamp(2, MAX_LEVELS);
        let len = len.clamp(1, MAX_LEN);
        let words = bits(levels, len).div_ceil(64);
        Self {
            levels,
            len,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            gen_lo: f64::INFINITY,
            gen_hi: f64::NEG_INFINITY,
            old_lo: f64::INFINITY,
            old_hi: f64::NEG_INFINITY,
            recent: [0; MAX_LEN as usize],
            filled: 0,
            cur: vec![0; words],
            old: vec![0; words],
            age: 0,
        }
    }

    pub(crate) fn levels(&self) -> u32 {
        self.levels
    }

    /// For state saved before this resolution existed: take `other`'s range and
    /// generation clock, and count every context as seen in the old generation, so nothing
    /// but a widened range is news until the next rollover; from then on this resolution
    /// knows what it saw since the upgrade.
    pub(crate) fn upgrade_from(&mut self, other: &Context) {
        self.lo = other.lo;
        self.hi = other.hi;
        self.gen_lo = other.gen_lo;
        self.gen_hi = other.gen_hi;
        self.old_lo = other.old_lo;
        self.old_hi = other.old_hi;
        self.age = other.age;
        self.filled = 0;
        self.cur.iter_mut().for_each(|w| *w = 0);
        self.old.iter_mut().for_each(|w| *w = u64::MAX);
    }

    /// The band `x` falls in, given the range learned so far.
    pub(crate) fn band(&self, x: f64) -> u8 {
        let span = self.hi - self.lo;
        if span.is_nan() || span <= 0.0 {
            return 0;
        }
        let q = ((x - self.lo) / span * f64::from(self.levels)).floor();
        q.clamp(0.0, f64::from(self.levels - 1)) as u8
    }

    /// Learns `x`; returns how many of its contexts were new, and whether it widened the
    /// range.
    pub(crate) fn update(&mut self, x: f64, generation: u32) -> (u32, bool) {
        let widened = self.filled > 0 && (x < self.lo || x > self.hi);
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        self.gen_lo = self.gen_lo.min(x);
        self.gen_hi = self.gen_hi.max(x);
        let n = self.len as usize;
        self.recent.copy_within(1..n, 0);
        self.recent[n - 1] = self.band(x);
        self.filled = (self.filled + 1).min(self.len);
        let mut novel = 0;
        let mut offset = 0usize;
        let mut index = 0usize;
        let mut width = 1usize;
        for l in 1..=self.filled as usize {
            // Context of length l: the newest l bands read as a base-`levels` number.
            index += usize::from(self.recent[n - l]) * width;
            width *= self.levels as usize;
            let bit = offset + index;
            let (w, b) = (bit / 64, 1u64 << (bit % 64));
            if (self.cur[w] | self.old[w]) & b == 0 {
                novel += 1;
            }
            self.cur[w] |= b;
            offset += width;
        }
        self.age += 1;
        if self.age >= generation.max(1) {
            std::mem::swap(&mut self.cur, &mut self.old);
            self.cur.iter_mut().for_each(|w| *w = 0);
            self.age = 0;
            // The range becomes what the last two generations saw, so a one-off extreme
            // stops flattening the bands once it has aged out.
            self.lo = self.gen_lo.min(self.old_lo);
            self.hi = self.gen_hi.max(self.old_hi);
            self.old_lo = self.gen_lo;
            self.old_hi = self.gen_hi;
            self.gen_lo = f64::INFINITY;
            self.gen_hi = f64::NEG_INFINITY;
        }
        (novel, widened)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.f64(self.lo);
        w.f64(self.hi);
        w.f64s(&[self.gen_lo, self.gen_hi, self.old_lo, self.old_hi]);
        for &b in &self.recent {
            w.u8(b);
        }
        w.u32(self.filled);
        w.u32(self.age);
        w.u32(self.cur.len() as u32);
        for &x in self.cur.iter().chain(&self.old) {
            w.u64(x);
        }
    }

    pub(crate) fn read(levels: u32, len: u32, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut c = Self::new(levels, len);
        c.lo = r.f64()?;
        c.hi = r.f64()?;
        c.gen_lo = r.f64()?;
        c.gen_hi = r.f64()?;
        c.old_lo = r.f64()?;
        c.old_hi = r.f64()?;
        for b in c.recent.iter_mut() {
            *b = r.u8()?;
        }
        c.filled = r.u32()?.min(c.len);
        c.age = r.u32()?;
        r.expect_len(c.cur.len())?;
        for x in c.cur.iter_mut().chain(c.old.iter_mut()) {
            *x = r.u64()?;
        }
        Ok(c)
    }
}

/// An order-2 Markov model of bands: how often each band followed each pair of bands, with
/// decayed counts. Its surprise, `-ln P(band | previous two)`, is graded where
/// [`Context`]'s novelty is all-or-nothing: a transition seen once long ago is still
/// surprising. This is a small cousin of HTM's sequence memory.
#[derive(Debug, Clone)]
pub(crate) struct Transitions {
    levels: usize,
    /// Per pair of previous bands: `levels` counts, then their total.
    counts: Vec<f32>,
    prev: [u8; 2],
    seen: u8,
}

/// Pseudo-count per band (a Dirichlet prior): an unseen transition after `n` visits of its
/// context has probability about `0.5 / n`.
const PRIOR: f32 = 0.5;

impl Transitions {
    pub(crate) fn new(levels: u32) -> Self {
        let levels = levels.clamp(2, MAX_LEVELS) as usize;
        Self {
            levels,
            counts: vec![0.0; levels * levels * (levels + 1)],
            prev: [0; 2],
            seen: 0,
        }
    }

    /// Surprise of `band` after the last two bands (0 until two bands were seen); then
    /// learns it, forgetting old counts by `decay` per visit of the context.
    pub(crate) fn update(&mut self, band: u8, decay: f64) -> f64 {
        let l = self.levels;
        let b = usize::from(band).min(l - 1);
        let ctx = usize::from(self.prev[0]) * l + usize::from(self.prev[1]);
        let row = &mut self.counts[ctx * (l + 1)..(ctx + 1) * (l + 1)];
        let surprise = if self.seen >= 2 {
            let p = (row[b] + PRIOR) / (row[l] + PRIOR * l as f32);
            -f64::from(p).ln()
        } else {
            0.0
        };
        let keep = (1.0 - decay.clamp(0.0, 1.0)) as f32;
        row.iter_mut().for_each(|c| *c *= keep);
        row[b] += 1.0;
        row[l] += 1.0;
        self.prev = [self.prev[1], b as u8];
        self.seen = (self.seen + 1).min(2);
        surprise
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u8(self.prev[0]);
        w.u8(self.prev[1]);
        w.u8(self.seen);
        w.u32(self.counts.len() as u32);
        for &c in &self.counts {
            w.f32(c);
        }
    }

    pub(crate) fn read(levels: u32, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut t = Self::new(levels);
        let max = (t.levels - 1) as u8;
        t.prev = [r.u8()?.min(max), r.u8()?.min(max)];
        t.seen = r.u8()?.min(2);
        r.expect_len(t.counts.len())?;
        for c in t.counts.iter_mut() {
            *c = r.f32()?;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_pattern_stops_being_novel_and_a_new_one_is() {
        let mut c = Context::new(4, 3);
        let pattern = [0.0, 1.0, 2.0, 3.0];
        for i in 0..40 {
            c.update(pattern[i % 4], 1000);
        }
        for x in [0.0, 1.0, 2.0] {
            assert_eq!(c.update(x, 1000), (0, false));
        }
        // 0.0 right after 2.0 never happened: the pair and the triple are new, the band is not.
        assert_eq!(c.update(0.0, 1000), (2, false));
        assert!(c.update(9.0, 1000).1);
    }

    #[test]
    fn a_regular_sequence_becomes_predictable() {
        let mut t = Transitions::new(4);
        let mut last = 0.0;
        for i in 0..400u32 {
            last = t.update((i % 4) as u8, 0.0);
        }
        assert!(last < 0.02, "learned transition surprise {last}");
        // 0 after ..., 2, 3 is expected; 2 after 3 never happened.
        assert!(t.update(2, 0.0) > 4.0);
    }
}
