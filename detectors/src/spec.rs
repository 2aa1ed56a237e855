//! The detector chosen per stage in the topology, and the one enum the hot path dispatches on.

use serde::{Deserialize, Serialize};

use crate::cad::{Cad, CadParams};
use crate::codec::{Reader, Writer};
use crate::ensemble::{Ensemble, EnsembleParams};
use crate::ewma::{Ewma, EwmaParams};
use crate::mad::{Mad, MadParams};
use crate::seasonal::{Seasonal, SeasonalParams};
use crate::zscore::{Zscore, ZscoreParams};
use crate::Error;

/// First byte of every saved state. Bump it when any detector's layout changes; restore
/// refuses other versions rather than misreading them. Version 2 added the ensemble's drift
/// channel, version 3 its extra contextual resolutions (`multiscale`); versions 1 and 2 are
/// still read (see [`OLDEST_READABLE_VERSION`]).
pub const STATE_FORMAT_VERSION: u8 = 3;

/// The oldest state format restore still reads: versions 1 and 2 differ from 3 only in the
/// ensemble, which fills in what they lack (see the ensemble's `restore`).
pub const OLDEST_READABLE_VERSION: u8 = 1;

/// A detector and its parameters, e.g. `detector: { kind: ewma, alpha: 0.05 }` in YAML.
/// Every parameter is optional and has a documented default; unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorSpec {
    /// Windowed z-score with Welford's update: the baseline.
    Zscore(ZscoreParams),
    /// Exponentially weighted mean and variance.
    Ewma(EwmaParams),
    /// Robust median/MAD over streaming quantiles.
    Mad(MadParams),
    /// Per-slot means over a daily (configurable) season.
    Seasonal(SeasonalParams),
    /// Several views of the stream, each turned into a likelihood; the best NAB score here.
    Ensemble(EnsembleParams),
    /// Contextual Anomaly Detector (CAD OSE) with an online range and a bounded memory.
    Cad(CadParams),
    /// Scores every point 0: the reference for "detects nothing".
    Null,
}

/// The default of `topology/iot.yaml`: the ensemble with its default parameters (see
/// docs/DETECTORS.md for why).
impl Default for DetectorSpec {
    fn default() -> Self {
        Self::Ensemble(EnsembleParams::default())
    }
}

impl DetectorSpec {
    /// The detector called `name` with default parameters (for `--detector NAME`).
    pub fn from_name(name: &str) -> Result<DetectorSpec, Error> {
        Ok(match name {
            "zscore" => Self::Zscore(ZscoreParams::default()),
            "ewma" => Self::Ewma(EwmaParams::default()),
            "mad" => Self::Mad(MadParams::default()),
            "seasonal" => Self::Seasonal(SeasonalParams::default()),
            "ensemble" => Self::Ensemble(EnsembleParams::default()),
            "cad" => Self::Cad(CadParams::default()),
            "null" => Self::Null,
            other => return Err(Error::UnknownDetector(other.to_owned())),
        })
    }

