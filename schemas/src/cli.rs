//! `sluice schemas push|check`: one `.avsc` file against one subject of a registry.

use std::path::{Path, PathBuf};

use apache_avro::Schema;

use crate::client::{ClientError, RegistryClient};

/// Why a push or check failed; every message names the file and the subject.
#[derive(Debug, thiserror::Error)]
pub enum SchemaFileError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a valid Avro schema: {reason}")]
    Invalid { file: PathBuf, reason: String },
    #[error("{file}: incompatible with subject {subject}:\n  {}", problems.join("\n  "))]
    Incompatible {
        file: PathBuf,
        subject: String,
        problems: Vec<String>,
    },
    #[error("{file}: registry call for subject {subject} failed: {source}")]
    Registry {
        file: PathBuf,
        subject: String,
        source: ClientError,
    },
}

fn load(file: &Path) -> Result<String, SchemaFileError> {
    let text = std::fs::read_to_string(file).map_err(|source| SchemaFileError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    Schema::parse_str(&text).map_err(|e| SchemaFileError::Invalid {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(text)
}

/// Registers `file` under `subject` and returns its id.
pub async fn push(registry_url: &str, subject: &str, file: &Path) -> Result<u32, SchemaFileError> {
    let text = load(file)?;
    let client = RegistryClient::new(registry_url);
    client
        .register(subject, &text)
        .await
        .map_err(|source| match source {
            ClientError::Api {
                code: 409, message, ..
            } => SchemaFileError::Incompatible {
                file: file.to_path_buf(),
                subject: subject.to_string(),
                problems: vec![message],
            },
            source => SchemaFileError::Registry {
                file: file.to_path_buf(),
                subject: subject.to_string(),
                source,
            },
        })
}

/// Checks whether `file` could be pushed to `subject` now: `Ok(())` if compatible, otherwise
/// [`SchemaFileError::Incompatible`] listing which fields fail and why.
pub async fn check(registry_url: &str, subject: &str, file: &Path) -> Result<(), SchemaFileError> {
    let text = load(file)?;
    let client = RegistryClient::new(registry_url);
    let c = client
        .check_compatibility(subject, &text)
        .await
        .map_err(|source| SchemaFileError::Registry {
            file: file.to_path_buf(),
            subject: subject.to_string(),
            source,
        })?;
    if c.is_compatible {
        Ok(())
    } else {
        Err(SchemaFileError::Incompatible {
            file: file.to_path_buf(),
            subject: subject.to_string(),
            problems: c.messages,
        })
    }
}
