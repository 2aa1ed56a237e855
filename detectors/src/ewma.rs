//! EWMA: exponentially weighted mean and variance; the score is the z of each point against
//! the estimate before it. Three floats of state, the cheapest detector here.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::stats::{scale_floor, z_score_to_unit, EwStats};
use crate::Error;

/// Parameters of the EWMA detector (`kind: ewma`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EwmaParams {
    /// Weight of the newest point in the mean and variance, in (0, 1]. Default 0.05
    /// (an effective memory of about 20 points).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Points before any score above 0 is emitted. Default 32.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
}

fn default_alpha() -> f64 {
    0.05
}
fn default_warmup() -> u32 {
    32
}

impl Default for EwmaParams {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            warmup: default_warmup(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Ewma {
    alpha: f64,
    warmup: u64,
    stats: EwStats,
}

impl Ewma {
    pub(crate) fn new(p: &EwmaParams) -> Self {
        Self {
            alpha: p.alpha.clamp(1e-6, 1.0),
            warmup: u64::from(p.warmup),
            stats: EwStats::default(),
        }
    }

    #[inline]
    pub(crate) fn update(&mut self, _ts_ms: i64, x: f64) -> f64 {
        let s = &self.stats;
        let score = if s.n >= self.warmup.max(2) {
            let sd = s.std().max(scale_floor(s.mean));
            z_score_to_unit((x - s.mean) / sd)
        } else {
            0.0
        };
        self.stats.push(x, self.alpha);
        score
    }

    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        self.stats.write(w);
    }

    pub(crate) fn restore(p: &EwmaParams, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut d = Self::new(p);
        d.stats = EwStats::read(r)?;
        Ok(d)
    }
}
