//! `/v1/admin/*`: key management with `X-Admin-Token`, in the shapes the official SDKs' admin
//! clients read (`items[].client_id`, `api_key`, `key_fingerprint`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use clearbg_engine::{OutputFormat, Tier};
use serde_json::{json, Value};

use super::query::QueryFields;
use super::{json_body, Admin};
use crate::billing::credits_from_f64;
use crate::error::{request_id, ApiError, ApiResult, FieldError};
use crate::store::{Adjustment, Credits, KeyRecord, StoreError};
use crate::wire::timestamp;
use crate::App;

fn key_view(k: &KeyRecord) -> Value {
    json!({
        "client_id": k.client_id,
        "note": k.note,
        "key_fingerprint": k.fingerprint,
        "status": k.status,
        "credits": Credits(k.credits),
        "created_at": timestamp(Some(k.created_at)),
        "last_used_at": timestamp(k.last_used_at),
    })
}

/// `GET /v1/admin/config`: the settings in force, secrets left out.
#[utoipa::path(
    get, path = "/v1/admin/config", tag = "admin", operation_id = "admin_config", summary = "The settings in force",
    responses(
        (status = 200, description = "Every non-secret setting in force", body = Object),
    ),
    security(("admin_token" = []))
)]
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
        "models": crate::jobs::MODELS.map(Tier::name),
        "human_model": c.human_model.name(),
        "keyframes": c.keyframes.name(),
        "initial_credits": Credits(c.initial_credits),
        "prices_credits_per_minute": c.prices.to_string(),
        "output_formats": OutputFormat::ALL.map(OutputFormat::name),
    }))
}

/// `GET /v1/admin/keys`.
#[utoipa::path(
    get, path = "/v1/admin/keys", tag = "admin", operation_id = "list_keys", summary = "List API keys",
    responses(
        (status = 200, description = "Every key", body = super::schemas::KeyList),
    ),
    security(("admin_token" = []))
)]
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
#[utoipa::path(
    post, path = "/v1/admin/keys", tag = "admin", operation_id = "create_key", summary = "Create an API key",
    request_body(content = super::schemas::CreateKey, content_type = "application/json"),
    responses(
        (status = 200, description = "Created; `api_key` is shown only here", body = super::schemas::KeyCreated),
    ),
    security(("admin_token" = []))
)]
pub async fn create(State(app): State<App>, _: Admin, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let client_id = string_field(&body, "client_id", true).map_err(|e| ApiError::invalid(vec![e]))?.unwrap_or_default();
    let note = string_field(&body, "note", false).map_err(|e| ApiError::invalid(vec![e]))?;
    let (api_key, record) =
        app.store.create_key(&client_id, note.as_deref(), app.config.initial_credits, request_id().as_deref()).await?;
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
#[utoipa::path(
    post, path = "/v1/admin/keys/disable", tag = "admin", operation_id = "disable_key", summary = "Disable an API key",
    request_body(content = super::schemas::KeyRef, content_type = "application/json"),
    responses(
        (status = 200, description = "Disabled: refused from the next request", body = super::schemas::KeyChanged),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn disable(State(app): State<App>, _: Admin, body: Bytes) -> ApiResult<Json<Value>> {
    set_status(&app, &body, "disabled").await
}

/// `POST /v1/admin/keys/enable` `{key_fingerprint}`.
#[utoipa::path(
    post, path = "/v1/admin/keys/enable", tag = "admin", operation_id = "enable_key", summary = "Enable an API key",
    request_body(content = super::schemas::KeyRef, content_type = "application/json"),
    responses(
        (status = 200, description = "Enabled", body = super::schemas::KeyChanged),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn enable(State(app): State<App>, _: Admin, body: Bytes) -> ApiResult<Json<Value>> {
    set_status(&app, &body, "active").await
}

fn no_key() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No key has that fingerprint")
}

/// `POST /v1/admin/keys/credits` `{key_fingerprint, amount, note?}` (extension): adds `amount`
/// credits (negative: takes them away) with an `adjust` ledger row. 404 for an unknown key;
/// 422 for an amount that is not a non-zero number with at most three decimals, or that would
/// take the balance below zero (the balance is never clamped).
#[utoipa::path(
    post, path = "/v1/admin/keys/credits", tag = "admin", operation_id = "adjust_credits", summary = "Add or take away a key's credits",
    request_body(content = super::schemas::AdjustCredits, content_type = "application/json"),
    responses(
        (status = 200, description = "Adjusted, with an `adjust` ledger row", body = super::schemas::CreditsChanged),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: zero, not a number, more than 3 decimals, or below zero", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn credits(State(app): State<App>, _: Admin, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let mut errors = Vec::new();
    let fp = string_field(&body, "key_fingerprint", true).map_err(|e| errors.push(e)).ok().flatten();
    let note = string_field(&body, "note", false).map_err(|e| errors.push(e)).ok().flatten();
    let amount = match body.get("amount") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("amount", "is required: credits to add (negative to take away)"));
            None
        }
        Some(v) => match v.as_f64().and_then(credits_from_f64) {
            Some(n) if n != 0 => Some(n),
            _ => {
                errors.push(FieldError::new("amount", "must be a non-zero number of credits with at most 3 decimals"));
                None
            }
        },
    };
    let (Some(fp), Some(amount), true) = (fp, amount, errors.is_empty()) else {
        return Err(ApiError::invalid(errors));
    };
    let rid = request_id();
    let (record, change) =
        match app.store.adjust_credits(&fp, Adjustment::Add(amount), note.as_deref(), rid.as_deref()).await {
            Ok(Some(done)) => done,
            Ok(None) => return Err(no_key()),
            Err(StoreError::InsufficientCredits { balance, .. }) => {
                return Err(ApiError::invalid(vec![FieldError::new(
                    "amount",
                    format!("would take the balance below zero (it is {})", Credits(balance)),
                )]))
            }
            Err(e) => return Err(e.into()),
        };
    tracing::info!(fingerprint = %fp, change, balance = record.credits, "credits adjusted");
    let mut view = key_view(&record);
    view["success"] = json!(true);
    view["change"] = json!(Credits(change));
    Ok(Json(view))
}

