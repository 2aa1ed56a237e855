//! A multivariate detector over all metrics of one device: the Mahalanobis distance of the
//! metric vector from an exponentially weighted mean and covariance. It catches what no
//! per-metric detector can: every metric within its own normal range, but their relation
//! broken (a fan at full speed while the temperature falls, power up while throughput drops).
//!
//! The squared distance is chi-square with `k` degrees of freedom for Gaussian data; it is
//! turned into a z by the Wilson–Hilferty cube-root approximation and then, as in the
//! ensemble, scored by how far it beats its own decayed record, with onset gating.
//! O(k³) per point for the Cholesky factorisation, bounded by `MAX_METRICS`.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::Error;

/// Largest vector this detector accepts; 16 metrics keep a point under a few microseconds.
pub const MAX_METRICS: usize = 16;

/// Parameters of the multivariate detector (`kind: multivariate` in a device stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultivariateSpec {
    /// Metrics per vector, 1..=16. Required: it fixes the state layout.
    pub metrics: usize,
    /// Weight of a new vector in the mean and covariance. Default 0.01.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Per-point decay of the record distance. Default 0.001.
    #[serde(default = "default_record_decay")]
    pub record_decay: f64,
    /// Vectors before any score above 0. Default 100.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// Points over which the onset-gating peak halves (roughly); 0 turns gating off.
    /// Default 100.
    #[serde(default = "default_rest")]
    pub rest: u32,
}

fn default_alpha() -> f64 {
    0.01
}
fn default_record_decay() -> f64 {
    0.001
}
fn default_warmup() -> u32 {
    100
}
fn default_rest() -> u32 {
    100
}

impl MultivariateSpec {
    /// Defaults for `metrics` metrics.
    pub fn new(metrics: usize) -> Self {
        Self {
            metrics,
            alpha: default_alpha(),
            record_decay: default_record_decay(),
            warmup: default_warmup(),
            rest: default_rest(),
        }
    }

    pub fn build(&self) -> Result<MultivariateDetector, Error> {
        if !(1..=MAX_METRICS).contains(&self.metrics) {
            return Err(Error::Incompatible(format!(
                "metrics must be 1..={MAX_METRICS}, not {}",
                self.metrics
            )));
        }
        let k = self.metrics;
        Ok(MultivariateDetector {
            spec: self.clone(),
            n: 0,
            mean: vec![0.0; k],
            cov: vec![0.0; k * k],
            record: 0.0,
            peak: 0.0,
            scratch: vec![0.0; k * k + k],
        })
    }

    pub fn restore(&self, bytes: &[u8]) -> Result<MultivariateDetector, Error> {
        let mut d = self.build()?;
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != crate::STATE_FORMAT_VERSION {
            return Err(Error::Version(v));
        }
        r.expect_len(self.metrics)?;
        d.n = r.u64()?;
        r.f64s(&mut d.mean)?;
        r.f64s(&mut d.cov)?;
        d.record = r.f64()?;
        d.peak = r.f64()?;
        r.finish()?;
        Ok(d)
    }
}

/// A running multivariate detector for one device.
#[derive(Debug, Clone)]
pub struct MultivariateDetector {
    spec: MultivariateSpec,
    n: u64,
    mean: Vec<f64>,
    /// Row-major covariance.
    cov: Vec<f64>,
    record: f64,
    peak: f64,
    /// Cholesky factor and solve vector; not state, reused to avoid allocating per point.
    scratch: Vec<f64>,
}

impl MultivariateDetector {
    /// Scores one vector (`values.len()` must equal `metrics`; extra values are ignored,
    /// missing ones count as non-finite). Non-finite metrics are replaced by their mean for
    /// scoring and the vector is not learned.
    pub fn update(&mut self, _ts_ms: i64, values: &[f64]) -> f64 {
        let k = self.spec.metrics;
        let mut x = [0.0f64; MAX_METRICS];
        let mut complete = values.len() >= k;
        for (i, xi) in x.iter_mut().enumerate().take(k) {
            match values.get(i) {
                Some(v) if v.is_finite() => *xi = *v,
                _ => {
                    *xi = self.mean[i];
                    complete = false;
                }
            }
        }
        let z = if self.n >= 2 {
            self.distance_z(&x[..k])
        } else {
            0.0
        };
        if complete {
            self.learn(&x[..k]);
        }
        if self.n < u64::from(self.spec.warmup.max(2)) {
            return 0.0;
        }
        let s = z.clamp(0.0, 1e12);
        let beat = s / self.record.max(1e-9);
        self.record = (self.record * (1.0 - self.spec.record_decay.clamp(0.0, 1.0))).max(s);
        let score = beat / (1.0 + beat);
        if self.spec.rest == 0 {
            return score;
        }
        let prev = self.peak;
        self.peak = (self.peak * (1.0 - 1.0 / f64::from(self.spec.rest))).max(score);
        if score > prev {
            score
        } else {
            0.0
        }
    }

