//! `dedup`: drops a record whose identifying fields repeat those of a record seen shortly
//! before it in event time, e.g. a device's retransmission of a message already received.
//!
//! ```yaml
//! - dedup:
//!     by: [device_id, seq]   # fields (dotted paths) identifying a repeat; required
//!     within: 10m            # horizon in event time; required
//!     timestamp: ts          # event time: a timestamp field; default the record's timestamp
//! ```
//!
//! or, for sources that number their records (a device's message counter), without a clock:
//!
//! ```yaml
//! - dedup:
//!     by: device_id          # the source
//!     sequence: seq          # its int or long counter
//!     last: 1024             # how many recent numbers per source are remembered
//! ```
//!
//! # Sequence mode
//!
//! With `sequence`, each source (`by` values) keeps a bitmap of its last `last` numbers up
//! to the highest it sent (`last` rounded up to a multiple of 64,
//! [`SeqWindow`](sluice_state::SeqWindow), the built-in `validate` stage's retransmission
//! check). A record whose number is among them and was seen is dropped; one `last` or more
//! below the highest is too old to tell and is dropped too; anything else passes and is
//! remembered. A gap filled later passes. A source whose counter restarts (a reboot to 0)
//! has its records dropped until it passes its old highest number minus `last`. NULL in
//! `by` or in the sequence field: the record passes, unremembered. No time is involved, so a
//! replay drops the same records. State: the `seen` store holds one entry per source (8
//! bytes plus `last / 8`, e.g. 136 bytes for 1024); memory holds the entries read or changed
//! since the last commit, and a commit drops the unchanged ones once they exceed 16 MiB
//! (later reads come from the store). A source keeps the window size it was created with
//! when `last` changes. The rest of this page describes the horizon mode. The two modes'
//! states differ: switching a deployed dedup from one mode to the other needs a new state
//! (`sluice backfill` into a new version).
//!
//! # What is dropped
//!
//! **Stream time** is the largest event time this task (one input partition) has seen, the
//! record being processed included. It never decreases, and it is part of the operator's
//! state, so a restored task resumes with the stream time it committed.
//!
//! A record whose `by` values are *k* is **dropped** when an earlier record with the values
//! *k* was seen at an event time at or after `stream time - within`; otherwise it is handed
//! on unchanged (value, key and timestamp). Precisely, for each record in arrival order:
//!
//! 1. Its event time *t* is read (`timestamp`, or the record's timestamp); stream time
//!    becomes `max(stream time, t)`, and every remembered *k* last seen before
//!    `stream time - within` is forgotten.
//! 2. If *k* is still remembered, the record is dropped, and *k*'s time becomes the later of
//!    the two. "Seen" counts every copy, dropped ones too: the horizon runs from the latest
//!    copy, so a source that keeps retransmitting with pauses shorter than `within` stays
//!    suppressed, and a copy is let through again only after `within` of stream time
//!    without any.
//! 3. Otherwise the record passes, and *k* is remembered with time *t*, unless *t* is
//!    itself before `stream time - within` (it would be forgotten at once): such an old
//!    record passes and leaves nothing behind.
//!
//! Consequences worth knowing:
//!
//! - The boundary is inclusive: a copy exactly `within` after the last one is dropped, one
//!   millisecond later passes.
//! - Out of order is fine: a late copy (earlier event time) of a remembered record is
//!   dropped. What counts is stream time, not the gap between the two event times.
//! - A record with **NULL** in any `by` field (or in a record on a dotted path to it) passes
//!   and is never deduplicated: it is neither compared nor remembered. It still advances
//!   stream time.
//! - A NULL event time field sends the record to the dead-letter topic
//!   (class `null_timestamp`), as windows do.
//! - Dropped records are not dead letters: nothing comes out for them. They are counted in
//!   the operator's state (the meta entry below), so the count is exact across restores.
//! - Values compare by value, not by schema type: strings and enum symbols by their text,
//!   `int` and `long` (and the integer-backed logical types) by their number, `float` and
//!   `double` by their number (`0.0` equals `-0.0`, NaN equals NaN), bytes and fixed by their
//!   bytes. A schema change that promotes `int` to `long`, `float` to `double` or an enum to
//!   a string keeps recognising repeats across the change.
//! - State is per task: copies are compared only if they arrive on the same input partition.
//!   Have the producers key the input topic by (a prefix of) the `by` fields, e.g. the
//!   device id; `key_by` in the same pipeline does not move records between partitions.
//! - A record with a far-future event time (a broken device clock) moves stream time there
//!   for good, and everything remembered is forgotten. Filter implausible times out first
//!   if your sources can produce them.
//!
//! # Determinism
//!
//! Forgetting is driven by stream time only, never by the wall clock or by commits: the
//! same input after the same committed state drops exactly the same records, so a replay
//! after a crash produces the same outputs (docs/EXACTLY_ONCE.md). Stream time advances
//! only with records: a quiet partition keeps its entries until its next record.
//!
//! # State
//!
//! One table, `seen` (changelogged as `<i>-dedup-seen`): an ordered table whose key order
//! is the order of forgetting, so expiry is a pop of the smallest keys.
//!
//! | entry | key | value |
//! |---|---|---|
//! | seen | `0x00`, last seen time (8 bytes, big-endian, sign bit flipped), *k* | `0x01` |
//! | meta | `0x01` | `0x02`, stream time (zigzag varint), dropped count (varint) |
//!
//! *k* is the concatenation of the `by` values, each self-delimiting: strings, enum
//! symbols, bytes and fixed as a varint length and the bytes; integers and timestamps as
//! zigzag varints; floats as the 8 big-endian bytes of the double; booleans as one byte;
//! uuids as their 16 bytes; decimals as their minimal two's complement bytes (length
//! prefixed). For `by: [device_id, seq]` with 11-character ids and sequence numbers below
//! 2^20, that is 12 + 3 bytes: a remembered record costs a 24-byte key and a 1-byte value in
//! the store and the changelog, and about 180 bytes of memory (ops/tests/dedup_memory.rs):
//! the table is held in memory, as the window table is, plus a lookup of the last seen time
//! by *k*, rebuilt from the store on restore. Entries live for `within` of stream time, so
//! the table holds about as many entries as a partition receives distinct records in
//! `within`.
//!
//! Changing `within` between deployments applies the new horizon to the restored entries
//! (they store times, not deadlines). Changing `by` leaves the old entries unmatched until
//! they expire.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use sluice_state::table::{AnyTable, CachedTable, Codec, Encode, OrderedTable};
use sluice_state::{KeyRange, KvStore, SeqWindow, StateError};