/// Query of `GET /v1/admin/keys/ledger`.
#[derive(serde::Deserialize)]
pub struct LedgerQuery {
    key_fingerprint: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/admin/keys/ledger?key_fingerprint=&limit=` (extension): a key's ledger, newest
/// first, with its cached balance and the balance rebuilt from the whole ledger (always equal).
#[utoipa::path(
    get, path = "/v1/admin/keys/ledger", tag = "admin", operation_id = "key_ledger", summary = "A key's credit ledger",
    params(
        ("key_fingerprint" = String, Query, description = "The key (`kfp_…`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Default 100"),
    ),
    responses(
        (status = 200, description = "The ledger, newest first", body = super::schemas::Ledger),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn ledger(
    State(app): State<App>,
    _: Admin,
    axum::extract::Query(q): axum::extract::Query<LedgerQuery>,
) -> ApiResult<Json<Value>> {
    let mut fields = QueryFields::default();
    let fp = fields.required("key_fingerprint", q.key_fingerprint.as_deref()).map(str::to_string);
    let limit = fields.integer("limit", q.limit.as_deref(), 100, 1..=1000);
    fields.finish()?;
    let Some(fp) = fp else { return Err(no_key()) };
    let record = app.store.key_by_fingerprint(&fp).await?.ok_or_else(no_key)?;
    let rebuilt = app.store.ledger_balance(&fp).await?;
    let items: Vec<Value> = app
        .store
        .ledger(&fp, limit)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "kind": r.kind,
                "amount": Credits(r.amount),
                "balance_after": Credits(r.balance_after),
                "job_id": r.job_id,
                "request_id": r.request_id,
                "note": r.note,
                "created_at": timestamp(Some(r.at)),
            })
        })
        .collect();
    Ok(Json(json!({
        "key_fingerprint": fp,
        "credits": Credits(record.credits),
        "ledger_credits": Credits(rebuilt),
        "items": items,
    })))
}