    /// Wilson–Hilferty z of the squared Mahalanobis distance (0 if it cannot be computed).
    fn distance_z(&mut self, x: &[f64]) -> f64 {
        let k = x.len();
        let (l, y) = self.scratch.split_at_mut(k * k);
        // Regularise: a ridge proportional to each variance, and an absolute floor, keeps
        // the factorisation defined for constant or perfectly collinear metrics.
        for i in 0..k {
            for j in 0..k {
                let mut c = self.cov[i * k + j];
                if i == j {
                    c += 1e-3 * c.abs() + 1e-9 * (1.0 + self.mean[i].abs());
                }
                l[i * k + j] = c;
            }
        }
        for j in 0..k {
            let mut d = l[j * k + j];
            for p in 0..j {
                d -= l[j * k + p] * l[j * k + p];
            }
            if d.is_nan() || d <= 0.0 {
                return 0.0;
            }
            let d = d.sqrt();
            l[j * k + j] = d;
            for i in j + 1..k {
                let mut s = l[i * k + j];
                for p in 0..j {
                    s -= l[i * k + p] * l[j * k + p];
                }
                l[i * k + j] = s / d;
            }
        }
        let mut d2 = 0.0;
        for i in 0..k {
            let mut s = x[i] - self.mean[i];
            for p in 0..i {
                s -= l[i * k + p] * y[p];
            }
            y[i] = s / l[i * k + i];
            d2 += y[i] * y[i];
        }
        let kf = k as f64;
        let v = 2.0 / (9.0 * kf);
        ((d2 / kf).cbrt() - (1.0 - v)) / v.sqrt()
    }

    fn learn(&mut self, x: &[f64]) {
        let k = x.len();
        self.n = self.n.saturating_add(1);
        let a = self.spec.alpha.max(1.0 / self.n as f64);
        let mut d = [0.0f64; MAX_METRICS];
        for i in 0..k {
            d[i] = x[i] - self.mean[i];
            self.mean[i] += a * d[i];
        }
        for i in 0..k {
            for j in 0..k {
                let c = &mut self.cov[i * k + j];
                *c = (1.0 - a) * (*c + a * d[i] * d[j]);
            }
        }
        if self.cov.iter().chain(&self.mean).any(|v| !v.is_finite()) {
            // Overflowed on a wild value: start learning again rather than stay blind.
            let spec = self.spec.clone();
            *self = spec.build().expect("spec was valid when built");
        }
    }

    /// Appends `[version][metrics][n][mean][cov][record][peak]` to `out`.
    pub fn save(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u8(crate::STATE_FORMAT_VERSION);
        w.u32(self.spec.metrics as u32);
        w.u64(self.n);
        w.f64s(&self.mean);
        w.f64s(&self.cov);
        w.f64(self.record);
        w.f64(self.peak);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn a_broken_correlation_is_flagged_though_each_metric_is_in_range() {
        let spec = MultivariateSpec::new(2);
        let mut d = spec.build().unwrap();
        let mut seed = 7;
        let mut max_normal = 0.0f64;
        for i in 0..5000 {
            let a = 10.0 * noise(&mut seed);
            let s = d.update(i, &[a, 2.0 * a + 0.1 * noise(&mut seed)]);
            if i > 1000 {
                max_normal = max_normal.max(s);
            }
        }
        // Both values are well inside their ranges (a in [-5, 5], b in [-10, 10]).
        let s = d.update(5000, &[4.0, -8.0]);
        assert!(
            s > 0.9 && s > max_normal,
            "broken relation {s}, normal max {max_normal}"
        );
    }

    #[test]
    fn restore_continues_exactly_and_bad_input_does_not_panic() {
        let spec = MultivariateSpec::new(3);
        let mut a = spec.build().unwrap();
        let mut seed = 1;
        let mut pts = Vec::new();
        for i in 0..3000 {
            let mut v = [noise(&mut seed), noise(&mut seed), noise(&mut seed)];
            if i % 97 == 0 {
                v[1] = f64::NAN;
            }
            if i % 331 == 0 {
                v[2] = 1e300;
            }
            pts.push(v);
        }
        for p in &pts[..1500] {
            a.update(0, p);
        }
        let mut bytes = Vec::new();
        a.save(&mut bytes);
        let mut b = spec.restore(&bytes).unwrap();
        for (i, p) in pts[1500..].iter().enumerate() {
            let (sa, sb) = (a.update(i as i64, p), b.update(i as i64, p));
            assert_eq!(sa.to_bits(), sb.to_bits());
            assert!((0.0..=1.0).contains(&sa));
        }
        assert_eq!(a.update(0, &[1.0]), b.update(0, &[1.0]));
        assert!(MultivariateSpec::new(2).restore(&bytes).is_err());
        assert!(MultivariateSpec::new(0).build().is_err());
    }
}
