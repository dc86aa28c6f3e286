//! A worker's hold on a job: the claim and its lease, heartbeats, the attempt's end (completed,
//! or handed back), and the recovery of jobs whose worker was lost.

use std::time::Duration;

use super::jobs::{event, JobRow};
use super::ledger::settle;
use super::outbox::enqueue_webhook;
use super::usage::usage;
use super::{now_ms, Store};
use crate::ids::JobId;
use crate::jobs::Status;
use crate::webhooks::Event;
use crate::wire::Links;

/// What a finished attempt produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Storage key.
    pub key: String,
    /// Hex sha256.
    pub sha256: String,
    /// Bytes.
    pub size_bytes: i64,
    /// Duration of the output in seconds.
    pub duration_seconds: f64,
    /// Frames written.
    pub frames: i64,
    /// Average frames per second of the run.
    pub fps: f64,
    /// Frames the model ran on (the others were carried along the motion).
    pub keyframes: i64,
}

/// What a heartbeat reports of a running job.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Advance {
    /// Percent done, 0-99.
    pub percent: f64,
    /// Frames per second so far; `None` before the first frame.
    pub fps: Option<f64>,
    /// Seconds left at that speed.
    pub eta_seconds: Option<f64>,
}

/// How a worker gives a job back to the queue ([`Store::release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack {
    /// The worker is shutting down: the job is claimable at once and the attempt is not counted.
    Shutdown,
    /// The attempt failed for a reason of this service, not of the job: it counts, and the job is
    /// claimable again from this time (Unix ms), when the fault may have passed.
    RetryAt(i64),
}

