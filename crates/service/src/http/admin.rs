//! `/v1/admin/*`: key management with `X-Admin-Token`, in the shapes the official SDKs' admin
//! clients read (`items[].client_id`, `api_key`, `key_fingerprint`).

use axum::extract::State;
use axum::Json;
use clearbg_engine::{OutputFormat, Tier};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::query::QueryFields;
use super::{Admin, JsonBody};
use crate::billing::credits_from_f64;
use crate::error::{request_id, ApiError, ApiResult, Code, FieldError};
use crate::ids::{JobId, KeyFingerprint};
use crate::store::{Adjustment, Credits, KeyRecord, StoreError};
use crate::wire::{self, timestamp};
use crate::App;

/// An API key (never the key itself but at its creation).
#[derive(Serialize, ToSchema)]
pub(crate) struct Key {
    client_id: String,
    note: Option<String>,
    /// `kfp_…`.
    #[schema(value_type = String)]
    key_fingerprint: KeyFingerprint,
    /// `active` or `disabled`.
    status: String,
    credits: Credits,
    created_at: String,
    last_used_at: Option<String>,
}

impl From<KeyRecord> for Key {
    fn from(k: KeyRecord) -> Key {
        Key {
            client_id: k.client_id,
            note: k.note,
            key_fingerprint: k.fingerprint,
            status: k.status,
            credits: Credits(k.credits),
            created_at: timestamp(k.created_at),
            last_used_at: k.last_used_at.map(timestamp),
        }
    }
}

/// The keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyList {
    items: Vec<Key>,
}

/// A key changed.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyChanged {
    #[serde(flatten)]
    #[schema(inline)]
    key: Key,
    success: bool,
}

/// A key created: the only time `api_key` is shown.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyCreated {
    #[serde(flatten)]
    #[schema(inline)]
    key: Key,
    success: bool,
    api_key: String,
}

/// Credits adjusted.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreditsChanged {
    #[serde(flatten)]
    #[schema(inline)]
    key: Key,
    success: bool,
    /// The change made.
    change: Credits,
}

/// One row of a key's ledger.
#[derive(Serialize, ToSchema)]
pub(crate) struct LedgerEntry {
    id: i64,
    /// `grant`, `reserve`, `release`, `charge`, `refund` or `adjust`.
    kind: String,
    amount: Credits,
    balance_after: Credits,
    #[schema(value_type = Option<String>)]
    job_id: Option<JobId>,
    request_id: Option<String>,
    note: Option<String>,
    created_at: String,
}

/// A key's ledger, newest first, and its balance two ways (always equal).
#[derive(Serialize, ToSchema)]
pub(crate) struct Ledger {
    #[schema(value_type = String)]
    key_fingerprint: KeyFingerprint,
    credits: Credits,
    /// The balance rebuilt from the whole ledger.
    ledger_credits: Credits,
    items: Vec<LedgerEntry>,
}

/// The settings in force, secrets left out (whether one is set is shown instead).
#[derive(Serialize, ToSchema)]
pub(crate) struct Settings {
    version: &'static str,
    listen: String,
    public_url: String,
    /// `configured` or `sqlite (embedded default)`: a database URL may hold a password.
    database: &'static str,
    storage_url: String,
    workers: usize,
    allow_private_urls: bool,
    max_upload_bytes: u64,
    max_duration_seconds: u64,
    url_ttl_seconds: u64,
    retention_seconds: u64,
    lease_seconds: f64,
    max_attempts: u32,
    fetch_timeout_seconds: u64,
    webhooks_signed: bool,
    webhook_retry_base_seconds: f64,
    webhook_max_attempts: u32,
    #[schema(value_type = Vec<wire::Model>)]
    models: Vec<&'static str>,
    #[schema(value_type = wire::Model)]
    human_model: &'static str,
    #[schema(value_type = wire::Keyframes)]
    keyframes: &'static str,
    /// ISNet's number format in the workers (`CLEARBG_PRECISION`, else the device's default):
    /// `int8` or `fp32`.
    precision: &'static str,
    initial_credits: Credits,
    /// `model=credits,…`, as `CLEARBG_PRICES` takes it.
    prices_credits_per_minute: String,
    #[schema(value_type = Vec<wire::OutputFormat>)]
    output_formats: Vec<&'static str>,
}

