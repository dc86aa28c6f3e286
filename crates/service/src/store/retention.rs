//! Files past the retention period, for the sweeper.

use super::jobs::event;
use super::uploads::UploadRecord;
use super::{now_ms, Store};
use crate::ids::{JobId, UploadId};
use crate::jobs::Status;

impl Store {
    /// Uploads stored before `cutoff` and not yet deleted.
    pub async fn expired_uploads(&self, cutoff: i64) -> sqlx::Result<Vec<UploadRecord>> {
        sqlx::query_as("SELECT * FROM uploads WHERE created_at < $1 AND deleted_at IS NULL LIMIT 500")
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await
    }

    /// Marks an upload's file deleted.
    pub async fn mark_upload_deleted(&self, id: &UploadId) -> sqlx::Result<()> {
        sqlx::query("UPDATE uploads SET deleted_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Completed jobs whose output was stored before `cutoff` and is still there.
    pub async fn expired_outputs(&self, cutoff: i64) -> sqlx::Result<Vec<(JobId, String)>> {
        sqlx::query_as(
            "SELECT id, output_key FROM jobs WHERE output_key IS NOT NULL AND output_deleted_at IS NULL AND completed_at < $1 LIMIT 500",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
    }

    /// Marks a job's output deleted, with an audit event.
    pub async fn mark_output_deleted(&self, id: &JobId) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE jobs SET output_deleted_at = $1, updated_at = $2 WHERE id = $3")
            .bind(now_ms())
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        event(
            &mut tx,
            id,
            Some(Status::Completed),
            Status::Completed,
            "output deleted after the retention period",
            None,
            None,
            0,
        )
        .await?;
        tx.commit().await
    }
}
