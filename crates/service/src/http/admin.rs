//! `/v1/admin/*`: key management with `X-Admin-Token`, in the shapes the official SDKs' admin
//! clients read (`items[].client_id`, `api_key`, `key_fingerprint`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::jobs::timestamp;
use super::{json_body, Admin};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::store::KeyRecord;
use crate::App;

fn key_view(k: &KeyRecord) -> Value {
    json!({
        "client_id": k.client_id,
        "note": k.note,
        "key_fingerprint": k.fingerprint,
        "status": k.status,
        "created_at": timestamp(Some(k.created_at)),
        "last_used_at": timestamp(k.last_used_at),
    })
}

/// `GET /v1/admin/config`: the settings in force, secrets left out.
pub async fn config(State(app): State<App>, _: Admin) -> Json<Value> {
    let c = &app.config;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen": c.listen.to_string(),
        "public_url": c.public_url(),
        "database": if c.store.database_url.is_some() { "configured" } else { "sqlite (embedded default)" },
        "storage_url": app.storage.url(),
        "workers": c.workers,
        "allow_private_urls": c.allow_private_urls,
        "max_upload_bytes": c.max_upload_bytes,
        "max_duration_seconds": c.max_duration.as_secs(),
        "url_ttl_seconds": c.url_ttl.as_secs(),
        "retention_seconds": c.retention.as_secs(),
        "lease_seconds": c.lease.as_secs_f64(),
        "max_attempts": c.max_attempts,
        "fetch_timeout_seconds": c.fetch_timeout.as_secs(),
        "webhooks_signed": c.webhook_secret.is_some(),
        "webhook_retry_base_seconds": c.webhook_retry_base.as_secs_f64(),
        "webhook_max_attempts": c.webhook_max_attempts,
        "models": crate::jobs::MODELS,
        "output_formats": crate::jobs::FORMATS,
    }))
}

/// `GET /v1/admin/keys`.
pub async fn list(State(app): State<App>, _: Admin) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = app.store.list_keys().await?.iter().map(key_view).collect();
    Ok(Json(json!({ "items": items })))
}

fn string_field(body: &Value, name: &str, required: bool) -> Result<Option<String>, FieldError> {
    match body.get(name) {
        None | Some(Value::Null) if required => Err(FieldError::new(name, "is required")),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => Err(FieldError::new(name, "must not be empty")),
        Some(Value::String(s)) if s.len() > 200 => Err(FieldError::new(name, "is longer than 200 characters")),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(FieldError::new(name, "must be a string")),
    }
}

/// `POST /v1/admin/keys` `{client_id, note?}`: the key is in this response and nowhere else.
pub async fn create(State(app): State<App>, _: Admin, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let client_id = string_field(&body, "client_id", true).map_err(|e| ApiError::invalid(vec![e]))?.unwrap_or_default();
    let note = string_field(&body, "note", false).map_err(|e| ApiError::invalid(vec![e]))?;
    let (api_key, record) = app.store.create_key(&client_id, note.as_deref()).await?;
    tracing::info!(client_id, fingerprint = %record.fingerprint, "api key created");
    let mut view = key_view(&record);
    view["success"] = json!(true);
    view["api_key"] = json!(api_key);
    Ok(Json(view))
}

async fn set_status(app: &App, body: &Bytes, status: &str) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let fp = string_field(&body, "key_fingerprint", true).map_err(|e| ApiError::invalid(vec![e]))?.unwrap_or_default();
    let record = app
        .store
        .set_key_status(&fp, status)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "No key has that fingerprint"))?;
    tracing::info!(fingerprint = %fp, status, "api key status changed");
    let mut view = key_view(&record);
    view["success"] = json!(true);
    Ok(Json(view))
}

/// `POST /v1/admin/keys/disable` `{key_fingerprint}`: refused from the next request on.
pub async fn disable(State(app): State<App>, _: Admin, body: Bytes) -> ApiResult<Json<Value>> {
    set_status(&app, &body, "disabled").await
}

/// `POST /v1/admin/keys/enable` `{key_fingerprint}`.
pub async fn enable(State(app): State<App>, _: Admin, body: Bytes) -> ApiResult<Json<Value>> {
    set_status(&app, &body, "active").await
}