/// `GET /v1/admin/config`: the settings in force, secrets left out.
#[utoipa::path(
    get, path = "/v1/admin/config", tag = "admin", operation_id = "admin_config", summary = "The settings in force",
    responses(
        (status = 200, description = "Every non-secret setting in force", body = Settings),
    ),
    security(("admin_token" = []))
)]
pub async fn config(State(app): State<App>, _: Admin) -> Json<Settings> {
    let c = &app.config;
    Json(Settings {
        version: env!("CARGO_PKG_VERSION"),
        listen: c.listen.to_string(),
        public_url: c.public_url(),
        database: if c.store.database_url.is_some() { "configured" } else { "sqlite (embedded default)" },
        storage_url: app.storage.url().to_string(),
        workers: c.workers,
        allow_private_urls: c.allow_private_urls,
        max_upload_bytes: c.max_upload_bytes,
        max_duration_seconds: c.max_duration.as_secs(),
        url_ttl_seconds: c.url_ttl.as_secs(),
        retention_seconds: c.retention.as_secs(),
        lease_seconds: c.lease.as_secs_f64(),
        max_attempts: c.max_attempts,
        fetch_timeout_seconds: c.fetch_timeout.as_secs(),
        webhooks_signed: c.webhook_secret.is_some(),
        webhook_retry_base_seconds: c.webhook_retry_base.as_secs_f64(),
        webhook_max_attempts: c.webhook_max_attempts,
        models: crate::jobs::MODELS.map(Tier::name).to_vec(),
        human_model: c.human_model.name(),
        keyframes: c.keyframes.name(),
        precision: c.precision_in_force().name(),
        initial_credits: Credits(c.initial_credits),
        prices_credits_per_minute: c.prices.to_string(),
        output_formats: OutputFormat::ALL.map(OutputFormat::name).to_vec(),
    })
}

/// `GET /v1/admin/keys`.
#[utoipa::path(
    get, path = "/v1/admin/keys", tag = "admin", operation_id = "list_keys", summary = "List API keys",
    responses(
        (status = 200, description = "Every key", body = KeyList),
    ),
    security(("admin_token" = []))
)]
pub async fn list(State(app): State<App>, _: Admin) -> ApiResult<Json<KeyList>> {
    let items = app.store.list_keys().await?.into_iter().map(Key::from).collect();
    Ok(Json(KeyList { items }))
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
        (status = 200, description = "Created; `api_key` is shown only here", body = KeyCreated),
    ),
    security(("admin_token" = []))
)]
pub async fn create(State(app): State<App>, _: Admin, JsonBody(body): JsonBody) -> ApiResult<Json<KeyCreated>> {
    let client_id = string_field(&body, "client_id", true).map_err(|e| ApiError::invalid(vec![e]))?.unwrap_or_default();
    let note = string_field(&body, "note", false).map_err(|e| ApiError::invalid(vec![e]))?;
    let (api_key, record) =
        app.store.create_key(&client_id, note.as_deref(), app.config.initial_credits, request_id().as_deref()).await?;
    tracing::info!(client_id, fingerprint = %record.fingerprint, "api key created");
    Ok(Json(KeyCreated { key: record.into(), success: true, api_key }))
}

async fn set_status(app: &App, body: &Value, status: &str) -> ApiResult<Json<KeyChanged>> {
    let fp = string_field(body, "key_fingerprint", true).map_err(|e| ApiError::invalid(vec![e]))?.unwrap_or_default();
    let fp = KeyFingerprint::from(fp);
    let record = app
        .store
        .set_key_status(&fp, status)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, "No key has that fingerprint"))?;
    tracing::info!(fingerprint = %fp, status, "api key status changed");
    Ok(Json(KeyChanged { key: record.into(), success: true }))
}

