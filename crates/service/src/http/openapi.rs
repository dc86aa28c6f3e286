//! The API's description: OpenAPI 3.1 at `/openapi.json`, generated at build time by utoipa from
//! the `#[utoipa::path]` annotation on every handler and the schemas below, and an interactive
//! reference at `/docs` (Swagger UI, its files embedded in the binary: nothing from a CDN).
//!
//! The handlers build their JSON with `json!` (one [`super::job_view`] serves the routes, the
//! webhooks and the legacy routes alike), so these types describe the wire shapes rather than
//! being serialised: they are checked against real answers by the schemathesis run in
//! `crates/cli/tests/api_schema.rs`, which fails on any response that does not match.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: `{"error":{"code","message","request_id"[,"details"]}}`; the id is also in the
/// `X-Request-Id` header.
#[derive(Serialize, ToSchema)]
pub(crate) struct Error {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code: `invalid_request`, `missing_api_key`, `invalid_api_key`,
    /// `not_found`, `invalid_job_state`, `insufficient_credits`, `rate_limited`, …
    code: String,
    /// For people: what went wrong and what to do.
    message: String,
    /// This request's id (equals `X-Request-Id`).
    request_id: Option<String>,
    /// On a 422: every bad field and why.
    details: Option<Vec<FieldProblem>>,
}

/// One problem with one field.
#[derive(Serialize, ToSchema)]
pub(crate) struct FieldProblem {
    /// The field, dotted for nested ones (`background.color`).
    field: String,
    /// Why it was refused.
    message: String,
}

/// A job's lifecycle: `created` (draft) → `pending` (queued) → `processing` → `completed` | `failed`
/// (a cancelled job is `failed` with `error_code: "cancelled"`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobStatus {
    Created,
    Pending,
    Processing,
    Completed,
    Failed,
}

/// The model tier: `light` (fast, people), `human` (hair-level mattes), `original` (any subject),
/// `pro` (best edges), `video` (people in video, steady over time: Robust Video Matting; an
/// opt-in install, so a server without it answers 422 `model_not_installed`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Model {
    Original,
    Light,
    Pro,
    Human,
    Video,
}

/// Where the heavy models (`human`, `original`, `pro`) run (an extension): `adaptive` (on
/// keyframes only; the mask is carried along the picture's motion in between, several times
/// faster) or `every` (on every frame). `light` and `video` always run every frame. Default: the
/// server's `CLEARBG_KEYFRAMES` (`adaptive`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Keyframes {
    Adaptive,
    Every,
}

/// The output: `webm` (VP9 + alpha), `mov` (ProRes 4444 + alpha), `mp4` (H.264, needs a
/// background), `gif`, `webp`, `png_sequence` (zip of PNGs), `matte` (greyscale alpha).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutputFormat {
    Webm,
    Mov,
    Mp4,
    Gif,
    Webp,
    PngSequence,
    Matte,
}

/// The background's name: `transparent`, the fixed colours, `custom`/`color` (with a colour)
/// or `image` (with an image URL).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BgType {
    Transparent,
    Green,
    White,
    Black,
    Blue,
    Custom,
    Color,
    Image,
}

/// A colour: three floats in 0-1 (`[r, g, b]`, as the SDKs send it) or `"#RRGGBB"`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Color {
    /// `[r, g, b]`, each in 0-1.
    Rgb([f64; 3]),
    /// `#RRGGBB`.
    Hex(String),
}

/// The `background` object (wins over `bg_type`/`bg_color`/`bg_image_url` when both are sent).
#[derive(Serialize, ToSchema)]
pub(crate) struct BackgroundRequest {
    /// Implied by `color` or `image_url` when left out.
    #[serde(rename = "type")]
    kind: Option<BgType>,
    color: Option<Color>,
    /// An http(s) URL of a picture, or one of this service's upload URLs.
    image_url: Option<String>,
}

/// Where the subject goes on a larger canvas.
#[derive(Serialize, ToSchema)]
pub(crate) struct Composition {
    canvas: Option<Canvas>,
    foreground: Option<Foreground>,
}

