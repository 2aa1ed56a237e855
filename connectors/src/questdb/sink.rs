//! The sink: buffer rows, flush them with retries, never drop a batch the server did not take.

use std::sync::{Arc, Mutex, PoisonError};

use questdb::ingress::Sender;
use questdb::ErrorCode;
use sluice_schemas::records::{Aggregate, Anomaly};
use tracing::{debug, info, warn};

use super::{IlpEncoder, IlpValue, QuestDbConfig, QuestDbMetrics};
use crate::util::Backoff;

/// What went wrong in the QuestDB sink, and whose problem it is.
#[derive(Debug, thiserror::Error)]
pub enum QuestDbError {
    /// The user's: fix the config.
    #[error("Invalid QuestDB sink config: {}.", .0.join("; "))]
    Config(Vec<String>),
    /// The record's: it cannot be written as ILP (e.g. a timestamp before 1970); it was not buffered.
    #[error("Cannot encode a row for table `{table}`: {source}.")]
    Encode {
        table: String,
        source: questdb::Error,
    },
    /// The server's or the network's; [`QuestDbError::is_retryable`] says if trying again can help.
    #[error("Flush to {addr} failed: {source}.")]
    Flush {
        addr: String,
        source: questdb::Error,
    },
    /// Ours: the blocking flush task panicked. The batch is still buffered.
    #[error("The flush task panicked.")]
    Panicked,
}

impl QuestDbError {
    /// Whether the same flush may succeed later (server down, network, server-side errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Flush { source, .. } => !matches!(
                source.code(),
                ErrorCode::InvalidApiCall
                    | ErrorCode::InvalidName
                    | ErrorCode::InvalidTimestamp
                    | ErrorCode::InvalidUtf8
                    | ErrorCode::ConfigError
                    | ErrorCode::ProtocolVersionError
            ),
            Self::Panicked => true,
            Self::Config(_) | Self::Encode { .. } => false,
        }
    }
}

/// Buffered rows and the connection. It sits behind a mutex so a flush attempt runs on a
/// blocking thread (questdb-rs is synchronous) and finishes its bookkeeping there: if the
/// caller drops a `flush()` future, the batch is neither lost nor counted twice.
#[derive(Debug)]
struct Inner {
    encoder: IlpEncoder,
    sender: Option<Sender>,
    conf: String,
    metrics: QuestDbMetrics,
}

impl Inner {
    fn attempt(&mut self) -> Result<usize, questdb::Error> {
        let rows = self.encoder.rows();
        if rows == 0 {
            return Ok(0);
        }
        // Connect lazily: the sink must start, and keep its batch, while the server is down.
        let sender = match &mut self.sender {
            Some(s) => s,
            None => self.sender.insert(Sender::from_conf(&self.conf)?),
        };
        if let Err(e) = sender.flush_and_keep(self.encoder.buffer()) {
            // A failed TCP connection is unusable; for HTTP a fresh agent costs little.
            self.sender = None;
            return Err(e);
        }
        self.encoder.clear();
        self.metrics.rows_written.inc_by(rows as u64);
        self.metrics.flushes.inc();
        self.metrics.pending_rows.set(0);
        Ok(rows)
    }
}

/// Writes [`Aggregate`]s and [`Anomaly`]s to QuestDB (or any ILP server).
///
/// Use: `push_*` records, call [`flush`](Self::flush) when [`should_flush`](Self::should_flush)
/// or a timer says so, and commit the input offsets only after `flush` returned `Ok`.
/// The target tables must deduplicate (see `docs/CONNECTORS.md`) so replays are harmless.
#[derive(Debug)]
pub struct QuestDbSink {
    inner: Arc<Mutex<Inner>>,
    config: QuestDbConfig,
    metrics: QuestDbMetrics,
    backoff: Backoff,
    healthy: bool,
}

