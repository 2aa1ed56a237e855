//! The HTTP bridge: devices `POST /v1/telemetry` with a bearer token of their own; the body
//! (JSON readings, or Confluent-framed Avro records back to back) is mapped to the output
//! topic's schema and produced, and the request is answered `202` only once the Kafka broker
//! acknowledged every record of it. Everything else is refused with a status and a reason
//! and nothing of it is produced; the device keeps it (docs/INGEST.md has the table).

pub mod tokens;

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sluice_topology::ingest::{HttpIngestSpec, PayloadFormat};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls::ServerConfig;

use super::payload::{MapError, Mapper, DEVICE_MISMATCH, OVERSIZE};
use super::{BridgeReport, IngestError};
use crate::metrics::METRICS;
pub use tokens::{TokenSource, Tokens};

/// The one endpoint.
pub const PATH: &str = "/v1/telemetry";

/// A request refused before its body was read still has its body read, up to this much
/// beyond `max_body` and for at most [`DRAIN_TIMEOUT`], so the connection stays usable: a
/// server that answers and closes with the body unread makes the kernel reset the
/// connection, and the client may lose the answer (or reuse the dead connection for its
/// next request). Past either bound the answer says `Connection: close`.
const DRAIN_SLACK: usize = 1 << 20;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the token topic may take to be read to its end before the bridge gives up.
const TOKEN_LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// A bridge ready to run.
pub struct HttpBridge {
    pub name: String,
    pub spec: HttpIngestSpec,
    /// HTTPS when set.
    pub tls: Option<Arc<ServerConfig>>,
    pub tokens: TokenSource,
    pub mapper: Mapper,
    /// Kafka's from `sluice_connectors::kafka::producer_config` (acks=all, idempotent), and
    /// Fluvio's when the output topic lives there.
    pub writer: super::Writer,
    /// Set while the bridge listens with its tokens loaded (readiness).
    pub connected: Arc<AtomicBool>,
}

/// The server's certificate and key (PEM) as a TLS configuration. Errors name the file.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate {}: no certificate in it",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("private key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            format!(
                "certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What every request of a bridge shares.
struct Shared {
    name: String,
    spec: HttpIngestSpec,
    tokens: Arc<Tokens>,
    /// Mapping is microseconds per record; one request maps at a time (the decoder cache).
    mapper: tokio::sync::Mutex<Mapper>,
    writer: super::Writer,
    /// One permit per record accepted and not yet acknowledged by the Kafka broker.
    pending: Arc<Semaphore>,
    received: AtomicU64,
    produced: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// Why a request was not accepted: its status, a stable code and a reason for people.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    reason: String,
    retry_after: Option<u32>,
    /// Part of the body was left unread: the connection cannot carry another request.
    close: bool,
}

fn refuse(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        reason: reason.into(),
        retry_after: None,
        close: false,
    }
}