/// The canvas size, pixels.
#[derive(Serialize, ToSchema)]
pub(crate) struct Canvas {
    #[schema(minimum = 1)]
    width: u32,
    #[schema(minimum = 1)]
    height: u32,
}

/// How the subject is placed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Foreground {
    /// `top-left`, `top`, `top-right`, `left`, `center`, `right`, `bottom-left`, `bottom`, `bottom-right`.
    anchor: Option<String>,
    /// Size relative to the input.
    scale: Option<f64>,
    /// Pixels from the anchor.
    offset: Option<Offset>,
}

/// An offset in pixels.
#[derive(Serialize, ToSchema)]
pub(crate) struct Offset {
    x: Option<i32>,
    y: Option<i32>,
}

/// The body of `POST /v1/jobs` (also `POST /api/process`). Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreateJob {
    /// An upload's `video_url`, or any http(s) URL (downloaded by the worker).
    #[schema(max_length = 4096, format = "uri", pattern = "^https?://")]
    video_url: String,
    /// Default `original`.
    model: Option<Model>,
    /// Default `webm`.
    output_format: Option<OutputFormat>,
    /// Default `transparent`.
    bg_type: Option<BgType>,
    bg_color: Option<Color>,
    #[schema(format = "uri", pattern = "^https?://")]
    bg_image_url: Option<String>,
    background: Option<BackgroundRequest>,
    composition: Option<Composition>,
    /// Kept and echoed (at most 16 KiB serialised).
    metadata: Option<BTreeMap<String, Value>>,
    /// Kept and echoed; not applied (see the job's `warnings`).
    #[schema(max_length = 1000)]
    text_prompt: Option<String>,
    /// Receives `job.started`, `job.completed`, `job.failed`, `job.cancelled`.
    #[schema(format = "uri", pattern = "^https?://")]
    webhook_url: Option<String>,
    /// Process only the first N seconds.
    #[schema(exclusive_minimum = 0)]
    preview_duration: Option<f64>,
    /// Default true; false makes a draft, started with `POST /v1/jobs/{id}/start`.
    auto_start: Option<bool>,
    keyframes: Option<Keyframes>,
}

/// The body of `POST /v1/jobs/{id}/start`: any option of [`CreateJob`] but `video_url`
/// overrides the draft's. An empty body starts it as it is.
#[derive(Serialize, ToSchema)]
pub(crate) struct StartJob {
    model: Option<Model>,
    output_format: Option<OutputFormat>,
    bg_type: Option<BgType>,
    bg_color: Option<Color>,
    #[schema(format = "uri", pattern = "^https?://")]
    bg_image_url: Option<String>,
    background: Option<BackgroundRequest>,
    composition: Option<Composition>,
    metadata: Option<BTreeMap<String, Value>>,
    #[schema(max_length = 1000)]
    text_prompt: Option<String>,
    #[schema(format = "uri", pattern = "^https?://")]
    webhook_url: Option<String>,
    #[schema(exclusive_minimum = 0)]
    preview_duration: Option<f64>,
    auto_start: Option<bool>,
    keyframes: Option<Keyframes>,
}

/// The background as stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct Background {
    /// `transparent`, `color` or `image`.
    #[serde(rename = "type")]
    kind: String,
    /// RGB in 0-1, for `color`.
    color: Option<Vec<f64>>,
    image_url: Option<String>,
}