use super::yaml_text;
use super::{Kind, OpError, Operator, Planned, Record, StreamType};
use crate::types::{self, FieldPath, RecordType, Type};
use crate::window::HumanDuration;
use crate::Problem;

pub struct Dedup;

/// The keys of `dedup:`.
const KEYS: &[&str] = &["by", "within", "timestamp", "sequence", "last"];

/// `last` when not given: the built-in `validate`'s `dedup_window`.
const DEFAULT_LAST: u32 = 1024;
/// Largest `last`: 1M numbers are 128 KiB per source.
const MAX_LAST: u64 = 1 << 20;

/// The operator's one store, in the order of [`Operator::tables`].
pub const STORE: &str = "seen";

/// Longest `within` accepted (100 years): keeps time arithmetic far from `i64` overflow.
const MAX_WITHIN_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

impl Kind for Dedup {
    fn name(&self) -> &'static str {
        "dedup"
    }

    fn summary(&self) -> &'static str {
        "drops a record whose fields repeat a record seen within a horizon of event time"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        Ok(Box::new(check(spec, input)?))
    }

    fn output_despite_errors(&self, input: &StreamType) -> Option<StreamType> {
        Some(input.clone())
    }
}

/// [`Kind::plan`] with the concrete plan.
fn check(spec: &serde_yaml::Value, input: &StreamType) -> Result<DedupPlan, Vec<Problem>> {
    let Some(map) = spec.as_mapping() else {
        return Err(vec![Problem::new(
            "",
            "a dedup is a mapping with `by` and `within`",
            "write e.g. `- dedup: { by: [device_id, seq], within: 10m }`",
        )]);
    };
    let mut problems = Vec::new();
    super::unknown_keys(map, KEYS, "dedup", &mut problems);
    let by = match map.get("by") {
        None => {
            problems.push(Problem::new(
                "by",
                "dedup needs `by`: the fields that identify a repeat",
                "add e.g. `by: [device_id, seq]`",
            ));
            Vec::new()
        }
        Some(v) => plan_by(v, &input.value, &mut problems),
    };
    if let Some(seq) = map.get("sequence") {
        return check_sequence(map, seq, by, input, problems);
    }
    if let Some(v) = map.get("last") {
        problems.push(Problem::new(
            "last",
            format!(
                "`last: {}` counts sequence numbers, but there is no `sequence`",
                yaml_text(v)
            ),
            "add `sequence: <the counter field>`, or remove `last` and use `within`",
        ));
    }
    let within = match map.get("within") {
        None => {
            problems.push(Problem::new(
                "within",
                "dedup needs `within`: how long (in event time) a record is remembered",
                "add e.g. `within: 10m`, the longest time a repeat can follow its original",
            ));
            None
        }
        Some(v) => plan_within(v, &mut problems),
    };
    let timestamp = match map.get("timestamp") {
        None => None,
        Some(v) => plan_timestamp(v, &input.value, &mut problems),
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(DedupPlan {
        shared: Arc::new(Shared {
            by,
            mode: Mode::Horizon {
                within: within.expect("no problems: parsed"),
                timestamp,
            },
        }),
        output: input.clone(),
    })
}

/// The sequence mode's keys: `sequence` and `last`, not `within` or `timestamp`.
fn check_sequence(
    map: &serde_yaml::Mapping,
    seq: &serde_yaml::Value,
    by: Vec<FieldPath>,
    input: &StreamType,
    mut problems: Vec<Problem>,
) -> Result<DedupPlan, Vec<Problem>> {
    for key in ["within", "timestamp"] {
        if map.contains_key(key) {
            problems.push(Problem::new(
                key,
                format!("`{key}` is for the event-time horizon, but this dedup counts `sequence` numbers"),
                format!("remove `{key}`; `last` says how many numbers per source are remembered"),
            ));
        }
    }
    let seq = match seq.as_str() {
        None => {
            problems.push(Problem::new(
                "sequence",
                "`sequence` names one field: the source's counter",
                "write e.g. `sequence: seq`",
            ));
            None
        }
        Some(name) => match input.value.resolve(name) {
            Ok(p) if matches!(p.ty().ty, Type::Int | Type::Long) => Some(p),
            Ok(p) => {
                problems.push(Problem::new(
                    "sequence",
                    format!("`{name}` is a {}, not an int or a long", p.ty()),
                    "name the field that numbers the source's records (int or long)",
                ));
                None
            }
            Err(p) => {
                problems.push(p.under("sequence"));
                None
            }
        },
    };
    if let Some(s) = &seq {
        if by.iter().any(|b| b.positions() == s.positions()) {
            problems.push(Problem::new(
                "by",
                format!(
                    "`{}` is the sequence field; `by` names the source it numbers",
                    s.path()
                ),
                "remove it from `by`, e.g. `by: device_id`",
            ));
        }
    }
    let last = match map.get("last") {
        None => Some(DEFAULT_LAST),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_LAST).contains(&n) => Some(n as u32),
            _ => {
                problems.push(Problem::new(
                    "last",
                    format!("`last: {}` is not a count from 1 to {MAX_LAST}", yaml_text(v)),
                    format!("write how many recent numbers per source to remember, e.g. `last: {DEFAULT_LAST}`"),
                ));
                None
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(DedupPlan {
        shared: Arc::new(Shared {
            by,
            mode: Mode::Sequence {
                seq: seq.expect("no problems: resolved"),
                last: last.expect("no problems: parsed"),
            },
        }),
        output: input.clone(),
    })
}

/// `by: a` or `by: [a, b]`; problems keyed `by` or `by[i]`.
fn plan_by(
    v: &serde_yaml::Value,
    record: &RecordType,
    problems: &mut Vec<Problem>,
) -> Vec<FieldPath> {
    let items: Vec<(String, &serde_yaml::Value)> = match v {
        serde_yaml::Value::String(_) => vec![("by".to_string(), v)],
        serde_yaml::Value::Sequence(seq) if !seq.is_empty() => seq
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("by[{i}]"), item))
            .collect(),
        _ => {
            problems.push(Problem::new(
                "by",
                "`by` names the fields that identify a repeat: one field or a non-empty list",
                "write e.g. `by: [device_id, seq]`",
            ));
            return Vec::new();
        }
    };
    let mut paths: Vec<FieldPath> = Vec::new();
    for (at, item) in items {
        let Some(name) = item.as_str() else {
            problems.push(Problem::new(
                at,
                format!("`{}` is not a field name", yaml_text(item)),
                "name fields as strings, nested ones by a dotted path: `by: [device_id, header.seq]`",
            ));
            continue;
        };
        match record.resolve(name) {
            Ok(p) if p.ty().ty == Type::Null => problems.push(Problem::new(
                at,
                format!("`{name}` is always NULL, and NULL values are never deduplicated"),
                "remove it from `by`",
            )),
            Ok(p) if !p.ty().ty.is_scalar() => problems.push(Problem::new(
                at,
                format!("`{name}` is a {}, which cannot identify a repeat", p.ty()),
                "use scalar fields (strings, numbers, booleans, enums, timestamps); a nested record's fields by dotted paths",
            )),
            Ok(p) if paths.iter().any(|q| q.positions() == p.positions()) => {
                problems.push(Problem::new(
                    at,
                    format!("`{name}` is listed twice"),
                    "list each field once",
                ))
            }
            Ok(p) => paths.push(p),
            Err(p) => problems.push(p.under(&at)),
        }
    }
    paths
}