    /// Every detector with default parameters, in table order.
    pub fn all() -> Vec<DetectorSpec> {
        ["zscore", "ewma", "mad", "seasonal", "ensemble", "cad"]
            .iter()
            .map(|n| Self::from_name(n).expect("known name"))
            .collect()
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Zscore(_) => "zscore",
            Self::Ewma(_) => "ewma",
            Self::Mad(_) => "mad",
            Self::Seasonal(_) => "seasonal",
            Self::Ensemble(_) => "ensemble",
            Self::Cad(_) => "cad",
            Self::Null => "null",
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Self::Zscore(_) => 1,
            Self::Ewma(_) => 2,
            Self::Mad(_) => 3,
            Self::Seasonal(_) => 4,
            Self::Ensemble(_) => 5,
            Self::Cad(_) => 6,
            Self::Null => 0,
        }
    }

    /// A detector with fresh state.
    pub fn build(&self) -> AnyDetector {
        let inner = match self {
            Self::Zscore(p) => Inner::Zscore(Zscore::new(p)),
            Self::Ewma(p) => Inner::Ewma(Ewma::new(p)),
            Self::Mad(p) => Inner::Mad(Mad::new(p)),
            Self::Seasonal(p) => Inner::Seasonal(Seasonal::new(p)),
            Self::Ensemble(p) => Inner::Ensemble(Box::new(Ensemble::new(p))),
            Self::Cad(p) => Inner::Cad(Box::new(Cad::new(p))),
            Self::Null => Inner::Null,
        };
        AnyDetector {
            tag: self.tag(),
            inner,
        }
    }

    /// A detector from the bytes [`AnyDetector::save`] wrote, for a detector of this spec.
    pub fn restore(&self, bytes: &[u8]) -> Result<AnyDetector, Error> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if !(OLDEST_READABLE_VERSION..=STATE_FORMAT_VERSION).contains(&version) {
            return Err(Error::Version(version));
        }
        let tag = r.u8()?;
        if tag != self.tag() {
            return Err(Error::KindMismatch {
                saved: format!("detector tag {tag}"),
                wanted: self.name(),
            });
        }
        let inner = match self {
            Self::Zscore(p) => Inner::Zscore(Zscore::restore(p, &mut r)?),
            Self::Ewma(p) => Inner::Ewma(Ewma::restore(p, &mut r)?),
            Self::Mad(p) => Inner::Mad(Mad::restore(p, &mut r)?),
            Self::Seasonal(p) => Inner::Seasonal(Seasonal::restore(p, &mut r)?),
            Self::Ensemble(p) => Inner::Ensemble(Box::new(Ensemble::restore(p, version, &mut r)?)),
            Self::Cad(p) => Inner::Cad(Box::new(Cad::restore(p, &mut r)?)),
            Self::Null => Inner::Null,
        };
        r.finish()?;
        Ok(AnyDetector { tag, inner })
    }
}

/// A running detector. The enum gives static dispatch: one `match` per point, no vtable.
#[derive(Debug, Clone)]
pub struct AnyDetector {
    tag: u8,
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Zscore(Zscore),
    Ewma(Ewma),
    Mad(Mad),
    Seasonal(Seasonal),
    // Boxed so the enum stays small for the cheap detectors.
    Ensemble(Box<Ensemble>),
    Cad(Box<Cad>),
    Null,
}

impl AnyDetector {
    /// Scores `value` at `ts_ms` (ms since the epoch) in `[0, 1]`, then learns from it.
    /// NaN and infinities score 0 and are not learned.
    #[inline]
    pub fn update(&mut self, ts_ms: i64, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let s = match &mut self.inner {
            Inner::Zscore(d) => d.update(ts_ms, value),
            Inner::Ewma(d) => d.update(ts_ms, value),
            Inner::Mad(d) => d.update(ts_ms, value),
            Inner::Seasonal(d) => d.update(ts_ms, value),
            Inner::Ensemble(d) => d.update(ts_ms, value),
            Inner::Cad(d) => d.update(ts_ms, value),
            Inner::Null => 0.0,
        };
        // A NaN can only come from a bug; never hand it downstream.
        if s.is_nan() {
            0.0
        } else {
            s.clamp(0.0, 1.0)
        }
    }

    /// Appends the state as `[version][kind tag][payload]` to `out`.
    pub fn save(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u8(STATE_FORMAT_VERSION);
        w.u8(self.tag);
        match &self.inner {
            Inner::Zscore(d) => d.save(&mut w),
            Inner::Ewma(d) => d.save(&mut w),
            Inner::Mad(d) => d.save(&mut w),
            Inner::Seasonal(d) => d.save(&mut w),
            Inner::Ensemble(d) => d.save(&mut w),
            Inner::Cad(d) => d.save(&mut w),
            Inner::Null => {}
        }
    }
}
