//! The legacy, key-less `/api/*` routes kept by RemoveBGVideo for old integrations: jobs made
//! here have no owner, so only `/api/download/{id}` (and the unguessable id) reaches them.
//! Uploads and jobs here are unbilled, so an operator can turn them off, and they are limited
//! per client address.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::jobs::create_job;
use super::uploads::{discard, store_upload, Refusals};
use super::{ClientAddr, JsonBody};
use crate::error::{ApiError, ApiResult, Code};
use crate::ids::JobId;
use crate::jobs::Status;
use crate::wire::timestamp;
use crate::App;

/// `POST /api/process`'s answer: the job's id and state.
#[derive(Serialize, ToSchema)]
pub(crate) struct LegacyProcess {
    success: bool,
    #[schema(value_type = String)]
    id: JobId,
    #[schema(value_type = String)]
    job_id: JobId,
    status: Status,
    progress: i64,
    output_url: Option<String>,
    error: Option<String>,
}

/// A completed job's signed output link.
#[derive(Serialize, ToSchema)]
pub(crate) struct Download {
    success: bool,
    download_url: String,
    #[schema(value_type = crate::wire::OutputFormat)]
    output_format: String,
    expires_at: String,
    output_sha256: Option<String>,
    output_size_bytes: Option<i64>,
}

/// `POST /api/upload`: as `/v1/uploads`, with the documented 400s for a wrong type or size.
#[utoipa::path(
    post, path = "/api/upload", tag = "legacy", operation_id = "legacy_upload", summary = "Upload a video (legacy, no key)",
    request_body(content = super::schemas::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored", body = super::uploads::Upload),
        (status = 400, description = "Not a video, too large, or an unreadable multipart body (the documented 400s)", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: the legacy routes are turned off (`CLEARBG_LEGACY_API=0`)", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: `details` names every bad field", body = crate::error::ErrorBody),
        (status = 429, description = "`rate_limited`: too many from this address; wait `Retry-After` seconds", body = crate::error::ErrorBody)
    )
)]
pub async fn upload(
    State(app): State<App>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<super::uploads::Upload>> {
    if let Err(refused) = admit(&app, client) {
        discard(multipart).await;
        return Err(refused);
    }
    let refusals = Refusals { too_large: StatusCode::BAD_REQUEST, wrong_type: StatusCode::BAD_REQUEST };
    store_upload(&app, None, &headers, multipart, refusals).await.map(Json)
}

/// `POST /api/process`: the `/v1/jobs` body, no key.
#[utoipa::path(
    post, path = "/api/process", tag = "legacy", operation_id = "legacy_process", summary = "Create a job (legacy, no key)",
    request_body(content = super::schemas::CreateJob, content_type = "application/json"),
    responses(
        (status = 200, description = "Created, with no key (not billed)", body = LegacyProcess,
            links(("Download" = (operation_id = "download", parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "`not_found`: the legacy routes are turned off (`CLEARBG_LEGACY_API=0`)", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: `details` names every bad field; `model_not_installed`: this server lacks the model's opt-in install", body = crate::error::ErrorBody),
        (status = 429, description = "`rate_limited`: too many from this address; wait `Retry-After` seconds", body = crate::error::ErrorBody),
        (status = 503, description = "`unavailable`: the input cannot be read now (a tool missing on this server)", body = crate::error::ErrorBody)
    )
)]
pub async fn process(
    State(app): State<App>,
    ClientAddr(client): ClientAddr,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<LegacyProcess>> {
    admit(&app, client)?;
    let row = create_job(&app, None, &body).await?;
    Ok(Json(LegacyProcess {
        success: true,
        job_id: row.id.clone(),
        id: row.id,
        status: row.status,
        progress: 0,
        output_url: None,
        error: None,
    }))
}

/// The key-less routes that make work are the operator's choice (`CLEARBG_LEGACY_API`), and
/// limited per client address (`CLEARBG_LEGACY_RATE_LIMIT`): nobody pays for what they run.
fn admit(app: &App, client: std::net::IpAddr) -> ApiResult<()> {
    if !app.config.legacy_api {
        return Err(ApiError::new(
            Code::NotFound,
            "The key-less legacy routes are turned off on this server: use /v1/uploads and /v1/jobs with an API key",
        ));
    }
    app.limits.legacy(client).require("key-less uploads and jobs from this address")
}

/// `GET /api/download/{job_id}`: the signed output URL of a completed job; 400 until then.
#[utoipa::path(
    get, path = "/api/download/{id}", tag = "legacy", operation_id = "download", summary = "A completed job's output link",
    params(("id" = String, Path, description = "The job id (`job_…`)")),
    responses(
        (status = 200, description = "A signed link to the output", body = Download),
        (status = 400, description = "`job_not_completed`", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: no such job (or another key's)", body = crate::error::ErrorBody),
        (status = 410, description = "`output_expired`: deleted after the retention period", body = crate::error::ErrorBody)
    )
)]
pub async fn download(State(app): State<App>, Path(id): Path<JobId>) -> ApiResult<Json<Download>> {
    let row = app.store.job(&id, None).await?.ok_or_else(ApiError::job_not_found)?;
    let spec = &row.spec;
    if row.status != Status::Completed {
        return Err(ApiError::new(Code::JobNotCompleted, format!("Job not completed (it is {})", row.status.as_str())));
    }
    let key = match (&row.output_key, row.output_deleted_at) {
        (Some(key), None) => key,
        _ => {
            return Err(ApiError::new(
                Code::OutputExpired,
                "The output was deleted after the retention period; run the job again",
            ))
        }
    };
    let (download_url, expires) = app.storage.download_url(key, app.config.url_ttl);
    Ok(Json(Download {
        success: true,
        download_url,
        output_format: spec.output_format.to_string(),
        expires_at: timestamp(expires * 1000),
        output_sha256: row.output_sha256.clone(),
        output_size_bytes: row.output_size_bytes,
    }))
}
