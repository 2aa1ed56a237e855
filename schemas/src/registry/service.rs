//! The registry's operations: reads from the applied [`State`], writes as proposals to the log.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use apache_avro::Schema;
use tokio::sync::watch;

use super::api::ApiError;
use super::log::LogWriter;
use super::state::{normalize, ConfigValue, LogKey, SchemaValue, State, Version};
use crate::compat::{check_level, Level};

/// How long a write waits to read its own record back.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a register retries after losing a race to another instance.
const REGISTER_ATTEMPTS: usize = 8;

pub(crate) struct Service {
    state: Arc<RwLock<State>>,
    applied: watch::Receiver<i64>,
    writer: LogWriter,
}

/// A version reference in a request path: a number or `latest` (also `-1`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum VersionRef {
    Latest,
    Number(i32),
}

impl VersionRef {
    pub(crate) fn parse(s: &str) -> Result<Self, ApiError> {
        if s == "latest" || s == "-1" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(VersionRef::Number(n)),
            _ => Err(ApiError::invalid_version(s)),
        }
    }
}

/// One subject version as the API returns it.
pub(crate) struct Found {
    pub(crate) version: i32,
    pub(crate) id: u32,
    pub(crate) schema: String,
}

/// Parses schema text as Avro, mapping failure to Confluent's 42201.
pub(crate) fn parse_schema(text: &str) -> Result<Schema, ApiError> {
    Schema::parse_str(text)
        .map_err(|e| ApiError::invalid_schema(format!("Invalid schema {text}: {e}")))
}

impl Service {
    pub(crate) fn new(
        state: Arc<RwLock<State>>,
        applied: watch::Receiver<i64>,
        writer: LogWriter,
    ) -> Self {
        Self {
            state,
            applied,
            writer,
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the record at `offset` has been applied (a write reading itself back).
    pub(crate) async fn wait_applied(&self, offset: i64) -> Result<(), ApiError> {
        self.wait_applied_for(offset, WRITE_TIMEOUT).await
    }

    /// Like [`Service::wait_applied`] with its own limit (start-up reads the whole topic).
    pub(crate) async fn wait_applied_for(
        &self,
        offset: i64,
        limit: Duration,
    ) -> Result<(), ApiError> {
        let mut rx = self.applied.clone();
        let outcome = tokio::time::timeout(limit, rx.wait_for(|next| *next > offset))
            .await
            .map(|r| r.map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ApiError::store("the schemas topic reader stopped")),
            Err(_) => Err(ApiError::timeout()),
        }
    }

    async fn append(&self, key: &LogKey, value: Option<Vec<u8>>) -> Result<(), ApiError> {
        let offset = self
            .writer
            .append(key, value)
            .await
            .map_err(|e| ApiError::store(&e.to_string()))?;
        self.wait_applied(offset).await
    }

    /// Resolves a version of a subject; `deleted` includes soft-deleted versions.
    pub(crate) fn find(
        &self,
        subject: &str,
        v: VersionRef,
        deleted: bool,
    ) -> Result<Found, ApiError> {
        let st = self.read();
        let versions = st.versions(subject, deleted);
        if versions.is_empty() {
            return Err(ApiError::subject_not_found(subject));
        }
        let (version, Version { id, .. }) = match v {
            VersionRef::Latest => *versions.last().expect("not empty"),
            VersionRef::Number(n) => *versions
                .iter()
                .find(|(num, _)| *num == n)
                .ok_or_else(|| ApiError::version_not_found(n))?,
        };
        let schema = st
            .schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::schema_not_found(id))?;
        Ok(Found {
            version,
            id,
            schema,
        })
    }

