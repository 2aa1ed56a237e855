//! TLS and SASL settings of every Kafka client sluice builds, and a connection check that
//! turns librdkafka's endless reconnect loop on a bad password or certificate into one
//! error naming the connection.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::client::{ClientOptions, KafkaError};

/// How a client reaches the brokers: librdkafka's `security.protocol`, the CA that signs the
/// brokers' certificates, and SASL credentials. `Debug` leaves the password out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`; empty means plaintext.
    pub protocol: String,
    /// `ssl.ca.location`: a PEM file; `None` uses the system's roots.
    pub ca: Option<PathBuf>,
    pub sasl: Option<SaslCredentials>,
}

/// A SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`) with its user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol())
            .field("ca", &self.ca)
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl KafkaSecurity {
    /// The protocol librdkafka is given.
    pub fn protocol(&self) -> &str {
        if self.protocol.is_empty() {
            "plaintext"
        } else {
            &self.protocol
        }
    }

    /// Adds the settings to a client's configuration.
    pub fn apply(&self, c: &mut ClientConfig) {
        if self.protocol.is_empty() && self.ca.is_none() && self.sasl.is_none() {
            return;
        }
        c.set("security.protocol", self.protocol());
        if let Some(ca) = &self.ca {
            c.set("ssl.ca.location", ca.to_string_lossy());
        }
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanisms", &s.mechanism)
                .set("sasl.username", &s.username)
                .set("sasl.password", &s.password);
        }
    }

    /// The connection as errors name it: protocol, mechanism and user, never the password.
    pub fn describe(&self, brokers: &str) -> String {
        let mut s = format!("broker {brokers} ({}", self.protocol());
        if let Some(sasl) = &self.sasl {
            s.push_str(&format!(", {} as user `{}`", sasl.mechanism, sasl.username));
        }
        if let Some(ca) = &self.ca {
            s.push_str(&format!(", CA {}", ca.display()));
        }
        s.push(')');
        s
    }
}

/// What a librdkafka error says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The broker refused the credentials.
    Authentication,
    /// The TLS handshake failed (librdkafka reports most of these as transport errors, with
    /// OpenSSL's reason: `SSL routines::certificate verify failed`).
    Tls,
    /// Anything else: refused connections, timeouts; may pass when the broker comes up.
    Other,
}

fn classify(code: RDKafkaErrorCode, reason: &str) -> Failure {
    match code {
        RDKafkaErrorCode::Authentication => Failure::Authentication,
        RDKafkaErrorCode::SSL => Failure::Tls,
        _ if reason.contains("SSL") || reason.contains("certificate") => Failure::Tls,
        _ => Failure::Other,
    }
}

/// Keeps the first authentication or TLS failure librdkafka reported outside a request
/// (they arrive this way, with librdkafka's reason), else the last other error.
#[derive(Clone, Default)]
struct CheckContext {
    seen: Arc<Mutex<Option<(Failure, String)>>>,
}

impl ClientContext for CheckContext {
    fn error(&self, error: RdError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        let failure = classify(code, reason);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.as_ref().is_none_or(|(f, _)| *f == Failure::Other) {
            *seen = Some((failure, reason.to_string()));
        }
    }

    /// Not passed on: librdkafka retries every few milliseconds and logs each failure; the
    /// one error [`check_connection`] returns says it once. A failed TLS handshake is kept
    /// from here: librdkafka 2.12 logs it (`SSL handshake failed: ... certificate verify
    /// failed`) without always raising an error event for it.
    fn log(&self, level: RDKafkaLogLevel, _: &str, line: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Error as i32)
            && classify(RDKafkaErrorCode::BrokerTransportFailure, line) == Failure::Tls
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.as_ref().is_none_or(|(f, _)| *f == Failure::Other) {
                *seen = Some((Failure::Tls, line.to_string()));
            }
        }
    }
}

impl ProducerContext for CheckContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Connects to the brokers as `opts` says and asks for metadata, within `timeout`. A wrong
/// password, an untrusted certificate or an unreachable broker gives one error naming the
/// connection (address, protocol, mechanism, user) and librdkafka's reason; authentication
/// and TLS failures end the wait as soon as librdkafka reports them.
pub fn check_connection(opts: &ClientOptions, timeout: Duration) -> Result<(), KafkaError> {
    let context = CheckContext::default();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.brokers)
        .set("reconnect.backoff.ms", "200");
    opts.security.apply(&mut c);
    // A producer: its poll hands librdkafka's error events, with their reason text, to the
    // context (a consumer's poll returns only the code).
    let client: BaseProducer<CheckContext> = c.create_with_context(context.clone())?;
    let connection = opts.security.describe(&opts.brokers);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = client.client().fetch_metadata(None, left.min(STEP));
        client.poll(Duration::ZERO);
        let seen = context
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (attempt, seen) {
            (Ok(_), _) => return Ok(()),
            (Err(_), Some((Failure::Authentication, reason))) => {
                return Err(KafkaError::Authentication { connection, reason })
            }
            (Err(_), Some((Failure::Tls, reason))) => {
                return Err(KafkaError::Tls { connection, reason })
            }
            (Err(e), seen) if Instant::now() >= deadline => {
                return Err(KafkaError::Connect {
                    connection,
                    reason: seen.map_or_else(|| e.to_string(), |(_, r)| r),
                })
            }
            _ => {}
        }
    }
}

