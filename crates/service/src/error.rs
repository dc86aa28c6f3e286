//! The one error type of the HTTP API and its one response shape:
//! `{"error":{"code","message","request_id"[,"details"]}}`.
//!
//! The request id comes from a task-local set by the request middleware, so every error — ours,
//! a rejected JSON body, an unknown route — carries the same id as the `X-Request-Id` header.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
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

/// What a client can be told went wrong: every code the API answers with and its HTTP status.
/// The wire codes are the contract (SDKs and scripts match on them); the messages are for people.
/// Two refusals share the wire code `invalid_request`: a request that cannot be read (400) and
/// values that were read but refused (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Bad Request: The request cannot be read: a body, a query string or a multipart form.
    Unreadable,
    /// Bad Request: The job has no output yet (the legacy download).
    JobNotCompleted,
    /// Unauthorized: No API key was sent.
    MissingApiKey,
    /// Unauthorized: The API key is wrong or disabled.
    InvalidApiKey,
    /// Unauthorized: No admin token was sent.
    MissingAdminToken,
    /// Payment Required: The key's balance does not cover the job.
    InsufficientCredits,
    /// Forbidden: The admin token is wrong.
    Forbidden,
    /// Forbidden: The admin API is off (no admin token configured).
    AdminDisabled,
    /// Forbidden: A download link was altered or is not signed.
    InvalidSignature,
    /// Forbidden: A download link has expired.
    UrlExpired,
    /// Not Found: No such thing, or not this key's (the two look the same).
    NotFound,
    /// Method Not Allowed: The route does not take that method.
    MethodNotAllowed,
    /// Conflict: The job is not in a state for that.
    InvalidJobState,
    /// Conflict: The Idempotency-Key was used for another request.
    IdempotencyConflict,
    /// Conflict: The first request with this Idempotency-Key is still running.
    IdempotencyInProgress,
    /// Gone: The output was deleted after the retention period.
    OutputExpired,
    /// Payload Too Large: A JSON body over the limit.
    PayloadTooLarge,
    /// Payload Too Large: An upload over the limit.
    FileTooLarge,
    /// Unsupported Media Type: An upload that is not a video.
    UnsupportedMediaType,
    /// Range Not Satisfiable: A Range outside the file.
    RangeNotSatisfiable,
    /// Unprocessable Entity: Values that were read but refused (`details` names each field).
    InvalidRequest,
    /// Unprocessable Entity: The model is an opt-in install this server has not done.
    ModelNotInstalled,
    /// Too Many Requests: A limit was reached; `Retry-After` says when to retry.
    RateLimited,
    /// Internal Server Error: This server failed; its log has the details.
    InternalError,
    /// Service Unavailable: This server cannot do it now (a tool missing, storage down); retry later.
    Unavailable,
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 25] = [
        Code::Unreadable,
        Code::JobNotCompleted,
        Code::MissingApiKey,
        Code::InvalidApiKey,
        Code::MissingAdminToken,
        Code::InsufficientCredits,
        Code::Forbidden,
        Code::AdminDisabled,
        Code::InvalidSignature,
        Code::UrlExpired,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::InvalidJobState,
        Code::IdempotencyConflict,
        Code::IdempotencyInProgress,
        Code::OutputExpired,
        Code::PayloadTooLarge,
        Code::FileTooLarge,
        Code::UnsupportedMediaType,
        Code::RangeNotSatisfiable,
        Code::InvalidRequest,
        Code::ModelNotInstalled,
        Code::RateLimited,
        Code::InternalError,
        Code::Unavailable,
    ];

    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::Unreadable => StatusCode::BAD_REQUEST,
            Code::JobNotCompleted => StatusCode::BAD_REQUEST,
            Code::MissingApiKey => StatusCode::UNAUTHORIZED,
            Code::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Code::MissingAdminToken => StatusCode::UNAUTHORIZED,
            Code::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::AdminDisabled => StatusCode::FORBIDDEN,
            Code::InvalidSignature => StatusCode::FORBIDDEN,
            Code::UrlExpired => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::InvalidJobState => StatusCode::CONFLICT,
            Code::IdempotencyConflict => StatusCode::CONFLICT,
            Code::IdempotencyInProgress => StatusCode::CONFLICT,
            Code::OutputExpired => StatusCode::GONE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::FileTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::InvalidRequest => StatusCode::UNPROCESSABLE_ENTITY,
            Code::ModelNotInstalled => StatusCode::UNPROCESSABLE_ENTITY,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The wire code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unreadable => "invalid_request",
            Code::JobNotCompleted => "job_not_completed",
            Code::MissingApiKey => "missing_api_key",
            Code::InvalidApiKey => "invalid_api_key",
            Code::MissingAdminToken => "missing_admin_token",
            Code::InsufficientCredits => "insufficient_credits",
            Code::Forbidden => "forbidden",
            Code::AdminDisabled => "admin_disabled",
            Code::InvalidSignature => "invalid_signature",
            Code::UrlExpired => "url_expired",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::InvalidJobState => "invalid_job_state",
            Code::IdempotencyConflict => "idempotency_conflict",
            Code::IdempotencyInProgress => "idempotency_in_progress",
            Code::OutputExpired => "output_expired",
            Code::PayloadTooLarge => "payload_too_large",
            Code::FileTooLarge => "file_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::RangeNotSatisfiable => "range_not_satisfiable",
            Code::InvalidRequest => "invalid_request",
            Code::ModelNotInstalled => "model_not_installed",
            Code::RateLimited => "rate_limited",
            Code::InternalError => "internal_error",
            Code::Unavailable => "unavailable",
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for Code {
    fn schema() -> RefOr<Schema> {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        names.dedup();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some("Stable machine-readable code; the message is for people."))
            .into()
    }
}

