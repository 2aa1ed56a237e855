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
}

impl ClientError {
    /// The Confluent error code, if the registry sent one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            ClientError::Http(_) => None,
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
    by_id: Arc<Mutex<HashMap<u32, Arc<str>>>>,
}

impl RegistryClient {
    /// A client for the registry at `url`, e.g. `http://127.0.0.1:8081`.
    pub fn new(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            by_id: Arc::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .send()
            .await?;
        let status = resp.status();
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