fn plan_within(v: &serde_yaml::Value, problems: &mut Vec<Problem>) -> Option<i64> {
    match serde_yaml::from_value::<HumanDuration>(v.clone()) {
        Ok(d) if d.millis() < 1 => {
            problems.push(Problem::new(
                "within",
                format!("`within: {d}` is shorter than a millisecond, the unit of event time"),
                "write the longest time a repeat can follow its original, e.g. `within: 10m`",
            ));
            None
        }
        Ok(d) if d.millis() > MAX_WITHIN_MS => {
            problems.push(Problem::new(
                "within",
                format!("`within: {d}` is longer than 100 years"),
                "write the longest time a repeat can follow its original, e.g. `within: 10m`",
            ));
            None
        }
        Ok(d) => Some(d.millis()),
        Err(e) => {
            let msg = e.to_string();
            let msg = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            problems.push(Problem::new("within", msg, "e.g. `within: 10m`"));
            None
        }
    }
}

fn plan_timestamp(
    v: &serde_yaml::Value,
    record: &RecordType,
    problems: &mut Vec<Problem>,
) -> Option<FieldPath> {
    let Some(name) = v.as_str() else {
        problems.push(Problem::new(
            "timestamp",
            "`timestamp` names one field",
            "write e.g. `timestamp: ts`, or leave it out to use the record's timestamp",
        ));
        return None;
    };
    match record.resolve(name) {
        Ok(p) if p.ty().ty.is_timestamp_like() => Some(p),
        Ok(p) => {
            problems.push(Problem::new(
                "timestamp",
                format!("`{name}` is a {}, not a timestamp", p.ty()),
                "name a timestamp-millis, timestamp-micros, timestamp-nanos or date field, or leave `timestamp` out to use the record's timestamp",
            ));
            None
        }
        Err(p) => {
            problems.push(p.under("timestamp"));
            None
        }
    }
}

#[derive(Debug)]
struct Shared {
    by: Vec<FieldPath>,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Repeats within a horizon of event time.
    Horizon {
        /// Milliseconds, at least 1.
        within: i64,
        timestamp: Option<FieldPath>,
    },
    /// Repeated sequence numbers per source.
    Sequence { seq: FieldPath, last: u32 },
}

#[derive(Debug)]
struct DedupPlan {
    shared: Arc<Shared>,
    output: StreamType,
}

