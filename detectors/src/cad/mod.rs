//! Contextual Anomaly Detector, open-source edition (CAD OSE, M. Smirnov 2016), rebuilt from
//! its published description with two changes for streams: the value range is learned online
//! (NAB hands CAD the file's min and max, which is look-ahead), and the context memory is
//! bounded (it starts afresh when full). Ties among equally frequent active contexts are
//! broken by age, not by Python's tuple hashes.
//!
//! Each value is quantised into 8 equal bins of a grid that covers the range seen so far plus
//! `headroom` on each side; a value outside the grid rebuilds it around the new range and
//! clears the memory (its facts named bins that no longer exist). A bin is written as 3 *facts*
//! (bit position and bit value). A *context* pairs a left semi-context (a set of facts of the
//! previous step: its value facts and the contexts that were active then) with a right one
//! (facts of the current value). Each step:
//! - the zero-level context (all previous facts, all current facts) is looked up and stored;
//! - contexts whose left side was fully present last step are *predictions*; those whose right
//!   side is fully present now are *active*, and the most frequent active ones become facts of
//!   the next step (they play the role of neurons);
//! - partial overlaps of known contexts with the new input are stored as new contexts.
//!
//! The raw score is `(1 - share of predictions that came true + share of candidate contexts
//! that were new) / 2`. After a raw score of `base_threshold` or more, scores are withheld
//! for `rest` points, so an incident raises one alarm.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::Error;
use memory::{Ctx, Facts, Memory, Prediction};

mod memory;

/// Parameters of the contextual detector (`kind: cad`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadParams {
    /// Raw score from which later scores are withheld for `rest` points. Default 0.75.
    #[serde(default = "default_base_threshold")]
    pub base_threshold: f64,
    /// Points during which scores are withheld after a raw score of `base_threshold`.
    /// Default 150.
    #[serde(default = "default_rest")]
    pub rest: u32,
    /// Largest left semi-context grown from a partial overlap, in facts. Default 7.
    #[serde(default = "default_max_left")]
    pub max_left: u32,
    /// Most active contexts carried as facts into the next step. Default 15.
    #[serde(default = "default_max_active")]
    pub max_active: u32,
    /// Contexts the memory holds before it starts afresh (bounds state and work per point).
    /// Default 20000.
    #[serde(default = "default_max_contexts")]
    pub max_contexts: u32,
    /// Headroom of the bin grid on each side, as a share of the range seen: the grid covers
    /// the range widened by this much and is only rebuilt when a value falls outside it, so
    /// bins keep their meaning while the range creeps. Default 0.5.
    #[serde(default = "default_headroom")]
    pub headroom: f64,
}

fn default_headroom() -> f64 {
    0.5
}

fn default_base_threshold() -> f64 {
    0.75
}
fn default_rest() -> u32 {
    150
}
fn default_max_left() -> u32 {
    7
}
fn default_max_active() -> u32 {
    15
}
fn default_max_contexts() -> u32 {
    20_000
}

impl Default for CadParams {
    fn default() -> Self {
        Self {
            base_threshold: default_base_threshold(),
            rest: default_rest(),
            max_left: default_max_left(),
            max_active: default_max_active(),
            max_contexts: default_max_contexts(),
            headroom: default_headroom(),
        }
    }
}

/// Bits of a quantised value: 8 bins, 3 facts per value.
const VALUE_BITS: u32 = 3;
/// Facts naming an active context are offset so they never collide with value facts.
const NEURON_BASE: u32 = 1 << 31;

#[derive(Debug, Clone)]
pub(crate) struct Cad {
    p: CadParams,
    lo: f64,
    hi: f64,
    /// The bin grid: 8 equal bins over `[g_lo, g_hi]`.
    g_lo: f64,
    g_hi: f64,
    /// Facts of the previous step: its value facts and the contexts active then.
    left_group: Facts,
    /// Raw scores since the last one at or above `base_threshold` (0: one just happened).
    since_high: u32,
    mem: Memory,
}

impl Cad {
    pub(crate) fn new(p: &CadParams) -> Self {
        let (lo, hi) = (f64::INFINITY, f64::NEG_INFINITY);
        Self {
            p: p.clone(),
            lo,
            hi,
            g_lo: lo,
            g_hi: hi,
            left_group: Vec::new(),
            since_high: 0,
            mem: Memory::default(),
        }
    }

    /// The 3 facts of `x`'s bin on the current grid; the grid is rebuilt around the range
    /// seen so far, with headroom, only when `x` falls outside it.
    fn facts(&mut self, x: f64) -> (Facts, bool) {
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        let bins = f64::from(1u32 << VALUE_BITS);
        let rebuild = !(x >= self.g_lo && x <= self.g_hi);
        if rebuild {
            let span = self.hi - self.lo;
            let m = self.p.headroom.max(0.0) * span;
            self.g_lo = self.lo - m;
            self.g_hi = self.hi + m;
            // Every stored fact meant a bin of the old grid; keeping them would make the
            // whole memory a source of false novelty for as long as it takes to relearn.
            self.mem = Memory::default();
            self.left_group.clear();
            if !(self.g_hi - self.g_lo > 0.0 && (self.g_hi - self.g_lo).is_finite()) {
                // One value so far (or an overflowing span): unit bins around it.
                self.g_lo = x - bins / 2.0;
                self.g_hi = x + bins / 2.0;
            }
        }
        let step = (self.g_hi - self.g_lo) / bins;
        let bin = ((x - self.g_lo) / step).floor().clamp(0.0, bins - 1.0) as u32;
        let facts = (0..VALUE_BITS).map(|b| b * 2 + ((bin >> b) & 1)).collect();
        (facts, rebuild)
    }

