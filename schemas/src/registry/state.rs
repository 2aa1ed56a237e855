//! The registry's state, rebuilt by applying the `_schemas` log in order.
//!
//! Every instance applies the same records in the same order with the same rules, so they
//! agree without talking to each other. Writers only propose: a record that conflicts with
//! what the log already holds is rejected here, in log order, on every instance alike.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::compat::Level;

/// Key of a record in `_schemas`, in Confluent's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum LogKey {
    Schema {
        subject: String,
        version: i32,
        magic: i32,
    },
    Config {
        subject: Option<String>,
        magic: i32,
    },
    /// Written by Confluent's registry for readiness; we read and ignore it.
    Noop {
        #[serde(default)]
        magic: i32,
    },
    /// Confluent writes these on subject deletes; the per-version records carry the outcome.
    DeleteSubject {
        subject: String,
        #[serde(default)]
        magic: i32,
    },
    ClearSubject {
        subject: String,
        #[serde(default)]
        magic: i32,
    },
}

impl LogKey {
    pub(crate) fn schema(subject: &str, version: i32) -> Self {
        LogKey::Schema {
            subject: subject.to_string(),
            version,
            magic: 1,
        }
    }

    pub(crate) fn config(subject: Option<&str>) -> Self {
        LogKey::Config {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }
}

/// Value of a `SCHEMA` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SchemaValue {
    pub(crate) subject: String,
    pub(crate) version: i32,
    pub(crate) id: u32,
    pub(crate) schema: String,
    #[serde(default)]
    pub(crate) deleted: bool,
}

/// Value of a `CONFIG` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    pub(crate) compatibility_level: String,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Version {
    pub(crate) id: u32,
    pub(crate) deleted: bool,
}

/// What applying a record did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Applied {
    Accepted,
    Rejected(String),
    Ignored,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) subjects: BTreeMap<String, BTreeMap<i32, Version>>,
    /// Schema text (normalised JSON) by id.
    pub(crate) schemas: HashMap<u32, String>,
    /// Id by normalised schema text, so one schema has one id in every subject.
    pub(crate) ids: HashMap<String, u32>,
    pub(crate) global_level: Option<Level>,
    pub(crate) subject_levels: HashMap<String, Level>,
    /// Highest id ever applied; new ids are proposed above it.
    pub(crate) max_id: u32,
}

/// Normalises schema JSON (compact, keys sorted) so equal schemas compare equal as text.
pub(crate) fn normalize(schema: &str) -> Result<String, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(schema)?;
    serde_json::to_string(&sorted(v))
}

/// Sorts object keys explicitly: serde_json keeps insertion order if any crate in the build
/// turns on its `preserve_order` feature.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

impl State {
    /// Applies one log record. Garbage in the topic is ignored, never fatal.
    pub(crate) fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Applied {
        let Ok(key) = serde_json::from_slice::<LogKey>(key) else {
            return Applied::Ignored;
        };
        match key {
            LogKey::Schema {
                subject, version, ..
            } => match value {
                None => self.remove_version(&subject, version),
                Some(v) => match serde_json::from_slice::<SchemaValue>(v) {
                    Ok(v) if v.subject == subject && v.version == version => self.put_version(v),
                    Ok(_) => Applied::Rejected("key and value disagree".into()),
                    Err(e) => Applied::Rejected(format!("unreadable schema value: {e}")),
                },
            },
            LogKey::Config { subject, .. } => {
                let level = match value {
                    None => None,
                    Some(v) => match serde_json::from_slice::<ConfigValue>(v)
                        .ok()
                        .and_then(|c| c.compatibility_level.parse::<Level>().ok())
                    {
                        Some(l) => Some(l),
                        None => return Applied::Rejected("unreadable config value".into()),
                    },
                };
                match (subject, level) {
                    (None, l) => self.global_level = l,
                    (Some(s), Some(l)) => {
                        self.subject_levels.insert(s, l);
                    }
                    (Some(s), None) => {
                        self.subject_levels.remove(&s);
                    }
                }
                Applied::Accepted
            }
            LogKey::Noop { .. } | LogKey::DeleteSubject { .. } | LogKey::ClearSubject { .. } => {
                Applied::Ignored
            }
        }
    }

    fn put_version(&mut self, v: SchemaValue) -> Applied {
        let Ok(text) = normalize(&v.schema) else {
            return Applied::Rejected("schema is not JSON".into());
        };
        if let Some(held) = self.schemas.get(&v.id) {
            if *held != text {
                return Applied::Rejected(format!("id {} already holds another schema", v.id));
            }
        }
        if let Some(&id) = self.ids.get(&text) {
            if id != v.id {
                return Applied::Rejected(format!("schema already has id {id}"));
            }
        }
        let versions = self.subjects.entry(v.subject.clone()).or_default();
        if let Some(existing) = versions.get(&v.version) {
            if existing.id != v.id {
                return Applied::Rejected(format!(
                    "version {} of {} already holds id {}",
                    v.version, v.subject, existing.id
                ));
            }
        }
        versions.insert(
            v.version,
            Version {
                id: v.id,
                deleted: v.deleted,
            },
        );
        self.max_id = self.max_id.max(v.id);
        self.ids.insert(text.clone(), v.id);
        self.schemas.insert(v.id, text);
        Applied::Accepted
    }