/// A job, as every route and webhook shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct Job {
    /// `job_…`.
    id: String,
    /// The same as `id`.
    job_id: String,
    status: JobStatus,
    /// 0-100.
    progress: f64,
    /// Signed link to the output, once completed.
    output_url: Option<String>,
    output_url_expires_at: Option<String>,
    /// The output was deleted after the retention period.
    output_expired: bool,
    output_format: OutputFormat,
    output_sha256: Option<String>,
    output_size_bytes: Option<i64>,
    /// Seconds of video processed.
    duration_seconds: Option<f64>,
    frames: Option<i64>,
    /// Frames per second: of the attempt so far while processing, of the whole run once
    /// completed (an extension).
    fps: Option<f64>,
    /// Estimated seconds left, while processing (an extension).
    eta_seconds: Option<f64>,
    /// Why it failed, for people.
    error: Option<String>,
    /// Why it failed, for programs (`cancelled`, `invalid_video`, `insufficient_credits`, …).
    error_code: Option<String>,
    /// Options accepted but not applied.
    warnings: Vec<String>,
    model: Model,
    video_url: String,
    /// Where the input comes from: `{kind: "upload", upload_id, object_key}`, `{kind: "output",
    /// job_id, object_key}` (an earlier job's output, same key) or `{kind: "url"}`.
    input: Value,
    bg_type: BgType,
    bg_color: Option<Vec<f64>>,
    background: Background,
    composition: Option<Value>,
    text_prompt: Option<String>,
    metadata: Option<Value>,
    preview_duration: Option<f64>,
    auto_start: bool,
    /// The `keyframes` option as asked; `null`: the server's default.
    keyframes: Option<Keyframes>,
    webhook_url: Option<String>,
    /// Event → `pending`, `sent` or `failed`.
    webhook_events: BTreeMap<String, String>,
    /// `null` (draft), `pending`, `reserved`, `charged` or `refunded`.
    billing_status: Option<String>,
    credits_reserved: f64,
    credits_used: f64,
    attempts: i64,
    cancel_requested: bool,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    updated_at: String,
}

/// A job created, started or cancelled: the job plus `success` and `message`.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobChanged {
    #[schema(inline)]
    #[serde(flatten)]
    job: Job,
    success: bool,
    message: String,
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

/// One state transition.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobEvent {
    id: i64,
    at: String,
    from: Option<String>,
    to: String,
    reason: String,
    request_id: Option<String>,
    worker: Option<String>,
    attempt: Option<i64>,
}

/// A job's audit trail, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobEvents {
    job_id: String,
    items: Vec<JobEvent>,
}

/// A stored upload.
#[derive(Serialize, ToSchema)]
pub(crate) struct Upload {
    success: bool,
    /// `vid_…`.
    video_id: String,
    /// Give this to `POST /v1/jobs` as `video_url` (a signed link; valid as long as the upload).
    video_url: String,
    filename: String,
    size: i64,
    content_type: String,
    sha256: String,
}

/// A multipart upload.
#[derive(Serialize, ToSchema)]
pub(crate) struct UploadForm {
    /// The video (MP4, MOV, WebM, AVI, MKV…), at most `CLEARBG_MAX_UPLOAD_BYTES`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// `POST /api/process`.
#[derive(Serialize, ToSchema)]
pub(crate) struct LegacyProcess {
    success: bool,
    id: String,
    job_id: String,
    status: JobStatus,
    progress: f64,
    output_url: Option<String>,
    error: Option<String>,
}

/// A completed job's signed output link.
#[derive(Serialize, ToSchema)]
pub(crate) struct Download {
    success: bool,
    download_url: String,
    output_format: OutputFormat,
    expires_at: String,
    output_sha256: Option<String>,
    output_size_bytes: Option<i64>,
}

/// The configured prices.
#[derive(Serialize, ToSchema)]
pub(crate) struct Pricing {
    success: bool,
    /// Model → credits per minute.
    model_pricing_credits_per_minute: BTreeMap<String, f64>,
    billing: String,
    /// Legacy; always null here.
    price_per_second_cents: Option<f64>,
    packages: Vec<Value>,
}

/// `healthy`, or `degraded` with what is wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `healthy` or `degraded`.
    status: String,
    /// Check → passed: `api`, `database`, `storage`, `ffmpeg`, `onnx_runtime`, `model_light`,
    /// `model_human`, `model_original`, `model_pro`, and `model_video` when that opt-in model is
    /// installed or serves `human`.
    checks: BTreeMap<String, bool>,
    /// Failing check → what is wrong.
    details: BTreeMap<String, String>,
    /// Embedded workers in this process.
    workers: i64,
    version: String,
}

