//! The shapes of request bodies, and of the answers still built with `json!`, as the OpenAPI
//! document describes them. They are never built (hence `dead_code`): the schemathesis run in
//! `crates/cli/tests/api_schema.rs` checks them against real answers. A job, the shape most
//! routes and every webhook send, is not here: it is [`crate::wire::Job`], serialised as it is
//! described.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::jobs::Status;
use crate::wire::{BgType, Keyframes, Model, OutputFormat};

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
    #[schema(value_type = Option<Model>)]
    model: Option<String>,
    /// Default `webm`.
    #[schema(value_type = Option<OutputFormat>)]
    output_format: Option<String>,
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
    #[schema(value_type = Option<Keyframes>)]
    keyframes: Option<String>,
}

/// The body of `POST /v1/jobs/{id}/start`: any option of [`CreateJob`] but `video_url`
/// overrides the draft's. An empty body starts it as it is.
#[derive(Serialize, ToSchema)]
pub(crate) struct StartJob {
    #[schema(value_type = Option<Model>)]
    model: Option<String>,
    #[schema(value_type = Option<OutputFormat>)]
    output_format: Option<String>,
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
    #[schema(value_type = Option<Keyframes>)]
    keyframes: Option<String>,
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
    status: Status,
    progress: f64,
    output_url: Option<String>,
    error: Option<String>,
}

/// A completed job's signed output link.
#[derive(Serialize, ToSchema)]
pub(crate) struct Download {
    success: bool,
    download_url: String,
    #[schema(value_type = OutputFormat)]
    output_format: String,
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
