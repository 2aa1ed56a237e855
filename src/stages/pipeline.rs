//! `kind: pipeline`: the stage that runs a checked chain of operators (`sluice-ops`) over any
//! Avro stream. This module only moves bytes: it decodes each input record with its writer
//! schema (from the registry, by the id in its header) into the input topic's schema, hands
//! it to the chain, and encodes what comes out with the derived output schema, or hands it to
//! the stage's sink (`super::sinks`). `sluice run` and `sluice test` both run it.

use std::sync::Arc;

use sluice_ops::codec::Encoder;
use sluice_ops::op::{Record, Rejection as OpRejection, Running, TaskContext};
use sluice_schemas::wire;
use sluice_topology::PipelinePlan;

use prometheus::IntCounter;

use super::schemas::SchemaSource;
use super::sinks::RecordSink;
use super::wire_decoder::WireDecoder;
use crate::metrics::METRICS;
use crate::runtime::{AnyTable, Emit, Input, ProcessError, Processor, Rejection};

/// The stage's `output` topic's port. Its `branches:` write the ports after it (from 0 when
/// the stage has no output topic).
pub const PORT_OUTPUT: usize = 0;

/// Where a pipeline task's results go.
pub enum Output {
    /// To the output topic, with the derived schema registered under this id.
    Topic { schema_id: u32 },
    /// To the stage's sink.
    Sink(Box<dyn RecordSink>),
    /// Only to the stage's branches (a stage with neither `output` nor `sink`).
    Branches,
}

/// One branch of a task: its operators, and the output port they write with their schema.
struct Branch {
    running: Running,
    encoder: Encoder,
    schema_id: u32,
    port: usize,
    counters: Vec<[IntCounter; 2]>,
}

/// One task of a pipeline stage.
pub struct Pipeline {
    running: Running,
    branches: Vec<Branch>,
    /// What a branch handed on, before it is encoded.
    branch_out: Vec<Record>,
    /// The output topic's schema id; `None` when the stage writes no topic of its own.
    output_schema_id: Option<u32>,
    sink: Option<Box<dyn RecordSink>>,
    decoder: WireDecoder,
    encoder: Encoder,
    /// `sluice_operator_records_total` per operator: [in, out].
    counters: Vec<[IntCounter; 2]>,
    out: Vec<Record>,
    rejected: Vec<OpRejection>,
    buf: Vec<u8>,
}

impl Pipeline {
    /// Task `task.partition` of stage `stage`, its joins reading `task.tables`; branch `b`
    /// writes with the schema id `branch_ids[b]`.
    pub fn new(
        stage: &str,
        plan: Arc<PipelinePlan>,
        output: Output,
        branch_ids: &[u32],
        schemas: Box<dyn SchemaSource>,
        task: &TaskContext<'_>,
    ) -> Result<Self, ProcessError> {
        let counters = |labels: Vec<String>| -> Vec<[IntCounter; 2]> {
            labels
                .iter()
                .map(|op| {
                    ["in", "out"].map(|d| {
                        METRICS
                            .operator_records
                            .with_label_values(&[stage, op.as_str(), d])
                    })
                })
                .collect()
        };
        let (output_schema_id, sink) = match output {
            Output::Topic { schema_id } => (Some(schema_id), None),
            Output::Sink(s) => (None, Some(s)),
            Output::Branches => (None, None),
        };
        let encoder = Encoder::new(plan.output_schema).map_err(|e| ProcessError::Schema {
            message: format!("the derived output schema does not resolve: {e}"),
        })?;
        if branch_ids.len() != plan.branches.len() {
            return Err(ProcessError::Schema {
                message: format!(
                    "{} schema ids for {} branches",
                    branch_ids.len(),
                    plan.branches.len()
                ),
            });
        }
        let first_port = usize::from(output_schema_id.is_some());
        let mut branches = Vec::with_capacity(plan.branches.len());
        for (b, (branch, &schema_id)) in plan.branches.iter().zip(branch_ids).enumerate() {
            branches.push(Branch {
                running: branch.chain.build_for(task)?,
                encoder: Encoder::new(branch.output_schema).map_err(|e| ProcessError::Schema {
                    message: format!(
                        "the derived schema of branch {b} ({}) does not resolve: {e}",
                        branch.output
                    ),
                })?,
                schema_id,
                port: first_port + b,
                counters: counters(branch.chain.op_labels()),
            });
        }
        Ok(Pipeline {
            counters: counters(plan.chain.op_labels()),
            branches,
            branch_out: Vec::new(),
            running: plan.chain.build_for(task)?,
            decoder: WireDecoder::new(plan.input_schema, schemas),
            output_schema_id,
            sink,
            encoder,
            out: Vec::new(),
            rejected: Vec::new(),
            buf: Vec::with_capacity(256),
        })
    }
}