    fn remove_version(&mut self, subject: &str, version: i32) -> Applied {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return Applied::Ignored;
        };
        let Some(removed) = versions.remove(&version) else {
            return Applied::Ignored;
        };
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        let still_used = self
            .subjects
            .values()
            .any(|vs| vs.values().any(|v| v.id == removed.id));
        if !still_used {
            if let Some(text) = self.schemas.remove(&removed.id) {
                self.ids.remove(&text);
            }
        }
        Applied::Accepted
    }

    /// The effective compatibility level of a subject.
    pub(crate) fn level(&self, subject: &str) -> Level {
        self.subject_levels
            .get(subject)
            .copied()
            .or(self.global_level)
            .unwrap_or_default()
    }

    /// Versions of a subject, oldest first, optionally with soft-deleted ones.
    pub(crate) fn versions(&self, subject: &str, deleted: bool) -> Vec<(i32, Version)> {
        self.subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, v)| deleted || !v.deleted)
                    .map(|(n, v)| (*n, *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The highest version number ever used by a subject (soft-deleted included).
    pub(crate) fn max_version(&self, subject: &str) -> i32 {
        self.subjects
            .get(subject)
            .and_then(|vs| vs.keys().next_back().copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(subject: &str, version: i32, id: u32, schema: &str) -> (Vec<u8>, Vec<u8>) {
        let k = serde_json::to_vec(&LogKey::schema(subject, version)).unwrap();
        let v = serde_json::to_vec(&SchemaValue {
            subject: subject.into(),
            version,
            id,
            schema: schema.into(),
            deleted: false,
        })
        .unwrap();
        (k, v)
    }

    #[test]
    fn keys_use_confluents_json_shape() {
        let k = serde_json::to_string(&LogKey::schema("s", 2)).unwrap();
        assert_eq!(
            k,
            r#"{"keytype":"SCHEMA","subject":"s","version":2,"magic":1}"#
        );
        let k = serde_json::to_string(&LogKey::config(None)).unwrap();
        assert_eq!(k, r#"{"keytype":"CONFIG","subject":null,"magic":0}"#);
        let noop: LogKey = serde_json::from_str(r#"{"keytype":"NOOP","magic":0}"#).unwrap();
        assert_eq!(noop, LogKey::Noop { magic: 0 });
    }

    #[test]
    fn first_record_in_log_order_wins_a_race() {
        let mut s = State::default();
        let (k, v) = rec("a", 1, 1, r#""string""#);
        assert_eq!(s.apply(&k, Some(&v)), Applied::Accepted);
        // Another instance proposed the same version slot with another schema and id.
        let (k, v) = rec("a", 1, 2, r#""long""#);
        assert!(matches!(s.apply(&k, Some(&v)), Applied::Rejected(_)));
        // And the same id for a different schema under another subject.
        let (k, v) = rec("b", 1, 1, r#""int""#);
        assert!(matches!(s.apply(&k, Some(&v)), Applied::Rejected(_)));
        assert_eq!(
            s.versions("a", false),
            vec![(
                1,
                Version {
                    id: 1,
                    deleted: false
                }
            )]
        );
        assert!(s.versions("b", false).is_empty());
    }

    #[test]
    fn normalising_ignores_key_order_and_whitespace() {
        let a = normalize(r#"{"type": "record", "name": "R", "fields": []}"#).unwrap();
        let b = normalize(r#"{"fields":[],"name":"R","type":"record"}"#).unwrap();
        assert_eq!(a, b);
        // Field order is meaning, so arrays keep theirs.
        let c = normalize(r#"{"f":[{"name":"a"},{"name":"b"}]}"#).unwrap();
        let d = normalize(r#"{"f":[{"name":"b"},{"name":"a"}]}"#).unwrap();
        assert_ne!(c, d);
    }

    #[test]
    fn tombstones_remove_versions_and_unused_schemas() {
        let mut s = State::default();
        let (k, v) = rec("a", 1, 1, r#""string""#);
        s.apply(&k, Some(&v));
        assert_eq!(s.apply(&k, None), Applied::Accepted);
        assert!(s.subjects.is_empty());
        assert!(s.schemas.is_empty());
        assert_eq!(s.max_id, 1, "ids are not reused");
        assert_eq!(s.apply(b"not json", Some(b"x")), Applied::Ignored);
    }
}
