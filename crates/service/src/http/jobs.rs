//! `/v1/jobs`: create, start, poll, list, cancel, and the audit trail.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::query::QueryFields;
use super::{ApiKey, JsonBody};
use crate::billing::reservation;
use crate::error::{request_id, ApiError, ApiResult, Code, FieldError};
use crate::ids::{JobId, KeyFingerprint};
use crate::jobs::{parse_spec, InputRef, JobSpec, Mode, Status};
use crate::storage::StoredRef;
use crate::store::{JobRow, StoreError};
use crate::wire::{timestamp, Job};
use crate::App;

/// How long `/cancel` waits for a running job's worker to stop before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(15);

impl App {
    /// `row` as a client sees it.
    pub(crate) fn job_view(&self, row: &JobRow) -> Job {
        Job::new(row, self.links())
    }
}

/// A job created, started or cancelled: the job plus `success` and `message`.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobChanged {
    #[serde(flatten)]
    job: Job,
    /// Always true.
    success: bool,
    /// What happened.
    message: &'static str,
}

impl JobChanged {
    fn new(job: Job, message: &'static str) -> Json<JobChanged> {
        Json(JobChanged { job, success: true, message })
    }
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobList {
    items: Vec<Job>,
    /// Jobs matching the filter in all.
    total: i64,
    limit: i64,
    offset: i64,
}

/// One state transition of a job.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobEvent {
    id: i64,
    at: String,
    from: Option<String>,
    to: String,
    reason: String,
    request_id: Option<String>,
    worker: Option<String>,
    attempt: i64,
}

/// A job's audit trail, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobEvents {
    #[schema(value_type = String)]
    job_id: JobId,
    items: Vec<JobEvent>,
}

