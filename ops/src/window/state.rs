//! The window operator of one task: assignment, accumulators, closing and emission over one
//! changelogged table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use apache_avro::types::Value;
use sluice_state::table::{AnyTable, Codec, Encode, OrderedTable};
use sluice_state::{KeyRange, KvStore, StateError};

use super::agg::{Acc, AccKind, Input, Stamp};
use super::assign::{self, Window};
use super::codec::{self, from_ordered_i64, ordered_i64, Put, Reader};
use super::spec::{compile_aggs, Agg, AggSpec, Emit, WindowKind, WindowSpec};
use crate::Problem;

/// The stores of a window operator, in the order of [`WindowOp::tables`].
pub const STORE_NAMES: &[&str] = &["windows"];

/// Window and record keys end before this: `[0xff; 8]` is the first 8 bytes of the meta
/// key, and no close time reaches `i64::MAX`.
const MAX_CLOSE: i64 = i64::MAX - 1;
const META_KEY: &[u8] = b"\xff\xff\xff\xff\xff\xff\xff\xffmeta";
const KIND_WINDOW: u8 = 0;
const KIND_RECORD: u8 = 1;

/// An idle advance of stream time, decided by the runtime from the wall clock and made part
/// of the operator's state (hence of its changelog) before it takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The stream time to advance to (event-time milliseconds).
    pub stream_time: i64,
}

impl Encode for Tick {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_zigzag(self.stream_time);
    }
}

impl Codec for Tick {
    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader::new(bytes, "tick");
        let stream_time = r.zigzag()?;
        r.finish()?;
        Ok(Tick { stream_time })
    }
}

/// Per-task bookkeeping, kept under [`META_KEY`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    /// Largest event time seen (or ticked to); `i64::MIN` before the first record.
    stream_time: i64,
    /// Arrival counter: orders records of equal event time (`first`/`last`) and names
    /// buffered records.
    seq: u64,
    /// An idle tick recorded but not applied yet.
    pending: Option<Tick>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            stream_time: i64::MIN,
            seq: 0,
            pending: None,
        }
    }
}

/// A buffered record's aggregation inputs (sliding windows).
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Null,
    Num(f64),
    Val(Value),
}

impl Owned {
    fn of(i: &Input<'_>) -> Owned {
        match i {
            Input::Null => Owned::Null,
            Input::Num(f) => Owned::Num(*f),
            Input::Val(v) => Owned::Val((*v).clone()),
        }
    }
    fn input(&self) -> Input<'_> {
        match self {
            Owned::Null => Input::Null,
            Owned::Num(f) => Input::Num(*f),
            Owned::Val(v) => Input::Val(v),
        }
    }
}

/// A value of the window table.
#[derive(Debug, Clone)]
enum Entry {
    /// One accumulator per state slot of the operator.
    Window(Vec<Acc>),
    /// A record kept for sliding windows: its inputs, one per aggregation.
    Record(Vec<Owned>),
    Meta(Meta),
}

mod entry_tag {
    pub(super) const WINDOW: u8 = 1;
    pub(super) const RECORD: u8 = 2;
    pub(super) const META: u8 = 3;
}

impl Encode for Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Entry::Window(accs) => {
                out.put_u8(entry_tag::WINDOW);
                out.put_varint(accs.len() as u64);
                for a in accs {
                    a.encode(out);
                }
            }
            Entry::Record(vals) => {
                out.put_u8(entry_tag::RECORD);
                out.put_varint(vals.len() as u64);
                for v in vals {
                    match v {
                        Owned::Null => out.put_u8(0),
                        Owned::Num(f) => {
                            out.put_u8(1);
                            out.put_f64(*f);
                        }
                        Owned::Val(v) => {
                            out.put_u8(2);
                            codec::encode_value(v, out);
                        }
                    }
                }
            }
            Entry::Meta(m) => {
                out.put_u8(entry_tag::META);
                out.put_zigzag(m.stream_time);
                out.put_varint(m.seq);
                match m.pending {
                    None => out.put_u8(0),
                    Some(t) => {
                        out.put_u8(1);
                        t.encode(out);
                    }
                }
            }
        }
    }
}