impl Planned for DedupPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn stores(&self) -> Vec<String> {
        vec![STORE.to_string()]
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(self.op())
    }
}

impl DedupPlan {
    fn op(&self) -> DedupOp {
        DedupOp {
            shared: self.shared.clone(),
            table: SeenTable::default(),
            seqs: CachedTable::new(match self.shared.mode {
                Mode::Sequence { last, .. } => {
                    SEQ_CACHE_BYTES / (8 + last.div_ceil(64) as usize * 8 + 64)
                }
                Mode::Horizon { .. } => 0,
            }),
            key: Vec::new(),
        }
    }
}

/// Bytes of unchanged sequence windows kept in memory across a commit (sequence mode).
const SEQ_CACHE_BYTES: usize = 16 << 20;

struct DedupOp {
    shared: Arc<Shared>,
    /// Horizon mode's state.
    table: SeenTable,
    /// Sequence mode's state: one window per source.
    seqs: CachedTable<SeqWindow>,
    /// The `by` values of the current record, encoded.
    key: Vec<u8>,
}

impl Operator for DedupOp {
    fn process(&mut self, rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        let s = &*self.shared;
        let (within, timestamp) = match &s.mode {
            Mode::Horizon { within, timestamp } => (*within, timestamp),
            Mode::Sequence { seq, last } => {
                let n = seq.get(&rec.value).and_then(as_i64);
                let keyed = write_key(&s.by, &rec.value, &mut self.key);
                let (Some(n), true) = (n, keyed) else {
                    out.push(rec);
                    return Ok(());
                };
                let last = *last;
                let w = self.seqs.get_mut(&self.key, || SeqWindow::new(last))?;
                if w.insert(n) {
                    out.push(rec);
                }
                return Ok(());
            }
        };
        let t = match timestamp {
            None => rec.timestamp,
            Some(p) => match p.get(&rec.value).and_then(types::timestamp_ms) {
                Some(t) => t,
                None => {
                    return Err(OpError::reject(
                        "null_timestamp",
                        format!("event time field `{}` is NULL", p.path()),
                    ))
                }
            },
        };
        let keyed = write_key(&s.by, &rec.value, &mut self.key);
        let key = keyed.then_some(self.key.as_slice());
        if !self.table.observe(t, within, key) {
            out.push(rec);
        }
        Ok(())
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        match self.shared.mode {
            Mode::Horizon { .. } => vec![&mut self.table],
            Mode::Sequence { .. } => vec![&mut self.seqs],
        }
    }
}

// --- Keys ---------------------------------------------------------------------------------

/// A sequence number: an `int` or a `long` (inside a union too).
fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(i64::from(*n)),
        Value::Long(n) => Some(*n),
        Value::Union(_, inner) => as_i64(inner),
        _ => None,
    }
}

/// Writes the `by` values of `rec` into `out`; false when one is NULL.
fn write_key(by: &[FieldPath], rec: &Value, out: &mut Vec<u8>) -> bool {
    out.clear();
    for p in by {
        match p.get(rec) {
            Some(v) => put_value(v, out),
            None => return false,
        }
    }
    true
}

/// One non-NULL scalar value, self-delimiting (see the module docs).
fn put_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => put_zigzag(i64::from(*n), out),
        Value::Long(n)
        | Value::TimeMicros(n)
        | Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimestampNanos(n)
        | Value::LocalTimestampMillis(n)
        | Value::LocalTimestampMicros(n)
        | Value::LocalTimestampNanos(n) => put_zigzag(*n, out),
        Value::Float(x) => put_f64(f64::from(*x), out),
        Value::Double(x) => put_f64(*x, out),
        Value::String(s) | Value::Enum(_, s) => put_bytes(s.as_bytes(), out),
        Value::Bytes(b) | Value::Fixed(_, b) => put_bytes(b, out),
        Value::Uuid(u) => out.extend_from_slice(u.as_bytes()),
        Value::Decimal(d) => {
            let bytes: Vec<u8> = Vec::try_from(d).unwrap_or_default();
            put_bytes(minimal_twos_complement(&bytes), out);
        }
        Value::Duration(d) => out.extend_from_slice(&<[u8; 12]>::from(*d)),
        Value::Union(_, inner) => put_value(inner, out),
        // Not scalars (refused by the check) or big-decimals: their text.
        other => put_bytes(format!("{other:?}").as_bytes(), out),
    }
}

fn put_f64(x: f64, out: &mut Vec<u8>) {
    let x = if x == 0.0 {
        0.0
    } else if x.is_nan() {
        f64::NAN
    } else {
        x
    };
    out.extend_from_slice(&x.to_bits().to_be_bytes());
}

fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    put_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// Drops sign-extension bytes: `00 7f` is `7f`, `ff 80` is `80`.
fn minimal_twos_complement(mut b: &[u8]) -> &[u8] {
    while b.len() > 1 && ((b[0] == 0 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0)) {
        b = &b[1..];
    }
    b
}

fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_zigzag(n: i64, out: &mut Vec<u8>) {
    put_varint(((n << 1) ^ (n >> 63)) as u64, out);
}

fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

// --- State ---------------------------------------------------------------------------------

const TAG_SEEN: u8 = 0x00;
const META_KEY: &[u8] = &[0x01];

/// `0x00`, time, k.
fn seen_key(t: i64, k: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(TAG_SEEN);
    out.extend_from_slice(&ordered(t));
    out.extend_from_slice(k);
}

