//! Numeric building blocks shared by the detectors: tail probabilities and weighted moments.

use crate::codec::{Reader, Writer};
use crate::Error;

/// `erfc(x)` with relative error below 1.2e-7 everywhere (Chebyshev fit, Numerical Recipes'
/// `erfcc`); the tests use it to check the z-score map against the normal distribution.
#[cfg(test)]
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

/// Scale of [`z_score_to_unit`]: |z| = 3 scores 0.5.
pub(crate) const Z_SCALE: f64 = 3.0;

/// Score of a deviation of `z` standard deviations: `|z| / (|z| + 3)`, so 3 sigma scores
/// 0.5, 6 sigma 0.67, 12 sigma 0.8 and 27 sigma 0.9; it reads back as `|z| = 3s / (1 - s)`.
///
/// Why not the normal probability `P(|Z| < |z|)`: it reaches 1.0 in f64 at |z| ≈ 8.3, so
/// every large deviation ties at 1 and no threshold can tell a 9-sigma blip from a
/// 900-sigma failure (on series with a near-zero spread, most deviations are that large).
/// This map is strictly monotone up to |z| ≈ 1e16.
pub(crate) fn z_score_to_unit(z: f64) -> f64 {
    if z.is_nan() {
        return 0.0;
    }
    let a = z.abs();
    if a.is_infinite() {
        return 1.0;
    }
    (a / (a + Z_SCALE)).clamp(0.0, 1.0)
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
        // A value near f64::MAX overflows the variance; rather than stay blind forever,
        // start learning again from this point.
        if !(self.mean.is_finite() && self.var.is_finite()) {
            *self = Self::default();
        }
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
    fn z_map_is_monotone_and_does_not_saturate_early() {
        let mut prev = -1.0;
        for i in 0..200 {
            let z = 1.2f64.powi(i);
            let s = z_score_to_unit(z);
            assert!(s > prev, "not strictly increasing at z = {z}");
            prev = s;
        }
        assert_eq!(z_score_to_unit(-3.0), 0.5);
        assert_eq!(z_score_to_unit(f64::NAN), 0.0);
        assert_eq!(z_score_to_unit(f64::INFINITY), 1.0);
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
