//! The shapes of request bodies, as the OpenAPI document describes them. The handlers read
//! bodies field by field (so that one 422 names every bad field), so these are never built
//! (hence `dead_code`); the schemathesis run in `crates/cli/tests/process/schema.rs` sends what they
//! describe. Every answer is a typed struct beside its handler (a job is [`crate::wire::Job`]),
//! serialised as it is described.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

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

/// The body of `POST /v1/jobs` (also `POST /api/process`): the video and its options.
/// Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreateJob {
    /// An upload's `video_url`, or any http(s) URL (downloaded by the worker).
    #[schema(max_length = 4096, format = "uri", pattern = "^https?://")]
    video_url: String,
    #[serde(flatten)]
    options: JobOptions,
}

/// A job's options. Also the body of `POST /v1/jobs/{id}/start`, where each one sent overrides
/// the draft's (an empty body starts it as it is).
#[derive(Serialize, ToSchema)]
pub(crate) struct JobOptions {
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

/// A multipart upload.
#[derive(Serialize, ToSchema)]
pub(crate) struct UploadForm {
    /// The video (MP4, MOV, WebM, AVI, MKV…), at most `CLEARBG_MAX_UPLOAD_BYTES`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
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