impl Store {
    /// Puts jobs whose worker stopped renewing its lease back in the queue, or fails them once
    /// they have used every attempt (queueing `job.failed` with `links` for its body). Returns the jobs it
    /// touched.
    pub async fn recover_expired(&self, max_attempts: u32, links: Links<'_>) -> sqlx::Result<Vec<JobId>> {
        let cols = self.job_columns();
        let now = now_ms();
        let expired: Vec<(JobId, Option<String>, i64)> = sqlx::query_as(
            "SELECT id, lease_owner, attempts FROM jobs WHERE status = 'processing' AND lease_expires_at < $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut touched = Vec::new();
        for (id, worker, attempts) in expired {
            let mut tx = self.pool.begin().await?;
            let (to, reason) = if attempts >= max_attempts as i64 {
                (
                    Status::Failed,
                    format!(
                        "worker {} stopped renewing its lease; all {attempts} attempts used",
                        worker.as_deref().unwrap_or("?")
                    ),
                )
            } else {
                (
                    Status::Pending,
                    format!("worker {} stopped renewing its lease; queued again", worker.as_deref().unwrap_or("?")),
                )
            };
            let done: Option<JobRow> = sqlx::query_as(&format!(
                "UPDATE jobs SET status = $1, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2, \
                 queued_at = CASE WHEN $3 = 'pending' THEN $4 ELSE queued_at END, \
                 error = CASE WHEN $5 = 'failed' THEN $6 ELSE error END, \
                 error_code = CASE WHEN $7 = 'failed' THEN 'attempts_exhausted' ELSE error_code END, \
                 completed_at = CASE WHEN $8 = 'failed' THEN $9 ELSE completed_at END, \
                 billing_status = CASE WHEN $10 = 'failed' AND billing_status IN ('pending', 'reserved') THEN 'refunded' ELSE billing_status END \
                 WHERE id = $11 AND status = 'processing' AND lease_expires_at < $12 RETURNING {cols}"
            ))
            .bind(to.as_str())
            .bind(now)
            .bind(to.as_str())
            .bind(now)
            .bind(to.as_str())
            .bind(format!("The job was interrupted {attempts} times (its worker was lost each time) and was given up"))
            .bind(to.as_str())
            .bind(to.as_str())
            .bind(now)
            .bind(to.as_str())
            .bind(&id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = done {
                event(&mut tx, &id, Some(Status::Processing), to, &reason, None, None, attempts).await?;
                if to == Status::Failed {
                    usage(&mut tx, row.owner.as_ref(), "failed", &id, None, None).await?;
                    settle(&mut tx, &row, None).await?;
                }
                if to == Status::Pending {
                    self.announce_queued(&mut tx).await?;
                }
                if let Some(ended) = Event::ended(&row) {
                    enqueue_webhook(&mut tx, &row, ended, links).await?;
                }
                touched.push(id.clone());
            }
            tx.commit().await?;
        }
        Ok(touched)
    }

    /// Claims the oldest queued job for `worker` with a lease of `lease`, queueing `job.started`
    /// (with `links` for its body) the first time the job is claimed. A job handed back to wait out a backoff
    /// is queued in the future ([`HandBack::RetryAt`]) and is passed over until then.
    pub async fn claim(&self, worker: &str, lease: Duration, links: Links<'_>) -> sqlx::Result<Option<JobRow>> {
        let cols = self.job_columns();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET status = 'processing', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
             started_at = COALESCE(started_at, $3), updated_at = $4, progress = 0, fps = NULL, eta_seconds = NULL \
             WHERE id = (SELECT id FROM jobs WHERE status = 'pending' AND queued_at <= $5 ORDER BY queued_at, id LIMIT 1{skip}) \
             AND status = 'pending' RETURNING {cols}",
            skip = self.skip_locked()
        ))
        .bind(worker)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = &row {
            let reason = format!("claimed by worker {worker} (attempt {})", row.attempts);
            event(
                &mut tx,
                &row.id,
                Some(Status::Pending),
                Status::Processing,
                &reason,
                None,
                Some(worker),
                row.attempts,
            )
            .await?;
            enqueue_webhook(&mut tx, row, Event::Started, links).await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Renews `worker`'s lease and records progress. Returns `None` if the lease was lost (the
    /// job was taken from this worker), else whether a cancel was requested.
    pub async fn heartbeat(
        &self,
        id: &JobId,
        worker: &str,
        lease: Duration,
        advance: Advance,
    ) -> sqlx::Result<Option<bool>> {
        let now = now_ms();
        sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $1, progress = CASE WHEN progress > $2 THEN progress ELSE $2 END, updated_at = $3, \
             fps = COALESCE($6, fps), eta_seconds = COALESCE($7, eta_seconds) \
             WHERE id = $4 AND status = 'processing' AND lease_owner = $5 RETURNING cancel_requested",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(advance.percent)
        .bind(now)
        .bind(id)
        .bind(worker)
        .bind(advance.fps)
        .bind(advance.eta_seconds)
        .fetch_optional(&self.pool)
        .await
        .map(|c: Option<i64>| c.map(|c| c != 0))
    }

    /// `processing` → `completed`, if `worker` still holds the job; queues `job.completed` with
    /// `links` for its body. Charges `cost` millicredits (never more than the reservation, which is released)
    /// in the same transaction.
    pub async fn complete(
        &self,
        id: &JobId,
        worker: &str,
        out: &Output,
        cost: i64,
        links: Links<'_>,
    ) -> sqlx::Result<bool> {
        let cols = self.job_columns();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET status = 'completed', progress = 100, output_key = $1, output_sha256 = $2, output_size_bytes = $3, \
             duration_seconds = $4, frames = $5, completed_at = $6, updated_at = $7, lease_owner = NULL, lease_expires_at = NULL, \
             fps = $11, eta_seconds = NULL, \
             billing_status = CASE WHEN billing_status IN ('pending', 'reserved') THEN 'charged' ELSE billing_status END, \
             credits_used = CASE WHEN billing_status = 'reserved' THEN CASE WHEN $8 < 0 THEN 0 WHEN $8 > credits_reserved THEN credits_reserved ELSE $8 END ELSE credits_used END \
             WHERE id = $9 AND status = 'processing' AND lease_owner = $10 RETURNING {cols}"
        ))
        .bind(&out.key)
        .bind(&out.sha256)
        .bind(out.size_bytes)
        .bind(out.duration_seconds)
        .bind(out.frames)
        .bind(now)
        .bind(now)
        .bind(cost)
        .bind(id)
        .bind(worker)
        .bind(out.fps)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let reason = format!(
            "output stored: {} bytes, sha256 {}; model on {} of {} frames",
            out.size_bytes, out.sha256, out.keyframes, out.frames
        );
        event(&mut tx, id, Some(Status::Processing), Status::Completed, &reason, None, Some(worker), row.attempts)
            .await?;
        usage(&mut tx, row.owner.as_ref(), "completed", id, None, None).await?;
        settle(&mut tx, &row, None).await?;
        enqueue_webhook(&mut tx, &row, Event::Completed, links).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Gives a job that `worker` still holds back to the queue, as `how` says, with `reason` in
    /// its audit trail.
    pub async fn release(&self, id: &JobId, worker: &str, how: HandBack, reason: &str) -> sqlx::Result<bool> {
        let now = now_ms();
        let (refunded_attempts, queued_at) = match how {
            HandBack::Shutdown => (1, now),
            HandBack::RetryAt(at) => (0, at),
        };
        let mut tx = self.pool.begin().await?;
        let attempt: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'pending', attempts = attempts - $1, lease_owner = NULL, lease_expires_at = NULL, \
             progress = 0, fps = NULL, eta_seconds = NULL, queued_at = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'processing' AND lease_owner = $5 RETURNING attempts",
        )
        .bind(refunded_attempts)
        .bind(queued_at)
        .bind(now)
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(attempt) = attempt else { return Ok(false) };
        event(&mut tx, id, Some(Status::Processing), Status::Pending, reason, None, Some(worker), attempt).await?;
        self.announce_queued(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }
}