impl QuestDbSink {
    /// Validates the config; does no I/O (the connection is made on the first flush).
    pub fn new(config: QuestDbConfig, metrics: QuestDbMetrics) -> Result<Self, QuestDbError> {
        config.validate().map_err(QuestDbError::Config)?;
        let version = config
            .protocol_version()
            .map_err(|e| QuestDbError::Config(vec![e]))?;
        if config.addr.starts_with("tcp") {
            warn!(
                addr = config.display_addr(),
                "ILP over TCP cannot confirm delivery; use http:: for exactly-once output."
            );
        }
        let inner = Inner {
            encoder: IlpEncoder::new(version, &config.aggregates_table, &config.anomalies_table),
            sender: None,
            conf: config.addr.clone(),
            metrics: metrics.clone(),
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            backoff: Backoff::new(config.retry_initial, config.retry_max),
            config,
            metrics,
            healthy: true,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Buffers one closed window. On error nothing was buffered.
    pub fn push_aggregate(&mut self, a: &Aggregate) -> Result<(), QuestDbError> {
        let mut inner = self.lock();
        inner
            .encoder
            .push_aggregate(a)
            .map_err(|source| QuestDbError::Encode {
                table: self.config.aggregates_table.clone(),
                source,
            })?;
        inner.metrics.pending_rows.inc();
        Ok(())
    }

    /// Buffers one anomaly. On error nothing was buffered.
    pub fn push_anomaly(&mut self, a: &Anomaly) -> Result<(), QuestDbError> {
        let mut inner = self.lock();
        inner
            .encoder
            .push_anomaly(a)
            .map_err(|source| QuestDbError::Encode {
                table: self.config.anomalies_table.clone(),
                source,
            })?;
        inner.metrics.pending_rows.inc();
        Ok(())
    }

    /// Buffers one row of any table ([`IlpEncoder::push_row`]). On error nothing was
    /// buffered.
    pub fn push_row(
        &mut self,
        table: &str,
        symbols: &[(&str, Option<&str>)],
        columns: &[(&str, Option<IlpValue<'_>>)],
        timestamp_nanos: i64,
    ) -> Result<(), QuestDbError> {
        let mut inner = self.lock();
        inner
            .encoder
            .push_row(table, symbols, columns, timestamp_nanos)
            .map_err(|source| QuestDbError::Encode {
                table: table.to_string(),
                source,
            })?;
        inner.metrics.pending_rows.inc();
        Ok(())
    }

    /// Rows buffered since the last successful flush.
    pub fn pending_rows(&self) -> usize {
        self.lock().encoder.rows()
    }

    /// True once the buffer reached `flush_rows` or `flush_bytes`.
    pub fn should_flush(&self) -> bool {
        let inner = self.lock();
        inner.encoder.rows() >= self.config.flush_rows
            || inner.encoder.len_bytes() as u64 >= self.config.flush_bytes
    }

    /// One flush attempt; returns the rows written. On error the batch stays buffered.
    pub async fn try_flush(&mut self) -> Result<usize, QuestDbError> {
        let inner = Arc::clone(&self.inner);
        let attempt = tokio::task::spawn_blocking(move || {
            inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .attempt()
        });
        match attempt.await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(source)) => Err(QuestDbError::Flush {
                addr: self.config.display_addr().to_owned(),
                source,
            }),
            Err(_) => Err(QuestDbError::Panicked),
        }
    }

    /// Flushes the buffer, retrying transient failures with capped exponential backoff until
    /// the server took every row; returns the rows written. Returns `Err` only for errors a
    /// retry cannot fix; the batch is still buffered then. Logs once when the server becomes
    /// unreachable and once when it is back.
    pub async fn flush(&mut self) -> Result<usize, QuestDbError> {
        loop {
            match self.try_flush().await {
                Ok(rows) => {
                    if !self.healthy {
                        info!(
                            addr = self.config.display_addr(),
                            rows, "TSDB is accepting rows again; batch written."
                        );
                        self.healthy = true;
                        self.metrics.retrying.set(0);
                    }
                    self.backoff.reset();
                    return Ok(rows);
                }
                Err(e) if e.is_retryable() => {
                    self.metrics.flush_errors.inc();
                    let delay = self.backoff.next_delay();
                    if self.healthy {
                        warn!(
                            addr = self.config.display_addr(),
                            error = %e,
                            pending_rows = self.pending_rows(),
                            "TSDB flush failed; keeping the batch and retrying with backoff."
                        );
                        self.healthy = false;
                        self.metrics.retrying.set(1);
                    } else {
                        debug!(addr = self.config.display_addr(), error = %e, ?delay, "TSDB flush failed again.");
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    self.metrics.flush_errors.inc();
                    return Err(e);
                }
            }
        }
    }

    pub fn config(&self) -> &QuestDbConfig {
        &self.config
    }

    pub fn metrics(&self) -> &QuestDbMetrics {
        &self.metrics
    }
}
