//! The ensemble: the best NAB score in this crate, and the default of `topology/iot.yaml`.
//!
//! Five surprise channels (robust level, robust step, seasonal residual, the seasonal
//! residual averaged over the last ~10 points, and the sequence surprise of an order-2
//! Markov model of value bands, the last converted to z units like the others) each report
//! how far the current surprise exceeds the largest surprise of the recent past (a decayed
//! record, so one threshold means "rarer than anything lately" on every series, noisy or
//! quiet). A contextual channel (see [`crate::context`]) reports how many of the point's
//! contexts were never seen, averaged over three resolutions of the value range. The score
//! blends the two, and only the onset of an event is reported: a score that does not
//! exceed the decayed peak of recent scores is zeroed, so an incident raises one alarm
//! rather than a burst.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::context::{Context, Transitions};
use crate::mad::RobustLevel;
use crate::seasonal::{Seasonal, SeasonalParams};
use crate::Error;

/// Parameters of the ensemble (`kind: ensemble`). The defaults are the ones in the
/// benchmark table; they were chosen once for the whole NAB corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleParams {
    /// Step of the robust median/MAD updates of the level and step channels. Default 0.01.
    #[serde(default = "default_level_rate")]
    pub level_rate: f64,
    /// Per-point decay of each channel's record surprise: the record halves in about
    /// `0.7 / record_decay` points. Default 0.001.
    #[serde(default = "default_record_decay")]
    pub record_decay: f64,
    /// Points before any score above 0. Default 50.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// Bands the contextual channel and the sequence model quantise the range into (2..=16).
    /// With `multiscale` this is the middle of three resolutions. Default 6.
    #[serde(default = "default_levels")]
    pub levels: u32,
    /// Longest context, in points (1..=3). Default 3.
    #[serde(default = "default_context_len")]
    pub context_len: u32,
    /// Weight of contextual novelty in the score; the rest is the magnitude record.
    /// Default 0.4.
    #[serde(default = "default_novelty_weight")]
    pub novelty_weight: f64,
    /// Per-visit forgetting of the sequence model's transition counts. Default 0.001.
    #[serde(default = "default_sequence_decay")]
    pub sequence_decay: f64,
    /// Points over which the peak used for onset gating halves (roughly). 0 turns gating
    /// off. Default 100.
    #[serde(default = "default_rest")]
    pub rest: u32,
    /// Points after which the contextual memory (seen contexts and range) rolls over to a
    /// new generation; what was seen in the last two generations counts. Default 5000.
    #[serde(default = "default_generation")]
    pub generation: u32,
    /// Season of the seasonal channel, in seconds. Default 86400.
    #[serde(default = "default_season_s")]
    pub season_s: u32,
    /// Slots per season of the seasonal channel. Default 48.
    #[serde(default = "default_season_slots")]
    pub season_slots: u32,
    /// Weight of a new point in the running mean of the signed seasonal residual z (the
    /// sustained-deviation channel); 0 turns the channel off. Default 0.18, the exponential
    /// equivalent (2 / (10 + 1)) of the 10-point average NAB's anomaly likelihood uses.
    #[serde(default = "default_smooth_alpha")]
    pub smooth_alpha: f64,
    /// Contextual novelty at three resolutions, `levels / 2`, `levels` and `2 * levels`
    /// bands (each within 2..=16), averaged, instead of `levels` alone: no single band
    /// width decides whether a value is news. Default true.
    #[serde(default = "default_true")]
    pub multiscale: bool,
    /// Compare the sequence surprise `s = -ln P` as the z of equal tail probability,
    /// `sqrt(2 s)`, so its record ratio means what the z channels' ratios mean (in nats a
    /// ratio of 2 is the square of a probability, in z units about its fourth power).
    /// Default true; false is the behaviour before state format 3.
    #[serde(default = "default_true")]
    pub sequence_z: bool,
}

fn default_true() -> bool {
    true
}

fn default_level_rate() -> f64 {
    0.01
}
fn default_record_decay() -> f64 {
    0.001
}
fn default_warmup() -> u32 {
    50
}
fn default_levels() -> u32 {
    6
}
fn default_context_len() -> u32 {
    3
}
fn default_novelty_weight() -> f64 {
    0.4
}
fn default_sequence_decay() -> f64 {
    0.001
}
fn default_rest() -> u32 {
    100
}
fn default_generation() -> u32 {
    5000
}
fn default_season_s() -> u32 {
    86_400
}
fn default_season_slots() -> u32 {
    48
}
fn default_smooth_alpha() -> f64 {
    0.18
}

