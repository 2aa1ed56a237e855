//! A small client for the Confluent Schema Registry REST API (ours or Confluent's/Redpanda's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::json;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with a Confluent error (user's request or registry state).
    #[error("registry error {code} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: u32,
        message: String,
    },
    /// The registry could not be reached or answered garbage (external; retrying may help).
    #[error("registry request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The registry refused the credentials (the user's config; retrying does not help).
    #[error("schema registry at {url} refused the credentials (HTTP {status}{user}): check connections.registry.basic_auth and its password source")]
    Unauthorized {
        url: String,
        status: u16,
        /// `, user NAME` when basic auth was sent.
        user: String,
    },
    /// The client could not be built: an unreadable or invalid CA file (user's config).
    #[error("schema registry client for {url}: {message}")]
    Config { url: String, message: String },
}

/// TLS and credentials of a registry client. `Debug` leaves the password out.
#[derive(Clone, Default)]
pub struct RegistryAuth {
    /// PEM file of an extra certificate authority to trust (a private registry's).
    pub ca: Option<std::path::PathBuf>,
    /// HTTP basic authentication: user and password.
    pub basic: Option<(String, String)>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("ca", &self.ca)
            .field("user", &self.basic.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl ClientError {
    /// The Confluent error code, if the registry sent one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            ClientError::Unauthorized { status, .. } => Some(u32::from(*status)),
            ClientError::Http(_) | ClientError::Config { .. } => None,
        }
    }
}

/// A subject version as the registry returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: u32,
    pub schema: String,
}

/// The answer to a compatibility check.
#[derive(Debug, Clone, PartialEq)]
pub struct Compatibility {
    pub is_compatible: bool,
    /// Why not, one message per problem (empty when compatible).
    pub messages: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

/// A registry client with a cache of schemas by id (ids never change meaning).
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    basic: Option<(String, String)>,
    by_id: Arc<Mutex<HashMap<u32, Arc<str>>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("user", &self.basic.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl RegistryClient {
    /// A client for the registry at `url`, e.g. `http://127.0.0.1:8081`.
    pub fn new(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            basic: None,
            by_id: Arc::default(),
        }
    }

    /// A client for the registry at `url` that trusts `auth.ca` besides the system's roots
    /// and sends `auth.basic` with every request.
    pub fn with_auth(url: &str, auth: RegistryAuth) -> Result<Self, ClientError> {
        let config = |message: String| ClientError::Config {
            url: url.to_string(),
            message,
        };
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &auth.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| config(format!("cannot read CA file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| config(format!("CA file {} is not PEM: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| config(e.to_string()))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http,
            basic: auth.basic,
            by_id: Arc::default(),
        })
    }

    /// The registry's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let mut req = req.header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ClientError::Unauthorized {
                url: self.base.clone(),
                status: status.as_u16(),
                user: self
                    .basic
                    .as_ref()
                    .map(|(u, _)| format!(", user {u}"))
                    .unwrap_or_default(),
            });
        }
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Api {
                status: status.as_u16(),
                code: 0,
                message: format!("unreadable response: {e}"),
            });
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ClientError::Api {
                status: status.as_u16(),
                code: e.error_code,
                message: e.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: u32::from(status.as_u16()),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            },
        })
    }

    fn subject_path(subject: &str) -> String {
        // Subjects may hold characters that are special in a URL path.
        let mut out = String::new();
        for b in subject.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Registers an Avro schema under `subject` and returns its id.
    pub async fn register(&self, subject: &str, schema_json: &str) -> Result<u32, ClientError> {
        #[derive(Deserialize)]
        struct Id {
            id: u32,
        }
        let path = format!("/subjects/{}/versions", Self::subject_path(subject));
        let body = json!({ "schema": schema_json }).to_string();
        let id: Id = self
            .send(
                self.http
                    .post(self.url(&path))
                    .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                    .body(body),
            )
            .await?;
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.id)
            .or_insert_with(|| schema_json.into());
        Ok(id.id)
    }

    /// The schema registered under `id`, from the cache after the first call.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<str>, ClientError> {
        if let Some(s) = self
            .by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(s.clone());
        }
        #[derive(Deserialize)]
        struct Body {
            schema: String,
        }
        let b: Body = self
            .send(self.http.get(self.url(&format!("/schemas/ids/{id}"))))
            .await?;
        let s: Arc<str> = b.schema.into();
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, s.clone());
        Ok(s)
    }

    /// The latest live version of `subject`.
    pub async fn latest(&self, subject: &str) -> Result<SubjectVersion, ClientError> {
        let path = format!("/subjects/{}/versions/latest", Self::subject_path(subject));
        self.send(self.http.get(self.url(&path))).await
    }

    /// Whether `schema_json` may be registered under `subject` at its compatibility level,
    /// with the registry's reasons when not. A subject with no versions accepts anything.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema_json: &str,
    ) -> Result<Compatibility, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            is_compatible: bool,
            #[serde(default)]
            messages: Vec<String>,
        }
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            Self::subject_path(subject)
        );
        let body = json!({ "schema": schema_json }).to_string();
        let req = self
            .http
            .post(self.url(&path))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body);
        match self.send::<Body>(req).await {
            Ok(b) => Ok(Compatibility {
                is_compatible: b.is_compatible,
                messages: b.messages,
            }),
            Err(e) if e.code() == Some(40401) => Ok(Compatibility {
                is_compatible: true,
                messages: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }
}

/// Why [`decode_fetching`] failed: the record's fault (dead-letter it) or the registry's
/// (retry later; the record may be fine).
#[derive(Debug, thiserror::Error)]
pub enum FetchDecodeError {
    /// The record cannot be decoded; `class()` names why. An id the registry does not know
    /// is [`crate::codec::DecodeError::UnknownSchemaId`].
    #[error(transparent)]
    Record(#[from] crate::codec::DecodeError),
    /// The registry could not be asked (external; retrying may help).
    #[error(transparent)]
    Registry(ClientError),
}

/// Decodes a wire-format record, fetching its writer schema from the registry the first time
/// its id is seen (the client caches by id, the decoder keeps the compiled plan).
pub async fn decode_fetching<T: crate::codec::AvroRecord>(
    decoder: &mut crate::codec::Decoder<T>,
    client: &RegistryClient,
    bytes: &[u8],
    out: &mut T,
) -> Result<(), FetchDecodeError> {
    use crate::codec::DecodeError;
    match decoder.decode(bytes, out) {
        Err(DecodeError::UnknownSchemaId(id)) => {
            let writer = match client.schema_by_id(id).await {
                Ok(w) => w,
                Err(e) if e.code() == Some(40403) => {
                    return Err(DecodeError::UnknownSchemaId(id).into())
                }
                Err(e) => return Err(FetchDecodeError::Registry(e)),
            };
            // An incompatible writer is remembered by the decoder; the decode below reports it.
            let _ = decoder.add_writer_schema_json(id, &writer);
            Ok(decoder.decode(bytes, out)?)
        }
        other => Ok(other?),
    }
}
