//! The QuestDB sink's metrics, declared in one place.

use prometheus::{IntCounter, IntGauge, Registry};

/// Counters and gauges of every QuestDB sink in the process (share one value via `clone`).
#[derive(Debug, Clone)]
pub struct QuestDbMetrics {
    /// `sluice_questdb_rows_written_total`: rows the server acknowledged.
    pub rows_written: IntCounter,
    /// `sluice_questdb_flushes_total`: successful flushes.
    pub flushes: IntCounter,
    /// `sluice_questdb_flush_errors_total`: failed flush attempts (each retry counts).
    pub flush_errors: IntCounter,
    /// `sluice_questdb_retrying`: 1 while a batch waits for the server to come back.
    pub retrying: IntGauge,
    /// `sluice_questdb_pending_rows`: rows buffered and not yet acknowledged.
    pub pending_rows: IntGauge,
}

impl QuestDbMetrics {
    /// Metrics that are not exported anywhere (tests, benches).
    pub fn unregistered() -> Self {
        let c = |name: &str, help: &str| IntCounter::new(name, help).expect("static metric name");
        let g = |name: &str, help: &str| IntGauge::new(name, help).expect("static metric name");
        Self {
            rows_written: c(
                "sluice_questdb_rows_written_total",
                "Rows the TSDB acknowledged.",
            ),
            flushes: c(
                "sluice_questdb_flushes_total",
                "Successful flushes to the TSDB.",
            ),
            flush_errors: c(
                "sluice_questdb_flush_errors_total",
                "Failed flush attempts, retries included.",
            ),
            retrying: g(
                "sluice_questdb_retrying",
                "1 while a batch waits for the TSDB to come back.",
            ),
            pending_rows: g(
                "sluice_questdb_pending_rows",
                "Rows buffered and not yet acknowledged.",
            ),
        }
    }

    /// Creates the metrics and registers them; call once per process.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered();
        registry.register(Box::new(m.rows_written.clone()))?;
        registry.register(Box::new(m.flushes.clone()))?;
        registry.register(Box::new(m.flush_errors.clone()))?;
        registry.register(Box::new(m.retrying.clone()))?;
        registry.register(Box::new(m.pending_rows.clone()))?;
        Ok(m)
    }
}
