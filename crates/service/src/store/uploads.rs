//! Uploaded files: who owns each, where it is stored, and its probed duration.

use sqlx::FromRow;

use super::Store;
use crate::ids::{KeyFingerprint, UploadId};

/// An uploaded file.
#[derive(Debug, Clone, FromRow)]
pub struct UploadRecord {
    /// `vid_…`.
    pub id: UploadId,
    /// Owning key's fingerprint.
    pub owner: Option<KeyFingerprint>,
    /// Where it is in storage.
    pub object_key: String,
    /// The client's file name.
    pub filename: String,
    /// The media type it was accepted as.
    pub content_type: String,
    /// Bytes.
    pub size_bytes: i64,
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Upload time (ms).
    pub created_at: i64,
    /// When the sweeper deleted the file (ms).
    pub deleted_at: Option<i64>,
}

impl Store {
    /// Records a stored upload.
    pub async fn insert_upload(&self, u: &UploadRecord) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, owner, object_key, filename, content_type, size_bytes, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&u.id)
        .bind(&u.owner)
        .bind(&u.object_key)
        .bind(&u.filename)
        .bind(&u.content_type)
        .bind(u.size_bytes)
        .bind(&u.sha256)
        .bind(u.created_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// An upload by id.
    pub async fn upload(&self, id: &UploadId) -> sqlx::Result<Option<UploadRecord>> {
        sqlx::query_as("SELECT * FROM uploads WHERE id = $1").bind(id).fetch_optional(&self.pool).await
    }

    /// Whether `object_key` should hold a file: an upload's or a job output's that retention has
    /// not deleted. When storage cannot read such a key, storage failed, not the job's input.
    /// (Asked only after a failed read, so the scan of unindexed columns costs nothing normally.)
    pub async fn holds_file(&self, object_key: &str) -> sqlx::Result<bool> {
        let count: i64 = sqlx::query_scalar(
            "SELECT CAST((SELECT COUNT(*) FROM uploads WHERE object_key = $1 AND deleted_at IS NULL) \
             + (SELECT COUNT(*) FROM jobs WHERE output_key = $2 AND output_deleted_at IS NULL) AS BIGINT)",
        )
        .bind(object_key)
        .bind(object_key)
        .fetch_one(&self.pool)
        .await?;
        Ok(count > 0)
    }

    /// The probed duration of an upload, if known.
    pub async fn upload_duration(&self, id: &UploadId) -> sqlx::Result<Option<f64>> {
        sqlx::query_scalar("SELECT duration_seconds FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map(Option::flatten)
    }

    /// Records the probed duration of an upload.
    pub async fn set_upload_duration(&self, id: &UploadId, seconds: f64) -> sqlx::Result<()> {
        sqlx::query("UPDATE uploads SET duration_seconds = $1 WHERE id = $2")
            .bind(seconds)
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}
