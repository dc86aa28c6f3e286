//! The wire shapes that more than the HTTP layer sends: a job as every route, every webhook and
//! the legacy routes show it, and the time format they share.
//!
//! They are typed structs, serialised as they are and described by the same derive
//! (`ToSchema`), so the OpenAPI document and the JSON cannot drift apart. They live below the
//! HTTP layer because the [`store`](crate::store) freezes a job's webhook body inside the
//! transaction that changes the job; the routes only add `success`/`message` around them.

use std::collections::BTreeMap;
use std::time::Duration;

use clearbg_engine::Tier;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::ids::JobId;
use crate::jobs::{Billing, InputRef, Status};
use crate::storage::Storage;
use crate::store::{Credits, JobRow};

/// RFC 3339 UTC with milliseconds, from Unix milliseconds (empty for a time out of chrono's
/// range, which no clock of ours writes).
pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// How the links in a view are made: object storage signs them, valid for `ttl`.
#[derive(Clone, Copy)]
pub struct Links<'a> {
    /// Signs download links.
    pub storage: &'a Storage,
    /// How long a link stays valid.
    pub ttl: Duration,
}

/// A string schema whose values are the engine's own names, so that they are listed once.
fn names(values: impl IntoIterator<Item = &'static str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values)).description(Some(description)).into()
}

/// The `model` schema.
pub struct Model;

impl PartialSchema for Model {
    fn schema() -> RefOr<Schema> {
        names(
            Tier::ALL.map(Tier::name),
            "The model tier: `light` (fast, people), `human` (hair-level mattes), `original` (any \
             subject), `pro` (best edges), `video` (people in video, steady over time: Robust Video \
             Matting; an opt-in install, so a server without it answers 422 `model_not_installed`).",
        )
    }
}

impl ToSchema for Model {}

/// The `output_format` schema.
pub struct OutputFormat;

impl PartialSchema for OutputFormat {
    fn schema() -> RefOr<Schema> {
        names(
            clearbg_engine::OutputFormat::ALL.map(clearbg_engine::OutputFormat::name),
            "The output: `webm` (VP9 + alpha), `mov` (ProRes 4444 + alpha), `mp4` (H.264, needs a \
             background), `gif`, `webp`, `png_sequence` (zip of PNGs), `matte` (greyscale alpha).",
        )
    }
}

impl ToSchema for OutputFormat {}

/// The `keyframes` schema.
pub struct Keyframes;

impl PartialSchema for Keyframes {
    fn schema() -> RefOr<Schema> {
        names(
            clearbg_engine::Keyframes::ALL.map(clearbg_engine::Keyframes::name),
            "Where the heavy models (`human`, `original`, `pro`) run (an extension): `adaptive` (on \
             keyframes only; the mask is carried along the picture's motion in between, several times \
             faster) or `every` (on every frame). `light` and `video` always run every frame. Default: \
             the server's `CLEARBG_KEYFRAMES` (`adaptive`).",
        )
    }
}

impl ToSchema for Keyframes {}

/// The background's name: `transparent`, the fixed colours, `custom`/`color` (with a colour)
/// or `image` (with an image URL).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BgType {
    /// Kept transparent.
    Transparent,
    /// `#00ff00`.
    Green,
    /// `#ffffff`.
    White,
    /// `#000000`.
    Black,
    /// `#0000ff`.
    Blue,
    /// The colour in `bg_color`.
    Custom,
    /// The colour in `bg_color`.
    Color,
    /// The picture at `bg_image_url`.
    Image,
}

/// The background as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Background {
    /// `transparent`, `color` or `image`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RGB in 0-1, for `color`.
    pub color: Option<[f64; 3]>,
    /// The picture, for `image`.
    pub image_url: Option<String>,
}

