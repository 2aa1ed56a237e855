//! Anomaly likelihood, after Numenta's: a raw surprise is smoothed over a few points and
//! compared with the long-run distribution of that smoothed surprise; the result is a tail
//! probability. A series whose surprises are always large (noisy data) stops alarming,
//! and one whose surprises are usually tiny alarms on a moderate one. This is what lets one
//! threshold serve every series.
//!
//! Unlike Numenta's (which refits over a window of 8640 raw scores), the long-run
//! distribution here is exponentially weighted: O(1) work and 24 bytes per channel.

use crate::codec::{Reader, Writer};
use crate::stats::{normal_sf, EwStats};
use crate::Error;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Likelihood {
    short: f64,
    long: EwStats,
}

impl Likelihood {
    /// Folds `raw` in and returns the upper-tail probability of the smoothed surprise
    /// (1 while fewer than `warmup` points have been seen).
    #[inline]
    pub(crate) fn update(
        &mut self,
        raw: f64,
        short_alpha: f64,
        long_alpha: f64,
        warmup: u64,
    ) -> f64 {
        self.short = if self.long.n == 0 {
            raw
        } else {
            self.short + short_alpha * (raw - self.short)
        };
        let p = if self.long.n >= warmup {
            // The floor keeps a long flat stretch (variance 0) from making any blip p = 0.
            let sd = self.long.std().max(1e-3 + 0.05 * self.long.mean.abs());
            normal_sf((self.short - self.long.mean) / sd)
        } else {
            1.0
        };
        self.long.push(self.short, long_alpha);
        p
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.f64(self.short);
        self.long.write(w);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            short: r.f64()?,
            long: EwStats::read(r)?,
        })
    }
}

/// Maps a tail probability to a score in [0, 1] on a log scale, so that scores near 1 keep
/// their order: p = 1e-10 or less scores 1, p = 1e-5 scores 0.5, p = 0.1 scores 0.1.
#[inline]
pub(crate) fn p_to_score(p: f64) -> f64 {
    if p.is_nan() {
        return 0.0;
    }
    (-p.max(1e-300).log10() / 10.0).clamp(0.0, 1.0)
}
