//! The ensemble: several cheap views of one stream, each turned into a tail probability by
//! an anomaly likelihood, combined by the smallest (Bonferroni-corrected) probability.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::likelihood::{p_to_score, Likelihood};
use crate::context::Context;
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
    /// Experiment: channels on.
    #[serde(default = "default_mask")]
    pub mask: u32,
    #[serde(default)]
    pub rest: u32,
    #[serde(default)]
    pub rest_factor: f64,
    #[serde(default = "default_levels")]
    pub levels: u32,
    #[serde(default = "default_generation")]
    pub generation: u32,
    #[serde(default)]
    pub combine: u32,
    #[serde(default)]
    pub wf: f64,
    #[serde(default)]
    pub max_len: u32,
    #[serde(default)]
    pub contract: f64,
    #[serde(default)]
    pub block: u32,
    #[serde(default)]
    pub bmode: u32,
}
fn default_levels() -> u32 {
    8
}
fn default_generation() -> u32 {
    5000
}
fn default_mask() -> u32 {
    7
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
            mask: default_mask(),
            rest: 0,
            rest_factor: 0.0,
            levels: default_levels(),
            generation: default_generation(),
            combine: 0,
            wf: 0.5,
            max_len: 4,
            contract: 0.0,
            block: 0,
            bmode: 0,
        }
    }
}

const CHANNELS: usize = 5;

#[derive(Debug, Clone)]
pub(crate) struct Ensemble {
    p: EnsembleParams,
    level: RobustLevel,
    diff: RobustLevel,
    prev: f64,
    seasonal: Seasonal,
    lik: [Likelihood; CHANNELS],
    n: u64,
    rec: [f64; CHANNELS],
    mask: u32,
    quiet: u32,
    ctx: Context,
    peak: f64,
    weekly: Seasonal,
    fast: f64,
    slow: RobustLevel,
    rar: [crate::rarity::Rarity; CHANNELS],
    ctx2: Context,
    block_sum: f64,
    block_n: u32,
}

fn seasonal_params() -> SeasonalParams {
    SeasonalParams::default()
}

fn weekly_params() -> SeasonalParams {
    SeasonalParams {
        period_s: 7 * 86_400,
        slots: 168,
        ..SeasonalParams::default()
    }
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
            rec: [0.0; CHANNELS],
            mask: p.mask,
            quiet: 0,
            peak: 0.0,
            rar: Default::default(),
            ctx2: Context::new(p.levels),
            block_sum: 0.0,
            block_n: 0,
            weekly: Seasonal::new(&weekly_params()),
            fast: 0.0,
            slow: RobustLevel::default(),
            ctx: Context::new(p.levels),
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
        let w = self.weekly.update(ts_ms, x);
        let raw_week = if w > 0.0 { -(1.0 - w).max(1e-300).ln() } else { 0.0 };
        self.fast = if self.n == 1 { x } else { self.fast + 0.1 * (x - self.fast) };
        let raw_shift = if self.slow.n > 1 { self.slow.z(self.fast).abs() } else { 0.0 };
        self.slow.push(x, 0.005);
        self.level.push(x, self.p.level_rate);
        if self.n > 1 {
            self.diff.push(dx, self.p.level_rate);
        }
        self.prev = x;
        let warm = u64::from(self.p.warmup).max(2);
        let raws = [raw_level, raw_diff, raw_season, raw_week, raw_shift];
        let mut q_max = 0.0f64;
        let mut p_min = 1.0f64;
        let decay = 1.0 - self.p.long_alpha;
        for (k, &r) in raws.iter().enumerate() {
            let r = r.min(1e6);
            let q = r / self.rec[k].max(1e-9);
            let pr = self.rar[k].update(r, self.p.long_alpha);
            if self.mask & (1 << k) != 0 {
                p_min = p_min.min(pr);
            }
            self.rec[k] = (self.rec[k] * decay).max(r);
            if self.mask & (1 << k) != 0 {
                if self.p.combine >= 5 {
                    q_max += q / (1.0 + q) / f64::from(self.mask.count_ones());
                } else {
                    q_max = q_max.max(q);
                }
            }
        }
        let _ = &self.lik;
        let _ = p_to_score;
        if self.n < warm {
            self.ctx.update(x, self.p.generation, self.p.max_len as usize, self.p.contract);
            return 0.0;
        }
        let novel = self.ctx.update(x, self.p.generation, self.p.max_len as usize, self.p.contract);
        let mut frac = (novel.count_ones() as f64) / (self.p.max_len as f64 + 1.0);
        if self.p.block > 0 {
            self.block_sum += x;
            self.block_n += 1;
            if self.block_n >= self.p.block {
                let m = self.block_sum / f64::from(self.block_n);
                self.block_sum = 0.0;
                self.block_n = 0;
                let n2 = self.ctx2.update(m, self.p.generation, self.p.max_len as usize, self.p.contract);
                let f2 = (n2.count_ones() as f64) / (self.p.max_len as f64 + 1.0);
                frac = match self.p.bmode { 0 => frac.max(f2), _ => 0.5 * (frac + f2) };
            } else if self.p.bmode == 1 {
                frac *= 0.5;
            }
        }
        let rec = if self.p.combine >= 5 { q_max } else { q_max / (1.0 + q_max) };
        let mut score = match self.p.combine {
            0 => rec,
            1 => frac,
            2 | 5 => self.p.wf * frac + (1.0 - self.p.wf) * rec,
            3 => rec.max(frac),
            6 => self.p.wf * frac + (1.0 - self.p.wf) * p_to_score(p_min * f64::from(self.mask.count_ones())),
            _ => frac * rec,
        };
        if self.p.rest > 0 {
            let prev_peak = self.peak;
            self.peak = (self.peak * (1.0 - 1.0 / f64::from(self.p.rest))).max(score);
            if score <= prev_peak {
                score *= self.p.rest_factor;
            }
        }
        let _ = self.quiet;
        score
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