impl HttpBridge {
    /// Loads the tokens, listens, and serves until `stop` turns true: then stops accepting
    /// connections, lets every request in flight finish (each waits for its records'
    /// acknowledgements and is answered), and returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<BridgeReport, IngestError> {
        let name = self.name.clone();
        let setup = |reason: String| IngestError::Setup {
            bridge: name.clone(),
            reason,
        };
        let tokens = Arc::new(Tokens::default());
        let tokens_stop = Arc::new(AtomicBool::new(false));
        match tokio::time::timeout(
            TOKEN_LOAD_TIMEOUT,
            self.tokens
                .start(&name, tokens.clone(), tokens_stop.clone()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(setup(format!("tokens: {e}"))),
            Err(_) => {
                tokens_stop.store(true, Ordering::Relaxed);
                return Err(setup(format!(
                    "tokens: the token topic was not read to its end within {}s; is the broker reachable?",
                    TOKEN_LOAD_TIMEOUT.as_secs()
                )));
            }
        }
        let listener = tokio::net::TcpListener::bind(self.spec.listen)
            .await
            .map_err(|e| setup(format!("cannot listen on {}: {e}", self.spec.listen)))?;
        let shared = Arc::new(Shared {
            name: name.clone(),
            pending: Arc::new(Semaphore::new(self.spec.max_pending)),
            spec: self.spec,
            tokens,
            mapper: tokio::sync::Mutex::new(self.mapper),
            writer: self.writer,
            received: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        self.connected.store(true, Ordering::Relaxed);
        tracing::info!(bridge = %name, listen = %shared.spec.listen, tls = self.tls.is_some(), tokens = shared.tokens.len(), "Accepting telemetry.");
        let acceptor = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let (conn_stop_tx, conn_stop) = watch::channel(false);
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, do not spin.
                            tracing::warn!(bridge = %name, error = %e, "Accepting a connection failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let (shared, stop, acceptor) = (shared.clone(), conn_stop.clone(), acceptor.clone());
                    conns.spawn(async move {
                        match acceptor {
                            None => serve_connection(tcp, shared, stop).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                                    Ok(Ok(tls)) => serve_connection(tls, shared, stop).await,
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed."),
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                                }
                            }
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        self.connected.store(false, Ordering::Relaxed);
        drop(listener);
        tracing::info!(bridge = %name, connections = conns.len(), "Stopping: no new connections; answering the requests in flight.");
        let _ = conn_stop_tx.send(true);
        while conns.join_next().await.is_some() {}
        tokens_stop.store(true, Ordering::Relaxed);
        Ok(BridgeReport {
            received: shared.received.load(Ordering::Relaxed),
            produced: shared.produced.load(Ordering::Relaxed),
            dead_letters: 0,
            acked: shared.accepted.load(Ordering::Relaxed),
            refused: shared.refused.load(Ordering::Relaxed),
        })
    }
}

/// HTTP/1.1 on one connection until the client closes it or the bridge stops (then the
/// request in flight is answered and the connection closed).
async fn serve_connection<I>(io: I, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error.");
            }
        }
        // A receiver cloned before or after the send sees it: its last seen version is the
        // original's, which never looks.
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(s: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let outcome = if parts.uri.path() != PATH {
        Err(refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the endpoint is POST {PATH}"),
        ))
    } else if parts.method != Method::POST {
        Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use POST {PATH}"),
        ))
    } else {
        s.received.fetch_add(1, Ordering::Relaxed);
        METRICS.ingest_received.with_label_values(&[&s.name]).inc();
        telemetry(s, &parts, &mut body).await
    };
    let mut keep_alive = match body.take() {
        Some(unread) => drain(unread, s.spec.max_body + DRAIN_SLACK).await,
        None => true,
    };
    let (status, body, retry_after, allow) = match outcome {
        Ok(n) => {
            s.accepted.fetch_add(1, Ordering::Relaxed);
            METRICS.ingest_acked.with_label_values(&[&s.name]).inc();
            METRICS
                .ingest_ack_seconds
                .with_label_values(&[&s.name])
                .observe(started.elapsed().as_secs_f64());
            (
                StatusCode::ACCEPTED,
                serde_json::json!({ "accepted": n }),
                None,
                false,
            )
        }
        Err(r) => {
            keep_alive &= !r.close;
            s.refused.fetch_add(1, Ordering::Relaxed);
            METRICS
                .ingest_refused
                .with_label_values(&[&s.name, r.error])
                .inc();
            tracing::debug!(bridge = %s.name, status = r.status.as_u16(), error = r.error, reason = %r.reason, "Request refused.");
            (
                r.status,
                serde_json::json!({ "error": r.error, "reason": r.reason }),
                r.retry_after,
                r.status == StatusCode::METHOD_NOT_ALLOWED,
            )
        }
    };
    METRICS
        .ingest_http_responses
        .with_label_values(&[&s.name, status.as_str()])
        .inc();
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = retry_after {
        h.insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if allow {
        h.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    if !keep_alive {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sluice\""),
        );
    }
    resp
}

/// Reads and discards a body nobody needs, so the connection can carry the next request:
/// whether it was read to its end within `limit` bytes and [`DRAIN_TIMEOUT`].
async fn drain(body: Incoming, limit: usize) -> bool {
    matches!(
        tokio::time::timeout(DRAIN_TIMEOUT, Limited::new(body, limit).collect()).await,
        Ok(Ok(_))
    )
}

/// The body's format from its `Content-Type` (JSON when there is none).
fn format_of(req: &Parts) -> Result<PayloadFormat, Refusal> {
    let Some(ct) = req.headers.get(CONTENT_TYPE) else {
        return Ok(PayloadFormat::Json);
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(PayloadFormat::Json),
        "application/vnd.confluent.avro" | "avro/binary" | "application/avro" => {
            Ok(PayloadFormat::Avro)
        }
        other => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type `{other}`: send application/json (a reading or an array of them) or application/vnd.confluent.avro (framed records back to back)"),
        )),
    }
}

