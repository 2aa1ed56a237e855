//! Numeric building blocks shared by the detectors: tail probabilities and weighted moments.

use crate::codec::{Reader, Writer};
use crate::Error;

/// `erfc(x)` with relative error below 1.2e-7 everywhere (Chebyshev fit, Numerical Recipes'
/// `erfcc`). Relative accuracy in the tail matters: scores near 1 must keep their order.
pub(crate) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Two-sided score of a standard-normal deviation: `P(|Z| < |z|)`, in [0, 1].
pub(crate) fn z_score_to_unit(z: f64) -> f64 {
    if !z.is_finite() {
        return if z.is_nan() { 0.0 } else { 1.0 };
    }
    (1.0 - erfc(z.abs() / std::f64::consts::SQRT_2)).clamp(0.0, 1.0)
}

/// Upper tail `P(Z > z)` of the standard normal.
pub(crate) fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Exponentially weighted mean and variance (West's incremental form).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct EwStats {
    pub(crate) mean: f64,
    pub(crate) var: f64,
    /// Points seen, saturating; used for warm-up.
    pub(crate) n: u64,
}

impl EwStats {
    /// Folds `x` in with weight `alpha`; the first point sets the mean. During warm-up the
    /// weight is `max(alpha, 1/n)`, so early estimates are plain averages rather than biased
    /// towards the first point.
    #[inline]
    pub(crate) fn push(&mut self, x: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.mean = x;
            self.var = 0.0;
            return;
        }
        let a = alpha.max(1.0 / self.n as f64);
        let d = x - self.mean;
        let inc = a * d;
        self.mean += inc;
        self.var = (1.0 - a) * (self.var + d * inc);
    }

    pub(crate) fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.f64(self.mean);
        w.f64(self.var);
        w.u64(self.n);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            mean: r.f64()?,
            var: r.f64()?,
            n: r.u64()?,
        })
    }
}

/// A scale floor for series whose spread collapses (flat lines, quantised sensors): a small
/// fraction of the level, plus an absolute epsilon so zero-valued series stay finite.
#[inline]
pub(crate) fn scale_floor(level: f64) -> f64 {
    1e-3 * level.abs() + 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-7);
        // Tail keeps relative accuracy.
        let e5 = erfc(5.0);
        assert!((e5 / 1.537_459_794e-12 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ew_stats_of_constant_has_zero_variance() {
        let mut s = EwStats::default();
        for _ in 0..100 {
            s.push(3.0, 0.1);
        }
        assert_eq!(s.mean, 3.0);
        assert_eq!(s.var, 0.0);
    }
}
