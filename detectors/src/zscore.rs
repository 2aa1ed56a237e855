//! The baseline: z-score of each point against the mean and variance of the previous
//! `window` points, kept with Welford's update (add the new point, remove the oldest).

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::stats::{scale_floor, z_score_to_unit};
use crate::Error;

/// Parameters of the windowed z-score (`kind: zscore`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZscoreParams {
    /// Points in the sliding window. Default 256 (2 KiB of ring buffer per series).
    #[serde(default = "default_window")]
    pub window: u32,
    /// Points the window must hold before any score above 0 is emitted. Default 32.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
}

fn default_window() -> u32 {
    256
}
fn default_warmup() -> u32 {
    32
}

impl Default for ZscoreParams {
    fn default() -> Self {
        Self {
            window: default_window(),
            warmup: default_warmup(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Zscore {
    window: usize,
    warmup: u64,
    ring: Vec<f64>,
    head: usize,
    len: usize,
    mean: f64,
    m2: f64,
    /// Points since the sums were last recomputed from the ring; bounds floating drift.
    since_refresh: u32,
}

impl Zscore {
    pub(crate) fn new(p: &ZscoreParams) -> Self {
        let window = p.window.max(2) as usize;
        Self {
            window,
            warmup: u64::from(p.warmup),
            ring: Vec::with_capacity(window),
            head: 0,
            len: 0,
            mean: 0.0,
            m2: 0.0,
            since_refresh: 0,
        }
    }

    /// Recomputes mean and M2 from the ring every `window` points: O(window) once per
    /// `window` points keeps the amortised cost O(1) and stops add/remove drift.
    fn refresh(&mut self) {
        let n = self.len as f64;
        let mean = self.ring.iter().sum::<f64>() / n;
        self.m2 = self.ring.iter().map(|x| (x - mean) * (x - mean)).sum();
        self.mean = mean;
        self.since_refresh = 0;
    }

    pub(crate) fn update(&mut self, _ts_ms: i64, x: f64) -> f64 {
        let score = if self.len as u64 >= self.warmup.max(2) {
            let var = self.m2.max(0.0) / (self.len as f64 - 1.0);
            let sd = var.sqrt().max(scale_floor(self.mean));
            z_score_to_unit((x - self.mean) / sd)
        } else {
            0.0
        };
        if self.len < self.window {
            self.ring.push(x);
            self.len += 1;
            let d = x - self.mean;
            self.mean += d / self.len as f64;
            self.m2 += d * (x - self.mean);
        } else {
            let old = std::mem::replace(&mut self.ring[self.head], x);
            self.head = (self.head + 1) % self.window;
            // Replace `old` by `x` in one step (same n): Welford's remove-then-add, fused.
            let n = self.len as f64;
            let new_mean = self.mean + (x - old) / n;
            self.m2 += (x - old) * (x - new_mean + old - self.mean);
            self.mean = new_mean;
            self.since_refresh += 1;
            if self.since_refresh as usize >= self.window {
                self.refresh();
            }
        }
        score
    }

    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        w.u32(self.len as u32);
        w.u32(self.head as u32);
        w.u32(self.since_refresh);
        w.f64(self.mean);
        w.f64(self.m2);
        w.f64s(&self.ring);
    }

    pub(crate) fn restore(p: &ZscoreParams, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut d = Self::new(p);
        let len = r.u32()? as usize;
        if len > d.window {
            return Err(Error::Incompatible(format!(
                "state holds {len} points but the window is {}",
                d.window
            )));
        }
        d.len = len;
        d.head = r.u32()? as usize % d.window;
        d.since_refresh = r.u32()?;
        d.mean = r.f64()?;
        d.m2 = r.f64()?;
        d.ring.resize(len, 0.0);
        r.f64s(&mut d.ring)?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_moments_match_a_direct_computation() {
        let p = ZscoreParams {
            window: 16,
            warmup: 4,
        };
        let mut d = Zscore::new(&p);
        let xs: Vec<f64> = (0..200)
            .map(|i| ((i * 37) % 23) as f64 * 0.5 + 1.0)
            .collect();
        for (i, &x) in xs.iter().enumerate() {
            d.update(i as i64, x);
        }
        let last = &xs[xs.len() - 16..];
        let mean = last.iter().sum::<f64>() / 16.0;
        let m2: f64 = last.iter().map(|x| (x - mean).powi(2)).sum();
        assert!((d.mean - mean).abs() < 1e-9);
        assert!((d.m2 - m2).abs() < 1e-6);
    }
}
