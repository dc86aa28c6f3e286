//! `POST /v1/uploads`: a multipart `file` streamed to storage chunk by chunk (never held whole in
//! memory), hashed on the way, refused past the size cap. What it is comes from its first bytes
//! (the engine's [`container::sniff`]), never from what the client calls it: only real video
//! containers are stored, so a playlist or a list of files sent as `video/mp4` is refused.

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use clearbg_engine::container::{self, Sniffed};

use super::ApiKey;
use crate::error::{ApiError, ApiResult, Code, FieldError};
use crate::ids::{KeyFingerprint, UploadId};
use crate::store::{now_ms, UploadRecord};
use crate::App;

/// A stored upload.
#[derive(Serialize, ToSchema)]
pub(crate) struct Upload {
    success: bool,
    /// `vid_…`.
    #[schema(value_type = String)]
    video_id: UploadId,
    /// Give this to `POST /v1/jobs` as `video_url` (a signed link; valid as long as the upload).
    video_url: String,
    filename: String,
    size: u64,
    content_type: String,
    sha256: String,
}

/// Slack for multipart boundaries and headers when checking a declared Content-Length.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// Status codes for the two refusals: `/v1` uses 413/415, the legacy route 400 as documented.
#[derive(Clone, Copy)]
pub(crate) struct Refusals {
    pub too_large: StatusCode,
    pub wrong_type: StatusCode,
}

/// `POST /v1/uploads`.
#[utoipa::path(
    post, path = "/v1/uploads", tag = "uploads", operation_id = "create_upload", summary = "Upload a video",
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, description = "A retry with the same key and request replays the first answer (24 h)")),
    request_body(content = super::schemas::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored", body = Upload),
        (status = 400, description = "`invalid_request`: the multipart body cannot be read", body = crate::error::ErrorBody),
        (status = 409, description = "`idempotency_conflict`: the Idempotency-Key was used for another request", body = crate::error::ErrorBody),
        (status = 413, description = "`file_too_large`", body = crate::error::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not a video", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_request`: `details` names every bad field", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(app): State<App>,
    key: ApiKey,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Upload>> {
    let refusals =
        Refusals { too_large: StatusCode::PAYLOAD_TOO_LARGE, wrong_type: StatusCode::UNSUPPORTED_MEDIA_TYPE };
    store_upload(&app, Some(key.owner()), &headers, multipart, refusals).await.map(Json)
}

/// Streams the `file` part to storage and records it; shared with the legacy `/api/upload`.
pub(crate) async fn store_upload(
    app: &App,
    owner: Option<&KeyFingerprint>,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
    refusals: Refusals,
) -> ApiResult<Upload> {
    let max = app.config.max_upload_bytes;
    let too_large = || {
        ApiError::new(Code::FileTooLarge, format!("File too large: the limit is {max} bytes"))
            .with_status(refusals.too_large)
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max + MULTIPART_OVERHEAD) {
        return Err(too_large());
    }
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(vec![FieldError::new(
            "file",
            format!("send multipart/form-data with one file field named \"file\" ({e})"),
        )])
    })?;
    loop {
        let field = multipart.next_field().await.map_err(|e| bad_multipart(&e.to_string()))?;
        let Some(field) = field else {
            return Err(ApiError::invalid(vec![FieldError::new(
                "file",
                "is required: a multipart file field named \"file\"",
            )]));
        };
        if field.name() == Some("file") {
            return stream_file(app, owner, field, refusals, too_large).await;
        }
    }
}

/// Reads (and drops) a little more of a refused body, so that a client that slightly overshot
/// the cap gets its 413 instead of a connection reset; a large overshoot is cut off.
async fn drain(field: &mut Field<'_>) {
    const MAX_DRAIN: usize = 16 << 20;
    let mut drained = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, field.chunk()).await {
        drained += chunk.len();
        if drained > MAX_DRAIN {
            break;
        }
    }
}

/// Reads (and drops) a refused upload's parts, within the same bounds as [`drain`], so that the
/// client gets its refusal rather than a connection reset mid-upload.
pub(crate) async fn discard(multipart: Result<Multipart, MultipartRejection>) {
    let Ok(mut multipart) = multipart else { return };
    while let Ok(Some(mut field)) = multipart.next_field().await {
        drain(&mut field).await;
    }
}

fn bad_multipart(detail: &str) -> ApiError {
    ApiError::new(Code::Unreadable, format!("The multipart body could not be read: {detail}"))
}

async fn stream_file(
    app: &App,
    owner: Option<&KeyFingerprint>,
    mut field: Field<'_>,
    refusals: Refusals,
    too_large: impl Fn() -> ApiError,
) -> ApiResult<Upload> {
    let filename = field.file_name().unwrap_or("video").to_string();
    // Enough of the start to recognise the container (or the whole file, if shorter).
    let mut first = Vec::new();
    while first.len() < container::SNIFF_BYTES {
        match field.chunk().await.map_err(|e| bad_multipart(&e.to_string()))? {
            Some(chunk) => first.extend_from_slice(&chunk),
            None => break,
        }
    }
    let video = match container::sniff(&first) {
        Sniffed::Video(video) => video,
        _ if first.is_empty() => return Err(ApiError::invalid(vec![FieldError::new("file", "is empty")])),
        sniffed => {
            let what = match sniffed {
                Sniffed::Picture(_) => "a still picture",
                _ => "not a video this service reads (playlists and lists of files are refused)",
            };
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                format!("Invalid file type: {filename:?} is {what}; send MP4, MOV, WebM, MKV, AVI or MPEG-TS"),
            )
            .with_status(refusals.wrong_type));
        }
    };
    let (content_type, ext) = (video.media_type(), video.extension());
    let id = UploadId::generate();
    let object_key = format!("uploads/{id}.{ext}");
    let mut writer = app.storage.writer(&object_key).await.map_err(|e| ApiError::internal("storing the upload", e))?;
    let mut chunk = bytes::Bytes::from(first);
    loop {
        if writer.size() + chunk.len() as u64 > app.config.max_upload_bytes {
            writer.abort().await;
            drain(&mut field).await;
            return Err(too_large());
        }
        if !chunk.is_empty() {
            if let Err(e) = writer.write(&chunk).await {
                writer.abort().await;
                return Err(ApiError::internal("storing the upload", e));
            }
        }
        match field.chunk().await {
            Ok(Some(next)) => chunk = next,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(bad_multipart(&e.to_string()));
            }
        }
    }
    if writer.size() == 0 {
        writer.abort().await;
        return Err(ApiError::invalid(vec![FieldError::new("file", "is empty")]));
    }
    let (size, sha256) = writer.finish().await.map_err(|e| ApiError::internal("storing the upload", e))?;
    let record = UploadRecord {
        id: id.clone(),
        owner: owner.cloned(),
        object_key: object_key.clone(),
        filename: filename.clone(),
        content_type: content_type.to_string(),
        size_bytes: size as i64,
        sha256: sha256.clone(),
        created_at: now_ms(),
        deleted_at: None,
    };
    if let Err(e) = app.store.insert_upload(&record).await {
        let _ = app.storage.delete(&object_key).await;
        return Err(e.into());
    }
    // The link lives as long as the file does (or as long as the storage allows).
    let (video_url, _) = app.storage.download_url(&object_key, app.config.retention);
    tracing::info!(upload_id = %id, size, content_type, "upload stored");
    Ok(Upload {
        success: true,
        video_id: id,
        video_url,
        filename,
        size,
        content_type: content_type.to_string(),
        sha256,
    })
}