    /// The live versions of a subject with their parsed schemas, oldest first.
    fn previous(&self, subject: &str) -> Result<Vec<(i32, Schema)>, ApiError> {
        let texts: Vec<(i32, String)> = {
            let st = self.read();
            st.versions(subject, false)
                .into_iter()
                .filter_map(|(n, v)| st.schemas.get(&v.id).map(|s| (n, s.clone())))
                .collect()
        };
        texts
            .into_iter()
            .map(|(n, t)| {
                Schema::parse_str(&t).map(|s| (n, s)).map_err(|e| {
                    ApiError::store(&format!("stored version {n} does not parse: {e}"))
                })
            })
            .collect()
    }

    /// Problems with `new` at `level` against `against` (oldest first).
    pub(crate) fn compatibility(
        level: Level,
        new: &Schema,
        against: &[(i32, Schema)],
    ) -> Vec<String> {
        let refs: Vec<(i32, &Schema)> = against.iter().map(|(n, s)| (*n, s)).collect();
        check_level(level, new, &refs)
    }

    /// Checks `text` against a subject's versions (all at the subject's level for `latest`,
    /// or just one version).
    pub(crate) fn check(
        &self,
        subject: &str,
        v: VersionRef,
        text: &str,
    ) -> Result<Vec<String>, ApiError> {
        let new = parse_schema(text)?;
        let level = self.read().level(subject);
        let previous = self.previous(subject)?;
        if previous.is_empty() {
            return Err(ApiError::subject_not_found(subject));
        }
        match v {
            VersionRef::Latest => Ok(Self::compatibility(level, &new, &previous)),
            VersionRef::Number(n) => {
                let one: Vec<(i32, Schema)> =
                    previous.into_iter().filter(|(num, _)| *num == n).collect();
                if one.is_empty() {
                    return Err(ApiError::version_not_found(n));
                }
                Ok(Self::compatibility(level, &new, &one))
            }
        }
    }

