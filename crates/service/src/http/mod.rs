//! The HTTP API: routes, request ids, authentication, and the one error shape.
//!
//! Every response is JSON — errors from axum itself (unknown route, wrong method, a body too
//! large, a bad path) are rewritten by [`request_context`] into
//! `{"error":{"code","message","request_id"}}`, because the official Python SDK raises on any
//! body that is not JSON.

mod admin;
mod files;
mod idempotency;
mod jobs;
mod legacy;
mod meta;
pub mod openapi;
mod query;
mod schemas;
pub mod server;
mod uploads;
mod usage;
mod web;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tracing::Instrument;

use crate::error::{ApiError, Code, ErrorCode, FieldError, REQUEST_ID};
use crate::ids::KeyFingerprint;
use crate::store::KeyRecord;
use crate::App;

/// Largest JSON body accepted.
const MAX_JSON_BYTES: usize = 1024 * 1024;

/// All routes.
pub fn router(app: App) -> Router {
    crate::metrics::install();
    // Retried POSTs with the same Idempotency-Key do nothing twice.
    let idempotent = || middleware::from_fn_with_state(app.clone(), idempotency::layer);
    Router::new()
        .route("/v1/uploads", post(uploads::create).layer(DefaultBodyLimit::disable()).layer(idempotent()))
        .route("/v1/jobs", post(jobs::create).layer(idempotent()).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/start", post(jobs::start).layer(idempotent()))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel).layer(idempotent()))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/usage/summary", get(usage::summary))
        .route("/v1/usage/events", get(usage::events))
        .route("/v1/admin/keys/credits", post(admin::credits))
        .route("/v1/admin/keys/ledger", get(admin::ledger))
        .route("/v1/admin/config", get(admin::config))
        .route("/v1/admin/keys", get(admin::list).post(admin::create))
        .route("/v1/admin/keys/disable", post(admin::disable))
        .route("/v1/admin/keys/enable", post(admin::enable))
        .route("/api/upload", post(legacy::upload).layer(DefaultBodyLimit::disable()))
        .route("/api/process", post(legacy::process))
        .route("/api/download/{id}", get(legacy::download))
        .route("/api/pricing", get(meta::pricing))
        .route("/health", get(meta::health))
        .route("/files/{*key}", get(files::serve))
        .route("/metrics", get(web::metrics))
        .route("/openapi.json", get(web::openapi_json))
        .route("/docs", get(web::docs))
        .route("/docs/", get(web::docs_index))
        .route("/docs/{*file}", get(web::docs_file))
        .route("/", get(web::index))
        .route("/app/{file}", get(web::asset))
        .fallback(|| async { ApiError::new(Code::NotFound, "No such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::MethodNotAllowed, "This route does not accept that method")
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn_with_state(app.clone(), rate_limit))
        .layer(middleware::from_fn(request_context))
        // Outermost, so that refusals (429, 413) are counted too; the route template is known
        // here because Router::layer wraps each route after it has been matched.
        .layer(middleware::from_fn(crate::metrics::track))
        .with_state(app)
}

/// What a `clearbg worker` process serves (`--metrics-listen`): `/health` and `/metrics`, so
/// a worker host's checks and its own series (speed by model, charges, webhook outcomes) can be
/// scraped like an API host's.
pub fn ops_router(app: App) -> Router {
    crate::metrics::install();
    Router::new()
        .route("/health", get(meta::health))
        .route("/metrics", get(web::metrics))
        .fallback(|| async { ApiError::new(Code::NotFound, "A worker serves /health and /metrics only") })
        .layer(middleware::from_fn(request_context))
        .with_state(app)
}

/// Gives each request an id (the client's `X-Request-Id` if it is sane, else `req_<random>`),
/// a tracing span carrying it, the `X-Request-Id` response header, and a JSON body on every error.
async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        key = tracing::field::Empty
    );
    let started = Instant::now();
    let response = REQUEST_ID
        .scope(id.clone(), async move {
            let response = next.run(req).await;
            json_errors(response).await
        })
        .instrument(span.clone())
        .await;
    let mut response = response;
    response.headers_mut().insert("x-request-id", HeaderValue::from_str(&id).expect("request ids are ASCII"));
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request done")
    });
    response
}

/// Rewrites an error response that is not JSON (axum's own rejections) into the API's shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::RANGE_NOT_SATISFIABLE => Code::RangeNotSatisfiable,
        s if s.is_server_error() => Code::InternalError,
        StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidRequest,
        _ => Code::Unreadable,
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut rewritten = ApiError::new(code, message).with_status(status).into_response();
    // Keep headers such as Content-Range (416) or Allow (405).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// Counts every `/v1/*` request against the limit of the key it presents (the admin token on
