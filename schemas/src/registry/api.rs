//! The REST surface, in Confluent Schema Registry's paths, JSON shapes and error codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::service::{parse_schema, Service, VersionRef};
use super::state::normalize;
use crate::compat::Level;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// An error in Confluent's shape: `{"error_code": 40401, "message": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: u32, message: String) -> Self {
        Self {
            status,
            code,
            message,
        }
    }
    pub(crate) fn subject_not_found(s: &str) -> Self {
        Self::new(404, 40401, format!("Subject '{s}' not found."))
    }
    pub(crate) fn version_not_found(v: i32) -> Self {
        Self::new(404, 40402, format!("Version {v} not found."))
    }
    pub(crate) fn schema_not_found(id: u32) -> Self {
        Self::new(404, 40403, format!("Schema {id} not found"))
    }
    pub(crate) fn subject_level_not_found(s: &str) -> Self {
        Self::new(
            404,
            40408,
            format!("Subject '{s}' does not have subject-level compatibility configured"),
        )
    }
    pub(crate) fn incompatible(subject: &str, problems: &[String]) -> Self {
        Self::new(
            409,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                problems.join("; ")
            ),
        )
    }
    pub(crate) fn invalid_schema(message: String) -> Self {
        Self::new(422, 42201, message)
    }
    pub(crate) fn invalid_version(v: &str) -> Self {
        Self::new(
            422,
            42202,
            format!("The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
        )
    }
    fn invalid_level(l: &str) -> Self {
        Self::new(
            422,
            42203,
            format!("Invalid compatibility level. Valid values are none, backward, forward, full, none, backward_transitive, forward_transitive, and full_transitive (got {l})"),
        )
    }
    fn bad_json(e: serde_json::Error) -> Self {
        Self::new(
            400,
            400,
            format!("Unrecognized or malformed JSON body: {e}"),
        )
    }
    pub(crate) fn store(msg: &str) -> Self {
        Self::new(
            500,
            50001,
            format!("Error in the backend data store: {msg}"),
        )
    }
    pub(crate) fn timeout() -> Self {
        Self::new(
            500,
            50002,
            "Operation timed out waiting for the schemas topic".into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error_code": self.code, "message": self.message});
        (
            status,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;
type Svc = State<Arc<Service>>;
type Params = Query<HashMap<String, String>>;

fn ok(v: Value) -> ApiResult {
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], v.to_string()).into_response())
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Body of register, lookup and compatibility requests. Unknown fields (metadata, ruleSet)
/// are accepted and ignored, as newer clients send them.
#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn schema_body(body: &Bytes) -> Result<SchemaBody, ApiError> {
    let b: SchemaBody = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    if let Some(t) = &b.schema_type {
        if !t.eq_ignore_ascii_case("AVRO") {
            return Err(ApiError::invalid_schema(format!(
                "Schema type {t} is not supported; this registry stores AVRO only"
            )));
        }
    }
    if !b.references.is_empty() {
        return Err(ApiError::invalid_schema(
            "Schema references are not supported by this registry".into(),
        ));
    }
    Ok(b)
}

pub(crate) fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_raw_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route("/config", get(get_global).put(put_global))
        .route(
            "/config/{subject}",
            get(get_subject_level)
                .put(put_subject_level)
                .delete(delete_subject_level),
        )
        .route("/mode", get(|| async { ok(json!({"mode": "READWRITE"})) }))
        .fallback(|| async { ApiError::new(404, 404, "HTTP 404 Not Found".into()) })
        .with_state(svc)
}

async fn list_subjects(State(svc): Svc, Query(q): Params) -> ApiResult {
    let deleted = flag(&q, "deleted");
    let st = svc.read();
    let names: Vec<&String> = st
        .subjects
        .iter()
        .filter(|(_, vs)| vs.values().any(|v| deleted || !v.deleted))
        .map(|(s, _)| s)
        .collect();
    ok(json!(names))
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(404, 40403, format!("Schema {id} not found")))
}

async fn schema_by_id(State(svc): Svc, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let schema = svc
        .read()
        .schemas
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::schema_not_found(id))?;
    ok(json!({ "schema": schema }))
}

async fn raw_schema_by_id(State(svc): Svc, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let schema = svc
        .read()
        .schemas
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::schema_not_found(id))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], schema).into_response())
}

async fn id_versions(State(svc): Svc, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let st = svc.read();
    if !st.schemas.contains_key(&id) {
        return Err(ApiError::schema_not_found(id));
    }
    let list: Vec<Value> = st
        .subjects
        .iter()
        .flat_map(|(s, vs)| {
            vs.iter()
                .filter(|(_, v)| v.id == id && !v.deleted)
                .map(move |(n, _)| json!({"subject": s, "version": n}))
        })
        .collect();
    ok(json!(list))
}