impl Codec for Entry {
    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader::new(bytes, "window state");
        let e = match r.u8()? {
            entry_tag::WINDOW => {
                let n = r.len(2)?;
                let mut accs = Vec::with_capacity(n);
                for _ in 0..n {
                    accs.push(Acc::decode(&mut r)?);
                }
                Entry::Window(accs)
            }
            entry_tag::RECORD => {
                let n = r.len(1)?;
                let mut vals = Vec::with_capacity(n);
                for _ in 0..n {
                    vals.push(match r.u8()? {
                        0 => Owned::Null,
                        1 => Owned::Num(r.f64()?),
                        2 => Owned::Val(codec::decode_value(&mut r)?),
                        t => return Err(r.err(format!("input tag {t}"))),
                    });
                }
                Entry::Record(vals)
            }
            entry_tag::META => {
                let stream_time = r.zigzag()?;
                let seq = r.varint()?;
                let pending = match r.u8()? {
                    0 => None,
                    1 => Some(Tick {
                        stream_time: r.zigzag()?,
                    }),
                    t => return Err(r.err(format!("option tag {t}"))),
                };
                Entry::Meta(Meta {
                    stream_time,
                    seq,
                    pending,
                })
            }
            t => return Err(r.err(format!("unknown entry tag {t}"))),
        };
        r.finish()?;
        Ok(e)
    }
}

/// The operator's one table as the runtime sees it: an [`OrderedTable`] plus what the
/// operator must notice (a commit serialising a recorded tick; a restore replacing the data).
struct WindowTable {
    table: OrderedTable<Entry>,
    /// The live meta; written into the table when a commit drains it.
    meta: Meta,
    /// The meta as last written into the table.
    meta_in_table: Meta,
    /// The pending tick went out with a commit (or came back from a restore).
    tick_durable: bool,
    /// `attach`/`detach` replaced the data: meta and indexes must be reloaded.
    stale: bool,
}

impl AnyTable for WindowTable {
    fn drain_dirty(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if self.meta != self.meta_in_table {
            let m = self.meta.clone();
            *self.table.entry(META_KEY, || Entry::Meta(m.clone())) = Entry::Meta(m.clone());
            self.meta_in_table = m;
        }
        self.table.drain_dirty(out);
        if self.meta.pending.is_some() {
            self.tick_durable = true;
        }
    }

    fn attach(&mut self, engine: Box<dyn KvStore>) -> Result<(), StateError> {
        self.stale = true;
        self.table.attach(engine)
    }

    fn engine_mut(&mut self) -> Option<&mut Box<dyn KvStore>> {
        self.table.engine_mut()
    }

    fn detach(&mut self) -> Option<Box<dyn KvStore>> {
        self.stale = true;
        self.table.detach()
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

/// What `emit` produced for a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// `emit: update`: the window's values after a change.
    Update,
    /// The window closed: its values are final. Sent in both emit modes.
    Final,
    /// `emit: update`, sessions only: the window `(key, start, end)` no longer exists (it
    /// grew or merged into another); consumers delete it. `values` is empty.
    Retract,
}

/// One result of a window: upsert it by `(key, start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    /// The group key, as given to [`WindowOp::add`].
    pub key: Vec<u8>,
    /// First event time in the window (inclusive).
    pub start: i64,
    /// End of the window, exclusive. Sessions: last record's time + 1; sliding windows:
    /// start + size + 1 (both ends inclusive in event time).
    pub end: i64,
    /// One value per aggregation, in the order of the spec ([`WindowOp::output_names`]).
    pub values: Vec<Value>,
    pub kind: ResultKind,
}

impl WindowResult {
    pub fn is_final(&self) -> bool {
        self.kind == ResultKind::Final
    }
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Counted in this many windows. Can be 0 for a sliding window record whose own windows
    /// have closed but whose right window (the records after it) is still open.
    Counted(usize),
    /// Too late for every window it belongs to: dead-letter it with this reason.
    Late(Late),
}

/// Why a record was too late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    pub ts: i64,
    pub stream_time: i64,
    pub grace: i64,
    /// The close time of the latest window the record could have joined: it closed when
    /// stream time reached `closed_at + grace`.
    pub closed_at: i64,
}

fn fmt_ts(ms: i64) -> String {
    if ms >= 0 {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
        humantime::format_rfc3339_millis(t).to_string()
    } else {
        format!("{ms} ms")
    }
}

impl fmt::Display for Late {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let behind = self.stream_time.saturating_sub(self.ts).max(0) as u64;
        write!(
            f,
            "late record: event time {} is {} behind stream time {}; its window closed at {} plus grace {}",
            fmt_ts(self.ts),
            humantime::format_duration(std::time::Duration::from_millis(behind)),
            fmt_ts(self.stream_time),
            fmt_ts(self.closed_at),
            humantime::format_duration(std::time::Duration::from_millis(self.grace.max(0) as u64)),
        )
    }
}