/// (time, k) of a seen key.
fn parse_seen_key(key: &[u8]) -> Option<(i64, &[u8])> {
    match key {
        [TAG_SEEN, rest @ ..] if rest.len() >= 8 => {
            let (t, k) = rest.split_at(8);
            Some((from_ordered(t.try_into().ok()?), k))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    /// Largest event time seen; `i64::MIN` before the first record.
    stream_time: i64,
    /// Records dropped as repeats, ever.
    dropped: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            stream_time: i64::MIN,
            dropped: 0,
        }
    }
}

/// A value of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Seen,
    Meta(Box<Meta>),
}

mod slot_tag {
    pub(super) const SEEN: u8 = 1;
    pub(super) const META: u8 = 2;
}

impl Encode for Slot {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Slot::Seen => out.push(slot_tag::SEEN),
            Slot::Meta(m) => {
                out.push(slot_tag::META);
                put_zigzag(m.stream_time, out);
                put_varint(m.dropped, out);
            }
        }
    }
}

impl Codec for Slot {
    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let bad = |why: &str| StateError::decode("dedup state", why.to_string());
        match bytes {
            [slot_tag::SEEN] => Ok(Slot::Seen),
            [slot_tag::META, rest @ ..] => {
                let mut r = rest;
                let zz = read_varint(&mut r).ok_or_else(|| bad("meta: stream time"))?;
                let dropped = read_varint(&mut r).ok_or_else(|| bad("meta: dropped count"))?;
                if !r.is_empty() {
                    return Err(bad("meta: trailing bytes"));
                }
                let stream_time = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
                Ok(Slot::Meta(Box::new(Meta {
                    stream_time,
                    dropped,
                })))
            }
            _ => Err(bad("unknown value")),
        }
    }
}

fn read_varint(b: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// The operator's table as the runtime sees it: the ordered table, the live meta (written
/// into the table when a commit drains it) and a lookup of the last seen time by *k*,
/// rebuilt from the engine when a restore attaches one.
#[derive(Default)]
struct SeenTable {
    table: OrderedTable<Slot>,
    index: HashMap<Vec<u8>, i64>,
    meta: Meta,
    meta_in_table: Meta,
    buf: Vec<u8>,
}

impl SeenTable {
    /// Steps 1 to 3 of the module docs for a record at `t` with values `k` (None: a NULL):
    /// true if it is a repeat, to drop.
    fn observe(&mut self, t: i64, within: i64, k: Option<&[u8]>) -> bool {
        if t > self.meta.stream_time {
            self.meta.stream_time = t;
            self.expire_before(t.saturating_sub(within));
        }
        let Some(k) = k else {
            return false;
        };
        match self.index.get_mut(k) {
            Some(last) => {
                if t > *last {
                    seen_key(*last, k, &mut self.buf);
                    self.table.remove(&self.buf);
                    *last = t;
                    seen_key(t, k, &mut self.buf);
                    self.table.entry(&self.buf, || Slot::Seen);
                }
                self.meta.dropped += 1;
                true
            }
            None => {
                if t >= self.meta.stream_time.saturating_sub(within) {
                    self.index.insert(k.to_vec(), t);
                    seen_key(t, k, &mut self.buf);
                    self.table.entry(&self.buf, || Slot::Seen);
                }
                false
            }
        }
    }

    /// Forgets every *k* last seen before `horizon`.
    fn expire_before(&mut self, horizon: i64) {
        let mut end = [TAG_SEEN; 9];
        end[1..].copy_from_slice(&ordered(horizon));
        let index = &mut self.index;
        self.table.pop_below(&end, |key, _| {
            if let Some((t, k)) = parse_seen_key(key) {
                if index.get(k) == Some(&t) {
                    index.remove(k);
                }
            }
        });
    }

    /// Meta and index from what the table holds (its engine's contents, after `attach`).
    fn reload(&mut self) -> Result<(), StateError> {
        self.index.clear();
        self.meta = match self.table.get(META_KEY) {
            Some(Slot::Meta(m)) => **m,
            Some(Slot::Seen) => {
                return Err(StateError::decode(
                    "dedup state",
                    "the meta key holds a seen entry",
                ))
            }
            None => Meta::default(),
        };
        self.meta_in_table = self.meta;
        let Some(engine) = self.table.engine_mut() else {
            return Ok(());
        };
        for kv in engine.scan(KeyRange::all())? {
            let (key, _) = kv?;
            if key == META_KEY {
                continue;
            }
            let (t, k) = parse_seen_key(&key).ok_or_else(|| {
                StateError::decode("dedup state", format!("unknown key {key:02x?}"))
            })?;
            let last = self.index.entry(k.to_vec()).or_insert(t);
            *last = (*last).max(t);
        }
        Ok(())
    }

    /// Records dropped as repeats, restores included.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.meta.dropped
    }
}

impl AnyTable for SeenTable {
    fn drain_dirty(&mut self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if self.meta != self.meta_in_table {
            *self.table.entry(META_KEY, || Slot::Seen) = Slot::Meta(Box::new(self.meta));
            self.meta_in_table = self.meta;
        }
        self.table.drain_dirty(out);
    }

    fn attach(&mut self, engine: Box<dyn KvStore>) -> Result<(), StateError> {
        self.table.attach(engine)?;
        self.reload()
    }

    fn engine_mut(&mut self) -> Option<&mut Box<dyn KvStore>> {
        self.table.engine_mut()
    }