/// Authenticates, reads, maps, admits, produces and waits for the broker: the number of
/// records stored, or why the request was refused.
///
/// The body is taken out of `body` only when it is read; a refusal made before leaves it
/// there for the caller to drain.
async fn telemetry(s: &Shared, req: &Parts, body: &mut Option<Incoming>) -> Result<usize, Refusal> {
    let token = req
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send the device's token as `Authorization: Bearer <token>`",
            )
        })?;
    let device = s.tokens.device_of(token).ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token is not known (or was revoked)",
        )
    })?;
    let format = format_of(req)?;
    let max = s.spec.max_body;
    let too_large = |n: String| {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body of {n} bytes is over max_body ({max} bytes)"),
        )
    };
    if let Some(n) = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n > max as u64 {
            return Err(too_large(n.to_string()));
        }
    }
    let Some(unread) = body.take() else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the body was already read",
        ));
    };
    let body = match Limited::new(unread, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal {
                close: true,
                ..too_large("more than max_body".into())
            })
        }
        Err(e) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("the body could not be read: {e}"),
            ))
        }
    };
    let records = {
        let mut mapper = s.mapper.lock().await;
        mapper.map_as(format, &device, &body).await
    };
    let records = match records {
        Ok(r) => r,
        Err(MapError::Rejected(r)) if r.class == DEVICE_MISMATCH => {
            return Err(refuse(StatusCode::FORBIDDEN, DEVICE_MISMATCH, r.message))
        }
        Err(MapError::Rejected(r)) if r.class == OVERSIZE => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                r.message,
            ))
        }
        Err(MapError::Rejected(r)) => {
            return Err(refuse(StatusCode::BAD_REQUEST, r.class, r.message))
        }
        Err(MapError::Registry(e)) => {
            return Err(Refusal {
                retry_after: Some(5),
                ..refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "registry_unavailable",
                    format!("the schema registry could not be reached ({e}); resend later"),
                )
            })
        }
    };
    let n = records.len();
    if n > s.spec.max_records {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!(
                "{n} records is over max_records ({}); split the request",
                s.spec.max_records
            ),
        ));
    }
    // Backpressure: the whole request fits among the records in flight, or nothing of it
    // is produced.
    let Ok(permits) = s.pending.clone().try_acquire_many_owned(n as u32) else {
        return Err(Refusal {
            retry_after: Some(1),
            ..refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!(
                    "{} records are waiting for the Kafka broker (max_pending); resend after a second",
                    s.spec.max_pending - s.pending.available_permits()
                ),
            )
        });
    };
    let pending_g = METRICS.ingest_acks_pending.with_label_values(&[&s.name]);
    pending_g.add(n as i64);
    let sent = Instant::now();
    let result = produce(s, &device, &records).await;
    pending_g.sub(n as i64);
    drop(permits);
    result?;
    METRICS
        .ingest_produce_seconds
        .with_label_values(&[&s.name])
        .observe(sent.elapsed().as_secs_f64());
    METRICS
        .ingest_produced
        .with_label_values(&[&s.name])
        .inc_by(n as u64);
    s.produced.fetch_add(n as u64, Ordering::Relaxed);
    Ok(n)
}

/// Sends every record (keyed by the device) and waits for every acknowledgement.
async fn produce(s: &Shared, device: &str, records: &[Vec<u8>]) -> Result<(), Refusal> {
    let not_stored = |i: usize, e: String| {
        Refusal {
        retry_after: Some(1),
        ..refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!(
                "record {i} of {} was not stored by the broker ({e}); resend the request (records of it already stored come again and are dropped downstream as repeats by (device, seq))",
                records.len()
            ),
        )
    }
    };
    let mut futures = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        // Admitted by max_pending: a full librdkafka queue is waited out.
        let ack = s
            .writer
            .send(&s.spec.output, Some(device.as_bytes()), &r[..], None, true)
            .await
            .map_err(|e| not_stored(i, e))?;
        futures.push(ack);
    }
    for (i, r) in futures::future::join_all(futures)
        .await
        .into_iter()
        .enumerate()
    {
        r.map_err(|e| not_stored(i, e))?;
    }
    Ok(())
}