/// admin routes; requests without a key share one budget), refuses it with 429 `rate_limited`
/// and `Retry-After` when the limit is spent, and reports the state in `X-RateLimit-Limit`,
/// `-Remaining` and `-Reset` (unless the handler answered with another budget's, the starts').
/// A wrong key or admin token counts against its client address, and an address that has
/// spent that budget is refused before its key is even looked at.
async fn rate_limit(State(app): State<App>, ClientAddr(client): ClientAddr, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    if let Some(refusal) = app.limits.auth_blocked(client) {
        return refusal.into_response();
    }
    let admin_token = req.headers().get("x-admin-token").and_then(|v| v.to_str().ok());
    let decision = app.limits.request(presented_key(req.headers()).or(admin_token).unwrap_or_default());
    if !decision.allowed {
        return decision.refusal("requests for this key").into_response();
    }
    let mut response = next.run(req).await;
    if let Some(ErrorCode(Code::InvalidApiKey | Code::Forbidden)) = response.extensions().get::<ErrorCode>() {
        app.limits.auth_failed(client);
    }
    if !response.headers().contains_key("x-ratelimit-limit") {
        decision.headers(response.headers_mut());
    }
    response
}

/// The address of the client on the other end of the connection (unspecified when the request
/// did not come through [`server::serve`], as in in-process tests). Behind a reverse proxy this
/// is the proxy's address.
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientAddr, Self::Rejection> {
        let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Ok(ClientAddr(addr.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))))
    }
}

/// The API key a request presents: `X-Api-Key`, or `Authorization: Bearer …`.
pub(crate) fn presented_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    header_key.or(bearer).filter(|k| !k.is_empty())
}

/// A JSON body, read whatever the client called its content type; an empty body is `{}` (the
/// SDKs' `/start` with no overrides). Its fields are read by the handler, which names every bad
/// one in a single 422; a body over the limit is axum's 413, which [`json_errors`] rewrites.
pub(crate) struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody, Response> {
        let body = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(Default::default())));
        }
        serde_json::from_slice(&body).map(JsonBody).map_err(|e| {
            ApiError::invalid(vec![FieldError::new("body", format!("is not valid JSON: {e}"))]).into_response()
        })
    }
}

/// The caller's API key, from `X-Api-Key` (or `Authorization: Bearer`). Missing: 401
/// `missing_api_key`; unknown or disabled: 401 `invalid_api_key` — checked on every request,
/// so disabling a key takes effect at once.
pub struct ApiKey(pub KeyRecord);

impl FromRequestParts<App> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<ApiKey, ApiError> {
        let Some(key) = presented_key(&parts.headers) else {
            return Err(ApiError::new(Code::MissingApiKey, "Send your API key in the X-Api-Key header"));
        };
        match app.store.find_key(key).await? {
            Some(record) if record.status == "active" => {
                // A write per request would serialise every reader behind SQLite's write lock:
                // last use is recorded to the minute, so only a stale stamp is written.
                if record.last_used_at.is_none_or(|t| crate::store::now_ms() - t >= 60_000) {
                    app.store.touch_key(&record.fingerprint).await?;
                }
                tracing::Span::current().record("key", record.fingerprint.as_str());
                Ok(ApiKey(record))
            }
            _ => Err(ApiError::new(Code::InvalidApiKey, "Invalid API key (wrong key or key disabled)")),
        }
    }
}

impl ApiKey {
    /// The owner id stored on this key's uploads and jobs.
    pub fn owner(&self) -> &KeyFingerprint {
        &self.0.fingerprint
    }
}

/// Requires `X-Admin-Token` to equal `CLEARBG_ADMIN_TOKEN` (compared in constant time).
pub struct Admin;

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Admin, ApiError> {
        let Some(expected) = app.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::new(
                Code::AdminDisabled,
                "The admin API is disabled: start the server with CLEARBG_ADMIN_TOKEN set",
            ));
        };
        let Some(given) = parts.headers.get("x-admin-token").and_then(|v| v.to_str().ok()) else {
            return Err(ApiError::new(Code::MissingAdminToken, "Send the admin token in X-Admin-Token"));
        };
        // Hashing both sides first makes the comparison independent of the token's length.
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let (a, b) = (sha2::Sha256::digest(given.as_bytes()), sha2::Sha256::digest(expected.as_bytes()));
        if bool::from(a.as_slice().ct_eq(b.as_slice())) {
            Ok(Admin)
        } else {
            Err(ApiError::new(Code::Forbidden, "Invalid admin token"))
        }
    }
}
