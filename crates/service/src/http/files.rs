//! `GET /files/{key}?expires&sig`: signed downloads of uploads and outputs, with Range support,
//! the right Content-Type and a Content-Disposition that names the file.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::error::{ApiError, Code};
use crate::App;

/// The signature part of a file URL.
#[derive(Deserialize)]
pub struct Signature {
    expires: Option<String>,
    sig: Option<String>,
}

/// Serves one stored file if its link is intact and unexpired.
#[utoipa::path(
    get, path = "/files/{key}", tag = "files", operation_id = "download_file", summary = "Download a stored file (signed link)",
    params(
        ("key" = String, Path, description = "`uploads/…` or `outputs/…`, as in a signed link"),
        ("expires" = Option<i64>, Query, description = "Unix time the link expires"),
        ("sig" = Option<String>, Query, description = "HMAC-SHA256 of the key and expiry"),
    ),
    responses(
        (status = 200, description = "The file (Range requests supported)", content_type = "*/*"),
        (status = 206, description = "Part of the file", content_type = "*/*"),
        (status = 403, description = "`invalid_signature` or `url_expired`", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: deleted after the retention period", body = crate::error::ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = crate::error::ErrorBody)
    )
)]
pub async fn serve(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(q): Query<Signature>,
    req: Request,
) -> Result<Response, ApiError> {
    let (Some(expires), Some(sig)) = (q.expires.and_then(|e| e.parse::<i64>().ok()), q.sig) else {
        return Err(ApiError::new(Code::InvalidSignature, "This link is not signed"));
    };
    if !app.storage.verify_link(&key, expires, &sig) {
        return Err(ApiError::new(Code::InvalidSignature, "This link was altered; ask the API for a fresh one"));
    }
    if expires < chrono::Utc::now().timestamp() {
        return Err(ApiError::new(Code::UrlExpired, "This link has expired; ask the API for a fresh one"));
    }
    // Keys are made by this service (`uploads/<id>.<ext>`, `outputs/<id>.<ext>`); the signature
    // already rules out anything else, this is a second lock on the door.
    if key.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(ApiError::new(Code::InvalidSignature, "Bad file key"));
    }
    let Some(path) = app.storage.local_path(&key) else {
        return Err(ApiError::new(Code::NotFound, "This storage serves its own links"));
    };
    if !path.is_file() {
        return Err(ApiError::new(Code::NotFound, "The file is gone (deleted after the retention period)"));
    }
    let mut response = ServeFile::new(&path)
        .oneshot(req)
        .await
        .map_err(|e| ApiError::internal("reading the file", e))?
        .into_response();
    let name = key.rsplit('/').next().unwrap_or("output");
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