/// `POST /v1/admin/keys/disable` `{key_fingerprint}`: refused from the next request on.
#[utoipa::path(
    post, path = "/v1/admin/keys/disable", tag = "admin", operation_id = "disable_key", summary = "Disable an API key",
    request_body(content = super::schemas::KeyRef, content_type = "application/json"),
    responses(
        (status = 200, description = "Disabled: refused from the next request", body = KeyChanged),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn disable(State(app): State<App>, _: Admin, JsonBody(body): JsonBody) -> ApiResult<Json<KeyChanged>> {
    set_status(&app, &body, "disabled").await
}

/// `POST /v1/admin/keys/enable` `{key_fingerprint}`.
#[utoipa::path(
    post, path = "/v1/admin/keys/enable", tag = "admin", operation_id = "enable_key", summary = "Enable an API key",
    request_body(content = super::schemas::KeyRef, content_type = "application/json"),
    responses(
        (status = 200, description = "Enabled", body = KeyChanged),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn enable(State(app): State<App>, _: Admin, JsonBody(body): JsonBody) -> ApiResult<Json<KeyChanged>> {
    set_status(&app, &body, "active").await
}

fn no_key() -> ApiError {
    ApiError::new(Code::NotFound, "No key has that fingerprint")
}

/// `POST /v1/admin/keys/credits` `{key_fingerprint, amount, note?}` (extension): adds `amount`
/// credits (negative: takes them away) with an `adjust` ledger row. 404 for an unknown key;
/// 422 for an amount that is not a non-zero number with at most three decimals, or that would
/// take the balance below zero (the balance is never clamped).
#[utoipa::path(
    post, path = "/v1/admin/keys/credits", tag = "admin", operation_id = "adjust_credits", summary = "Add or take away a key's credits",
    request_body(content = super::schemas::AdjustCredits, content_type = "application/json"),
    responses(
        (status = 200, description = "Adjusted, with an `adjust` ledger row", body = CreditsChanged),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: zero, not a number, more than 3 decimals, or below zero", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn credits(State(app): State<App>, _: Admin, JsonBody(body): JsonBody) -> ApiResult<Json<CreditsChanged>> {
    let mut errors = Vec::new();
    let fp = string_field(&body, "key_fingerprint", true)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten()
        .map(KeyFingerprint::from);
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
    Ok(Json(CreditsChanged { key: record.into(), success: true, change: Credits(change) }))
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
        (status = 200, description = "The ledger, newest first", body = Ledger),
        (status = 404, description = "`not_found`: no key has that fingerprint", body = crate::error::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn ledger(
    State(app): State<App>,
    _: Admin,
    axum::extract::Query(q): axum::extract::Query<LedgerQuery>,
) -> ApiResult<Json<Ledger>> {
    let mut fields = QueryFields::default();
    let fp = fields.required("key_fingerprint", q.key_fingerprint.as_deref()).map(KeyFingerprint::from);
    let limit = fields.integer("limit", q.limit.as_deref(), 100, 1..=1000);
    fields.finish()?;
    let Some(fp) = fp else { return Err(no_key()) };
    let record = app.store.key_by_fingerprint(&fp).await?.ok_or_else(no_key)?;
    let rebuilt = app.store.ledger_balance(&fp).await?;
    let items = app
        .store
        .ledger(&fp, limit)
        .await?
        .into_iter()
        .map(|r| LedgerEntry {
            id: r.id,
            kind: r.kind,
            amount: Credits(r.amount),
            balance_after: Credits(r.balance_after),
            job_id: r.job_id,
            request_id: r.request_id,
            note: r.note,
            created_at: timestamp(r.at),
        })
        .collect();
    Ok(Json(Ledger { key_fingerprint: fp, credits: Credits(record.credits), ledger_credits: Credits(rebuilt), items }))
}