impl Processor for Pipeline {
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError> {
        match self.sink.as_mut() {
            None => self.process_record(input, out),
            Some(sink) => {
                sink.begin(input.offset)?;
                self.process_record(input, out)?;
                self.sink.as_mut().expect("checked above").end(input.offset)
            }
        }
    }

    fn skipped(&mut self, input: &Input<'_>) -> Result<(), ProcessError> {
        if let Some(sink) = self.sink.as_mut() {
            sink.begin(input.offset)?;
            sink.end(input.offset)?;
        }
        Ok(())
    }

    fn flush_external(&mut self) -> Result<bool, ProcessError> {
        match self.sink.as_mut() {
            Some(sink) => sink.flush(),
            None => Ok(true),
        }
    }

    /// The stage's operators' tables, then each branch's: the order of
    /// `StageSpec::stores`.
    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        let mut v = self.running.tables();
        for b in &mut self.branches {
            v.extend(b.running.tables());
        }
        v
    }

    /// Publishes the operators' record counts once per batch, not per record.
    fn end_batch(&mut self, _out: &mut dyn Emit) -> Result<(), ProcessError> {
        let branches = self
            .branches
            .iter_mut()
            .map(|b| (&b.counters, b.running.take_counts()));
        for (counters, counts) in
            std::iter::once((&self.counters, self.running.take_counts())).chain(branches)
        {
            for (c, n) in counters.iter().zip(counts) {
                c[0].inc_by(n[0]);
                c[1].inc_by(n[1]);
            }
        }
        Ok(())
    }

    fn wants_commit(&self) -> bool {
        self.running.wants_commit() || self.branches.iter().any(|b| b.running.wants_commit())
    }

    fn idle(
        &mut self,
        idle_for: std::time::Duration,
        out: &mut dyn Emit,
    ) -> Result<bool, ProcessError> {
        let ms = i64::try_from(idle_for.as_millis()).unwrap_or(i64::MAX);
        let mut ticked = self.running.idle(ms, &mut self.out, &mut self.rejected)?;
        for r in self.rejected.drain(..) {
            // No input record to dead-letter: results of closing windows are not rejected
            // by any operator sluice has; should one be, it is logged, never silent.
            tracing::warn!(class = r.class, message = %r.message, "A result of an idle advance was rejected by a later operator and dropped.");
        }
        // The branches get the stage's results before they idle themselves, as an operator
        // gets its predecessor's within a chain.
        self.emit_outputs(out, None)?;
        for b in &mut self.branches {
            ticked |= b
                .running
                .idle(ms, &mut self.branch_out, &mut self.rejected)?;
            emit_branch(b, &mut self.branch_out, &mut self.buf, out, None);
        }
        for r in self.rejected.drain(..) {
            tracing::warn!(class = r.class, message = %r.message, "A result of an idle advance was rejected by a branch's operator and dropped.");
        }
        Ok(ticked)
    }
}

impl Pipeline {
    fn process_record(
        &mut self,
        input: &Input<'_>,
        out: &mut dyn Emit,
    ) -> Result<(), ProcessError> {
        let Some(bytes) = input.value else {
            out.dead_letter(input, &Rejection::new("empty_value", "record has no value"));
            return Ok(());
        };
        let value = match self.decoder.decode(bytes)? {
            Ok(v) => v,
            Err(r) => {
                out.dead_letter(input, &r);
                return Ok(());
            }
        };
        let rec = Record {
            key: input.key.map(<[u8]>::to_vec),
            value,
            timestamp: input.timestamp,
        };
        self.running
            .process(rec, &mut self.out, &mut self.rejected)?;
        for r in self.rejected.drain(..) {
            out.dead_letter(input, &Rejection::new(r.class, r.message));
        }
        self.emit_outputs(out, Some(input))
    }