/// Fills in where the input and an image background come from: one of this service's own files
/// (an upload or a completed job's output, read from storage — if `owner` owns it), or a URL the
/// worker will download (refused now if its host is a literal private address, as is such a
/// `webhook_url`). Also refuses a canvas larger than the frame-area limit.
pub(crate) async fn resolve_input(app: &App, spec: &mut JobSpec, owner: Option<&KeyFingerprint>) -> ApiResult<()> {
    let mut errors = Vec::new();
    let allow_private = app.config.allow_private_urls;
    spec.input = match StoredRef::from_url(&spec.video_url) {
        Some(stored) => match stored_object(app, &stored, owner).await? {
            Ok(input) => input,
            Err(message) => {
                errors.push(FieldError::new("video_url", message));
                InputRef::Url
            }
        },
        None => {
            if let Err(m) = crate::fetch::check_literal_host(&spec.video_url, allow_private) {
                errors.push(FieldError::new("video_url", m));
            }
            InputRef::Url
        }
    };
    spec.background.image_object_key = None;
    if let Some(image) = spec.background.image_url.clone() {
        match StoredRef::from_url(&image) {
            Some(stored) => match stored_object(app, &stored, owner).await? {
                Ok(input) => spec.background.image_object_key = input.object_key().map(str::to_string),
                Err(message) => errors.push(FieldError::new("bg_image_url", message)),
            },
            None => {
                if let Err(m) = crate::fetch::check_literal_host(&image, allow_private) {
                    errors.push(FieldError::new("bg_image_url", m));
                }
            }
        }
    }
    if let Some(webhook) = &spec.webhook_url {
        if let Err(m) = crate::fetch::check_literal_host(webhook, allow_private) {
            errors.push(FieldError::new("webhook_url", m));
        }
    }
    if let Some((w, h)) = spec.composition().canvas {
        if let Err(e) = app.config.limits().check_frame("canvas", w, h) {
            errors.push(FieldError::new("composition.canvas", e.to_string()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// One of our own files named by a URL, if `owner` may use it. Another key's file and a file
/// that does not exist get the same answer, so the answer tells nothing about other keys.
async fn stored_object(
    app: &App,
    stored: &StoredRef,
    owner: Option<&KeyFingerprint>,
) -> ApiResult<Result<InputRef, &'static str>> {
    const NOT_YOURS: &str = "refers to a file of this service that does not exist (or belongs to another key)";
    Ok(match stored {
        StoredRef::Upload(id) => match app.store.upload(id).await? {
            Some(u) if u.owner.as_ref() == owner || u.owner.is_none() => {
                if u.deleted_at.is_some() {
                    Err("this upload was deleted after the retention period; upload it again")
                } else {
                    Ok(InputRef::Upload { upload_id: u.id, object_key: u.object_key })
                }
            }
            _ => Err(NOT_YOURS),
        },
        StoredRef::Output(id) => match app.store.job(id, None).await? {
            Some(job) if job.owner.as_ref() == owner => match (&job.output_key, job.output_deleted_at) {
                (Some(key), None) => Ok(InputRef::Output { job_id: job.id.clone(), object_key: key.clone() }),
                (Some(_), Some(_)) => Err("this output was deleted after the retention period"),
                (None, _) => Err(NOT_YOURS),
            },
            _ => Err(NOT_YOURS),
        },
    })
}

/// Why this server refuses `spec`'s model, if it lacks the model's opt-in install: checked
/// before anything is queued or reserved. Only a process with embedded workers can tell (it runs
/// its own models); an API-only process accepts the job, and a worker without the model fails it
/// with the same code.
fn missing_model(app: &App, spec: &JobSpec) -> Option<ApiError> {
    if app.config.workers == 0 {
        return None;
    }
    let tier = app.config.serving_tier(spec.model);
    let install = tier.install_command()?;
    let installed = clearbg_engine::model::is_installed(&clearbg_engine::Home::from_env(), tier);
    (!installed).then(|| ApiError::model_not_installed(spec.model.name(), install))
}

/// Creates a job for `owner` from a parsed body; shared with the legacy `/api/process`.
pub(crate) async fn create_job(app: &App, owner: Option<&KeyFingerprint>, body: &Value) -> ApiResult<JobRow> {
    let mut spec = parse_spec(body, None, Mode::Create)?;
    if let Some(refused) = missing_model(app, &spec) {
        return Err(refused);
    }
    resolve_input(app, &mut spec, owner).await?;
    let status = if spec.auto_start { Status::Pending } else { Status::Created };
    let id = JobId::generate();
    // Drafts too: probing the upload now makes their start cheap.
    let hold = reservation(app, &spec, owner).await?;
    let row = app.store.insert_job(&id, owner, &spec, status, request_id().as_deref(), hold).await?;
    if status == Status::Pending {
        app.queued.notify_waiters();
    }
    tracing::info!(job_id = %id, status = status.as_str(), model = %spec.model, format = %spec.output_format, "job created");
    Ok(row)
}

/// `POST /v1/jobs`.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", operation_id = "create_job", summary = "Create a job (and start it)",
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, description = "A retry with the same key and request replays the first answer (24 h)")),
    request_body(content = super::schemas::CreateJob, content_type = "application/json"),
    responses(
        (status = 200, description = "Created: queued (`auto_start`, the default) or a draft", body = JobChanged,
            links(
                ("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/id")))),
                ("StartJob" = (operation_id = "start_job", parameters(("id" = "$response.body#/id")))),
                ("CancelJob" = (operation_id = "cancel_job", parameters(("id" = "$response.body#/id")))),
                ("JobEvents" = (operation_id = "job_events", parameters(("id" = "$response.body#/id")))),
                ("Download" = (operation_id = "download", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 402, description = "`insufficient_credits`: nothing was created", body = crate::error::ErrorBody),
        (status = 409, description = "`idempotency_conflict`: the Idempotency-Key was used for another request", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: `details` names every bad field; `model_not_installed`: this server lacks the model's opt-in install", body = crate::error::ErrorBody),
        (status = 503, description = "`unavailable`: the input cannot be read now (a tool missing on this server)", body = crate::error::ErrorBody)
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(State(app): State<App>, key: ApiKey, JsonBody(body): JsonBody) -> ApiResult<Json<JobChanged>> {
    if body.get("auto_start") != Some(&Value::Bool(false)) {
        app.limits.start(key.owner()).require("job starts for this key")?;
    }
    let row = create_job(&app, Some(key.owner()), &body).await?;
    let message = if row.status == Status::Pending {
        "Job started"
    } else {
        "Job created as a draft; start it with POST /v1/jobs/{id}/start"
    };
    Ok(JobChanged::new(app.job_view(&row), message))
}

/// `POST /v1/jobs/{id}/start`: a draft takes its final options and is queued.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/start", tag = "jobs", operation_id = "start_job", summary = "Start a draft job",
    params(("id" = String, Path, description = "The job id (`job_…`)"), ("Idempotency-Key" = Option<String>, Header, max_length = 255, description = "A retry with the same key and request replays the first answer (24 h)")),
    request_body(content = Option<super::schemas::JobOptions>, content_type = "application/json"),
    responses(
        (status = 200, description = "Queued", body = JobChanged),
        (status = 402, description = "`insufficient_credits`: the draft stays a draft", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: no such job (or another key's)", body = crate::error::ErrorBody),
        (status = 409, description = "`invalid_job_state` (not a draft) or `idempotency_conflict`", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: `details` names every bad field; `model_not_installed`: this server lacks the model's opt-in install", body = crate::error::ErrorBody),
        (status = 503, description = "`unavailable`: the input cannot be read now (a tool missing on this server)", body = crate::error::ErrorBody)
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn start(
    State(app): State<App>,
    key: ApiKey,
    Path(id): Path<JobId>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<JobChanged>> {
    let row = app.store.job(&id, Some(key.owner())).await?.ok_or_else(ApiError::job_not_found)?;
    if row.status != Status::Created {
        return Err(state_conflict(row.status, "start"));
    }
    app.limits.start(key.owner()).require("job starts for this key")?;
    let mut spec = parse_spec(&body, Some(&row.spec), Mode::Start)?;
    if let Some(refused) = missing_model(&app, &spec) {
        return Err(refused);
    }
    resolve_input(&app, &mut spec, Some(key.owner())).await?;
    let hold = reservation(&app, &spec, Some(key.owner())).await?;
    let row =
        app.store.start_job(&id, Some(key.owner()), &spec, request_id().as_deref(), hold).await.map_err(
            |e| match e {
                StoreError::WrongState(s) => state_conflict(s, "start"),
                e => e.into(),
            },
        )?;
    app.queued.notify_waiters();
    tracing::info!(job_id = %id, "job started");
    Ok(JobChanged::new(app.job_view(&row), "Job started"))
}

fn state_conflict(status: Status, action: &str) -> ApiError {
    ApiError::new(
        Code::InvalidJobState,
        format!("Cannot {action} a job that is {}; only draft (created) jobs can be started", status.as_str()),
    )
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "get_job", summary = "Get a job",
    params(("id" = String, Path, description = "The job id (`job_…`)")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "`not_found`: no such job (or another key's)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(State(app): State<App>, key: ApiKey, Path(id): Path<JobId>) -> ApiResult<Json<Job>> {
    let row = app.store.job(&id, Some(key.owner())).await?.ok_or_else(ApiError::job_not_found)?;
    Ok(Json(app.job_view(&row)))
}

/// Query of `GET /v1/jobs`; numbers are parsed by hand so that bad ones get a 422 that names them.
#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    offset: Option<String>,
    status: Option<String>,
}

/// `GET /v1/jobs?limit&offset&status`: this key's jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", operation_id = "list_jobs", summary = "List jobs",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Default 20"),
        ("offset" = Option<i64>, Query, minimum = 0, description = "Default 0"),
        ("status" = Option<Status>, Query, description = "Only jobs in this status"),
    ),
    responses(
        (status = 200, description = "Jobs of this key, newest first", body = JobList),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(State(app): State<App>, key: ApiKey, Query(q): Query<ListQuery>) -> ApiResult<Json<JobList>> {
    let mut fields = QueryFields::default();
    let limit = fields.integer("limit", q.limit.as_deref(), 20, 1..=100);
    let offset = fields.integer("offset", q.offset.as_deref(), 0, 0..=i64::MAX);
    let status = fields.parsed("status", q.status.as_deref(), |s| {
        s.parse::<Status>().map_err(|_| {
            let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            format!("{s:?} is not one of {}", names.join(", "))
        })
    });
    fields.finish()?;
    let (rows, total) = app.store.list_jobs(key.owner(), status, limit, offset).await?;
    let items = rows.iter().map(|r| app.job_view(r)).collect();
    Ok(Json(JobList { items, total, limit, offset }))
}

/// `POST /v1/jobs/{id}/cancel`: a draft or queued job fails at once; a running job's worker is
/// told to stop (its ffmpeg children with it) and the answer waits briefly for it.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancel_job", summary = "Cancel a job",
    params(("id" = String, Path, description = "The job id (`job_…`)"), ("Idempotency-Key" = Option<String>, Header, max_length = 255, description = "A retry with the same key and request replays the first answer (24 h)")),
    responses(
        (status = 200, description = "Cancelled (`failed`, `error_code: cancelled`), or told to stop if it was running", body = JobChanged),
        (status = 404, description = "`not_found`: no such job (or another key's)", body = crate::error::ErrorBody),
        (status = 409, description = "`invalid_job_state` (already ended) or `idempotency_conflict`", body = crate::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: a JSON body over 1 MiB", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: `details` names every bad field", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn cancel(State(app): State<App>, key: ApiKey, Path(id): Path<JobId>) -> ApiResult<Json<JobChanged>> {
    let owner = Some(key.owner());
    let row = app.store.job(&id, owner).await?.ok_or_else(ApiError::job_not_found)?;
    let rid = request_id();
    let message = "The job was cancelled";
    let mut status = row.status;
    if matches!(status, Status::Created | Status::Pending) {
        if app.store.fail(&id, None, status, "cancelled", message, rid.as_deref(), app.links()).await? {
            tracing::info!(job_id = %id, "job cancelled before it ran");
            let row = app.store.job(&id, owner).await?.ok_or_else(ApiError::job_not_found)?;
            return Ok(JobChanged::new(app.job_view(&row), message));
        }
        // A worker claimed it in between.
        status = app.store.job(&id, owner).await?.ok_or_else(ApiError::job_not_found)?.status;
    }
    if status.is_terminal() {
        return Err(ApiError::new(Code::InvalidJobState, format!("Cannot cancel a job that is {}", status.as_str())));
    }
    app.store.request_cancel(&id, rid.as_deref()).await?;
    tracing::info!(job_id = %id, "cancel requested");
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    loop {
        let row = app.store.job(&id, owner).await?.ok_or_else(ApiError::job_not_found)?;
        if row.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            let message = if row.status.is_terminal() { message } else { "Cancel requested; the worker is stopping" };
            return Ok(JobChanged::new(app.job_view(&row), message));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /v1/jobs/{id}/events`: every state transition with its time, reason and request id.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "jobs", operation_id = "job_events", summary = "A job's audit trail",
    params(("id" = String, Path, description = "The job id (`job_…`)")),
    responses(
        (status = 200, description = "Every transition, oldest first", body = JobEvents),
        (status = 404, description = "`not_found`: no such job (or another key's)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn events(State(app): State<App>, key: ApiKey, Path(id): Path<JobId>) -> ApiResult<Json<JobEvents>> {
    app.store.job(&id, Some(key.owner())).await?.ok_or_else(ApiError::job_not_found)?;
    let items = app
        .store
        .events(&id)
        .await?
        .into_iter()
        .map(|e| JobEvent {
            id: e.id,
            at: timestamp(e.at),
            from: e.from_status,
            to: e.to_status,
            reason: e.reason,
            request_id: e.request_id,
            worker: e.worker,
            attempt: e.attempt,
        })
        .collect();
    Ok(Json(JobEvents { job_id: id, items }))
}