    /// Registers `text` under `subject`, returning its id (the existing one if already there).
    pub(crate) async fn register(&self, subject: &str, text: &str) -> Result<u32, ApiError> {
        let new = parse_schema(text)?;
        let norm = normalize(text).map_err(|e| ApiError::invalid_schema(e.to_string()))?;
        for _ in 0..REGISTER_ATTEMPTS {
            if let Some(id) = self.lookup_id(subject, &norm) {
                return Ok(id);
            }
            let level = self.read().level(subject);
            let problems = Self::compatibility(level, &new, &self.previous(subject)?);
            if !problems.is_empty() {
                return Err(ApiError::incompatible(subject, &problems));
            }
            let (id, version) = {
                let st = self.read();
                (
                    st.ids.get(&norm).copied().unwrap_or(st.max_id + 1),
                    st.max_version(subject) + 1,
                )
            };
            let value = SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                schema: norm.clone(),
                deleted: false,
            };
            self.append(&LogKey::schema(subject, version), Some(to_json(&value)))
                .await?;
            let won = self
                .read()
                .subjects
                .get(subject)
                .and_then(|vs| vs.get(&version))
                .map(|v| v.id)
                == Some(id);
            if won {
                tracing::info!(subject, version, id, "Schema registered.");
                return Ok(id);
            }
            tracing::debug!(subject, version, id, "Lost a register race; retrying.");
            self.repair(subject, version).await?;
        }
        Err(ApiError::store(
            "too many concurrent registrations; try again",
        ))
    }

    /// After losing version `version` of `subject` to another instance, our rejected record is
    /// the last one under that key, and compaction keeps only the last record per key. So we
    /// append the winner's value again: compaction then keeps the winner.
    async fn repair(&self, subject: &str, version: i32) -> Result<(), ApiError> {
        let winner = {
            let st = self.read();
            st.subjects
                .get(subject)
                .and_then(|vs| vs.get(&version))
                .and_then(|v| st.schemas.get(&v.id).map(|s| (v.id, v.deleted, s.clone())))
        };
        let Some((id, deleted, schema)) = winner else {
            // Nobody holds the slot (our record was rejected for its id): the retry reuses
            // the same key and overwrites it.
            return Ok(());
        };
        let value = SchemaValue {
            subject: subject.to_string(),
            version,
            id,
            schema,
            deleted,
        };
        self.append(&LogKey::schema(subject, version), Some(to_json(&value)))
            .await
    }

    /// The id of a live version of `subject` holding exactly this (normalised) schema.
    pub(crate) fn lookup_id(&self, subject: &str, norm: &str) -> Option<u32> {
        self.lookup(subject, norm, false).map(|(_, id)| id)
    }

    /// The (version, id) of `subject` holding this normalised schema.
    pub(crate) fn lookup(&self, subject: &str, norm: &str, deleted: bool) -> Option<(i32, u32)> {
        let st = self.read();
        let id = *st.ids.get(norm)?;
        st.versions(subject, deleted)
            .into_iter()
            .rev()
            .find(|(_, v)| v.id == id)
            .map(|(n, v)| (n, v.id))
    }

    /// Soft-deletes (or, after that, permanently deletes) every version of a subject.
    pub(crate) async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, ApiError> {
        let (all, live) = {
            let st = self.read();
            (st.versions(subject, true), st.versions(subject, false))
        };
        if all.is_empty() {
            return Err(ApiError::subject_not_found(subject));
        }
        if permanent {
            if !live.is_empty() {
                return Err(ApiError::new(
                    404,
                    40405,
                    format!("Subject '{subject}' was not deleted first before being permanently deleted"),
                ));
            }
            for (n, _) in &all {
                self.append(&LogKey::schema(subject, *n), None).await?;
            }
            return Ok(all.iter().map(|(n, _)| *n).collect());
        }
        if live.is_empty() {
            return Err(ApiError::new(
                404,
                40404,
                format!("Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"),
            ));
        }
        for (n, v) in &live {
            self.soft_delete(subject, *n, v.id).await?;
        }
        Ok(live.iter().map(|(n, _)| *n).collect())
    }

    async fn soft_delete(&self, subject: &str, version: i32, id: u32) -> Result<(), ApiError> {
        let schema = self
            .read()
            .schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::schema_not_found(id))?;
        let value = SchemaValue {
            subject: subject.to_string(),
            version,
            id,
            schema,
            deleted: true,
        };
        self.append(&LogKey::schema(subject, version), Some(to_json(&value)))
            .await
    }

    /// Deletes one version: soft first, then permanently.
    pub(crate) async fn delete_version(
        &self,
        subject: &str,
        v: VersionRef,
        permanent: bool,
    ) -> Result<i32, ApiError> {
        if !permanent {
            let found = self.find(subject, v, false)?;
            self.soft_delete(subject, found.version, found.id).await?;
            return Ok(found.version);
        }
        let found = self.find(subject, v, true)?;
        let deleted = self
            .read()
            .subjects
            .get(subject)
            .and_then(|vs| vs.get(&found.version))
            .is_some_and(|v| v.deleted);
        if !deleted {
            return Err(ApiError::new(
                404,
                40407,
                format!(
                    "Subject '{subject}' Version {} was not deleted first before being permanently deleted",
                    found.version
                ),
            ));
        }
        self.append(&LogKey::schema(subject, found.version), None)
            .await?;
        Ok(found.version)
    }

    /// Sets the global (`None`) or a subject's compatibility level.
    pub(crate) async fn set_level(
        &self,
        subject: Option<&str>,
        level: Level,
    ) -> Result<(), ApiError> {
        let value = ConfigValue {
            compatibility_level: level.as_str().to_string(),
        };
        self.append(&LogKey::config(subject), Some(to_json(&value)))
            .await
    }

    /// Removes a subject's own level, returning what it was.
    pub(crate) async fn delete_level(&self, subject: &str) -> Result<Level, ApiError> {
        let old = self.read().subject_levels.get(subject).copied();
        let Some(old) = old else {
            return Err(ApiError::subject_level_not_found(subject));
        };
        self.append(&LogKey::config(Some(subject)), None).await?;
        Ok(old)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialise.
    serde_json::to_vec(v).expect("log values serialise")
}
