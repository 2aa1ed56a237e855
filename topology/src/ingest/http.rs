//! `kind: http`: devices `POST /v1/telemetry` with a bearer token of their own; records are
//! mapped to a topic's Avro schema and produced, and the request is answered `202` only once
//! the Kafka broker acknowledged every record of it. Run by `sluice ingest`; docs/INGEST.md
//! has the status codes and the guarantees.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::mqtt::human_size;
use super::OutputSchema;

/// An HTTP ingest bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngestSpec {
    /// Always `http`.
    pub kind: String,
    /// Where the bridge listens, e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// HTTPS: the server's certificate chain and private key (PEM files, relative to the
    /// topology file). Without it the bridge speaks plain HTTP (behind a TLS-terminating
    /// load balancer only: bearer tokens travel in every request).
    #[serde(default)]
    pub tls: Option<HttpTls>,
    /// Where the devices' tokens are: `{ file: tokens.yaml }` (device id to the SHA-256 of
    /// its token, or a list of them; re-read when it changes) or `{ topic: name }` (a
    /// compacted topic keyed by device id; a value is the hashes separated by spaces or
    /// commas, a tombstone revokes). Tokens themselves are never stored.
    pub tokens: TokenStore,
    /// The field of the output record the token's device fills (a string field of the
    /// output schema). A record naming another device is refused (`403`). Default
    /// `device_id`.
    #[serde(default = "default_device_field")]
    pub device_field: String,
    /// The topic records are produced to, Confluent-framed with the id the registry has for
    /// the topic's `subject`. It must declare `subject` and `schema`.
    pub output: String,
    /// Largest request body; a larger one is answered `413`. At most `16MiB`. Default
    /// `1MiB`.
    #[serde(default = "default_max_body", deserialize_with = "human_size")]
    pub max_body: usize,
    /// Most records in one request; more is `413`. Default 10000.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Most records accepted and not yet acknowledged by the Kafka broker, over all
    /// requests; a request that does not fit is answered `429` with `Retry-After` and
    /// nothing of it is produced (backpressure). Default 50000.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where tokens are kept: `{ file: PATH }` or `{ topic: NAME }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStore {
    /// A YAML file: `device-id: <sha256 hex>` or `device-id: [<hex>, <hex>]` (rotation).
    File(PathBuf),
    /// A compacted topic keyed by device id.
    Topic(String),
}

impl<'de> Deserialize<'de> for TokenStore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            file: Option<PathBuf>,
            #[serde(default)]
            topic: Option<String>,
        }
        let r = Raw::deserialize(d)?;
        match (r.file, r.topic) {
            (Some(f), None) => Ok(TokenStore::File(f)),
            (None, Some(t)) => Ok(TokenStore::Topic(t)),
            _ => Err(serde::de::Error::custom(
                "give exactly one of `file` (a YAML file of token hashes) or `topic` (a compacted topic of them)",
            )),
        }
    }
}

/// The largest request body a bridge may accept.
pub const MAX_BODY_LIMIT: usize = 16 << 20;

impl HttpIngestSpec {
    pub(crate) fn check(
        &self,
        base: &str,
        output: Option<OutputSchema>,
        token_topic: Option<Option<&crate::model::TopicSpec>>,
        push: &mut impl FnMut(String, String, String),
    ) {
        if self.max_body == 0 || self.max_body > MAX_BODY_LIMIT {
            push(
                format!("{base}.max_body"),
                format!("max_body is {} bytes", self.max_body),
                "use between 1B and 16MiB, e.g. `1MiB`".into(),
            );
        }
        if self.max_records == 0 {
            push(
                format!("{base}.max_records"),
                "max_records is 0".into(),
                "use at least 1 (the default is 10000)".into(),
            );
        }
        if self.max_pending < self.max_records {
            push(
                format!("{base}.max_pending"),
                format!(
                    "max_pending ({}) is below max_records ({}): a full request could never be accepted",
                    self.max_pending, self.max_records
                ),
                "raise max_pending to at least max_records (the default is 50000)".into(),
            );
        }
        if let Some(Some(topic)) = token_topic {
            if topic.subject.is_some() {
                push(
                    format!("{base}.tokens.topic"),
                    "the token topic declares a `subject`, but its values are plain text".into(),
                    "remove `subject:` and `schema:` from the token topic".into(),
                );
            }
        }
        let Some(out) = output else { return }; // undeclared: reported by the caller
        super::check_output(
            base,
            &self.output,
            &self.device_field,
            "the token",
            out,
            push,
        );
    }
}

/// The SHA-256 of a token as the store writes it: 64 lowercase hex digits.
pub fn is_token_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn default_device_field() -> String {
    "device_id".into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_max_records() -> usize {
    10_000
}
fn default_max_pending() -> usize {
    50_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_are_sha256_hex() {
        assert!(is_token_hash(&"ab".repeat(32)));
        assert!(!is_token_hash("secret"));
        assert!(!is_token_hash(&"zz".repeat(32)));
    }
}
