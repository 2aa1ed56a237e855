//! The S3 archive's metrics, declared in one place.

use prometheus::{IntCounter, IntGauge, Registry};

/// Counters and gauges of every S3 archive sink in the process (share one value via `clone`).
#[derive(Debug, Clone)]
pub struct S3Metrics {
    /// `sluice_s3_rows_written_total`: rows in objects S3 acknowledged.
    pub rows_written: IntCounter,
    /// `sluice_s3_objects_written_total`: data objects S3 acknowledged (manifests not counted).
    pub objects_written: IntCounter,
    /// `sluice_s3_bytes_written_total`: Parquet bytes S3 acknowledged.
    pub bytes_written: IntCounter,
    /// `sluice_s3_request_errors_total`: failed requests (each retry counts).
    pub request_errors: IntCounter,
    /// `sluice_s3_retrying`: 1 while a batch waits for S3 to come back.
    pub retrying: IntGauge,
}

impl S3Metrics {
    /// Metrics that are not exported anywhere (tests, benches).
    pub fn unregistered() -> Self {
        let c = |name: &str, help: &str| IntCounter::new(name, help).expect("static metric name");
        Self {
            rows_written: c(
                "sluice_s3_rows_written_total",
                "Rows in Parquet objects S3 acknowledged.",
            ),
            objects_written: c(
                "sluice_s3_objects_written_total",
                "Parquet objects S3 acknowledged.",
            ),
            bytes_written: c(
                "sluice_s3_bytes_written_total",
                "Parquet bytes S3 acknowledged.",
            ),
            request_errors: c(
                "sluice_s3_request_errors_total",
                "Failed S3 requests, retries included.",
            ),
            retrying: IntGauge::new(
                "sluice_s3_retrying",
                "1 while a batch waits for S3 to come back.",
            )
            .expect("static metric name"),
        }
    }

    /// Creates the metrics and registers them; call once per process.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered();
        registry.register(Box::new(m.rows_written.clone()))?;
        registry.register(Box::new(m.objects_written.clone()))?;
        registry.register(Box::new(m.bytes_written.clone()))?;
        registry.register(Box::new(m.request_errors.clone()))?;
        registry.register(Box::new(m.retrying.clone()))?;
        Ok(m)
    }
}