/// Totals for one UTC day.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageDay {
    /// `YYYY-MM-DD`.
    date: String,
    jobs: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
    credits_used: f64,
    credits_refunded: f64,
}

/// Usage over the last N days.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageSummary {
    success: bool,
    days: i64,
    total_jobs: i64,
    completed_jobs: i64,
    failed_jobs: i64,
    cancelled_jobs: i64,
    credits_used: f64,
    credits_refunded: f64,
    credits_balance: f64,
    /// Oldest first, idle days included.
    daily: Vec<UsageDay>,
}

/// One usage event.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageEvent {
    /// `evt_…`.
    id: String,
    /// `created` `started` `reserved` `completed` `failed` `cancelled` `charged` `refunded`.
    #[serde(rename = "type")]
    kind: String,
    job_id: Option<String>,
    request_id: Option<String>,
    credits: Option<f64>,
    created_at: String,
}

/// The latest usage events, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageEvents {
    success: bool,
    items: Vec<UsageEvent>,
    limit: i64,
}

/// An API key (never the key itself but at its creation).
#[derive(Serialize, ToSchema)]
pub(crate) struct Key {
    client_id: String,
    note: Option<String>,
    /// `kfp_…`.
    key_fingerprint: String,
    /// `active` or `disabled`.
    status: String,
    credits: f64,
    created_at: String,
    last_used_at: Option<String>,
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
    change: f64,
}

/// `POST /v1/admin/keys`.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreateKey {
    #[schema(min_length = 1, max_length = 200)]
    client_id: String,
    #[schema(max_length = 200)]
    note: Option<String>,
}

/// `POST /v1/admin/keys/disable` and `/enable`.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyRef {
    #[schema(min_length = 1, max_length = 200)]
    key_fingerprint: String,
}

/// `POST /v1/admin/keys/credits`.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdjustCredits {
    #[schema(min_length = 1, max_length = 200)]
    key_fingerprint: String,
    /// Credits to add (negative: take away), non-zero, at most 3 decimals.
    amount: f64,
    #[schema(max_length = 200)]
    note: Option<String>,
}

/// One ledger row.
#[derive(Serialize, ToSchema)]
pub(crate) struct LedgerRow {
    id: i64,
    /// `grant`, `reserve`, `release`, `charge`, `refund` or `adjust`.
    kind: String,
    amount: f64,
    balance_after: f64,
    job_id: Option<String>,
    request_id: Option<String>,
    note: Option<String>,
    created_at: String,
}

/// A key's ledger, newest first, and its balance two ways (always equal).
#[derive(Serialize, ToSchema)]
pub(crate) struct Ledger {
    key_fingerprint: String,
    credits: f64,
    /// The balance rebuilt from the whole ledger.
    ledger_credits: f64,
    items: Vec<LedgerRow>,
}

/// Adds the three ways in: an API key in `X-Api-Key` (or `Authorization: Bearer`), and the admin
/// token in `X-Admin-Token` for `/v1/admin/*`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "An API key (`clearbg keys create`)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("The same API key")).build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Token",
                "CLEARBG_ADMIN_TOKEN (admin routes are off, 403, when it is unset)",
            ))),
        );
    }
}

