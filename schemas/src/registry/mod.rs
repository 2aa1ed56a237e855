//! `sluice registry`: a schema registry speaking the Confluent Schema Registry REST API,
//! storing its schemas in a compacted `_schemas` topic as Confluent's registry does.
//!
//! Several instances may serve the same topic. None of them is a leader: each proposes a
//! write by appending it to the topic, and answers only after reading its own record back and
//! seeing it applied. Every instance applies the topic in the same order with the same rules
//! (see [`state`]), so the first proposal for an id or a version wins everywhere and a loser
//! retries with the next free number.

mod api;
mod log;
mod secure;
mod service;
pub(crate) mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tokio::sync::watch;

use self::service::Service;
use self::state::State;

/// Settings of one registry instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Address the REST API listens on, e.g. `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Kafka bootstrap servers holding the schemas topic.
    pub brokers: String,
    /// The compacted topic schemas are stored in. Default `_schemas`, as Confluent's.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Serve HTTPS with this PEM certificate chain and private key. Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Require HTTP basic authentication from the users of this file (`user:password` per
    /// line). Default: no authentication.
    #[serde(default)]
    pub basic_auth_file: Option<std::path::PathBuf>,
}

/// The server's certificate chain and key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Mirrors Confluent's `kafkastore.topic` default, so both registries can share a broker's data.
pub fn default_topic() -> String {
    "_schemas".to_string()
}

impl RegistryConfig {
    /// A config with the default topic.
    pub fn new(listen: SocketAddr, brokers: impl Into<String>) -> Self {
        Self {
            listen,
            brokers: brokers.into(),
            topic: default_topic(),
            tls: None,
            basic_auth_file: None,
        }
    }
}

/// Why the registry could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The broker refused or could not be reached (external; retrying may help).
    #[error("Kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The schemas topic could not be created or used.
    #[error("schemas topic: {0}")]
    Topic(String),
    /// The listen address could not be bound (user's config or another process).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TLS certificate or key, or the basic auth file, cannot be used (user's config).
    #[error("{0}")]
    Config(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
    /// The topic tailer stopped.
    #[error("schemas topic reader stopped: {0}")]
    Tail(String),
}

/// How long start-up may take to read the schemas topic to its end.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Aborts the topic tailer when the server future is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), RegistryError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A registry instance before it serves.
pub struct Registry;

impl Registry {
    /// Creates the topic if needed, reads it to its end (readiness), binds the listener, and
    /// returns the bound address with the future that serves until an error.
    pub async fn bind(
        cfg: RegistryConfig,
    ) -> Result<(SocketAddr, impl Future<Output = Result<(), RegistryError>>), RegistryError> {
        // Bad files are the user's mistake: say so before touching the broker.
        let acceptor = match &cfg.tls {
            Some(t) => Some(secure::acceptor(&t.cert, &t.key).map_err(RegistryError::Config)?),
            None => None,
        };
        let auth = match &cfg.basic_auth_file {
            Some(f) => Some(secure::BasicAuth::from_file(f).map_err(RegistryError::Config)?),
            None => None,
        };
        log::ensure_topic(&cfg.brokers, &cfg.topic).await?;
        let state = Arc::new(RwLock::new(State::default()));
        let (applied_tx, applied_rx) = watch::channel(0i64);
        let tailer = tokio::spawn(log::tail(
            cfg.brokers.clone(),
            cfg.topic.clone(),
            state.clone(),
            applied_tx,
        ));
        let guard = AbortOnDrop(tailer);
        let end = {
            let (brokers, topic) = (cfg.brokers.clone(), cfg.topic.clone());
            tokio::task::spawn_blocking(move || log::end_offset(&brokers, &topic))
                .await
                .map_err(|e| RegistryError::Tail(e.to_string()))??
        };
        let service = Arc::new(Service::new(
            state,
            applied_rx,
            log::LogWriter::new(&cfg.brokers, &cfg.topic)?,
        ));
        service
            .wait_applied_for(end - 1, READY_TIMEOUT)
            .await
            .map_err(|e| RegistryError::Tail(e.message))?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| RegistryError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(RegistryError::Serve)?;
        tracing::info!(
            addr = %addr,
            topic = %cfg.topic,
            schemas_end = end,
            https = acceptor.is_some(),
            basic_auth = auth.is_some(),
            "Schema registry ready."
        );
        let mut app = api::router(service);
        if let Some(auth) = auth {
            app = app.layer(axum::middleware::from_fn_with_state(auth, secure::require));
        }
        Ok((addr, async move {
            let _guard = guard;
            match acceptor {
                Some(acceptor) => {
                    let tls = secure::TlsListener {
                        tcp: listener,
                        acceptor,
                    };
                    axum::serve(tls, app).await.map_err(RegistryError::Serve)
                }
                None => axum::serve(listener, app)
                    .await
                    .map_err(RegistryError::Serve),
            }
        }))
    }
}

/// Runs a registry until it fails.
pub async fn run(cfg: RegistryConfig) -> Result<(), RegistryError> {
    let (_, serve) = Registry::bind(cfg).await?;
    serve.await
}