async fn register(State(svc): Svc, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let b = schema_body(&body)?;
    let id = svc.register(&subject, &b.schema).await?;
    ok(json!({ "id": id }))
}

async fn lookup(
    State(svc): Svc,
    Path(subject): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> ApiResult {
    let b = schema_body(&body)?;
    parse_schema(&b.schema)?;
    let deleted = flag(&q, "deleted");
    if svc.read().versions(&subject, deleted).is_empty() {
        return Err(ApiError::subject_not_found(&subject));
    }
    let norm = normalize(&b.schema).map_err(|e| ApiError::invalid_schema(e.to_string()))?;
    let (version, id) = svc
        .lookup(&subject, &norm, deleted)
        .ok_or_else(|| ApiError::new(404, 40403, "Schema not found".into()))?;
    ok(json!({"subject": subject, "version": version, "id": id, "schema": norm}))
}

async fn list_versions(
    State(svc): Svc,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult {
    let versions: Vec<i32> = svc
        .read()
        .versions(&subject, flag(&q, "deleted"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if versions.is_empty() {
        return Err(ApiError::subject_not_found(&subject));
    }
    ok(json!(versions))
}

async fn get_version(
    State(svc): Svc,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let f = svc.find(&subject, VersionRef::parse(&version)?, flag(&q, "deleted"))?;
    ok(json!({"subject": subject, "version": f.version, "id": f.id, "schema": f.schema}))
}

async fn get_raw_version(
    State(svc): Svc,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let f = svc.find(&subject, VersionRef::parse(&version)?, false)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], f.schema).into_response())
}

async fn delete_subject(
    State(svc): Svc,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult {
    ok(json!(
        svc.delete_subject(&subject, flag(&q, "permanent")).await?
    ))
}

async fn delete_version(
    State(svc): Svc,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let v = VersionRef::parse(&version)?;
    ok(json!(
        svc.delete_version(&subject, v, flag(&q, "permanent"))
            .await?
    ))
}

fn compat_response(problems: Vec<String>, verbose: bool) -> ApiResult {
    let mut v = json!({"is_compatible": problems.is_empty()});
    if verbose {
        v["messages"] = json!(problems);
    }
    ok(v)
}

async fn compatibility(
    State(svc): Svc,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> ApiResult {
    let b = schema_body(&body)?;
    let v = VersionRef::parse(&version)?;
    compat_response(svc.check(&subject, v, &b.schema)?, flag(&q, "verbose"))
}

async fn compatibility_all(
    State(svc): Svc,
    Path(subject): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> ApiResult {
    let b = schema_body(&body)?;
    // With no versions yet, anything is compatible (Confluent answers the same).
    match svc.check(&subject, VersionRef::Latest, &b.schema) {
        Err(e) if e.code == 40401 => compat_response(Vec::new(), flag(&q, "verbose")),
        other => compat_response(other?, flag(&q, "verbose")),
    }
}

#[derive(Deserialize)]
struct LevelBody {
    compatibility: String,
}

fn level_body(body: &Bytes) -> Result<Level, ApiError> {
    let b: LevelBody = serde_json::from_slice(body).map_err(ApiError::bad_json)?;
    b.compatibility
        .parse()
        .map_err(|_| ApiError::invalid_level(&b.compatibility))
}

async fn get_global(State(svc): Svc) -> ApiResult {
    let level = svc.read().global_level.unwrap_or_default();
    ok(json!({"compatibilityLevel": level.as_str()}))
}

async fn put_global(State(svc): Svc, body: Bytes) -> ApiResult {
    let level = level_body(&body)?;
    svc.set_level(None, level).await?;
    ok(json!({"compatibility": level.as_str()}))
}

async fn get_subject_level(
    State(svc): Svc,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult {
    let st = svc.read();
    let level = match st.subject_levels.get(&subject) {
        Some(l) => *l,
        None if flag(&q, "defaultToGlobal") => st.global_level.unwrap_or_default(),
        None => return Err(ApiError::subject_level_not_found(&subject)),
    };
    ok(json!({"compatibilityLevel": level.as_str()}))
}

async fn put_subject_level(State(svc): Svc, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let level = level_body(&body)?;
    svc.set_level(Some(&subject), level).await?;
    ok(json!({"compatibility": level.as_str()}))
}

async fn delete_subject_level(State(svc): Svc, Path(subject): Path<String>) -> ApiResult {
    let old = svc.delete_level(&subject).await?;
    ok(json!({"compatibilityLevel": old.as_str()}))
}
