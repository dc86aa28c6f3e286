//! The one error type of the HTTP API and its one response shape:
//! `{"error":{"code","message","request_id"[,"details"]}}`.
//!
//! The request id comes from a task-local set by the request middleware, so every error — ours,
//! a rejected JSON body, an unknown route — carries the same id as the `X-Request-Id` header.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being served (`req_…`).
    pub static REQUEST_ID: String;
}

/// The current request's id, or `None` outside a request (a worker, the sweeper).
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// One problem with one field of a request body or query.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = FieldProblem)]
pub struct FieldError {
    /// The field, dotted for nested ones (`background.color`).
    pub field: String,
    /// Why it was refused.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// An API error: an HTTP status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`invalid_api_key`, `invalid_request`, …).
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// Per-field problems, for 422s.
    pub details: Vec<FieldError>,
    /// Extra response headers (`Retry-After` on a 429); boxed, as few errors have any, so that
    /// every `Result` carrying an `ApiError` stays small.
    pub headers: Box<axum::http::HeaderMap>,
}

impl ApiError {
    /// An error with no field details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: Vec::new(), headers: Default::default() }
    }

    /// 422 `invalid_request` listing every problem found.
    pub fn invalid(details: Vec<FieldError>) -> ApiError {
        let message = details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect::<Vec<_>>().join("; ");
        ApiError { details, ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message) }
    }

    /// 422 `model_not_installed`: a model this server could run but whose opt-in install was
    /// not done (`details` names the `model` field, as for any refused value).
    pub fn model_not_installed(model: &str, install: &str) -> ApiError {
        let message = format!(
            "model {model:?} is not installed on this server: it is an opt-in install (the operator runs `{install}`)"
        );
        let details = vec![FieldError::new("model", message.clone())];
        ApiError { details, ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "model_not_installed", message) }
    }

    /// 404 for a job that does not exist or belongs to another key (the two look the same).
    pub fn job_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "Job not found")
    }

    /// 503 `unavailable`: this server cannot do it now (a tool missing, storage down); retry later.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 that hides the cause from the client and logs it.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", format!("{context} failed; try again"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::internal("database", e)
    }
}

/// What a client is told when the store refuses: the job is not there (404) or not in a state
/// for the change (409), the balance is short (402); a database failure is logged, not shown.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Db(e) => e.into(),
            StoreError::NotFound => ApiError::job_not_found(),
            StoreError::WrongState(_) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_job_state", format!("Cannot do that: {e}"))
            }
            StoreError::InsufficientCredits { .. } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "insufficient_credits", e.to_string())
            }
        }
    }
}

/// Every error: `{"error":{"code","message","request_id"[,"details"]}}`; the id is also in the
/// `X-Request-Id` header.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_request`, `missing_api_key`, `invalid_api_key`,
    /// `not_found`, `invalid_job_state`, `insufficient_credits`, `rate_limited`, …
    code: &'static str,
    /// For people: what went wrong and what to do.
    message: String,
    /// This request's id (equals `X-Request-Id`).
    request_id: Option<String>,
    /// On a 422: every bad field and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Vec<FieldError>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details = (!self.details.is_empty()).then_some(self.details);
        let error = ErrorDetail { code: self.code, message: self.message, request_id: request_id(), details };
        let mut response = (self.status, *self.headers, Json(ErrorBody { error })).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The `code` of an error response, kept beside its body so middleware (the failed-
/// authentication count) can tell refusals apart without reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// A message for a client with this host's file paths replaced by what the client knows them as
/// (an object key, `video_url`…): paths say nothing useful to a client and much to an attacker.
/// Each path is replaced with and without ffmpeg's `file:` prefix.
pub fn redact_paths(message: &str, names: &[(&std::path::Path, &str)]) -> String {
    let mut out = message.to_string();
    for (path, name) in names {
        let path = path.display().to_string();
        if !path.is_empty() {
            out = out.replace(&format!("file:{path}"), name).replace(&path, name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_the_names_a_client_knows() {
        let scratch = std::path::Path::new("/srv/clearbg/data/work/job_1-abc");
        let input = scratch.join("input");
        let message = "not a readable video file (ffprobe: file:/srv/clearbg/data/work/job_1-abc/input: Invalid data)";
        assert_eq!(
            redact_paths(message, &[(&input, "https://example.com/a.mp4"), (scratch, "scratch")]),
            "not a readable video file (ffprobe: https://example.com/a.mp4: Invalid data)"
        );
        let root = std::path::Path::new("/srv/clearbg/data/objects/");
        assert_eq!(
            redact_paths("file:/srv/clearbg/data/objects/uploads/vid_1.mp4: End of file", &[(root, "")]),
            "uploads/vid_1.mp4: End of file"
        );
    }
}
