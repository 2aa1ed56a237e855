//! Robust median/MAD: the median and the median absolute deviation are tracked as streaming
//! quantiles by stochastic approximation (each point nudges the estimate towards itself by a
//! step proportional to the current scale). O(1) work, two floats of state, and one outlier
//! moves the estimates by at most one step, which is what makes it robust where EWMA is not.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::stats::{scale_floor, z_score_to_unit};
use crate::Error;

/// Parameters of the median/MAD detector (`kind: mad`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadParams {
    /// Step of the quantile updates, relative to the current MAD. Default 0.01.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Points before any score above 0 is emitted. Default 32.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
}

fn default_rate() -> f64 {
    0.01
}
fn default_warmup() -> u32 {
    32
}

impl Default for MadParams {
    fn default() -> Self {
        Self {
            rate: default_rate(),
            warmup: default_warmup(),
        }
    }
}

/// Median and MAD tracked by sign-driven steps; exposed for the ensemble.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RobustLevel {
    pub(crate) median: f64,
    pub(crate) mad: f64,
    pub(crate) n: u64,
}

impl RobustLevel {
    /// Robust z of `x` against the current estimate (MAD scaled to a Gaussian sigma).
    #[inline]
    pub(crate) fn z(&self, x: f64) -> f64 {
        let sd = (1.4826 * self.mad).max(scale_floor(self.median));
        (x - self.median) / sd
    }

    #[inline]
    pub(crate) fn push(&mut self, x: f64, rate: f64) {
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.median = x;
            self.mad = 0.0;
            return;
        }
        // Early on, the running mean of |dev| seeds the scale so steps are not zero. From the
        // fourth point on it is clipped, so one wild value among the first few cannot set a
        // scale that the bounded steps below would need thousands of points to undo.
        let dev = (x - self.median).abs();
        if self.n <= 16 {
            let dev = if self.n > 3 {
                dev.min(5.0 * self.mad)
            } else {
                dev
            };
            self.mad += (dev - self.mad) / (self.n - 1) as f64;
        }
        let step = rate * self.mad.max(scale_floor(self.median));
        self.median += step * (x - self.median).signum() * f64::from(u8::from(x != self.median));
        let dev = (x - self.median).abs();
        // The MAD is the 0.5-quantile of |dev|: grow when above it, shrink when below, by
        // the same relative step, so it settles where half the deviations lie on each side.
        let s = self.mad.max(scale_floor(self.median));
        if dev > self.mad {
            self.mad += rate * s;
        } else if dev < self.mad {
            self.mad = (self.mad - rate * s).max(0.0);
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.f64(self.median);
        w.f64(self.mad);
        w.u64(self.n);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            median: r.f64()?,
            mad: r.f64()?,
            n: r.u64()?,
        })
    }
}

/// Deviations beyond this many times the current scale are clipped before the mean
/// absolute deviation learns them.
const CAP: f64 = 100.0;

#[derive(Debug, Clone)]
pub(crate) struct Mad {
    rate: f64,
    warmup: u64,
    level: RobustLevel,
    /// Exponentially weighted mean absolute deviation from the median: a floor under the
    /// MAD, which is 0 whenever more than half the points sit on the median (quantised or
    /// mostly idle sensors) and would make every other value infinitely surprising.
    mean_abs: f64,
}

impl Mad {
    pub(crate) fn new(p: &MadParams) -> Self {
        Self {
            rate: p.rate.clamp(1e-6, 1.0),
            warmup: u64::from(p.warmup),
            level: RobustLevel::default(),
            mean_abs: 0.0,
        }
    }

    #[inline]
    pub(crate) fn update(&mut self, _ts_ms: i64, x: f64) -> f64 {
        let dev = (x - self.level.median).abs();
        let score = if self.level.n >= self.warmup.max(2) {
            // 1.2533 turns a mean absolute deviation into a Gaussian sigma; half of it is
            // only a floor, so the MAD still rules on well-behaved data.
            let sd = (1.4826 * self.level.mad)
                .max(0.5 * 1.2533 * self.mean_abs)
                .max(scale_floor(self.level.median));
            z_score_to_unit(dev / sd)
        } else {
            0.0
        };
        if self.level.n > 0 {
            // Clipped, so one wild value cannot lift the floor far above the MAD for long.
            let cap = CAP * self.mean_abs.max(1.4826 * self.level.mad);
            let dev = if self.level.n > 3 { dev.min(cap) } else { dev };
            self.mean_abs += self.rate * (dev - self.mean_abs);
        }
        self.level.push(x, self.rate);
        score
    }

    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        self.level.write(w);
        w.f64(self.mean_abs);
    }

    pub(crate) fn restore(p: &MadParams, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut d = Self::new(p);
        d.level = RobustLevel::read(r)?;
        d.mean_abs = r.f64()?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_a_single_outlier_and_tracks_the_level() {
        let mut l = RobustLevel::default();
        for i in 0..2000 {
            let x = 10.0 + ((i * 7919) % 101) as f64 / 100.0 - 0.5;
            l.push(if i == 1000 { 1e9 } else { x }, 0.05);
        }
        assert!((l.median - 10.0).abs() < 0.1, "median {}", l.median);
        assert!(l.mad > 0.1 && l.mad < 0.5, "mad {}", l.mad);
    }
}