/// How often [`check_connection`] looks at what librdkafka reported.
const STEP: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    fn scram() -> KafkaSecurity {
        KafkaSecurity {
            protocol: "sasl_ssl".into(),
            ca: Some("/etc/sluice/ca.pem".into()),
            sasl: Some(SaslCredentials {
                mechanism: "SCRAM-SHA-512".into(),
                username: "sluice".into(),
                password: "not-in-logs".into(),
            }),
        }
    }

    #[test]
    fn settings_reach_librdkafka_and_the_password_stays_out_of_debug() {
        let s = scram();
        let mut c = ClientConfig::new();
        s.apply(&mut c);
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/sluice/ca.pem"));
        assert_eq!(c.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("sluice"));
        assert_eq!(c.get("sasl.password"), Some("not-in-logs"));
        let mut opts = ClientOptions::new("b:9093");
        opts.security = s.clone();
        for text in [format!("{s:?}"), format!("{opts:?}"), s.describe("b:9093")] {
            assert!(!text.contains("not-in-logs"), "{text}");
        }
        assert_eq!(
            s.describe("b:9093"),
            "broker b:9093 (sasl_ssl, SCRAM-SHA-512 as user `sluice`, CA /etc/sluice/ca.pem)"
        );
    }

    /// PLAIN is not proven against the local broker (Nisshi has no PLAIN: BROKER_GAPS.md),
    /// so this is what sluice stands behind: the settings librdkafka documents for it.
    #[test]
    fn plain_is_configured_as_librdkafka_documents() {
        let mut s = scram();
        s.sasl.as_mut().unwrap().mechanism = "PLAIN".into();
        // librdkafka reads the CA file when the client is created; the system's roots do.
        s.ca = None;
        let mut opts = ClientOptions::new("b:9093");
        opts.security = s;
        for c in [
            super::super::producer_config(&opts),
            super::super::consumer_config(&opts, "g"),
        ] {
            assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
            assert_eq!(c.get("sasl.mechanisms"), Some("PLAIN"));
            assert_eq!(c.get("sasl.username"), Some("sluice"));
            assert_eq!(c.get("sasl.password"), Some("not-in-logs"));
        }
        // librdkafka itself accepts the configuration (it refuses unknown mechanisms here).
        let p: Result<rdkafka::producer::BaseProducer, _> =
            super::super::producer_config(&opts).create();
        assert!(p.is_ok(), "{:?}", p.err());
    }

    #[test]
    fn tls_failures_are_told_from_other_transport_errors() {
        let ssl = "sasl_ssl://127.0.0.1:1/bootstrap: error:0A000086:SSL routines::certificate verify failed (after 0ms in state SSL_HANDSHAKE)";
        assert_eq!(
            classify(RDKafkaErrorCode::BrokerTransportFailure, ssl),
            Failure::Tls
        );
        let refused =
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused";
        assert_eq!(
            classify(RDKafkaErrorCode::BrokerTransportFailure, refused),
            Failure::Other
        );
        assert_eq!(
            classify(RDKafkaErrorCode::Authentication, "invalid-proof"),
            Failure::Authentication
        );
    }

    /// Nothing listens on the port: not a hang, an error naming the connection in time.
    #[test]
    fn an_unreachable_broker_is_an_error_within_the_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = ClientOptions::new(format!("127.0.0.1:{port}"));
        let started = Instant::now();
        let err = check_connection(&opts, Duration::from_secs(2)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let msg = err.to_string();
        assert!(matches!(err, KafkaError::Connect { .. }), "{msg}");
        assert!(
            msg.contains(&format!("127.0.0.1:{port} (plaintext)")),
            "{msg}"
        );
    }

    #[test]
    fn plaintext_adds_nothing() {
        let mut c = ClientConfig::new();
        KafkaSecurity::default().apply(&mut c);
        assert_eq!(c.get("security.protocol"), None);
    }
}
