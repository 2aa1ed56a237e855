//! The QuestDB sink's configuration: where to write, table names, batching and retry.

use std::time::Duration;

use questdb::ingress::{ProtocolVersion, SenderBuilder, TableName};
use serde::Deserialize;

use crate::util::{de_bytes, de_duration};

/// Configuration of [`super::QuestDbSink`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestDbConfig {
    /// questdb-rs configuration string, e.g. `http::addr=127.0.0.1:9000;protocol_version=2;`
    /// or `tcp::addr=127.0.0.1:9009;`. Required. Prefer `http::`: an HTTP flush returns only
    /// after the server accepted the rows, while a TCP flush returns once the bytes are in the
    /// local socket, so rows can be lost if the server dies right after. `http::` needs an
    /// explicit `protocol_version` (1 for VictoriaMetrics and old QuestDB, 2 for QuestDB 8.3+).
    pub addr: String,
    /// Table for closed windows. Default `aggregates`.
    #[serde(default = "default_aggregates_table")]
    pub aggregates_table: String,
    /// Table for anomalies. Default `anomalies`.
    #[serde(default = "default_anomalies_table")]
    pub anomalies_table: String,
    /// [`super::QuestDbSink::should_flush`] turns true at this many buffered rows.
    /// Default 10000.
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// ... or at this many buffered bytes (`"4MiB"` or a number). Default 4MiB.
    #[serde(default = "default_flush_bytes", deserialize_with = "de_bytes")]
    pub flush_bytes: u64,
    /// First delay after a failed flush (`"100ms"`). Default 100ms.
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    /// Longest delay between flush attempts; the delay doubles up to it. Default 30s.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
}

fn default_aggregates_table() -> String {
    "aggregates".into()
}
fn default_anomalies_table() -> String {
    "anomalies".into()
}
fn default_flush_rows() -> usize {
    10_000
}
fn default_flush_bytes() -> u64 {
    4 << 20
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

impl QuestDbConfig {
    /// A config with every default and the given questdb-rs configuration string.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            aggregates_table: default_aggregates_table(),
            anomalies_table: default_anomalies_table(),
            flush_rows: default_flush_rows(),
            flush_bytes: default_flush_bytes(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
        }
    }

    /// Checks the config without touching the network; returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Err(e) = SenderBuilder::from_conf(&self.addr) {
            problems.push(format!(
                "addr: {e}; write it like `http::addr=HOST:PORT;protocol_version=2;`"
            ));
        } else if let Err(e) = self.protocol_version() {
            problems.push(format!("addr: {e}"));
        }
        for (key, name) in [
            ("aggregates_table", &self.aggregates_table),
            ("anomalies_table", &self.anomalies_table),
        ] {
            if let Err(e) = TableName::new(name) {
                problems.push(format!("{key}: {e}"));
            }
        }
        if self.flush_rows == 0 {
            problems.push("flush_rows: must be at least 1".into());
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

    /// QuestDB's HTTP base URL (`http://host:port`, where it serves `/exec` as well as ILP)
    /// when `addr` is an `http::` or `https::` string; `None` for TCP, whose port is not the
    /// HTTP one.
    pub fn http_url(&self) -> Option<String> {
        let scheme = self.addr.split_once("::")?.0;
        let addr = conf_value(&self.addr, "addr")?;
        matches!(scheme, "http" | "https").then(|| format!("{scheme}://{addr}"))
    }

    /// The address part of `addr`, for logs.
    pub fn display_addr(&self) -> &str {
        conf_value(&self.addr, "addr").unwrap_or(&self.addr)
    }

    /// The ILP version the buffer must be encoded in. The sink connects lazily (so it can
    /// start while the server is down), hence it cannot ask the server; TCP speaks v1 unless
    /// told otherwise, HTTP must say it.
    pub(crate) fn protocol_version(&self) -> Result<ProtocolVersion, String> {
        let scheme = self.addr.split("::").next().unwrap_or_default();
        match (scheme, conf_value(&self.addr, "protocol_version")) {
            (_, Some("1")) => Ok(ProtocolVersion::V1),
            (_, Some("2")) => Ok(ProtocolVersion::V2),
            (_, Some("3")) => Ok(ProtocolVersion::V3),
            ("tcp" | "tcps", None) => Ok(ProtocolVersion::V1),
            ("http" | "https", None | Some("auto")) => Err(
                "set `protocol_version=1;` (VictoriaMetrics, QuestDB before 8.3) or `protocol_version=2;` (QuestDB 8.3+)"
                    .into(),
            ),
            (_, Some(other)) => Err(format!("protocol_version `{other}` is not 1, 2 or 3")),
            (other, None) => Err(format!("scheme `{other}` is not http, https, tcp or tcps")),
        }
    }
}

/// The value of `key` in a `scheme::k=v;k=v;` string.
fn conf_value<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    let params = conf.split_once("::")?.1;
    params.split(';').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let c: QuestDbConfig =
            serde_json::from_str(r#"{"addr":"tcp::addr=127.0.0.1:9009;","retry_max":"5s"}"#)
                .unwrap();
        assert_eq!(c.aggregates_table, "aggregates");
        assert_eq!(c.retry_max, Duration::from_secs(5));
        assert_eq!(c.flush_bytes, 4 << 20);
        assert!(c.validate().is_ok());
        assert_eq!(c.display_addr(), "127.0.0.1:9009");
        assert_eq!(c.http_url(), None, "a TCP address is not the HTTP port");
        let c = QuestDbConfig::new("https::addr=db.example:9000;protocol_version=2;");
        assert_eq!(c.http_url().as_deref(), Some("https://db.example:9000"));
        let err = serde_json::from_str::<QuestDbConfig>(r#"{"addr":"x","tabel":"y"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut c = QuestDbConfig::new("http::addr=127.0.0.1:9000;");
        c.anomalies_table = String::new();
        c.flush_rows = 0;
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("protocol_version"), "{problems:?}");
    }
}
