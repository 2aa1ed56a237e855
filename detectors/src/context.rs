//! Contextual novelty, in the spirit of CAD OSE: each value is quantised into a few levels of
//! the range seen so far, and the recent sequence of levels forms contexts of length 1 to
//! `MAX_LEN`. A context never seen before is news. Seen contexts live in hashed bit sets in
//! two generations (the current one is cleared into the old one every `generation` points),
//! so memory is bounded and patterns that stop occurring are eventually forgotten.

use crate::codec::{Reader, Writer};
use crate::Error;

pub(crate) const MAX_LEN: usize = 8;
const BITS: usize = 1 << 13;
const WORDS: usize = BITS / 64;

#[derive(Debug, Clone)]
pub(crate) struct Context {
    levels: u32,
    lo: f64,
    hi: f64,
    /// The last `MAX_LEN` levels, newest in the low byte.
    recent: u64,
    seen: u32,
    cur: Vec<u64>,
    old: Vec<u64>,
    age: u32,
}

fn hash(len: usize, word: u64) -> usize {
    let h = (word ^ ((len as u64) << 59)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h >> (64 - 13)) as usize
}

impl Context {
    pub(crate) fn new(levels: u32) -> Self {
        Self {
            levels: levels.clamp(2, 255),
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            recent: 0,
            seen: 0,
            cur: vec![0; WORDS],
            old: vec![0; WORDS],
            age: 0,
        }
    }

    fn level(&self, x: f64) -> u32 {
        let span = self.hi - self.lo;
        if span <= 0.0 {
            return 0;
        }
        let q = ((x - self.lo) / span * f64::from(self.levels)).floor() as i64;
        q.clamp(0, i64::from(self.levels) - 1) as u32
    }

    /// Returns, per context length 1..=MAX_LEN, whether that context was new (bit L-1).
    pub(crate) fn update(&mut self, x: f64, generation: u32, max_len: usize, contract: f64) -> u32 {
        if self.hi > self.lo {
            let shrink = (self.hi - self.lo) * contract;
            self.hi -= shrink;
            self.lo += shrink;
        }
        let widened = x < self.lo || x > self.hi;
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        let lvl = self.level(x);
        self.recent = (self.recent << 8) | u64::from(lvl);
        self.seen = (self.seen + 1).min(max_len as u32);
        let mut novel = 0;
        for len in 1..=self.seen as usize {
            let mask = if len == 8 { u64::MAX } else { (1u64 << (8 * len)) - 1 };
            let h = hash(len, self.recent & mask);
            let (w, b) = (h / 64, 1u64 << (h % 64));
            let known = (self.cur[w] | self.old[w]) & b != 0;
            if !known {
                novel |= 1 << (len - 1);
            }
            self.cur[w] |= b;
        }
        if widened {
            novel |= 1 << max_len;
        }
        self.age += 1;
        if self.age >= generation {
            std::mem::swap(&mut self.cur, &mut self.old);
            self.cur.iter_mut().for_each(|w| *w = 0);
            self.age = 0;
        }
        novel
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.f64(self.lo);
        w.f64(self.hi);
        w.u64(self.recent);
        w.u32(self.seen);
        w.u32(self.age);
        for &x in self.cur.iter().chain(&self.old) {
            w.u64(x);
        }
    }

    pub(crate) fn read(levels: u32, r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut c = Self::new(levels);
        c.lo = r.f64()?;
        c.hi = r.f64()?;
        c.recent = r.u64()?;
        c.seen = r.u32()?;
        c.age = r.u32()?;
        for x in c.cur.iter_mut().chain(c.old.iter_mut()) {
            *x = r.u64()?;
        }
        Ok(c)
    }
}