/// One accumulator of a window, shared by the aggregations of one kind over one field.
#[derive(Debug, Clone)]
struct Slot {
    kind: AccKind,
    /// Which of `add`'s values feeds it.
    input: usize,
}

/// In-memory index of sessions and sliding windows per group key, derived from the table
/// (rebuilt by [`WindowOp::reload`]).
#[derive(Debug, Default)]
struct KeyIdx {
    /// Open windows by start: sessions map to their last record's time; sliding windows
    /// (all of one length) to their start again.
    windows: BTreeMap<i64, i64>,
    /// Buffered records (sliding): (event time, arrival).
    records: BTreeSet<(i64, u64)>,
}

#[derive(Debug, Default)]
struct Index {
    open: usize,
    records: usize,
    keys: HashMap<Vec<u8>, KeyIdx>,
}

impl Index {
    fn forget(&mut self, gkey: &[u8], start: Option<i64>, record: Option<(i64, u64)>) {
        if let Some(k) = self.keys.get_mut(gkey) {
            if let Some(s) = start {
                k.windows.remove(&s);
            }
            if let Some(r) = record {
                k.records.remove(&r);
            }
            if k.windows.is_empty() && k.records.is_empty() {
                self.keys.remove(gkey);
            }
        }
    }
}

fn values_of(aggs: &[Agg], outputs: &[usize], accs: &[Acc]) -> Vec<Value> {
    aggs.iter()
        .zip(outputs)
        .map(|(a, slot)| a.func.result(&accs[*slot]))
        .collect()
}

fn update_result(gkey: &[u8], w: Window, values: Vec<Value>) -> WindowResult {
    WindowResult {
        key: gkey.to_vec(),
        start: w.start,
        end: w.end,
        values,
        kind: ResultKind::Update,
    }
}

/// The window operator of one task (one input partition). See the [module](super) docs for
/// the semantics and the state layout.
pub struct WindowOp {
    kind: WindowKind,
    size: i64,
    /// Tumbling windows' lengths (`sizes`, or `size` alone).
    sizes: Vec<i64>,
    advance: i64,
    gap: i64,
    grace: i64,
    emit: Emit,
    idle_timeout: Option<i64>,
    aggs: Vec<Agg>,
    slots: Vec<Slot>,
    /// Per aggregation: its slot.
    outputs: Vec<usize>,
    table: WindowTable,
    index: Index,
    key_buf: Vec<u8>,
}

fn window_key(buf: &mut Vec<u8>, close: i64, start: i64, gkey: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&ordered_i64(close.min(MAX_CLOSE)));
    buf.push(KIND_WINDOW);
    buf.extend_from_slice(&ordered_i64(start));
    buf.extend_from_slice(gkey);
}

fn record_key(buf: &mut Vec<u8>, close: i64, ts: i64, seq: u64, gkey: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&ordered_i64(close.min(MAX_CLOSE)));
    buf.push(KIND_RECORD);
    buf.extend_from_slice(&ordered_i64(ts));
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(gkey);
}

/// A parsed table key.
enum Key<'a> {
    Window {
        close: i64,
        start: i64,
        gkey: &'a [u8],
    },
    Record {
        ts: i64,
        seq: u64,
        gkey: &'a [u8],
    },
    Meta,
}

fn parse_key(k: &[u8]) -> Result<Key<'_>, StateError> {
    if k == META_KEY {
        return Ok(Key::Meta);
    }
    let bad = || StateError::decode("window key", format!("unexpected key {k:02x?}"));
    let i64_at =
        |at: usize| -> Option<i64> { Some(from_ordered_i64(k.get(at..at + 8)?.try_into().ok()?)) };
    match k.get(8) {
        Some(&KIND_WINDOW) => Ok(Key::Window {
            close: i64_at(0).ok_or_else(bad)?,
            start: i64_at(9).ok_or_else(bad)?,
            gkey: &k[17..],
        }),
        Some(&KIND_RECORD) if k.len() >= 25 => Ok(Key::Record {
            ts: i64_at(9).ok_or_else(bad)?,
            seq: u64::from_be_bytes(k[17..25].try_into().map_err(|_| bad())?),
            gkey: &k[25..],
        }),
        _ => Err(bad()),
    }
}