/// The whole description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clearbg",
        description = "Self-hosted video background removal, speaking the RemoveBGVideo REST API. Every error is `{\"error\":{\"code\",\"message\",\"request_id\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::uploads::create,
        super::jobs::create,
        super::jobs::list,
        super::jobs::get,
        super::jobs::start,
        super::jobs::cancel,
        super::jobs::events,
        super::usage::summary,
        super::usage::events,
        super::admin::list,
        super::admin::create,
        super::admin::disable,
        super::admin::enable,
        super::admin::credits,
        super::admin::ledger,
        super::admin::config,
        super::legacy::upload,
        super::legacy::process,
        super::legacy::download,
        super::meta::pricing,
        super::meta::health,
        super::files::serve,
        super::web::metrics,
        super::web::openapi_json,
        super::web::docs,
        super::web::docs_index,
        super::web::docs_file,
        super::web::index,
        super::web::asset,
    ),
    modifiers(&Security),
    tags(
        (name = "uploads", description = "Videos in"),
        (name = "jobs", description = "Background removal jobs"),
        (name = "usage", description = "What a key's jobs did and cost"),
        (name = "admin", description = "Keys and credits, with X-Admin-Token"),
        (name = "legacy", description = "The key-less /api routes kept for old integrations"),
        (name = "files", description = "Signed downloads"),
        (name = "operations", description = "Health, metrics, this description, the web app"),
    )
)]
pub struct ApiDoc;

/// The description as served.
pub fn spec() -> Value {
    let mut spec = serde_json::to_value(ApiDoc::openapi()).expect("the description serialises");
    fix_link_keys(&mut spec);
    spec
}

/// utoipa 5.5 serialises a Link object's fields in snake case (`operation_id`), which OpenAPI
/// does not know, so tools see links with no target: rename them to the specification's names.
fn fix_link_keys(spec: &mut Value) {
    let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) else { return };
    let links = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        for (from, to) in
            [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")]
        {
            if let Some(v) = link.remove(from) {
                link.insert(to.to_string(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every route in [`super::super::router`] is in the description with the same methods, and
    /// the description has no route the router lacks: a new route cannot ship undocumented.
    /// The routes are read from the router's source, the one list there is (the worker's ops
    /// router repeats two of them, hence a set).
    #[test]
    fn every_route_is_described_and_nothing_else() {
        let spec = serde_json::to_value(super::spec()).unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."), "{}", spec["openapi"]);
        let source = include_str!("mod.rs");
        let mut served = std::collections::BTreeSet::new();
        for part in source.split(".route(\"").skip(1) {
            let (path, rest) = part.split_once('"').unwrap();
            let call = &rest[..rest.find('\n').unwrap()];
            let path = path.replace("{*", "{");
            for method in ["get", "post", "put", "patch", "delete"] {
                if call.contains(&format!(" {method}(")) || call.contains(&format!(".{method}(")) {
                    served.insert((path.clone(), method));
                }
            }
        }
        assert!(served.len() > 25, "the router's routes were not found: {served:?}");
        for (path, method) in &served {
            let op = &spec["paths"][path][method];
            assert!(op.is_object(), "{} {path} is served but not described", method.to_uppercase());
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
        }
        let described: usize = spec["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(described, served.len(), "the description has operations the router does not serve");
    }

    /// Links name their target with the specification's `operationId`, and the target exists.
    #[test]
    fn links_point_at_real_operations() {
        let spec = super::spec();
        let ids: Vec<&str> = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let links = spec["paths"]["/v1/jobs"]["post"]["responses"]["200"]["links"].as_object().unwrap();
        assert!(links.len() >= 4, "{links:?}");
        for (name, link) in links {
            let target = link["operationId"].as_str().unwrap_or_else(|| panic!("{name}: {link}"));
            assert!(ids.contains(&target), "{name} points at {target}, which is not an operation");
            assert!(link.get("operation_id").is_none(), "{link}");
        }
    }

    /// Every error answer points at the one error shape, and keyed routes name their schemes.
    #[test]
    fn errors_share_one_schema_and_security_is_declared() {
        let spec = serde_json::to_value(super::spec()).unwrap();
        let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
        assert!(["api_key", "bearer", "admin_token"].iter().all(|s| schemes.contains_key(*s)), "{schemes:?}");
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let code: u16 = status.parse().unwrap();
                    if (400..600).contains(&code) && code != 503 {
                        let schema = &response["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(schema, "#/components/schemas/Error", "{method} {path} {status}");
                    }
                }
                if path.starts_with("/v1/") {
                    assert!(op["security"].is_array(), "{method} {path} declares no security");
                }
            }
        }
    }
}
