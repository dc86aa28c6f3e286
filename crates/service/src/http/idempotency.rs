//! `Idempotency-Key` on `POST /v1/uploads`, `/v1/jobs`, `/start` and `/cancel`: a retried request
//! gets the first one's status and body back and does nothing again.
//!
//! The first request with a key claims it in the database (a primary key makes the claim
//! atomic, so of concurrent duplicates exactly one proceeds); the others wait for its answer and
//! replay it. The same key with another request is 409 `idempotency_conflict`. A request is
//! identified by its method, path and body (for an upload, whose body is streamed and never
//! buffered, by its declared length instead). Answers of 5xx, 429 and 402 are not kept, so
//! the client can retry (after a wait or a top-up); keys expire after 24 hours; a claim whose request died with its process is taken over
//! after ten minutes.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Code};
use crate::store::{hash_key, now_ms, IDEMPOTENCY_TTL_MS};
use crate::App;

/// A claim older than this without an answer belongs to a request that died (longer than any
/// upload takes).
const ABANDONED_MS: i64 = 10 * 60 * 1000;
/// How long a duplicate waits for the first request's answer.
const WAIT: Duration = Duration::from_secs(60);
/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// The middleware: applies to POSTs that carry `Idempotency-Key`.
pub async fn layer(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get("idempotency-key").map(|v| v.to_str().map(str::to_string)) else {
        return next.run(req).await;
    };
    let key = match key {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => k,
        _ => {
            return ApiError::new(
                Code::InvalidRequest,
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
            .into_response()
        }
    };
    // Keys are scoped by the API key presented (hashed), so two clients never share one.
    let scope = super::presented_key(req.headers()).map(hash_key);
    let Some(scope) = scope else { return next.run(req).await };
    let (req, fingerprint) = match fingerprint(req).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match run(&app, &scope, &key, &fingerprint, req, next).await {
        Ok(response) | Err(response) => response,
    }
}

/// Identifies a request: method, path and body hash (for a streamed upload, its length).
async fn fingerprint(req: Request) -> Result<(Request, String), ApiError> {
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str());
    hasher.update(b" ");
    hasher.update(req.uri().path());
    hasher.update(b"\n");
    if req.uri().path() == "/v1/uploads" {
        let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("?");
        hasher.update(length.as_bytes());
        return Ok((req, hex::encode(hasher.finalize())));
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .map_err(|_| ApiError::new(Code::PayloadTooLarge, "The body is larger than 1 MiB"))?;
    hasher.update(&bytes);
    Ok((Request::from_parts(parts, Body::from(bytes)), hex::encode(hasher.finalize())))
}

async fn run(
    app: &App,
    scope: &str,
    key: &str,
    fingerprint: &str,
    req: Request,
    next: Next,
) -> Result<Response, Response> {
    let store = &app.store;
    let db = |e: sqlx::Error| ApiError::from(e).into_response();
    let deadline = tokio::time::Instant::now() + WAIT;
    let early = loop {
        let now = now_ms();
        store.idempotency_forget(scope, key, now - IDEMPOTENCY_TTL_MS, now - ABANDONED_MS).await.map_err(db)?;
        if store.idempotency_claim(scope, key, fingerprint, now).await.map_err(db)? {
            break None;
        }
        let Some(saved) = store.idempotency_get(scope, key).await.map_err(db)? else { continue };
        if saved.fingerprint != fingerprint {
            break Some(Err(ApiError::new(
                Code::IdempotencyConflict,
                "This Idempotency-Key was used for a different request; use a new key for a new request",
            )
            .into_response()));
        }
        if let (Some(status), Some(body)) = (saved.status, saved.body) {
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            break Some(Ok(response));
        }
        if tokio::time::Instant::now() >= deadline {
            break Some(Err(ApiError::new(
                Code::IdempotencyInProgress,
                "A request with this Idempotency-Key is still being processed; retry later",
            )
            .into_response()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(answer) = early {
        drain(req, app.config.max_upload_bytes).await;
        return answer;
    }
    // This request owns the key: run it and keep its answer.
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    // A 5xx, a 429 or a 402 says "try again later" (after a wait, or a top-up): keep the key
    // free for that retry.
    let retryable = [StatusCode::TOO_MANY_REQUESTS, StatusCode::PAYMENT_REQUIRED].contains(&parts.status);
    if parts.status.is_server_error() || retryable {
        store.idempotency_release(scope, key).await.map_err(db)?;
    } else {
        store.idempotency_save(scope, key, parts.status.as_u16(), &bytes).await.map_err(db)?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Reads and drops the rest of a request's body (up to `limit` bytes) before an answer that did
/// not need it: a replayed upload is still being sent, and an answer sent mid-upload makes the
/// server close the connection, which the client sees as a failed request, not as the replay.
async fn drain(req: Request, limit: u64) {
    let mut body = req.into_body().into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len() as u64;
        if seen > limit {
            break;
        }
    }
}