/// A job, as every route and webhook shows it: the documented fields plus what a user needs to
/// debug.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    /// `job_…`.
    #[schema(value_type = String)]
    pub id: JobId,
    /// The same as `id`.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// `created` (draft) → `pending` (queued) → `processing` → `completed` | `failed` (a
    /// cancelled job is `failed` with `error_code: "cancelled"`).
    pub status: Status,
    /// 0-100.
    pub progress: f64,
    /// Signed link to the output, once completed.
    pub output_url: Option<String>,
    /// When `output_url` stops working.
    pub output_url_expires_at: Option<String>,
    /// The output was deleted after the retention period.
    pub output_expired: bool,
    /// The output's format.
    #[schema(value_type = OutputFormat)]
    pub output_format: String,
    /// The output's sha256, hex.
    pub output_sha256: Option<String>,
    /// The output's size.
    pub output_size_bytes: Option<i64>,
    /// Seconds of video processed.
    pub duration_seconds: Option<f64>,
    /// Frames processed.
    pub frames: Option<i64>,
    /// Frames per second: of the attempt so far while processing, of the whole run once
    /// completed (an extension).
    pub fps: Option<f64>,
    /// Estimated seconds left, while processing (an extension).
    pub eta_seconds: Option<f64>,
    /// Why it failed, for people.
    pub error: Option<String>,
    /// Why it failed, for programs (`cancelled`, `invalid_video`, `insufficient_credits`, …).
    pub error_code: Option<String>,
    /// Options accepted but not applied.
    pub warnings: Vec<String>,
    /// The model tier.
    #[schema(value_type = Model)]
    pub model: String,
    /// The input as given.
    pub video_url: String,
    /// Where the input comes from: `{kind: "upload", upload_id, object_key}`, `{kind: "output",
    /// job_id, object_key}` (an earlier job's output, same key) or `{kind: "url"}`.
    #[schema(value_type = Object)]
    pub input: InputRef,
    /// The background's name as the client gave it.
    #[schema(value_type = BgType)]
    pub bg_type: String,
    /// The background colour, RGB in 0-1.
    pub bg_color: Option<[f64; 3]>,
    /// The background, normalised.
    pub background: Background,
    /// The `composition` object as given.
    #[schema(value_type = Option<Object>)]
    pub composition: Option<Value>,
    /// The `text_prompt` as given (see `warnings`).
    pub text_prompt: Option<String>,
    /// The client's `metadata`, verbatim.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Only the first this many seconds are processed.
    pub preview_duration: Option<f64>,
    /// The `auto_start` flag as given.
    pub auto_start: bool,
    /// The `keyframes` option as asked; `null`: the server's default.
    #[schema(value_type = Option<Keyframes>)]
    pub keyframes: Option<String>,
    /// Where events are delivered.
    pub webhook_url: Option<String>,
    /// Event → `pending`, `sent` or `failed`.
    pub webhook_events: BTreeMap<String, String>,
    /// `null` for a draft (and an unbilled legacy job).
    pub billing_status: Option<Billing>,
    /// Credits held while the job runs.
    pub credits_reserved: Credits,
    /// Credits charged.
    pub credits_used: Credits,
    /// Attempts so far (a worker lost or a passing fault on this side costs one).
    pub attempts: i64,
    /// A cancel was asked for and the worker is stopping.
    pub cancel_requested: bool,
    /// When it was created.
    pub created_at: String,
    /// When a worker first took it.
    pub started_at: Option<String>,
    /// When it ended.
    pub completed_at: Option<String>,
    /// Its last change.
    pub updated_at: String,
}

impl Job {
    /// The job `row` as a client sees it, with a fresh download link if its output is there.
    pub fn new(row: &JobRow, links: Links<'_>) -> Job {
        let spec = &row.spec;
        let status = row.status;
        let output = (status == Status::Completed && row.output_deleted_at.is_none())
            .then_some(row.output_key.as_deref())
            .flatten()
            .map(|key| links.storage.download_url(key, links.ttl));
        let bg = &spec.background;
        Job {
            id: row.id.clone(),
            job_id: row.id.clone(),
            status,
            progress: (row.progress * 10.0).round() / 10.0,
            output_url_expires_at: output.as_ref().map(|(_, exp)| timestamp(exp * 1000)),
            output_url: output.map(|(url, _)| url),
            output_expired: row.output_deleted_at.is_some(),
            output_format: spec.output_format.to_string(),
            output_sha256: row.output_sha256.clone(),
            output_size_bytes: row.output_size_bytes,
            duration_seconds: row.duration_seconds.map(|d| (d * 1000.0).round() / 1000.0),
            frames: row.frames,
            fps: row.fps,
            eta_seconds: row.eta_seconds.filter(|_| status == Status::Processing),
            error: row.error.clone(),
            error_code: row.error_code.clone(),
            warnings: row.warnings.clone(),
            model: spec.model.to_string(),
            video_url: spec.video_url.clone(),
            input: spec.input.clone(),
            bg_type: bg.name.clone(),
            bg_color: bg.color,
            background: Background { kind: bg.kind.clone(), color: bg.color, image_url: bg.image_url.clone() },
            composition: spec.composition.as_ref().map(|c| c.given.clone()),
            text_prompt: spec.text_prompt.clone(),
            metadata: spec.metadata.clone(),
            preview_duration: spec.preview_duration,
            auto_start: spec.auto_start,
            keyframes: spec.keyframes.map(|k| k.to_string()),
            webhook_url: spec.webhook_url.clone(),
            webhook_events: row.webhook_events.clone(),
            billing_status: row.billing_status,
            credits_reserved: Credits(row.credits_reserved),
            credits_used: Credits(row.credits_used),
            attempts: row.attempts,
            cancel_requested: row.cancel_requested,
            created_at: timestamp(row.created_at),
            started_at: row.started_at.map(timestamp),
            completed_at: row.completed_at.map(timestamp),
            updated_at: timestamp(row.updated_at),
        }
    }
}

/// What a webhook delivery sends: `{"event", "delivery_id", "created_at", "data"}`, where `data`
/// is the job as `GET /v1/jobs/{id}` showed it when the event happened.
#[derive(Serialize)]
pub struct WebhookBody<'a> {
    /// `job.started`, `job.completed`, `job.failed` or `job.cancelled`.
    pub event: &'static str,
    /// The same for every retry of this delivery.
    pub delivery_id: &'a str,
    /// When the event happened.
    pub created_at: String,
    /// The job then.
    pub data: Job,
}
