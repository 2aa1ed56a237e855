//! CAD's context memory: semi-contexts (sets of facts) of both sides, indexed by fact, and
//! the contexts pairing a left and a right semi-context. IDs are creation order, which is
//! also the order every list here is kept in, so a memory rebuilt from its saved contexts
//! iterates exactly like the original.

use std::collections::HashMap;

pub(super) type Facts = Vec<u32>;

#[derive(Debug, Clone, Default)]
pub(super) struct Semi {
    pub(super) facts: Facts,
    /// The facts of the last crossed input that this semi-context holds.
    pub(super) hit: Facts,
    /// (right semi-context, context) pairs, in creation order (left side only).
    pub(super) rights: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Side {
    pub(super) ids: HashMap<Facts, u32>,
    pub(super) semis: Vec<Semi>,
    pub(super) by_fact: HashMap<u32, Vec<u32>>,
    pub(super) crossed: Vec<u32>,
}

impl Side {
    pub(super) fn intern(&mut self, facts: &[u32]) -> u32 {
        if let Some(&id) = self.ids.get(facts) {
            return id;
        }
        let id = self.semis.len() as u32;
        self.ids.insert(facts.to_vec(), id);
        for &f in facts {
            self.by_fact.entry(f).or_default().push(id);
        }
        self.semis.push(Semi {
            facts: facts.to_vec(),
            ..Semi::default()
        });
        id
    }

    /// Marks, for every semi-context, which of `input`'s facts it holds.
    pub(super) fn cross(&mut self, input: &[u32]) {
        for &id in &self.crossed {
            self.semis[id as usize].hit.clear();
        }
        self.crossed.clear();
        for &f in input {
            for &id in self.by_fact.get(&f).map(Vec::as_slice).unwrap_or(&[]) {
                let s = &mut self.semis[id as usize];
                if s.hit.is_empty() {
                    self.crossed.push(id);
                }
                s.hit.push(f);
            }
        }
        self.crossed.sort_unstable();
    }
}

/// What one step's predictions came to.
pub(super) struct Prediction {
    /// (times active, context id) of the predictions that came true.
    pub(super) active: Vec<(u32, u32)>,
    /// Predictions made (contexts whose left side was fully present).
    pub(super) selected: u32,
    /// Partial overlaps of known contexts with the input, to be stored as contexts.
    pub(super) candidates: Vec<(Facts, Facts)>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx {
    pub(super) count: u32,
    pub(super) zero_level: bool,
    pub(super) left: u32,
    pub(super) right: u32,
}

/// The context memory: semi-contexts of both sides and the contexts pairing them.
#[derive(Debug, Clone, Default)]
pub(super) struct Memory {
    pub(super) sides: [Side; 2],
    pub(super) contexts: Vec<Ctx>,
    pub(super) by_pair: HashMap<(u32, u32), u32>,
    /// The zero-level context created this step; it is not its own prediction.
    pub(super) fresh: Option<u32>,
}

impl Memory {
    /// Stores the context `(left, right)`; true when it was new.
    pub(super) fn store(&mut self, left: &[u32], right: &[u32], zero_level: bool) -> bool {
        let l = self.sides[0].intern(left);
        let r = self.sides[1].intern(right);
        if let Some(&id) = self.by_pair.get(&(l, r)) {
            if zero_level {
                self.contexts[id as usize].zero_level = true;
            }
            return false;
        }
        let id = self.contexts.len() as u32;
        self.contexts.push(Ctx {
            count: 0,
            zero_level,
            left: l,
            right: r,
        });
        self.by_pair.insert((l, r), id);
        self.sides[0].semis[l as usize].rights.push((r, id));
        if zero_level {
            self.fresh = Some(id);
        }
        true
    }

    /// Predictions (contexts whose left side was fully present at the last left crossing),
    /// the active ones among them (right side fully present now), and candidate contexts
    /// from partial overlaps.
    pub(super) fn predict(&mut self, new_input: bool, max_left: usize) -> Prediction {
        let mut active = Vec::new();
        let mut selected = 0u32;
        let mut candidates = Vec::new();
        let [left, right] = &self.sides;
        for &lid in &left.crossed {
            let l = &left.semis[lid as usize];
            let full = l.hit.len() == l.facts.len();
            for &(rid, cid) in &l.rights {
                if self.fresh == Some(cid) {
                    continue;
                }
                let c = &mut self.contexts[cid as usize];
                let r = &right.semis[rid as usize];
                let grow = c.zero_level && new_input && l.hit.len() <= max_left;
                if full {
                    selected += 1;
                    if r.hit.len() == r.facts.len() {
                        c.count = c.count.saturating_add(1);
                        active.push((c.count, cid));
                    } else if !r.hit.is_empty() && grow {
                        candidates.push((l.hit.clone(), r.hit.clone()));
                    }
                } else if grow && !r.hit.is_empty() {
                    candidates.push((l.hit.clone(), r.hit.clone()));
                }
            }
        }
        self.fresh = None;
        Prediction {
            active,
            selected,
            candidates,
        }
    }
}