impl WindowOp {
    /// A window operator for a checked spec; problems are keyed relative to the operator
    /// (`window.size`, `aggregate.p95.fn`).
    pub fn new(spec: &WindowSpec, aggs: &[AggSpec]) -> Result<Self, Vec<Problem>> {
        let mut problems: Vec<Problem> = spec
            .check()
            .into_iter()
            .map(|p| p.under("window"))
            .collect();
        let aggs = match compile_aggs(aggs) {
            Ok(a) => a,
            Err(p) => {
                problems.extend(p.into_iter().map(|p| p.under("aggregate")));
                Vec::new()
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self::from_parts(spec, aggs))
    }

    /// From aggregations already checked by [`compile_aggs`]; the window spec must pass
    /// [`WindowSpec::check`].
    pub fn from_parts(spec: &WindowSpec, aggs: Vec<Agg>) -> Self {
        let mut slots: Vec<Slot> = Vec::new();
        let mut by: HashMap<(AccKind, Option<String>), usize> = HashMap::new();
        let mut outputs = Vec::with_capacity(aggs.len());
        for (i, a) in aggs.iter().enumerate() {
            let kind = a.func.acc_kind(a.field.is_some());
            let field = if kind == AccKind::Rows {
                None
            } else {
                a.field.clone()
            };
            let slot = *by.entry((kind, field)).or_insert_with(|| {
                slots.push(Slot { kind, input: i });
                slots.len() - 1
            });
            outputs.push(slot);
        }
        WindowOp {
            kind: spec.kind,
            size: spec.size_ms().max(1),
            sizes: spec.sizes_ms().into_iter().map(|s| s.max(1)).collect(),
            advance: spec.advance_ms().max(1),
            gap: spec.gap_ms(),
            grace: spec.grace_ms(),
            emit: spec.emit,
            idle_timeout: spec.idle_timeout.map(|d| d.millis()),
            aggs,
            slots,
            outputs,
            table: WindowTable {
                table: OrderedTable::default(),
                meta: Meta::default(),
                meta_in_table: Meta::default(),
                tick_durable: false,
                stale: false,
            },
            index: Index::default(),
            key_buf: Vec::new(),
        }
    }

    /// The names of [`tables`](Self::tables), in the same order (for changelog topics).
    pub fn store_names() -> &'static [&'static str] {
        STORE_NAMES
    }