impl Default for EnsembleParams {
    fn default() -> Self {
        Self {
            level_rate: default_level_rate(),
            record_decay: default_record_decay(),
            warmup: default_warmup(),
            levels: default_levels(),
            context_len: default_context_len(),
            novelty_weight: default_novelty_weight(),
            sequence_decay: default_sequence_decay(),
            rest: default_rest(),
            generation: default_generation(),
            season_s: default_season_s(),
            season_slots: default_season_slots(),
            smooth_alpha: default_smooth_alpha(),
            multiscale: true,
            sequence_z: true,
        }
    }
}

impl EnsembleParams {
    /// Band counts of the contextual resolutions besides `levels` (none without
    /// `multiscale`).
    fn extra_levels(&self) -> Vec<u32> {
        if !self.multiscale {
            return Vec::new();
        }
        let l = self.levels.clamp(2, crate::context::MAX_LEVELS);
        vec![(l / 2).max(2), (l * 2).min(crate::context::MAX_LEVELS)]
    }

    fn seasonal(&self) -> SeasonalParams {
        SeasonalParams {
            period_s: self.season_s,
            slots: self.season_slots,
            ..SeasonalParams::default()
        }
    }
}

const CHANNELS: usize = 5;
/// Index of the drift channel in `record` (and in the surprise array).
const DRIFT: usize = 3;
/// Index of the sequence channel.
const SEQUENCE: usize = 4;

#[derive(Debug, Clone)]
pub(crate) struct Ensemble {
    p: EnsembleParams,
    n: u64,
    prev: f64,
    level: RobustLevel,
    step: RobustLevel,
    seasonal: Seasonal,
    /// Running mean of the signed seasonal residual z.
    drift: f64,
    record: [f64; CHANNELS],
    ctx: Context,
    /// The other resolutions of the contextual novelty (`multiscale`).
    coarse_fine: Vec<Context>,
    seq: Transitions,
    peak: f64,
}

impl Ensemble {
    pub(crate) fn new(p: &EnsembleParams) -> Self {
        Self {
            p: p.clone(),
            n: 0,
            prev: 0.0,
            level: RobustLevel::default(),
            step: RobustLevel::default(),
            seasonal: Seasonal::new(&p.seasonal()),
            drift: 0.0,
            record: [0.0; CHANNELS],
            ctx: Context::new(p.levels, p.context_len),
            coarse_fine: p
                .extra_levels()
                .into_iter()
                .map(|l| Context::new(l, p.context_len))
                .collect(),
            seq: Transitions::new(p.levels),
            peak: 0.0,
        }
    }

    pub(crate) fn update(&mut self, ts_ms: i64, x: f64) -> f64 {
        self.n += 1;
        let rate = self.p.level_rate;
        let dx = if self.n > 1 { x - self.prev } else { 0.0 };
        let zs = self.seasonal.update_z(ts_ms, x).clamp(-1e12, 1e12);
        // A shift too small for any single point to beat a record adds up here: noise
        // averages out of the mean of signed residuals, a sustained deviation does not.
        // (1/n early on, so the first points are a plain average rather than a ramp from 0.)
        let a = self.p.smooth_alpha.clamp(0.0, 1.0);
        if a > 0.0 {
            self.drift += a.max(1.0 / self.n as f64) * (zs - self.drift);
        }
        let surprise = [
            if self.level.n > 1 {
                self.level.z(x).abs()
            } else {
                0.0
            },
            if self.step.n > 1 {
                self.step.z(dx).abs()
            } else {
                0.0
            },
            zs.abs(),
            self.drift.abs(),
            // Banded with the range before `x` widens it, like the other channels' "before".
            self.sequence_surprise(x),
        ];
        self.level.push(x, rate);
        if self.n > 1 {
            self.step.push(dx, rate);
        }
        self.prev = x;

        // How far each surprise beats its channel's recent record; the strongest counts.
        let keep = 1.0 - self.p.record_decay.clamp(0.0, 1.0);
        let mut beat = 0.0f64;
        for (rec, &s) in self.record.iter_mut().zip(&surprise) {
            let s = s.min(1e12);
            beat = beat.max(s / rec.max(1e-9));
            *rec = (*rec * keep).max(s);
        }
        let novelty = self.novelty(x);
        if self.n < u64::from(self.p.warmup.max(2)) {
            return 0.0;
        }
        let w = self.p.novelty_weight.clamp(0.0, 1.0);
        let score = w * novelty.min(1.0) + (1.0 - w) * beat / (1.0 + beat);
        self.gate(score)
    }

    /// `-ln P(band | previous two bands)`, as a z (`sqrt(2 s)`) with `sequence_z`.
    fn sequence_surprise(&mut self, x: f64) -> f64 {
        let s = self.seq.update(self.ctx.band(x), self.p.sequence_decay);
        if self.p.sequence_z {
            (2.0 * s).sqrt()
        } else {
            s
        }
    }

