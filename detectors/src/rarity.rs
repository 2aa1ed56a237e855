//! Rarity of a surprise: how often, in the recent past, a surprise at least this large was
//! seen. Surprises are binned on a log scale (two bins per octave) with exponentially
//! decayed counts, so the tail probability adapts to each series' own noise: a heavy-tailed
//! series needs a much larger surprise than a quiet one to be as rare.

use crate::codec::{Reader, Writer};
use crate::Error;

pub(crate) const BINS: usize = 32;
/// Surprises below 2^MIN_LOG2 share the first bin.
const MIN_LOG2: f64 = -4.0;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rarity {
    counts: [f32; BINS],
    total: f32,
    /// Decayed maximum of past surprises: a surprise beyond it is rarer still, by how far.
    record: f64,
}

impl Default for Rarity {
    fn default() -> Self {
        Self {
            counts: [0.0; BINS],
            total: 0.0,
            record: 0.0,
        }
    }
}

#[inline]
fn bin(r: f64) -> usize {
    if !(r > 0.0) {
        return 0;
    }
    let b = ((r.log2() - MIN_LOG2) * 2.0).floor();
    b.clamp(0.0, (BINS - 1) as f64) as usize
}

impl Rarity {
    /// Tail probability of `r` against the past, then learns `r` with forgetting `alpha`.
    #[inline]
    pub(crate) fn update(&mut self, r: f64, alpha: f64) -> f64 {
        let b = bin(r);
        let tail: f32 = self.counts[b..].iter().sum();
        let mut p = f64::from(tail + 1.0) / f64::from(self.total + 1.0);
        if r > self.record && self.record > 0.0 {
            p *= self.record / r;
        }
        let keep = (1.0 - alpha) as f32;
        for c in self.counts.iter_mut() {
            *c *= keep;
        }
        self.total = self.total * keep + 1.0;
        self.counts[b] += 1.0;
        self.record = (self.record * (1.0 - alpha)).max(r);
        p.min(1.0)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        for &c in &self.counts {
            w.f32(c);
        }
        w.f32(self.total);
        w.f64(self.record);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut s = Self::default();
        for c in s.counts.iter_mut() {
            *c = r.f32()?;
        }
        s.total = r.f32()?;
        s.record = r.f64()?;
        Ok(s)
    }
}
