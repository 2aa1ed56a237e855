//! `questdb_sink`: aggregates and anomalies to QuestDB (or any ILP server). Rows are keyed by
//! designated timestamp plus device and metric and upserted, so a replay rewrites the same
//! rows and the sink needs no state of its own; offsets are committed after a flush.

use sluice_connectors::questdb::{QuestDbConfig, QuestDbSink};
use sluice_schemas::codec::Decoder;
use sluice_schemas::records::{Aggregate, Anomaly};

use super::schemas::{decode_with, SchemaSource};
use crate::metrics::METRICS;
use crate::runtime::{
    shutdown, AnyTable, Emit, Input, ProcessError, Processor, Rejection, RuntimeError,
};

/// What an input topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsdbKind {
    Aggregates,
    Anomalies,
}

/// One task (input partition) of a TSDB sink.
pub struct TsdbSink {
    stage: String,
    sink: QuestDbSink,
    rt: tokio::runtime::Handle,
    inputs: Vec<(String, TsdbKind)>,
    schemas: Box<dyn SchemaSource>,
    aggregates: Decoder<Aggregate>,
    anomalies: Decoder<Anomaly>,
    agg: Aggregate,
    an: Anomaly,
}

impl TsdbSink {
    pub fn new(
        stage: &str,
        addr: &str,
        tables: (&str, &str),
        inputs: &[(String, TsdbKind)],
        schemas: Box<dyn SchemaSource>,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, RuntimeError> {
        let mut config = QuestDbConfig::new(addr);
        (config.aggregates_table, config.anomalies_table) =
            (tables.0.to_string(), tables.1.to_string());
        let sink = QuestDbSink::new(config, crate::metrics::METRICS.questdb.clone())
            .map_err(|e| RuntimeError::Config(format!("QuestDB sink of stage {stage}: {e}")))?;
        Ok(TsdbSink {
            stage: stage.to_string(),
            sink,
            rt,
            inputs: inputs.to_vec(),
            schemas,
            aggregates: Decoder::new(),
            anomalies: Decoder::new(),
            agg: Aggregate::default(),
            an: Anomaly::default(),
        })
    }

    /// Writes the buffered rows, retrying while the server is unreachable, unless a
    /// shutdown comes first.
    fn flush(&mut self) -> Result<(), ProcessError> {
        let rt = self.rt.clone();
        match shutdown::block_on_unless_stopped(&rt, self.sink.flush()) {
            Some(r) => r.map(|_| ()).map_err(|e| self.sink_error(e)),
            None => Err(ProcessError::Interrupted {
                sink: format!(
                    "{} (ILP at {})",
                    self.stage,
                    self.sink.config().display_addr()
                ),
            }),
        }
    }

    fn sink_error(&self, e: impl std::fmt::Display) -> ProcessError {
        ProcessError::Sink {
            sink: format!(
                "{} (ILP at {})",
                self.stage,
                self.sink.config().display_addr()
            ),
            message: e.to_string(),
        }
    }
}

impl Processor for TsdbSink {
    fn process(&mut self, input: &Input<'_>, out: &mut dyn Emit) -> Result<(), ProcessError> {
        let Some(bytes) = input.value else {
            return Ok(());
        };
        let kind = self
            .inputs
            .iter()
            .find(|(t, _)| t == input.topic)
            .map(|(_, k)| *k);
        let pushed = match kind {
            Some(TsdbKind::Aggregates) => {
                match decode_with(
                    &mut self.aggregates,
                    self.schemas.as_mut(),
                    bytes,
                    &mut self.agg,
                )? {
                    Ok(()) => self
                        .sink
                        .push_aggregate(&self.agg)
                        .map_err(|e| e.to_string()),
                    Err(e) => {
                        out.dead_letter(input, &Rejection::new(e.class(), e.to_string()));
                        return Ok(());
                    }
                }
            }
            Some(TsdbKind::Anomalies) => {
                match decode_with(
                    &mut self.anomalies,
                    self.schemas.as_mut(),
                    bytes,
                    &mut self.an,
                )? {
                    Ok(()) => self.sink.push_anomaly(&self.an).map_err(|e| e.to_string()),
                    Err(e) => {
                        out.dead_letter(input, &Rejection::new(e.class(), e.to_string()));
                        return Ok(());
                    }
                }
            }
            None => return Ok(()),
        };
        if let Err(e) = pushed {
            // A row ILP cannot carry (e.g. a tag with a newline): the record's fault.
            out.dead_letter(input, &Rejection::new("unwritable_row", e));
            return Ok(());
        }
        METRICS
            .sink_rows
            .with_label_values(&[&self.stage, "questdb"])
            .inc();
        if self.sink.should_flush() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush_external(&mut self) -> Result<bool, ProcessError> {
        self.flush()?;
        Ok(true)
    }

    fn tables(&mut self) -> Vec<&mut dyn AnyTable> {
        Vec::new()
    }
}
