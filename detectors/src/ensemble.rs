//! The ensemble: several cheap views of one stream, each turned into a tail probability by
//! an anomaly likelihood, combined by the smallest (Bonferroni-corrected) probability.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::likelihood::{p_to_score, Likelihood};
use crate::mad::RobustLevel;
use crate::seasonal::{Seasonal, SeasonalParams};
use crate::Error;

/// Parameters of the ensemble (`kind: ensemble`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleParams {
    /// Step of the robust level (median/MAD) updates. Default 0.02.
    #[serde(default = "default_level_rate")]
    pub level_rate: f64,
    /// Smoothing of each raw surprise before the likelihood. Default 0.3.
    #[serde(default = "default_short_alpha")]
    pub short_alpha: f64,
    /// Memory of the long-run surprise distribution. Default 0.002 (about 500 points).
    #[serde(default = "default_long_alpha")]
    pub long_alpha: f64,
    /// Points before any score above 0. Default 150.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
}

fn default_level_rate() -> f64 {
    0.02
}
fn default_short_alpha() -> f64 {
    0.3
}
fn default_long_alpha() -> f64 {
    0.002
}
fn default_warmup() -> u32 {
    150
}

impl Default for EnsembleParams {
    fn default() -> Self {
        Self {
            level_rate: default_level_rate(),
            short_alpha: default_short_alpha(),
            long_alpha: default_long_alpha(),
            warmup: default_warmup(),
        }
    }
}

const CHANNELS: usize = 3;

#[derive(Debug, Clone)]
pub(crate) struct Ensemble {
    p: EnsembleParams,
    level: RobustLevel,
    diff: RobustLevel,
    prev: f64,
    seasonal: Seasonal,
    lik: [Likelihood; CHANNELS],
    n: u64,
}

fn seasonal_params() -> SeasonalParams {
    SeasonalParams::default()
}

impl Ensemble {
    pub(crate) fn new(p: &EnsembleParams) -> Self {
        Self {
            p: p.clone(),
            level: RobustLevel::default(),
            diff: RobustLevel::default(),
            prev: 0.0,
            seasonal: Seasonal::new(&seasonal_params()),
            lik: [Likelihood::default(); CHANNELS],
            n: 0,
        }
    }

    pub(crate) fn update(&mut self, ts_ms: i64, x: f64) -> f64 {
        self.n += 1;
        let raw_level = if self.level.n > 1 {
            self.level.z(x).abs()
        } else {
            0.0
        };
        let dx = if self.n > 1 { x - self.prev } else { 0.0 };
        let raw_diff = if self.diff.n > 1 {
            self.diff.z(dx).abs()
        } else {
            0.0
        };
        let s = self.seasonal.update(ts_ms, x);
        let raw_season = if s > 0.0 {
            -(1.0 - s).max(1e-300).ln()
        } else {
            0.0
        };
        self.level.push(x, self.p.level_rate);
        if self.n > 1 {
            self.diff.push(dx, self.p.level_rate);
        }
        self.prev = x;
        let warm = u64::from(self.p.warmup).max(2);
        let raws = [raw_level, raw_diff, raw_season];
        let mut p_min = 1.0f64;
        for (l, &r) in self.lik.iter_mut().zip(&raws) {
            let p = l.update(r.min(1e3), self.p.short_alpha, self.p.long_alpha, warm);
            p_min = p_min.min(p);
        }
        if self.n < warm {
            return 0.0;
        }
        p_to_score((p_min * CHANNELS as f64).min(1.0))
    }

    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        w.u64(self.n);
        w.f64(self.prev);
        self.level.write(w);
        self.diff.write(w);
        self.seasonal.save(w);
        for l in &self.lik {
            l.write(w);
        }
    }

    pub(crate) fn restore(p: &EnsembleParams, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut d = Self::new(p);
        d.n = r.u64()?;
        d.prev = r.f64()?;
        d.level = RobustLevel::read(r)?;
        d.diff = RobustLevel::read(r)?;
        d.seasonal = Seasonal::restore(&seasonal_params(), r)?;
        for l in d.lik.iter_mut() {
            *l = Likelihood::read(r)?;
        }
        Ok(d)
    }
}