impl ToSchema for Code {}

/// An API error: what went wrong ([`Code`], which fixes its status, save for the legacy routes' documented 400s), and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub code: Code,
    /// What went wrong and what to do.
    pub message: String,
    /// Per-field problems, for 422s.
    pub details: Vec<FieldError>,
    /// Extra response headers (`Retry-After` on a 429); boxed, as few errors have any, so that
    /// every `Result` carrying an `ApiError` stays small.
    pub headers: Box<axum::http::HeaderMap>,
}

impl ApiError {
    /// An error with no field details, answered with its code's status.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Default::default(),
        }
    }

    /// The same error answered with another status: the legacy routes' documented 400s, and
    /// axum's own refusals, rewritten with the status axum chose.
    pub fn with_status(self, status: StatusCode) -> ApiError {
        ApiError { status, ..self }
    }

    /// 422 `invalid_request` listing every problem found.
    pub fn invalid(details: Vec<FieldError>) -> ApiError {
        let message = details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect::<Vec<_>>().join("; ");
        ApiError { details, ..ApiError::new(Code::InvalidRequest, message) }
    }

    /// 422 `model_not_installed`: a model this server could run but whose opt-in install was
    /// not done (`details` names the `model` field, as for any refused value).
    pub fn model_not_installed(model: &str, install: &str) -> ApiError {
        let message = format!(
            "model {model:?} is not installed on this server: it is an opt-in install (the operator runs `{install}`)"
        );
        let details = vec![FieldError::new("model", message.clone())];
        ApiError { details, ..ApiError::new(Code::ModelNotInstalled, message) }
    }

    /// 404 for a job that does not exist or belongs to another key (the two look the same).
    pub fn job_not_found() -> ApiError {
        ApiError::new(Code::NotFound, "Job not found")
    }

    /// 503 `unavailable`: this server cannot do it now (a tool missing, storage down); retry later.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Unavailable, message)
    }

    /// 500 that hides the cause from the client and logs it.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::new(Code::InternalError, format!("{context} failed; try again"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code.as_str(), self.message)
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
            StoreError::WrongState(_) => ApiError::new(Code::InvalidJobState, format!("Cannot do that: {e}")),
            StoreError::InsufficientCredits { .. } => ApiError::new(Code::InsufficientCredits, e.to_string()),
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
    /// Stable machine-readable code.
    code: Code,
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
pub struct ErrorCode(pub Code);

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
    fn each_wire_code_means_one_thing() {
        let mut seen = std::collections::HashMap::new();
        for code in Code::ALL {
            let name = code.as_str();
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            if let Some(other) = seen.insert(name, code) {
                // The one shared name: unreadable (400) and refused (422) requests.
                assert_eq!((name, other, code), ("invalid_request", Code::Unreadable, Code::InvalidRequest));
            }
        }
        assert_eq!(ApiError::new(Code::FileTooLarge, "x").with_status(StatusCode::BAD_REQUEST).status.as_u16(), 400);
    }

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
