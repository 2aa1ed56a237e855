//! The S3 archive's configuration and the object-store client built from it.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{Certificate, ClientOptions, ObjectStore, RetryConfig};
use serde::Deserialize;

use crate::util::de_duration;

/// Configuration of [`super::S3ArchiveSink`]. `Debug` leaves the secret key out.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ArchiveConfig {
    /// S3 endpoint URL, e.g. `http://127.0.0.1:9000` for a local server. Default: none, the
    /// AWS endpoint of `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Bucket name; it must exist. Required.
    pub bucket: String,
    /// Region. Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id. Default: env `SLUICE_S3_ACCESS_KEY_ID`, else `AWS_ACCESS_KEY_ID`,
    /// else the AWS credential chain. Keep secrets out of topology files: use the env.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key. Default: env `SLUICE_S3_SECRET_ACCESS_KEY`, else `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Key prefix of the archive. Default `telemetry`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// [`super::ArchiveBatch`]es should be cut at about this many rows; each object holds at
    /// most one batch's rows of one hour. Default 100000.
    #[serde(default = "default_target_rows")]
    pub target_rows_per_file: usize,
    /// Allow a plain `http://` endpoint (local servers only). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// PEM file of an extra certificate authority to trust for an https endpoint (a private
    /// S3 server). Default: the system's roots only.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// Timeout of one S3 request (`"30s"`). Default 30s.
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// First delay after a failed request. Default 100ms.
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    /// Longest delay between attempts; the delay doubles up to it. Default 30s.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
}

impl std::fmt::Debug for S3ArchiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ArchiveConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

fn default_region() -> String {
    // The region S3-compatible servers (MinIO, moto) accept when they do not care.
    "us-east-1".into()
}
fn default_prefix() -> String {
    "telemetry".into()
}
fn default_target_rows() -> usize {
    100_000
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

impl S3ArchiveConfig {
    /// A config with every default for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            endpoint: None,
            bucket: bucket.into(),
            region: default_region(),
            access_key_id: None,
            secret_access_key: None,
            prefix: default_prefix(),
            target_rows_per_file: default_target_rows(),
            allow_http: false,
            ca: None,
            request_timeout: default_request_timeout(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
        }
    }

    /// Checks the config without touching the network; returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.bucket.is_empty() {
            problems.push("bucket: required".into());
        }
        if let Some(ep) = &self.endpoint {
            if ep.starts_with("http://") && !self.allow_http {
                problems.push(format!(
                    "endpoint: `{ep}` is plain http; set allow_http: true for a local server"
                ));
            } else if !ep.starts_with("http://") && !ep.starts_with("https://") {
                problems.push(format!(
                    "endpoint: `{ep}` must start with http:// or https://"
                ));
            }
        }
        if self.prefix.contains("..") || self.prefix.contains("//") {
            problems.push(format!(
                "prefix: `{}` must be a plain path like `telemetry`",
                self.prefix
            ));
        }
        if self.target_rows_per_file == 0 {
            problems.push("target_rows_per_file: must be at least 1".into());
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max {
            problems.push("retry_initial: must be above 0 and at most retry_max".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Builds the client (no I/O but reading `ca`). Retries are ours (see the sink), so the
    /// client's are off.
    pub fn build_store(&self) -> object_store::Result<Arc<dyn ObjectStore>> {
        let mut client = ClientOptions::new()
            .with_allow_http(self.allow_http)
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.request_timeout.min(Duration::from_secs(5)));
        if let Some(ca) = &self.ca {
            let generic =
                |source: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
                    store: "S3",
                    source,
                };
            let pem = std::fs::read(ca).map_err(|e| {
                generic(format!("cannot read the S3 CA file {}: {e}", ca.display()).into())
            })?;
            client = client.with_root_certificate(Certificate::from_pem(&pem)?);
        }
        let env = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).ok();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_allow_http(self.allow_http)
            // Path-style (`endpoint/bucket/key`): what local S3 servers answer to.
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .with_client_options(client);
        if let Some(ep) = &self.endpoint {
            builder = builder.with_endpoint(ep);
        }
        let key = self
            .access_key_id
            .clone()
            .or_else(|| env("SLUICE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"));
        let secret = self
            .secret_access_key
            .clone()
            .or_else(|| env("SLUICE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"));
        if let (Some(key), Some(secret)) = (key, secret) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        Ok(Arc::new(builder.build()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_problems_are_listed() {
        let c: S3ArchiveConfig =
            serde_json::from_str(r#"{"bucket":"b","endpoint":"http://127.0.0.1:1"}"#).unwrap();
        assert_eq!(c.prefix, "telemetry");
        assert_eq!(c.region, "us-east-1");
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("allow_http"), "{problems:?}");
        assert!(
            serde_json::from_str::<S3ArchiveConfig>(r#"{"bucket":"b","bucket_name":"c"}"#).is_err()
        );
    }
}