    /// Learns `x` at every resolution; returns the share of its contexts that were new,
    /// averaged over the resolutions.
    fn novelty(&mut self, x: f64) -> f64 {
        // A widened range counts as two new contexts: it is news at every length at once.
        let slots = f64::from(self.p.context_len.clamp(1, crate::context::MAX_LEN)) + 2.0;
        let g = self.p.generation;
        let share = |(novel, widened): (u32, bool)| {
            (f64::from(novel) + 2.0 * f64::from(u8::from(widened))) / slots
        };
        let mut sum = share(self.ctx.update(x, g));
        for c in &mut self.coarse_fine {
            sum += share(c.update(x, g));
        }
        sum / (1 + self.coarse_fine.len()) as f64
    }

    /// Onset gating: report a score only when it beats the decayed peak of recent scores.
    fn gate(&mut self, score: f64) -> f64 {
        if self.p.rest == 0 {
            return score;
        }
        let prev_peak = self.peak;
        self.peak = (self.peak * (1.0 - 1.0 / f64::from(self.p.rest))).max(score);
        if score > prev_peak {
            score
        } else {
            0.0
        }
    }

    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        w.u64(self.n);
        w.f64(self.prev);
        self.level.write(w);
        self.step.write(w);
        self.seasonal.save(w);
        w.f64(self.drift);
        w.f64s(&self.record);
        self.ctx.write(w);
        for c in &self.coarse_fine {
            c.write(w);
        }
        self.seq.write(w);
        w.f64(self.peak);
    }

    /// Reads state of format `version`. Formats 1 (before the drift channel) and 2 (before
    /// `multiscale` and `sequence_z`) are still read, so an upgrade keeps what every series
    /// learned:
    /// - from format 1 the drift channel starts from zero (its mean and record), which is how
    ///   a fresh detector starts it too;
    /// - from formats 1 and 2 the two extra resolutions take the range of the one that was
    ///   saved and count every context as seen until their first generation rolls over (a
    ///   series that learned for weeks must not call everything news after an upgrade), and
    ///   the sequence record, saved in nats, is converted to z units.
    pub(crate) fn restore(
        p: &EnsembleParams,
        version: u8,
        r: &mut Reader<'_>,
    ) -> Result<Self, Error> {
        let mut d = Self::new(p);
        d.n = r.u64()?;
        d.prev = r.f64()?;
        d.level = RobustLevel::read(r)?;
        d.step = RobustLevel::read(r)?;
        d.seasonal = Seasonal::restore(&p.seasonal(), r)?;
        if version >= 2 {
            d.drift = r.f64()?;
            r.f64s(&mut d.record)?;
        } else {
            // Format 1 records: level, step, seasonal, sequence.
            r.f64s(&mut d.record[..DRIFT])?;
            r.f64s(&mut d.record[DRIFT + 1..])?;
        }
        d.ctx = Context::read(p.levels, p.context_len, r)?;
        if version >= 3 {
            for c in &mut d.coarse_fine {
                *c = Context::read(c.levels(), p.context_len, r)?;
            }
        } else {
            for c in &mut d.coarse_fine {
                c.upgrade_from(&d.ctx);
            }
            if p.sequence_z {
                d.record[SEQUENCE] = (2.0 * d.record[SEQUENCE].max(0.0)).sqrt();
            }
        }
        d.seq = Transitions::read(p.levels, r)?;
        d.peak = r.f64()?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Highest score over the 30 points after a sustained shift of 1.7 noise sigmas, which no
    /// single point makes remarkable.
    fn score_after_small_shift(p: &EnsembleParams) -> f64 {
        let mut d = Ensemble::new(p);
        let mut seed = 11u64;
        let mut noise = || {
            // Sum of 4 uniforms: roughly normal, sigma about 0.58.
            (0..4)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .sum::<f64>()
        };
        for i in 0..3_000i64 {
            d.update(i * 60_000, 10.0 + noise());
        }
        (3_000..3_030i64)
            .map(|i| d.update(i * 60_000, 11.0 + noise()))
            .fold(0.0, f64::max)
    }

    /// The parameters whose state layout formats 1 and 2 had: one resolution, the sequence
    /// record in nats.
    fn single_scale() -> EnsembleParams {
        EnsembleParams {
            multiscale: false,
            sequence_z: false,
            ..EnsembleParams::default()
        }
    }

    fn periodic_with_spikes(i: i64) -> f64 {
        (i % 37) as f64 + if i % 500 == 7 { 90.0 } else { 0.0 }
    }

    #[test]
    fn format_1_state_is_read_with_a_fresh_drift_channel() {
        let p = single_scale();
        let mut d = Ensemble::new(&p);
        for i in 0..2_000i64 {
            d.update(i * 60_000, periodic_with_spikes(i));
        }
        // The version 1 layout, written by hand: no drift mean, four records.
        let mut v1 = Vec::new();
        let mut w = Writer::new(&mut v1);
        w.u64(d.n);
        w.f64(d.prev);
        d.level.write(&mut w);
        d.step.write(&mut w);
        d.seasonal.save(&mut w);
        w.f64s(&d.record[..DRIFT]);
        w.f64s(&d.record[DRIFT + 1..]);
        d.ctx.write(&mut w);
        d.seq.write(&mut w);
        w.f64(d.peak);
        let mut r = Reader::new(&v1);
        let restored = Ensemble::restore(&p, 1, &mut r).expect("format 1 restores");
        r.finish().expect("format 1 read to the end");
        let mut want = d.clone();
        want.drift = 0.0;
        want.record[DRIFT] = 0.0;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        restored.save(&mut Writer::new(&mut a));
        want.save(&mut Writer::new(&mut b));
        assert_eq!(a, b);
        assert!(
            d.drift != 0.0 && d.record[DRIFT] > 0.0,
            "the test needs a live drift channel"
        );
    }

    #[test]
    fn format_2_state_gets_extra_resolutions_that_know_the_range_and_call_nothing_new() {
        // What the previous build saved: the layout is that of one resolution.
        let mut old = Ensemble::new(&single_scale());
        for i in 0..2_000i64 {
            old.update(i * 60_000, periodic_with_spikes(i));
        }
        let mut v2 = Vec::new();
        old.save(&mut Writer::new(&mut v2));
        let p = EnsembleParams::default();
        let mut r = Reader::new(&v2);
        let mut restored = Ensemble::restore(&p, 2, &mut r).expect("format 2 restores");
        r.finish().expect("format 2 read to the end");
        assert_eq!(restored.coarse_fine.len(), 2);
        let nats = old.record[SEQUENCE];
        assert!(nats > 0.0, "the test needs a live sequence channel");
        assert_eq!(restored.record[SEQUENCE], (2.0 * nats).sqrt());
        // The same extra resolutions started empty would call the familiar pattern news.
        let mut empty = restored.clone();
        empty.coarse_fine = p
            .extra_levels()
            .into_iter()
            .map(|l| Context::new(l, p.context_len))
            .collect();
        let (mut upgraded, mut fresh) = (0.0, 0.0);
        for i in 2_000..2_100i64 {
            upgraded += restored.novelty(periodic_with_spikes(i));
            fresh += empty.novelty(periodic_with_spikes(i));
        }
        assert_eq!(upgraded, 0.0);
        assert!(fresh > 1.0, "{fresh}");
        // And the upgraded state saves as format 3 and reads back bit for bit.
        let mut v3 = Vec::new();
        restored.save(&mut Writer::new(&mut v3));
        let mut r = Reader::new(&v3);
        let again = Ensemble::restore(&p, 3, &mut r).expect("format 3 restores");
        r.finish().expect("format 3 read to the end");
        let mut v3_again = Vec::new();
        again.save(&mut Writer::new(&mut v3_again));
        assert_eq!(v3, v3_again);
    }

    #[test]
    fn a_value_new_only_at_the_finer_resolution_is_news_with_multiscale() {
        // Range 0..12: 6 bands of 2, 12 bands of 1, 3 bands of 4. 4.5 and 5.5 share a band
        // at 3 and 6 levels, not at 12.
        let novelty_of_new_value = |p: &EnsembleParams| {
            let mut d = Ensemble::new(p);
            for i in 0..300 {
                d.novelty([0.0, 12.0, 4.5][i % 3]);
            }
            d.novelty(0.0);
            d.novelty(12.0);
            (d.novelty(4.5), {
                d.novelty(0.0);
                d.novelty(12.0);
                d.novelty(5.5)
            })
        };
        let (familiar, new) = novelty_of_new_value(&EnsembleParams::default());
        assert_eq!(familiar, 0.0);
        assert!(new > 0.0, "{new}");
        assert_eq!(novelty_of_new_value(&single_scale()), (0.0, 0.0));
    }

    #[test]
    fn the_drift_channel_flags_a_sustained_small_shift() {
        let with = score_after_small_shift(&EnsembleParams::default());
        let without = score_after_small_shift(&EnsembleParams {
            smooth_alpha: 0.0,
            ..EnsembleParams::default()
        });
        assert!(with > 0.47, "with the drift channel: {with}");
        assert!(with > without + 0.02, "{with} vs {without} without it");
    }
}