    /// The operator's tables for the runtime to commit, attach and detach.
    pub fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        vec![&mut self.table]
    }

    /// The output fields, in the order of [`WindowResult::values`].
    pub fn output_names(&self) -> Vec<&str> {
        self.aggs.iter().map(|a| a.name.as_str()).collect()
    }

    /// The checked aggregations, in output order: `add` takes one input per entry.
    pub fn aggs(&self) -> &[Agg] {
        &self.aggs
    }

    /// Stream time of the task, `None` before the first record. After an `attach`, this
    /// and the counts below are current once [`reload`](Self::reload) (or any `&mut` call)
    /// ran.
    pub fn stream_time(&self) -> Option<i64> {
        (self.table.meta.stream_time != i64::MIN).then_some(self.table.meta.stream_time)
    }

    /// Windows currently open.
    pub fn open_windows(&self) -> usize {
        self.index.open
    }

    /// Records kept for sliding windows.
    pub fn buffered_records(&self) -> usize {
        self.index.records
    }

    /// Rebuilds what the operator keeps beside the table (stream time, tick, indexes) from
    /// the table's engine. Runs by itself at the first call after `attach`/`detach`; call it
    /// directly to surface errors early.
    pub fn reload(&mut self) -> Result<(), StateError> {
        self.index = Index::default();
        let meta = match self.table.table.get(META_KEY) {
            Some(Entry::Meta(m)) => m.clone(),
            Some(_) => {
                return Err(StateError::decode(
                    "window state",
                    "meta key holds another entry",
                ))
            }
            None => Meta::default(),
        };
        self.table.tick_durable = meta.pending.is_some();
        self.table.meta_in_table = meta.clone();
        self.table.meta = meta;
        let keys: Vec<Vec<u8>> = match self.table.table.engine_mut() {
            Some(engine) => {
                let mut keys = Vec::new();
                for kv in engine.scan(KeyRange::all())? {
                    keys.push(kv?.0);
                }
                keys
            }
            None => Vec::new(),
        };
        for k in &keys {
            match parse_key(k)? {
                Key::Meta => {}
                Key::Window { close, start, gkey } => {
                    match self.table.table.get(k) {
                        Some(Entry::Window(accs)) => self.check_layout(accs)?,
                        _ => {
                            return Err(StateError::decode(
                                "window state",
                                "window key without a window",
                            ))
                        }
                    }
                    self.index.open += 1;
                    match self.kind {
                        WindowKind::Session => {
                            let last = close.saturating_sub(self.gap).saturating_sub(1);
                            self.index
                                .keys
                                .entry(gkey.to_vec())
                                .or_default()
                                .windows
                                .insert(start, last);
                        }
                        WindowKind::Sliding => {
                            self.index
                                .keys
                                .entry(gkey.to_vec())
                                .or_default()
                                .windows
                                .insert(start, start);
                        }
                        WindowKind::Tumbling | WindowKind::Hopping => {}
                    }
                }
                Key::Record { ts, seq, gkey } => {
                    self.index.records += 1;
                    self.index
                        .keys
                        .entry(gkey.to_vec())
                        .or_default()
                        .records
                        .insert((ts, seq));
                }
            }
        }
        self.table.stale = false;
        Ok(())
    }

    fn check_layout(&self, accs: &[Acc]) -> Result<(), StateError> {
        let have: Vec<AccKind> = accs.iter().map(Acc::kind).collect();
        let want: Vec<AccKind> = self.slots.iter().map(|s| s.kind).collect();
        if have != want {
            return Err(StateError::decode(
                "window state",
                format!(
                    "stored windows hold {have:?} but the aggregations need {want:?}: the aggregate list changed; reset this stage's state"
                ),
            ));
        }
        Ok(())
    }

    fn ensure_loaded(&mut self) -> Result<(), StateError> {
        if self.table.stale {
            self.reload()?;
        }
        Ok(())
    }

    /// Adds one record: its group key, event time and one input per aggregation (in the
    /// order of [`aggs`](Self::aggs); `count` of rows ignores its input). Advances stream
    /// time to the record's event time first, which may close windows; closed results come
    /// before this record's updates in `out`.
    pub fn add(
        &mut self,
        key: &[u8],
        ts: i64,
        values: &[Input<'_>],
        out: &mut Vec<WindowResult>,
    ) -> Result<Added, StateError> {
        self.ensure_loaded()?;
        if values.len() != self.aggs.len() {
            return Err(StateError::Usage(format!(
                "window add got {} values for {} aggregations",
                values.len(),
                self.aggs.len()
            )));
        }
        self.apply_durable_tick(out);
        if ts > self.table.meta.stream_time {
            self.table.meta.stream_time = ts;
            self.close(out);
        }
        let at = Stamp {
            ts,
            seq: self.table.meta.seq,
        };
        self.table.meta.seq += 1;
        Ok(match self.kind {
            WindowKind::Tumbling if self.sizes.len() == 1 => {
                let w = assign::tumbling(ts, self.sizes[0]);
                self.add_fixed(key, &[w], at, values, out)
            }
            WindowKind::Tumbling => {
                let ws: Vec<Window> = self
                    .sizes
                    .iter()
                    .map(|&s| assign::tumbling(ts, s))
                    .collect();
                self.add_fixed(key, &ws, at, values, out)
            }
            WindowKind::Hopping => {
                let ws: Vec<Window> = assign::hopping(ts, self.size, self.advance).collect();
                self.add_fixed(key, &ws, at, values, out)
            }
            WindowKind::Session => self.add_session(key, at, values, out),
            WindowKind::Sliding => self.add_sliding(key, at, values, out),
        })
    }

    /// Closing time limit: windows whose close time is at most this are closed.
    fn closed_up_to(&self) -> i64 {
        self.table.meta.stream_time.saturating_sub(self.grace)
    }

    fn is_closed(&self, close: i64) -> bool {
        close.min(MAX_CLOSE) <= self.closed_up_to()
    }

    fn late(&self, ts: i64, closed_at: i64) -> Added {
        Added::Late(Late {
            ts,
            stream_time: self.table.meta.stream_time,
            grace: self.grace,
            closed_at,
        })
    }

    fn new_accs(&self) -> Vec<Acc> {
        self.slots.iter().map(|s| Acc::new(s.kind)).collect()
    }

    fn update_accs(slots: &[Slot], accs: &mut [Acc], values: &[Input<'_>], at: Stamp) {
        for (acc, slot) in accs.iter_mut().zip(slots) {
            acc.update(values[slot.input], at);
        }
    }

    fn add_fixed(
        &mut self,
        gkey: &[u8],
        ws: &[Window],
        at: Stamp,
        values: &[Input<'_>],
        out: &mut Vec<WindowResult>,
    ) -> Added {
        let mut counted = 0;
        for w in ws {
            if self.is_closed(w.end) {
                continue;
            }
            counted += 1;
            window_key(&mut self.key_buf, w.end, w.start, gkey);
            let mut created = false;
            let slots = &self.slots;
            let entry = self.table.table.entry(&self.key_buf, || {
                created = true;
                Entry::Window(slots.iter().map(|s| Acc::new(s.kind)).collect())
            });
            let Entry::Window(accs) = entry else {
                unreachable!("window keys hold windows")
            };
            Self::update_accs(slots, accs, values, at);
            if self.emit == Emit::Update {
                out.push(update_result(
                    gkey,
                    *w,
                    values_of(&self.aggs, &self.outputs, accs),
                ));
            }
            if created {
                self.index.open += 1;
            }
        }
        if counted == 0 {
            let last = ws.iter().map(|w| w.end).max().unwrap_or(at.ts);
            return self.late(at.ts, last);
        }
        Added::Counted(counted)
    }

    fn add_session(
        &mut self,
        gkey: &[u8],
        at: Stamp,
        values: &[Input<'_>],
        out: &mut Vec<WindowResult>,
    ) -> Added {
        let (t, gap) = (at.ts, self.gap);
        // Open sessions within `gap` of t: disjoint and ordered, so walk back from the last
        // one starting at or before t + gap while they reach t.
        let mut hits: Vec<(i64, i64)> = match self.index.keys.get(gkey) {
            Some(k) => k
                .windows
                .range(..=t.saturating_add(gap))
                .rev()
                .take_while(|(_, last)| last.saturating_add(gap) >= t)
                .map(|(s, l)| (*s, *l))
                .collect(),
            None => Vec::new(),
        };
        hits.reverse();
        // A record older than stream time - grace might belong to a session that already
        // closed and was forgotten; it is safe only inside or after an open session.
        if t < self.closed_up_to() && !hits.iter().any(|(s, _)| *s <= t) {
            return self.late(t, t);
        }
        let start = hits.iter().map(|h| h.0).min().unwrap_or(t).min(t);
        let last = hits.iter().map(|h| h.1).max().unwrap_or(t).max(t);
        let close = |last: i64| last.saturating_add(gap).saturating_add(1);
        let extent = |s: i64, l: i64| Window {
            start: s,
            end: l.saturating_add(1),
        };
        if let [(s, l)] = hits.as_slice() {
            if (*s, *l) == (start, last) {
                window_key(&mut self.key_buf, close(last), start, gkey);
                let slots = &self.slots;
                if let Entry::Window(accs) = self
                    .table
                    .table
                    .entry(&self.key_buf, || unreachable!("indexed session"))
                {
                    Self::update_accs(slots, accs, values, at);
                    if self.emit == Emit::Update {
                        let v = values_of(&self.aggs, &self.outputs, accs);
                        out.push(update_result(gkey, extent(start, last), v));
                    }
                }
                return Added::Counted(1);
            }
        }
        let mut merged: Option<Vec<Acc>> = None;
        for (s, l) in &hits {
            window_key(&mut self.key_buf, close(*l), *s, gkey);
            let Some(Entry::Window(accs)) = self.table.table.remove(&self.key_buf) else {
                unreachable!("indexed session")
            };
            match &mut merged {
                None => merged = Some(accs),
                Some(m) => {
                    for (a, b) in m.iter_mut().zip(&accs) {
                        a.merge(b);
                    }
                }
            }
            self.index.open -= 1;
            self.index.forget(gkey, Some(*s), None);
            if self.emit == Emit::Update {
                let w = extent(*s, *l);
                out.push(WindowResult {
                    key: gkey.to_vec(),
                    start: w.start,
                    end: w.end,
                    values: Vec::new(),
                    kind: ResultKind::Retract,
                });
            }
        }
        let mut accs = merged.unwrap_or_else(|| self.new_accs());
        Self::update_accs(&self.slots, &mut accs, values, at);
        if self.emit == Emit::Update {
            let v = values_of(&self.aggs, &self.outputs, &accs);
            out.push(update_result(gkey, extent(start, last), v));
        }
        window_key(&mut self.key_buf, close(last), start, gkey);
        *self
            .table
            .table
            .entry(&self.key_buf, || Entry::Window(Vec::new())) = Entry::Window(accs);
        self.index.open += 1;
        self.index
            .keys
            .entry(gkey.to_vec())
            .or_default()
            .windows
            .insert(start, last);
        Added::Counted(1)
    }

    /// Folds the buffered records of `gkey` with event times in `[from, to]` into fresh
    /// accumulators.
    fn fold_records(&mut self, gkey: &[u8], from: i64, to: i64) -> Vec<Acc> {
        let mut accs = self.new_accs();
        let Some(k) = self.index.keys.get(gkey) else {
            return accs;
        };
        for &(ts, seq) in k.records.range((from, 0)..=(to, u64::MAX)) {
            let close = self.record_close(ts);
            record_key(&mut self.key_buf, close, ts, seq, gkey);
            if let Some(Entry::Record(vals)) = self.table.table.get(&self.key_buf) {
                let inputs: Vec<Input<'_>> = vals.iter().map(Owned::input).collect();
                Self::update_accs(&self.slots, &mut accs, &inputs, Stamp { ts, seq });
            }
        }
        accs
    }

    /// A buffered record is dropped when the right window of its time closes.
    fn record_close(&self, ts: i64) -> i64 {
        assign::sliding_right(ts, self.size).end
    }

    fn add_sliding(
        &mut self,
        gkey: &[u8],
        at: Stamp,
        values: &[Input<'_>],
        out: &mut Vec<WindowResult>,
    ) -> Added {
        let (t, d) = (at.ts, self.size);
        let right = assign::sliding_right(t, d);
        if self.is_closed(right.end) {
            return self.late(t, right.end);
        }
        // 1. Buffer the record.
        record_key(&mut self.key_buf, right.end, t, at.seq, gkey);
        let owned: Vec<Owned> = values.iter().map(Owned::of).collect();
        *self
            .table
            .table
            .entry(&self.key_buf, || Entry::Record(Vec::new())) = Entry::Record(owned);
        self.index.records += 1;
        let k = self.index.keys.entry(gkey.to_vec()).or_default();
        k.records.insert((t, at.seq));
        // 2. Every open window containing t.
        let containing: Vec<i64> = k
            .windows
            .range(t.saturating_sub(d)..=t)
            .map(|(s, _)| *s)
            .collect();
        let previous = k.records.range(..(t, 0)).next_back().map(|r| r.0);
        let mut touched: Vec<(Window, Vec<Value>)> = Vec::new();
        for s in &containing {
            let w = Window {
                start: *s,
                end: s.saturating_add(d).saturating_add(1),
            };
            window_key(&mut self.key_buf, w.end, w.start, gkey);
            let slots = &self.slots;
            if let Entry::Window(accs) = self
                .table
                .table
                .entry(&self.key_buf, || unreachable!("indexed window"))
            {
                Self::update_accs(slots, accs, values, at);
                if self.emit == Emit::Update {
                    touched.push((w, values_of(&self.aggs, &self.outputs, accs)));
                }
            }
        }
        let mut counted = containing.len();
        // 3. New windows: the record's left window, its right window (when later records
        //    arrived first), and the right window of the record before it.
        let exists = |this: &Self, s: i64| {
            this.index
                .keys
                .get(gkey)
                .is_some_and(|k| k.windows.contains_key(&s))
        };
        let has_records = |this: &Self, from: i64, to: i64| {
            this.index
                .keys
                .get(gkey)
                .is_some_and(|k| k.records.range((from, 0)..=(to, u64::MAX)).next().is_some())
        };
        let mut create: Vec<Window> = Vec::new();
        let left = assign::sliding_left(t, d);
        if !exists(self, left.start) && !self.is_closed(left.end) {
            create.push(left);
            counted += 1;
        }
        if !exists(self, right.start) && has_records(self, right.start, right.end - 1) {
            create.push(right);
        }
        if let Some(p) = previous {
            let pr = assign::sliding_right(p, d);
            if t < pr.end
                && !exists(self, pr.start)
                && !self.is_closed(pr.end)
                && pr.start != left.start
            {
                create.push(pr);
                counted += 1;
            }
        }
        for w in create {
            let accs = self.fold_records(gkey, w.start, w.end - 1);
            if self.emit == Emit::Update {
                touched.push((w, values_of(&self.aggs, &self.outputs, &accs)));
            }
            window_key(&mut self.key_buf, w.end, w.start, gkey);
            *self
                .table
                .table
                .entry(&self.key_buf, || Entry::Window(Vec::new())) = Entry::Window(accs);
            self.index.open += 1;
            self.index
                .keys
                .entry(gkey.to_vec())
                .or_default()
                .windows
                .insert(w.start, w.start);
        }
        touched.sort_by_key(|(w, _)| *w);
        out.extend(touched.into_iter().map(|(w, v)| update_result(gkey, w, v)));
        Added::Counted(counted)
    }

    /// Closes every window whose close time + grace ≤ stream time, in (end, start, key)
    /// order, emitting final results; drops expired buffered records.
    fn close(&mut self, out: &mut Vec<WindowResult>) {
        let limit = self.closed_up_to().saturating_add(1).min(MAX_CLOSE);
        let bound = ordered_i64(limit);
        let (kind, gap, size) = (self.kind, self.gap, self.size);
        let aggs = &self.aggs;
        let outputs = &self.outputs;
        let index = &mut self.index;
        self.table.table.pop_below(&bound, |k, v| {
            let Ok(key) = parse_key(k) else { return };
            match (key, v) {
                (Key::Window { close, start, gkey }, Entry::Window(accs)) => {
                    let end = match kind {
                        WindowKind::Session => close.saturating_sub(gap),
                        WindowKind::Sliding => start.saturating_add(size).saturating_add(1),
                        WindowKind::Tumbling | WindowKind::Hopping => close,
                    };
                    index.open -= 1;
                    if matches!(kind, WindowKind::Session | WindowKind::Sliding) {
                        index.forget(gkey, Some(start), None);
                    }
                    out.push(WindowResult {
                        key: gkey.to_vec(),
                        start,
                        end,
                        values: values_of(aggs, outputs, &accs),
                        kind: ResultKind::Final,
                    });
                }
                (Key::Record { ts, seq, gkey }, _) => {
                    index.records -= 1;
                    index.forget(gkey, None, Some((ts, seq)));
                }
                _ => {}
            }
        });
    }

    /// Advances stream time to `stream_time` (never backwards) and closes what that closes.
    /// Only for advances that replay identically: [`add`](Self::add) advances by itself, idle
    /// advances go through [`record_tick`](Self::record_tick). Also the way to flush at the
    /// end of a bounded input: `advance_to(i64::MAX, ..)` closes everything.
    pub fn advance_to(
        &mut self,
        stream_time: i64,
        out: &mut Vec<WindowResult>,
    ) -> Result<(), StateError> {
        self.ensure_loaded()?;
        self.apply_durable_tick(out);
        if stream_time > self.table.meta.stream_time {
            self.table.meta.stream_time = stream_time;
            self.close(out);
        }
        Ok(())
    }

    /// The runtime's idle check, step 1: `idle_for` is the wall time since the last record
    /// (or tick) of this task. `Some` when `idle_timeout` is set and has passed and windows
    /// are open: record the tick, commit, then apply it.
    pub fn idle_tick(&mut self, idle_for_ms: i64) -> Result<Option<Tick>, StateError> {
        self.ensure_loaded()?;
        let Some(timeout) = self.idle_timeout else {
            return Ok(None);
        };
        let st = self.table.meta.stream_time;
        if idle_for_ms < timeout
            || st == i64::MIN
            || self.index.open == 0
            || self.table.meta.pending.is_some()
        {
            return Ok(None);
        }
        Ok(Some(Tick {
            stream_time: st.saturating_add(idle_for_ms),
        }))
    }

    /// Step 2: records `tick` in the operator's state; it takes effect only after the next
    /// commit has carried it to the changelog (step 3). `false` if it would change nothing
    /// or another tick is still pending.
    pub fn record_tick(&mut self, tick: Tick) -> Result<bool, StateError> {
        self.ensure_loaded()?;
        let m = &mut self.table.meta;
        if m.pending.is_some() || tick.stream_time <= m.stream_time {
            return Ok(false);
        }
        m.pending = Some(tick);
        self.table.tick_durable = false;
        Ok(true)
    }

    /// Step 3, after the commit: applies the pending tick (advances stream time, closes
    /// windows). Returns the tick applied, `None` if there is none or its commit has not
    /// happened yet. `add` and `advance_to` apply a committed tick first by themselves, so a
    /// replay applies it at the same point whichever call comes first.
    pub fn idle_advance(
        &mut self,
        out: &mut Vec<WindowResult>,
    ) -> Result<Option<Tick>, StateError> {
        self.ensure_loaded()?;
        Ok(self.apply_durable_tick(out))
    }

    fn apply_durable_tick(&mut self, out: &mut Vec<WindowResult>) -> Option<Tick> {
        if !self.table.tick_durable {
            return None;
        }
        let tick = self.table.meta.pending.take()?;
        self.table.tick_durable = false;
        if tick.stream_time > self.table.meta.stream_time {
            self.table.meta.stream_time = tick.stream_time;
            self.close(out);
        }
        Some(tick)
    }
}

impl fmt::Debug for WindowOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowOp")
            .field("kind", &self.kind)
            .field("aggs", &self.aggs)
            .field("stream_time", &self.stream_time())
            .field("open", &self.index.open)
            .finish_non_exhaustive()
    }
}