    /// Encodes and emits what the chain handed on, or writes it to the sink; an output that
    /// does not fit the derived schema (our bug) or that the sink cannot write becomes a dead
    /// letter of `input` when there is one.
    fn emit_outputs(
        &mut self,
        out: &mut dyn Emit,
        input: Option<&Input<'_>>,
    ) -> Result<(), ProcessError> {
        // Each branch gets every record first (a copy), then the stage's output the record.
        if !self.branches.is_empty() {
            // A stage writing only through its branches hands its last branch the record
            // itself rather than a copy.
            let owned = self.sink.is_none() && self.output_schema_id.is_none();
            let last = self.branches.len() - 1;
            let mut records = std::mem::take(&mut self.out);
            for r in records.iter_mut() {
                for (i, b) in self.branches.iter_mut().enumerate() {
                    let rec = if owned && i == last {
                        std::mem::replace(
                            r,
                            Record {
                                key: None,
                                value: apache_avro::types::Value::Null,
                                timestamp: 0,
                            },
                        )
                    } else {
                        r.clone()
                    };
                    b.running
                        .process(rec, &mut self.branch_out, &mut self.rejected)?;
                    emit_branch(b, &mut self.branch_out, &mut self.buf, out, input);
                }
            }
            if owned {
                records.clear();
            }
            self.out = records;
            for r in self.rejected.drain(..) {
                let why = Rejection::new(r.class, r.message);
                match input {
                    Some(input) => out.dead_letter(input, &why),
                    None => {
                        tracing::warn!(class = why.class, message = %why.message, "A result of an idle advance was rejected by a branch's operator and dropped.")
                    }
                }
            }
        }
        if let Some(sink) = self.sink.as_mut() {
            for r in self.out.drain(..) {
                if let Some(why) = sink.write(input.map(|i| i.offset), &r)? {
                    match input {
                        Some(input) => out.dead_letter(input, &why),
                        None => {
                            tracing::warn!(class = why.class, message = %why.message, "A result of an idle advance could not be written to the sink and was dropped.")
                        }
                    }
                }
            }
            return Ok(());
        }
        let Some(schema_id) = self.output_schema_id else {
            self.out.clear(); // the branches had them
            return Ok(());
        };
        for r in self.out.drain(..) {
            self.buf.clear();
            wire::write_header(schema_id, &mut self.buf);
            match self.encoder.encode(&r.value, &mut self.buf) {
                Ok(()) => {}
                Err(e) => {
                    // The chain produced a value its own derived schema rejects: our bug,
                    // but the record is kept, with the reason.
                    let why = encode_error(&e);
                    match input {
                        Some(input) => out.dead_letter(input, &why),
                        None => {
                            tracing::error!(message = %why.message, "Dropped a result of an idle advance that does not fit the derived schema.")
                        }
                    }
                    continue;
                }
            }
            out.emit(
                PORT_OUTPUT,
                r.key.as_deref().unwrap_or_default(),
                &self.buf,
                r.timestamp,
            );
        }
        Ok(())
    }
}

/// The dead letter for an output that does not fit its derived schema (our bug; the input
/// is kept, with the reason).
fn encode_error(e: &dyn std::fmt::Display) -> Rejection {
    Rejection::new(
        "encode_error",
        format!("output does not fit the derived schema: {e}"),
    )
}

/// Encodes and emits what branch `b` handed on, on its port.
fn emit_branch(
    b: &mut Branch,
    records: &mut Vec<Record>,
    buf: &mut Vec<u8>,
    out: &mut dyn Emit,
    input: Option<&Input<'_>>,
) {
    for r in records.drain(..) {
        buf.clear();
        wire::write_header(b.schema_id, buf);
        if let Err(e) = b.encoder.encode(&r.value, buf) {
            let why = encode_error(&e);
            match input {
                Some(input) => out.dead_letter(input, &why),
                None => {
                    tracing::error!(message = %why.message, "Dropped a branch's result of an idle advance that does not fit its derived schema.")
                }
            }
            continue;
        }
        out.emit(
            b.port,
            r.key.as_deref().unwrap_or_default(),
            buf,
            r.timestamp,
        );
    }
}
