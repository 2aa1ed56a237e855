//! Windows and aggregations: which windows a record belongs to, mergeable accumulators, and
//! the per-task state machine that closes windows by stream time and emits results.
//!
//! # Time
//!
//! Event times are milliseconds since the epoch (`i64`, negative before 1970). A window is
//! `[start, end)`. **Stream time** is the largest event time the task (one input partition)
//! has seen, or an idle tick's time; it only grows and is part of the state, so a restored
//! task resumes with exactly the stream time it committed. A window *closes* once
//! `close + grace ≤ stream time`, where `close` is its end (for sessions: the end of the
//! silence after it, see below); closing emits its final result and forgets it. A record
//! is **late** when every window it belongs to has closed: [`WindowOp::add`] returns
//! [`Added::Late`] and the caller dead-letters it with the [`Late`] reason.
//!
//! # Kinds ([`WindowKind`])
//!
//! - **tumbling** `size`: `[k·size, (k+1)·size)`, aligned to the epoch; a record at exactly
//!   a window's end is in the next one.
//! - **hopping** `size`, `advance ≤ size`: windows `[k·advance, k·advance + size)`; a record
//!   is in ⌊size/advance⌋ or ⌈size/advance⌉ of them (exactly size/advance when `advance`
//!   divides `size`). Windows still open get the record, closed ones do not.
//! - **sliding** `size` = D: Kafka Streams' `SlidingWindows` (KIP-450), per group key. Two
//!   records share a window when their event times differ by at most D; a window is
//!   `[s, s + D]`, inclusive at both ends (reported as `end = s + D + 1`). Windows exist only
//!   where the set of records changes, one per distinct set:
//!   - for every record at t, its *left* window `[t − D, t]` (the record at its right edge);
//!   - for every record at t that has later records within D + 1, its *right* window
//!     `[t + 1, t + 1 + D]`: what remains when t leaves the window.
//!
//!   Windows that coincide are one window. Unlike Kafka, windows may start before the
//!   epoch (Kafka squeezes records earlier than D after the epoch into `[0, D]`). Kafka
//!   derives new windows from neighbouring aggregates; here the records of the last
//!   D + grace are kept (values only, per key) and a new window is folded from them, which
//!   gives the same windows and contents for any arrival order and needs no invertible or
//!   copied aggregates. A record is late once its right window would be closed
//!   (t + D + 2 + grace ≤ stream time); a record whose left window already closed still
//!   counts in the open windows that contain it.
//! - **session** `gap`: per group key, records at most `gap` apart form one session
//!   `[first, last]` (reported as `end = last + 1`). A record within `gap` of a session
//!   extends it; one within `gap` of two sessions merges them (accumulators merge; `first`
//!   and `last` compare event time then arrival, so merging is order-independent). A session
//!   closes when `last + gap + 1 + grace ≤ stream time` (no on-time record can reach it any
//!   more). Lateness: a record older than `stream time − grace` is accepted only if it lies
//!   inside or after an open session of its key (from its first record to `last + gap`):
//!   earlier, it could bridge to a session that already closed and was emitted.
//!
//! # Emission ([`Emit`])
//!
//! - `final` (default): one [`ResultKind::Final`] per window when it closes.
//! - `update`: a [`ResultKind::Update`] for every window a record changes, **and** the
//!   `Final` at close (the same values as the last update; it tells consumers the window is
//!   complete and lets them drop their own state for it). Results are keyed by
//!   `(group key, start, end)` for upserts. Sessions change their extent as they grow or
//!   merge: the old extents get a [`ResultKind::Retract`] (delete) before the new update.
//!
//! Within one call, results come in this order: windows closed by the advance of stream
//! time (in `(close, start, key)` order, the table's key order), then the record's own
//! updates (by start). The same input sequence always produces the same output sequence.
//!
//! # State
//!
//! One table ([`WindowOp::store_names`]: `windows`), an `OrderedTable` the runtime commits
//! and restores like any other. Keys:
//!
//! | entry | key | value |
//! |---|---|---|
//! | window | `close` (8 bytes, big-endian, sign bit flipped) `0x00` `start` (same) group key | accumulators |
//! | buffered record (sliding) | `t + D + 2` `0x01` `t` arrival (8 bytes BE) group key | inputs |
//! | meta | `ff×8` `meta` | stream time, arrival counter, pending tick |
//!
//! Closing is `pop_below(close limit)`: the table's order *is* the closing order, and
//! expired sliding records fall out the same way. Window values are the accumulators'
//! self-describing binary encodings ([`Acc::encode`]): varints and little-endian floats;
//! quantile sketches in DDSketch's standard binary format; the HyperLogLog++ sketch in a
//! compact serde format. Sessions and sliding windows also need lookups by group key: an
//! in-memory index, rebuilt from the table's engine after every `attach` (by
//! [`WindowOp::reload`], which the next call runs by itself).
//!
//! # Idle partitions and ticks
//!
//! A partition that stops receiving records would hold its last windows open forever.
//! With `idle_timeout`, the runtime advances stream time by the wall time that passed —
//! but the wall clock must not decide anything during a replay, so the advance becomes an
//! input, persisted before it has any effect:
//!
//! 1. When a task has had no record for `idle_timeout` (wall clock) and nothing is
//!    buffered for it, the runtime calls [`WindowOp::idle_tick`]`(idle_for)`, with
//!    `idle_for` the wall time since its last record or applied tick. It returns a
//!    [`Tick`] (stream time + idle_for) when windows are open.
//! 2. [`WindowOp::record_tick`] puts the tick in the operator's state (the meta entry).
//!    Nothing changes yet: no window closes, no output.
//! 3. The runtime commits as usual (steps 1-5 of docs/EXACTLY_ONCE.md): the tick leaves in
//!    the changelog record of the meta key, covered by the commit's marker, at the input
//!    offset where it happened. Draining the table is what marks the tick committed.
//! 4. After the commit, [`WindowOp::idle_advance`] applies it: stream time advances,
//!    windows close, their results become outputs of the *next* commit. (`add` and
//!    `advance_to` apply a committed tick first by themselves.)
//!
//! A crash before the commit of step 3 loses the tick together with everything it could
//! have caused (it caused nothing). A crash after it restores the meta entry with the
//! pending tick; the restored operator treats it as committed and applies it before the
//! first record it is given, which is where the original applied it: the commit's input
//! offset. Replays therefore produce the same outputs with the same ids. The runtime must
//! not feed the operator between draining the tables and the end of that commit (a failed
//! commit restores the task). [`Tick`] also implements `Codec` for a runtime that would
//! rather persist ticks in its own log and replay them through [`WindowOp::advance_to`].

mod agg;
mod assign;
mod codec;
mod serial;
mod spec;
mod state;

pub use agg::{Acc, AggFn, Distinct, Input, InputKind, Moments, Sketch, Stamp, Stamped, SumState};
pub use assign::{hopping, sliding_left, sliding_right, tumbling, Window};
pub use spec::{
    compile_aggs, Agg, AggLong, AggSpec, Aggregates, Emit, HumanDuration, WindowKind, WindowSpec,
    MAX_WINDOWS_PER_RECORD,
};
pub use state::{Added, Late, ResultKind, Tick, WindowOp, WindowResult, STORE_NAMES};
