//! Deletes uploads and outputs once they are older than the retention period. Their records
//! stay (with `deleted_at` / `output_deleted_at`), so a job still explains what happened.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::now_ms;
use crate::App;

/// Runs until `stop` turns true.
pub async fn run(app: App, mut stop: watch::Receiver<bool>) {
    // Often enough that nothing outlives its retention by much, rarely enough to cost nothing.
    let every = (app.config.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        if let Err(e) = sweep(&app).await {
            tracing::warn!(error = %e, "sweeping expired files");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass; returns how many files were deleted.
pub async fn sweep(app: &App) -> anyhow::Result<usize> {
    app.limits.shrink();
    app.store.idempotency_sweep().await?;
    let cutoff = now_ms() - app.config.retention.as_millis() as i64;
    let mut deleted = 0;
    for upload in app.store.expired_uploads(cutoff).await? {
        app.storage.delete(&upload.object_key).await?;
        app.store.mark_upload_deleted(&upload.id).await?;
        tracing::info!(upload_id = %upload.id, "upload deleted after the retention period");
        deleted += 1;
    }
    for (job_id, key) in app.store.expired_outputs(cutoff).await? {
        app.storage.delete(&key).await?;
        app.store.mark_output_deleted(&job_id).await?;
        tracing::info!(job_id = %job_id, "output deleted after the retention period");
        deleted += 1;
    }
    Ok(deleted)
}