    fn detach(&mut self) -> Option<Box<dyn KvStore>> {
        self.index.clear();
        self.meta = Meta::default();
        self.meta_in_table = Meta::default();
        self.table.detach()
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::Schema;
    use sluice_state::{MemStore, WriteBatch};

    use super::*;
    use crate::op::KeyShape;

    const SCHEMA: &str = r#"{"type": "record", "name": "Reading", "namespace": "io.acme", "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "seq", "type": ["null", "long"], "default": null},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "late_ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
        {"name": "value", "type": "double"},
        {"name": "tags", "type": {"type": "array", "items": "string"}}
    ]}"#;

    fn input() -> StreamType {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        StreamType {
            value: RecordType::from_schema(&schema).unwrap(),
            key: KeyShape::Input,
        }
    }

    fn plan(yaml: &str) -> Result<Box<dyn Planned>, Vec<Problem>> {
        Dedup.plan(&serde_yaml::from_str(yaml).unwrap(), &input())
    }

    fn problems(yaml: &str) -> Vec<(String, String, String)> {
        match plan(yaml) {
            Ok(_) => panic!("{yaml}: no problems"),
            Err(ps) => ps.into_iter().map(|p| (p.key, p.message, p.fix)).collect(),
        }
    }

    fn reading(device: &str, seq: Option<i64>, ts: i64) -> Record {
        Record {
            key: Some(device.as_bytes().to_vec()),
            value: Value::Record(vec![
                ("device_id".into(), Value::String(device.into())),
                (
                    "seq".into(),
                    match seq {
                        Some(s) => Value::Union(1, Box::new(Value::Long(s))),
                        None => Value::Union(0, Box::new(Value::Null)),
                    },
                ),
                ("ts".into(), Value::TimestampMillis(ts)),
                ("late_ts".into(), Value::Union(0, Box::new(Value::Null))),
                ("value".into(), Value::Double(1.5)),
                ("tags".into(), Value::Array(vec![])),
            ]),
            timestamp: 7,
        }
    }

    /// For each (device, seq, ts): whether it passed.
    fn run(op: &mut DedupOp, recs: &[(&str, Option<i64>, i64)]) -> Vec<bool> {
        recs.iter()
            .map(|&(d, s, t)| {
                let mut out = Vec::new();
                op.process(reading(d, s, t), &mut out).unwrap();
                assert!(out.len() <= 1);
                if let Some(r) = out.first() {
                    assert_eq!(r, &reading(d, s, t), "handed on unchanged");
                }
                out.len() == 1
            })
            .collect()
    }

    fn op(yaml: &str) -> DedupOp {
        let p = check(&serde_yaml::from_str(yaml).unwrap(), &input()).unwrap();
        assert_eq!(p.stores(), ["seen"]);
        p.op()
    }

    const SPEC: &str = "by: [device_id, seq]\nwithin: 10ms\ntimestamp: ts\n";

    #[test]
    fn a_repeat_within_the_horizon_is_dropped_and_the_boundary_is_inclusive() {
        let mut d = op(SPEC);
        let passed = run(
            &mut d,
            &[
                ("a", Some(1), 100),
                ("a", Some(1), 100), // retransmission
                ("a", Some(2), 101), // another message
                ("b", Some(1), 101), // another device
                ("a", Some(1), 110), // exactly 10ms after the last copy: still a repeat
                ("c", Some(9), 121), // stream time 121: a/1 was last seen at 110 < 111
                ("a", Some(1), 121), // forgotten: passes again
            ],
        );
        assert_eq!(passed, [true, false, true, true, false, true, true]);
        assert_eq!(d.table.dropped(), 2);
    }

    #[test]
    fn every_copy_extends_the_horizon_and_late_copies_are_dropped() {
        let mut d = op(SPEC);
        let passed = run(
            &mut d,
            &[
                ("a", Some(1), 100),
                ("a", Some(1), 108),
                ("a", Some(1), 116), // 16ms after the first, 8 after the last copy
                ("a", Some(1), 105), // late copy, stream time 116: last seen 116
                ("x", Some(0), 126), // stream time 126: horizon 116, a/1 still there
                ("a", Some(1), 100), // late copy, remembered: dropped
                ("x", Some(0), 127), // horizon 117: a/1 forgotten (x/0 refreshed)
                ("a", Some(1), 127),
            ],
        );
        assert_eq!(
            passed,
            [true, false, false, false, true, false, false, true]
        );
    }

    #[test]
    fn a_record_older_than_the_horizon_passes_and_is_not_remembered() {
        let mut d = op(SPEC);
        let passed = run(
            &mut d,
            &[
                ("a", Some(1), 100),
                ("a", Some(2), 89), // horizon 90
                ("a", Some(2), 89),
                ("a", Some(2), 90), // at the horizon: remembered
                ("a", Some(2), 89), // now a repeat
            ],
        );
        assert_eq!(passed, [true, true, true, true, false]);
        assert_eq!(d.table.index.len(), 2);
    }

    #[test]
    fn null_by_values_pass_are_never_deduplicated_and_still_advance_stream_time() {
        let mut d = op(SPEC);
        let passed = run(
            &mut d,
            &[
                ("a", Some(1), 100),
                ("a", None, 100),
                ("a", None, 100),
                ("a", None, 200), // stream time 200: a/1 forgotten
                ("a", Some(1), 150),
            ],
        );
        assert_eq!(passed, [true, true, true, true, true]);
        assert_eq!(d.table.len(), 0, "nothing remembered: 150 < 190");
    }

    #[test]
    fn a_null_event_time_is_a_dead_letter_and_the_record_timestamp_is_the_default() {
        let mut d = op("by: device_id\nwithin: 1s\ntimestamp: late_ts\n");
        let err = d
            .process(reading("a", Some(1), 5), &mut Vec::new())
            .unwrap_err();
        match err {
            OpError::Reject { class, message } => {
                assert_eq!(class, "null_timestamp");
                assert_eq!(message, "event time field `late_ts` is NULL");
            }
            e => panic!("{e}"),
        }
        // Without `timestamp`: the record's (7 in `reading`).
        let mut d = op("by: device_id\nwithin: 1s\n");
        assert_eq!(
            run(&mut d, &[("a", Some(1), 5), ("a", Some(2), 99_999)]),
            [true, false]
        );
        assert_eq!(d.table.meta.stream_time, 7);
    }

    #[test]
    fn state_is_bounded_by_the_horizon_and_forgetting_is_changelogged_as_deletes() {
        let mut d = op(SPEC);
        let mut dirty = Vec::new();
        for t in 0..1000i64 {
            run(&mut d, &[("a", Some(t), t)]);
            assert!(d.table.len() <= 12, "{} entries at {t}", d.table.len()); // + meta
            assert!(d.table.index.len() <= 11);
            if t == 500 {
                d.table.drain_dirty(&mut dirty);
                dirty.clear();
            }
        }
        d.table.drain_dirty(&mut dirty);
        let deletes = dirty.iter().filter(|(_, v)| v.is_none()).count();
        let puts: Vec<_> = dirty.iter().filter(|(_, v)| v.is_some()).collect();
        // Since the drain: the 11 entries live then (490..=500) and 501..=988 were forgotten,
        // 989..=999 are live. Entries put and forgotten between two drains are deletes too.
        assert_eq!(deletes, 11 + 488);
        assert_eq!(puts.len(), 11 + 1, "11 live entries and the meta");
        let mut expected = Vec::new();
        seen_key(
            999,
            &{
                let mut k = Vec::new();
                put_bytes(b"a", &mut k);
                put_zigzag(999, &mut k);
                k
            },
            &mut expected,
        );
        assert!(dirty.contains(&(expected.clone(), Some(vec![slot_tag::SEEN]))));
        assert_eq!(expected.len(), 1 + 8 + 2 + 2);
    }

    const SEQ_SPEC: &str = "by: device_id\nsequence: seq\nlast: 64\n";

    #[test]
    fn sequence_mode_drops_numbers_seen_and_too_old_per_source() {
        let mut d = op(SEQ_SPEC);
        let got = run(
            &mut d,
            &[
                ("a", Some(10), 0),
                ("a", Some(10), 0), // a repeat
                ("b", Some(10), 0), // another source
                ("a", Some(12), 0),
                ("a", Some(11), 0), // a gap filled late
                ("a", Some(11), 0),
                ("a", None, 0), // no number: passes
                ("a", None, 0),
                ("a", Some(200), 0),
                ("a", Some(136), 0), // 64 below 200: too old to tell
                ("a", Some(137), 0),
            ],
        );
        assert_eq!(
            got,
            [true, false, true, true, true, false, true, true, true, false, true]
        );
    }

    #[test]
    fn sequence_mode_state_survives_a_restore() {
        let mut d = op(SEQ_SPEC);
        run(&mut d, &[("a", Some(1), 0), ("a", Some(3), 0)]);
        let mut dirty = Vec::new();
        d.seqs.drain_dirty(&mut dirty);
        assert_eq!(dirty.len(), 1, "one entry per source");
        let mut batch = WriteBatch::new();
        for (k, v) in dirty {
            batch.push(k, v);
        }
        let mut store = MemStore::new();
        sluice_state::KvStore::write(&mut store, batch, None).unwrap();
        let mut e = op(SEQ_SPEC);
        e.seqs.attach(Box::new(store)).unwrap();
        assert_eq!(
            run(
                &mut e,
                &[("a", Some(3), 0), ("a", Some(2), 0), ("a", Some(1), 0)]
            ),
            [false, true, false]
        );
    }

    #[test]
    fn sequence_mode_problems() {
        let p = problems("by: device_id\nsequence: seq\nwithin: 1m\ntimestamp: ts\n");
        let keys: Vec<_> = p.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(keys, ["within", "timestamp"]);
        let p = problems("by: device_id\nsequence: value\n");
        assert!(
            p[0].0 == "sequence" && p[0].1.contains("not an int or a long"),
            "{p:?}"
        );
        let p = problems("by: device_id\nsequence: sequ\n");
        assert_eq!(p[0].0, "sequence", "{p:?}");
        let p = problems("by: [device_id, seq]\nsequence: seq\n");
        assert!(p[0].0 == "by" && p[0].1.contains("sequence field"), "{p:?}");
        let p = problems("by: device_id\nsequence: seq\nlast: 0\n");
        assert_eq!(p[0].0, "last", "{p:?}");
        let p = problems("by: device_id\nwithin: 1m\nlast: 10\n");
        assert!(
            p[0].0 == "last" && p[0].1.contains("no `sequence`"),
            "{p:?}"
        );
        // The default: 1024 numbers.
        assert!(plan("by: device_id\nsequence: seq\n").is_ok());
    }

    #[test]
    fn a_restored_table_carries_stream_time_the_count_and_the_index() {
        let mut d = op(SPEC);
        run(
            &mut d,
            &[("a", Some(1), 100), ("a", Some(1), 104), ("b", None, 105)],
        );
        let mut dirty = Vec::new();
        d.table.drain_dirty(&mut dirty);
        let mut batch = WriteBatch::new();
        for (k, v) in dirty {
            batch.push(k, v);
        }
        let mut store = MemStore::new();
        sluice_state::KvStore::write(&mut store, batch, None).unwrap();
        let mut e = op(SPEC);
        e.table.attach(Box::new(store)).unwrap();
        assert_eq!(
            e.table.meta,
            Meta {
                stream_time: 105,
                dropped: 1
            }
        );
        assert_eq!(e.table.index.len(), 1);
        // Last seen at 104: dropped up to stream time 114.
        assert_eq!(
            run(
                &mut e,
                &[("a", Some(1), 114), ("z", None, 125), ("a", Some(1), 110)]
            ),
            [false, true, true]
        );
        assert_eq!(e.table.dropped(), 2);
        // Detached: empty again.
        assert!(e.table.detach().is_some());
        assert_eq!((e.table.len(), e.table.index.len()), (0, 0));
    }

    #[test]
    fn values_compare_by_value_and_keys_are_self_delimiting() {
        let key = |vals: &[Value]| {
            let mut out = Vec::new();
            for v in vals {
                put_value(v, &mut out);
            }
            out
        };
        assert_eq!(key(&[Value::Int(5)]), key(&[Value::Long(5)]));
        assert_eq!(key(&[Value::Float(0.5)]), key(&[Value::Double(0.5)]));
        assert_eq!(key(&[Value::Double(0.0)]), key(&[Value::Double(-0.0)]));
        assert_eq!(
            key(&[Value::Double(f64::NAN)]),
            key(&[Value::Double(-f64::NAN)])
        );
        assert_eq!(
            key(&[Value::Enum(3, "ON".into())]),
            key(&[Value::String("ON".into())])
        );
        assert_ne!(
            key(&[Value::String("ab".into()), Value::String("c".into())]),
            key(&[Value::String("a".into()), Value::String("bc".into())])
        );
        assert_ne!(
            key(&[Value::Long(1), Value::Long(300)]),
            key(&[Value::Long(300), Value::Long(1)])
        );
        assert_eq!(minimal_twos_complement(&[0, 0, 0x7f]), [0x7f]);
        assert_eq!(minimal_twos_complement(&[0xff, 0x80]), [0x80]);
        assert_eq!(minimal_twos_complement(&[0, 0x80]), [0, 0x80]);
        assert_eq!(minimal_twos_complement(&[0xff]), [0xff]);
        for t in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(from_ordered(ordered(t)), t);
        }
        assert!(ordered(-1) < ordered(0));
        let meta = Slot::Meta(Box::new(Meta {
            stream_time: -5,
            dropped: 300,
        }));
        let mut b = Vec::new();
        meta.encode(&mut b);
        assert_eq!(Slot::decode(&b).unwrap(), meta);
        assert!(Slot::decode(&[9]).is_err());
        assert!(Slot::decode(&[slot_tag::META, 0x80]).is_err());
    }

    #[test]
    fn spec_problems_name_their_keys() {
        let p = problems("by: [device_id, sequ]\nwithn: 10m\n");
        let keys: Vec<&str> = p.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["withn", "by[1]", "within"]);
        assert_eq!(p[0].1, "unknown key `withn`");
        assert!(p[0].2.starts_with("did you mean `within`?"), "{}", p[0].2);
        assert!(p[1].2.contains("did you mean `seq`?"), "{}", p[1].2);
        assert!(p[2].1.contains("dedup needs `within`"), "{}", p[2].1);

        let p = problems("within: 600\n");
        assert_eq!(p[0].0, "by");
        assert_eq!(p[1].0, "within");
        assert!(p[1].1.contains("has no unit"), "{}", p[1].1);

        let p = problems("by: [tags, value, value, 3]\nwithin: 0s\ntimestamp: value\n");
        let keys: Vec<&str> = p.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["by[0]", "by[2]", "by[3]", "within", "timestamp"]);
        assert!(p[0].1.contains("array of string"), "{}", p[0].1);
        assert!(p[1].1.contains("listed twice"), "{}", p[1].1);
        assert!(p[2].1.contains("`3` is not a field name"), "{}", p[2].1);
        assert!(p[3].1.contains("shorter than a millisecond"), "{}", p[3].1);
        assert!(p[4].1.contains("not a timestamp"), "{}", p[4].1);

        let p = problems("by: []\nwithin: 200years\n");
        assert_eq!(p[0].0, "by");
        assert!(p[1].1.contains("longer than 100 years"), "{}", p[1].1);

        let p = problems("[device_id, seq]");
        assert_eq!(p[0].0, "");
        assert!(p[0].2.contains("within: 10m"), "{}", p[0].2);

        let p = problems("by: device_id\nwithin: 1m\ntimestamp: tss\n");
        assert_eq!(p[0].0, "timestamp");
        assert!(p[0].2.contains("did you mean `ts`?"), "{}", p[0].2);

        // The output is the input, problems or not.
        let out = Dedup.output_despite_errors(&input()).unwrap();
        assert_eq!(out.value, input().value);
        let ok = plan("by: seq\nwithin: 1m\n").unwrap();
        assert_eq!(ok.output().value, input().value);
        assert_eq!(ok.output().key, KeyShape::Input);
    }
}
