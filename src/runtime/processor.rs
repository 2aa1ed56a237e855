//! What a stage's logic sees: one input record at a time, typed tables for state, and an
//! `Emit` to write outputs and dead letters. Processing must be deterministic given the
//! restored state and the input (docs/EXACTLY_ONCE.md): no wall clock, no randomness.

/// One input record.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp (ms).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Why a record became a dead letter.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Stable class for the `sluice.dlq.error_class` header, e.g. `out_of_range`.
    pub class: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(class: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            class,
            message: message.into(),
        }
    }
}

/// Where a processor's outputs go. The runner numbers each record for its `sluice.id`.
pub trait Emit {
    /// Writes `value` to output `port` (an index into the stage's output list).
    fn emit(&mut self, port: usize, key: &[u8], value: &[u8], timestamp: i64);
    /// Sends `input` to the stage's dead-letter topic with the reason.
    fn dead_letter(&mut self, input: &Input<'_>, why: &Rejection);
}

/// A failure that is not the record's fault: a service is down or we have a bug. The runner
/// rewinds the task to its last commit and retries after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("schema registry at {url} failed: {message}")]
    Registry { url: String, message: String },
    #[error("sink {sink} failed: {message}")]
    Sink { sink: String, message: String },
    #[error("state: {0}")]
    State(#[from] sluice_state::StateError),
    /// A schema the stage was planned with cannot be used (a bug or a damaged registry).
    #[error("schema: {message}")]
    Schema { message: String },
    /// A shutdown came while the sink was still writing (e.g. waiting for a service that is
    /// down): the batch stays uncommitted and is written again at the next start.
    #[error("sink {sink} was still retrying 10 s after the stop was requested (its service is down); its batch is not committed")]
    Interrupted { sink: String },
}

/// A stage's logic. Its state lives in tables the runner restores and commits.
pub trait Processor: Send {
    /// Processes one record; outputs and dead letters go to `out`.
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError>;

    /// Called after each batch, before the commit. Do not emit here under exactly_once:
    /// where a batch ends depends on the clock, so a replay would number such outputs
    /// differently and downstream dedup would miss them (docs/EXACTLY_ONCE.md, A2). Close
    /// windows in `process`; no stage overrides this today.
    fn end_batch(&mut self, out: &mut dyn Emit) -> Result<(), ProcessError> {
        let _ = out;
        Ok(())
    }

    /// The task rebuilds from the input's beginning after `sluice replay`, writing again
    /// only what follows input offset `quiet_below`. Outputs through [`Emit`] are kept quiet
    /// by the runner; a processor that writes elsewhere (a sink) does it itself. Called once,
    /// after the restore, before the first record.
    fn rebuild(&mut self, quiet_below: i64) {
        let _ = quiet_below;
    }

    /// Tables, in the order of the stage's stores (`StageSpec::stores`).
    fn tables(&mut self) -> Vec<&mut dyn sluice_state::table::AnyTable>;

    /// Writes that leave sluice (TSDB rows, S3 objects) must be durable and idempotent
    /// before the commit's marker; sinks do that here. `Ok(false)` holds this task's commit
    /// back (its state stays dirty) until a batch boundary recovered after a crash is reached.
    fn flush_external(&mut self) -> Result<bool, ProcessError> {
        Ok(true)
    }

    /// The task has had no input for `idle_for` of wall clock (since its last record or its
    /// last tick). A processor with idle closing (a window's `idle_timeout`) emits what a
    /// tick committed earlier closes, and may record a new tick in its state, which takes
    /// effect only after the next commit: a replay then applies it at the same place in the
    /// output sequence (docs/EXACTLY_ONCE.md, "Idle ticks"). Returns whether it recorded a
    /// tick (the runner restarts the task's idle clock and commits soon).
    fn idle(
        &mut self,
        idle_for: std::time::Duration,
        out: &mut dyn Emit,
    ) -> Result<bool, ProcessError> {
        let _ = (idle_for, out);
        Ok(false)
    }

    /// Whether the processor has something only a commit takes in, though nothing was
    /// processed (a join whose table moved since its snapshot): a quiet task is then
    /// committed at the next idle check, without restarting its idle clock.
    fn wants_commit(&self) -> bool {
        false
    }

    /// The runner dropped `input` as an already-applied upstream record.
    fn skipped(&mut self, input: &Input<'_>) -> Result<(), ProcessError> {
        let _ = input;
        Ok(())
    }
}