    pub(crate) fn update(&mut self, _ts_ms: i64, x: f64) -> f64 {
        if self.mem.contexts.len() >= self.p.max_contexts.max(1) as usize {
            self.mem = Memory::default();
            self.left_group.clear();
        }
        let had_grid = self.g_lo.is_finite();
        let (current, rebuilt) = self.facts(x);
        let (predicted, novel) = self.step(&current);
        // A value outside everything the grid allowed for is the plainest novelty there is
        // (and the cleared memory could not say so itself).
        let raw = if rebuilt && had_grid {
            1.0
        } else {
            (1.0 - predicted + novel) / 2.0
        };
        let quiet = self.since_high < self.p.rest;
        self.since_high = if raw >= self.p.base_threshold {
            0
        } else {
            self.since_high.saturating_add(1)
        };
        if quiet {
            0.0
        } else {
            raw
        }
    }

    /// One step of the context memory; returns (share of predictions that came true, share
    /// of candidate contexts that were new).
    fn step(&mut self, current: &[u32]) -> (f64, f64) {
        let mut unique: HashSet<(Facts, Facts)> = HashSet::new();
        let mut new_input = false;
        if !self.left_group.is_empty() {
            unique.insert((self.left_group.clone(), current.to_vec()));
            new_input = self.mem.store(&self.left_group, current, true);
        }
        self.mem.sides[1].cross(current);
        let max_left = self.p.max_left as usize;
        let Prediction {
            mut active,
            selected,
            candidates,
        } = self.mem.predict(new_input, max_left);
        unique.extend(candidates.iter().cloned());
        let predicted = if selected > 0 {
            active.len() as f64 / f64::from(selected)
        } else {
            0.0
        };
        active.sort_unstable();
        let keep = active.len().saturating_sub(self.p.max_active as usize);
        let mut group: Facts = current.to_vec();
        group.extend(active[keep..].iter().map(|&(_, id)| NEURON_BASE + id));
        group.sort_unstable();
        group.dedup();
        self.left_group = group;
        let mut added = 0u32;
        for (l, r) in &candidates {
            added += u32::from(self.mem.store(l, r, false));
        }
        self.mem.sides[0].cross(&self.left_group);
        let novel = if new_input && !unique.is_empty() {
            f64::from(added + 1) / unique.len() as f64
        } else {
            0.0
        };
        (predicted, novel)
    }

    pub(crate) fn save(&self, w: &mut Writer<'_>) {
        w.f64(self.lo);
        w.f64(self.hi);
        w.f64(self.g_lo);
        w.f64(self.g_hi);
        w.u32(self.since_high);
        write_facts(w, &self.left_group);
        for side in &self.mem.sides {
            w.u32(side.semis.len() as u32);
            for s in &side.semis {
                write_facts(w, &s.facts);
            }
        }
        w.u32(self.mem.contexts.len() as u32);
        for c in &self.mem.contexts {
            w.u32(c.count);
            w.u8(u8::from(c.zero_level));
            w.u32(c.left);
            w.u32(c.right);
        }
        // The left crossing of the last step is used by the next one.
        w.u32(self.mem.sides[0].crossed.len() as u32);
        for &id in &self.mem.sides[0].crossed {
            w.u32(id);
        }
    }

    pub(crate) fn restore(p: &CadParams, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut d = Self::new(p);
        d.lo = r.f64()?;
        d.hi = r.f64()?;
        d.g_lo = r.f64()?;
        d.g_hi = r.f64()?;
        d.since_high = r.u32()?;
        d.left_group = read_facts(r)?;
        for side in 0..2 {
            for _ in 0..r.u32()? {
                let facts = read_facts(r)?;
                let want = d.mem.sides[side].semis.len() as u32;
                if d.mem.sides[side].intern(&facts) != want {
                    return Err(Error::Incompatible(
                        "cad state: a repeated semi-context".into(),
                    ));
                }
            }
        }
        let bad = |what: &str| Error::Incompatible(format!("cad state: {what}"));
        for _ in 0..r.u32()? {
            let (count, zero, left, right) = (r.u32()?, r.u8()? != 0, r.u32()?, r.u32()?);
            let nl = d.mem.sides[0].semis.len() as u32;
            let nr = d.mem.sides[1].semis.len() as u32;
            if left >= nl || right >= nr || d.mem.by_pair.contains_key(&(left, right)) {
                return Err(bad("context refers to an unknown or repeated semi-context"));
            }
            let id = d.mem.contexts.len() as u32;
            d.mem.contexts.push(Ctx {
                count,
                zero_level: zero,
                left,
                right,
            });
            d.mem.by_pair.insert((left, right), id);
            d.mem.sides[0].semis[left as usize].rights.push((right, id));
        }
        let n = r.u32()?;
        let mut crossed = Vec::new();
        for _ in 0..n {
            let id = r.u32()?;
            if id as usize >= d.mem.sides[0].semis.len() {
                return Err(bad("crossed semi-context out of range"));
            }
            crossed.push(id);
        }
        let side = &mut d.mem.sides[0];
        for &id in &crossed {
            let s = &mut side.semis[id as usize];
            s.hit = d
                .left_group
                .iter()
                .copied()
                .filter(|f| s.facts.contains(f))
                .collect();
        }
        side.crossed = crossed;
        Ok(d)
    }
}

fn write_facts(w: &mut Writer<'_>, facts: &[u32]) {
    w.u32(facts.len() as u32);
    for &f in facts {
        w.u32(f);
    }
}

fn read_facts(r: &mut Reader<'_>) -> Result<Facts, Error> {
    let n = r.u32()?;
    if n > 64 {
        return Err(Error::Incompatible(format!("cad state: a fact set of {n}")));
    }
    (0..n).map(|_| r.u32()).collect()
}
