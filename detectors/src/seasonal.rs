//! Seasonal baseline: one running mean per slot of a period (by default the half-hour of the
//! day, from the record's timestamp), and a pooled, exponentially weighted variance of the
//! residuals. A point is scored by its residual against its own slot's mean, so a daily
//! cycle is not an anomaly but a night that looks like a day is.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::stats::{scale_floor, z_score_to_unit, EwStats};
use crate::Error;

/// Parameters of the seasonal baseline (`kind: seasonal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalParams {
    /// Length of the season in seconds. Default 86400 (one day).
    #[serde(default = "default_period_s")]
    pub period_s: u32,
    /// Slots per season, each with its own mean. Default 48 (half-hours of a day).
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Weight of a new point in its slot's mean. Default 0.1.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Weight of a new residual in the pooled residual variance. Default 0.01.
    #[serde(default = "default_var_alpha")]
    pub var_alpha: f64,
    /// Points a slot must have seen before its residuals are scored. Default 2.
    #[serde(default = "default_min_count")]
    pub min_count: u32,
}

fn default_period_s() -> u32 {
    86_400
}
fn default_slots() -> u32 {
    48
}
fn default_alpha() -> f64 {
    0.1
}
fn default_var_alpha() -> f64 {
    0.01
}
fn default_min_count() -> u32 {
    2
}

impl Default for SeasonalParams {
    fn default() -> Self {
        Self {
            period_s: default_period_s(),
            slots: default_slots(),
            alpha: default_alpha(),
            var_alpha: default_var_alpha(),
            min_count: default_min_count(),
        }
    }
}

/// Residuals beyond this many pooled sigmas are clipped before a slot mean learns them.
const WINSOR: f64 = 6.0;
/// The pooled variance learns residuals clipped this far out: wide enough to follow a
/// noisier regime within a few points, narrow enough that one wild value is forgotten.
const WINSOR_VAR: f64 = 20.0;

#[derive(Debug, Clone)]
pub(crate) struct Seasonal {
    period_ms: i64,
    alpha: f64,
    var_alpha: f64,
    min_count: u32,
    means: Vec<f64>,
    counts: Vec<u32>,
    resid: EwStats,
}

impl Seasonal {
    pub(crate) fn new(p: &SeasonalParams) -> Self {
        let slots = p.slots.clamp(1, 4096) as usize;
        Self {
            period_ms: i64::from(p.period_s.max(1)) * 1000,
            alpha: p.alpha.clamp(1e-6, 1.0),
            var_alpha: p.var_alpha.clamp(1e-6, 1.0),
            min_count: p.min_count,
            means: vec![0.0; slots],
            counts: vec![0; slots],
            resid: EwStats::default(),
        }
    }

    #[inline]
    fn slot(&self, ts_ms: i64) -> usize {
        let phase = ts_ms.rem_euclid(self.period_ms);
        ((phase as i128 * self.means.len() as i128) / self.period_ms as i128) as usize
    }

    pub(crate) fn update(&mut self, ts_ms: i64, x: f64) -> f64 {
        z_score_to_unit(self.update_z(ts_ms, x))
    }

    /// The residual of `x` against its slot, in pooled standard deviations (0 while the
    /// slot or the pooled variance is still warming up); then learns `x`.
    pub(crate) fn update_z(&mut self, ts_ms: i64, x: f64) -> f64 {
        let k = self.slot(ts_ms);
        let n = self.counts[k];
        if n == 0 {
            self.means[k] = x;
            self.counts[k] = 1;
            return 0.0;
        }
        let r = x - self.means[k];
        let (z, r_mean, r_var) = if n >= self.min_count && self.resid.n >= 8 {
            let sd = self.resid.std().max(scale_floor(self.means[k]));
            // Learn from winsorised residuals: one wild value must not drag a slot's mean
            // for weeks. A real shift still gets in, `WINSOR` sigmas per visit.
            let clip = |c: f64| r.clamp(-c * sd, c * sd);
            (r / sd, clip(WINSOR), clip(WINSOR_VAR))
        } else {
            (0.0, r, r)
        };
        self.resid.push(r_var, self.var_alpha);
        let a = self.alpha.max(1.0 / f64::from(n + 1));
        self.means[k] += a * r_mean;
        self.counts[k] = n.saturating_add(1);
        z
    }

    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        w.u32(self.means.len() as u32);
        w.f64s(&self.means);
        for &c in &self.counts {
            w.u32(c);
        }
        self.resid.write(w);
    }

    pub(crate) fn restore(p: &SeasonalParams, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut d = Self::new(p);
        r.expect_len(d.means.len())?;
        r.f64s(&mut d.means)?;
        for c in d.counts.iter_mut() {
            *c = r.u32()?;
        }
        d.resid = EwStats::read(r)?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learned_daily_cycle_scores_low_and_a_shifted_one_high() {
        let p = SeasonalParams::default();
        let mut d = Seasonal::new(&p);
        let step = 300_000i64; // 5 minutes
        let day = |t: i64| ((t % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU).sin();
        let mut last = 0.0;
        for i in 0..(288 * 10) {
            let t = i * step;
            last = d.update(t, 10.0 * day(t) + 0.01 * ((i * 31 % 7) as f64));
        }
        assert!(last < 0.99, "in-pattern score {last}");
        let t = 288 * 10 * step + 288 / 4 * step; // peak of the sine
        assert!(d.update(t, -10.0) > 0.9, "20 below the learned peak");
    }
}
