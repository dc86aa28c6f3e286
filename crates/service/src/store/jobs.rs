//! Jobs and their audit trail: creation, start, cancel and failure, each one transaction that
//! also writes its `job_events` row (and, where it applies, settles credits and queues the
//! webhook). What a worker does to a job it holds is in [`super::leases`].

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::ledger::{reserve, settle, Reservation};
use super::outbox::enqueue_webhook;
use super::usage::usage;
use super::{now_ms, Store, StoreError};
use crate::ids::{JobId, KeyFingerprint};
use crate::jobs::{Billing, JobSpec, Status};
use crate::webhooks::Event;
use crate::wire::Links;

/// A job as stored (the columns are described in `migrations/*/0001_init.sql`), its JSON and
/// enum columns read into their types once: a row that does not read (a status or a spec
/// written by another version) is an error, never a guess.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct JobRow {
    pub id: JobId,
    pub owner: Option<KeyFingerprint>,
    pub status: Status,
    pub spec: JobSpec,
    /// Options accepted but not applied.
    pub warnings: Vec<String>,
    pub progress: f64,
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub output_key: Option<String>,
    pub output_sha256: Option<String>,
    pub output_size_bytes: Option<i64>,
    pub duration_seconds: Option<f64>,
    pub frames: Option<i64>,
    /// Frames per second of the attempt so far (processing) or of the whole run (completed).
    pub fps: Option<f64>,
    /// Seconds left, estimated at the last heartbeat.
    pub eta_seconds: Option<f64>,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
    pub output_deleted_at: Option<i64>,
    /// `None` for a draft or an unbilled (anonymous) job.
    pub billing_status: Option<Billing>,
    /// Millicredits held at start (or by the worker, once a URL input's duration is known).
    pub credits_reserved: i64,
    /// Millicredits charged at completion.
    pub credits_used: i64,
    /// `{"job.started":"sent",…}`: each webhook event's delivery status, from `webhook_deliveries`.
    pub webhook_events: BTreeMap<String, String>,
}

impl<'r> FromRow<'r, AnyRow> for JobRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<JobRow> {
        fn parsed<T, E>(column: &str, value: Result<T, E>) -> sqlx::Result<T>
        where
            E: std::error::Error + Send + Sync + 'static,
        {
            value.map_err(|e| sqlx::Error::ColumnDecode { index: column.to_string(), source: Box::new(e) })
        }
        let text = |column: &str| row.try_get::<String, _>(column);
        let billing: Option<String> = row.try_get("billing_status")?;
        Ok(JobRow {
            id: row.try_get("id")?,
            owner: row.try_get("owner")?,
            status: parsed("status", text("status")?.parse::<Status>())?,
            spec: parsed("spec", serde_json::from_str(&text("spec")?))?,
            warnings: parsed("warnings", serde_json::from_str(&text("warnings")?))?,
            progress: row.try_get("progress")?,
            error: row.try_get("error")?,
            error_code: row.try_get("error_code")?,
            output_key: row.try_get("output_key")?,
            output_sha256: row.try_get("output_sha256")?,
            output_size_bytes: row.try_get("output_size_bytes")?,
            duration_seconds: row.try_get("duration_seconds")?,
            frames: row.try_get("frames")?,
            fps: row.try_get("fps")?,
            eta_seconds: row.try_get("eta_seconds")?,
            attempts: row.try_get("attempts")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
            created_at: row.try_get("created_at")?,
            queued_at: row.try_get("queued_at")?,
            started_at: row.try_get("started_at")?,
            completed_at: row.try_get("completed_at")?,
            updated_at: row.try_get("updated_at")?,
            output_deleted_at: row.try_get("output_deleted_at")?,
            billing_status: parsed("billing_status", billing.map(|b| b.parse::<Billing>()).transpose())?,
            credits_reserved: row.try_get("credits_reserved")?,
            credits_used: row.try_get("credits_used")?,
            webhook_events: parsed("webhook_events", serde_json::from_str(&text("webhook_events")?))?,
        })
    }
}

/// One row of a job's audit trail.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct EventRow {
    /// Order of the event.
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// State before (`null` for creation).
    pub from_status: Option<String>,
    /// State after.
    pub to_status: String,
    /// Why.
    pub reason: String,
    /// The API request that caused it, if one did.
    pub request_id: Option<String>,
    /// The worker that caused it, if one did.
    pub worker: Option<String>,
    /// The attempt it belongs to.
    pub attempt: i64,
}

impl Store {
    /// Stores a new job in `status` (`created` or `pending`); a `pending` one makes its
    /// `reservation` on the owner's balance in the same transaction, or is not stored at all.
    pub async fn insert_job(
        &self,
        id: &JobId,
        owner: Option<&KeyFingerprint>,
        spec: &JobSpec,
        status: Status,
        request_id: Option<&str>,
        reservation: Reservation,
    ) -> Result<JobRow, StoreError> {
        let cols = self.job_columns();
        let now = now_ms();
        let reservation = if status == Status::Pending && owner.is_some() { reservation } else { Reservation::None };
        let (billing, reserved) = reservation.columns();
        let mut tx = self.pool.begin().await?;
        let row: JobRow = sqlx::query_as(&format!(
            "INSERT INTO jobs (id, owner, status, spec, warnings, created_at, queued_at, updated_at, billing_status, credits_reserved) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {cols}"
        ))
        .bind(id)
        .bind(owner)
        .bind(status.as_str())
        .bind(serde_json::to_string(spec).expect("a spec serialises"))
        .bind(serde_json::to_string(&spec.warnings()).expect("strings serialise"))
        .bind(now)
        .bind((status == Status::Pending).then_some(now))
        .bind(now)
        .bind(billing)
        .bind(reserved)
        .fetch_one(&mut *tx)
        .await?;
        let reason =
            if status == Status::Pending { "created and queued" } else { "created as a draft (auto_start false)" };
        event(&mut tx, id, None, status, reason, request_id, None, 0).await?;
        usage(&mut tx, owner, "created", id, request_id, None).await?;
        if status == Status::Pending {
            usage(&mut tx, owner, "started", id, request_id, None).await?;
            reserve(&mut tx, owner, id, request_id, reservation).await?;
            self.announce_queued(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// A job by id, if `owner` may see it (`None` owner: any job, for internal use).
    pub async fn job(&self, id: &JobId, owner: Option<&KeyFingerprint>) -> sqlx::Result<Option<JobRow>> {
        let cols = self.job_columns();
        let row: Option<JobRow> = sqlx::query_as(&format!("SELECT {cols} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.filter(|r| owner.is_none() || r.owner.as_ref() == owner))
    }

    /// A page of `owner`'s jobs, newest first, and how many there are in all.
    pub async fn list_jobs(
        &self,
        owner: &KeyFingerprint,
        status: Option<Status>,
        limit: i64,
        offset: i64,
    ) -> sqlx::Result<(Vec<JobRow>, i64)> {
        let cols = self.job_columns();
        let status = status.map(Status::as_str);
        let rows = sqlx::query_as(&format!(
            "SELECT {cols} FROM jobs WHERE owner = $1 AND ($2 IS NULL OR status = $3) ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(owner)
        .bind(status)
        .bind(status)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE owner = $1 AND ($2 IS NULL OR status = $3)")
            .bind(owner)
            .bind(status)
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        Ok((rows, total))
    }

    /// Queues a draft with its final spec: `created` → `pending`, making its `reservation` on
    /// the owner's balance in the same transaction (or changing nothing, if the balance is short).
    pub async fn start_job(
        &self,
        id: &JobId,
        owner: Option<&KeyFingerprint>,
        spec: &JobSpec,
        request_id: Option<&str>,
        reservation: Reservation,
    ) -> Result<JobRow, StoreError> {
        let cols = self.job_columns();
        let now = now_ms();
        let reservation = if owner.is_some() { reservation } else { Reservation::None };
        let (billing, reserved) = reservation.columns();
        let mut tx = self.pool.begin().await?;
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET status = 'pending', spec = $1, warnings = $2, queued_at = $3, updated_at = $4, billing_status = $5, credits_reserved = $6 \
             WHERE id = $7 AND status = 'created' AND ($8 IS NULL OR owner = $9) RETURNING {cols}"
        ))
        .bind(serde_json::to_string(spec).expect("a spec serialises"))
        .bind(serde_json::to_string(&spec.warnings()).expect("strings serialise"))
        .bind(now)
        .bind(now)
        .bind(billing)
        .bind(reserved)
        .bind(id)
        .bind(owner)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(self.conflict(id, owner).await);
        };
        event(&mut tx, id, Some(Status::Created), Status::Pending, "started", request_id, None, 0).await?;
        usage(&mut tx, row.owner.as_ref(), "started", id, request_id, None).await?;
        reserve(&mut tx, row.owner.as_ref(), id, request_id, reservation).await?;
        self.announce_queued(&mut tx).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn conflict(&self, id: &JobId, owner: Option<&KeyFingerprint>) -> StoreError {
        match self.job(id, owner).await {
            Ok(Some(row)) => StoreError::WrongState(row.status),
            Ok(None) => StoreError::NotFound,
            Err(e) => StoreError::Db(e),
        }
    }

    /// Ends a job as `failed` if it is in state `from` and, with `worker`, still held by it;
    /// queues `job.failed` (or `job.cancelled` for the code `cancelled`) with `links` for its body.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail(
        &self,
        id: &JobId,
        worker: Option<&str>,
        from: Status,
        code: &str,
        message: &str,
        request_id: Option<&str>,
        links: Links<'_>,
    ) -> sqlx::Result<bool> {
        let cols = self.job_columns();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET status = 'failed', error = $1, error_code = $2, completed_at = $3, updated_at = $4, \
             lease_owner = NULL, lease_expires_at = NULL, \
             billing_status = CASE WHEN billing_status IN ('pending', 'reserved') THEN 'refunded' ELSE billing_status END \
             WHERE id = $5 AND status = $6 AND ($7 IS NULL OR lease_owner = $8) RETURNING {cols}"
        ))
        .bind(message)
        .bind(code)
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(from.as_str())
        .bind(worker)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let reason = format!("{code}: {message}");
        event(&mut tx, id, Some(from), Status::Failed, &reason, request_id, worker, row.attempts).await?;
        let kind = if code == "cancelled" { "cancelled" } else { "failed" };
        usage(&mut tx, row.owner.as_ref(), kind, id, request_id, None).await?;
        settle(&mut tx, &row, request_id).await?;
        if let Some(ended) = Event::ended(&row) {
            enqueue_webhook(&mut tx, &row, ended, links).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Asks the worker running a job to stop; recorded in the audit trail.
    pub async fn request_cancel(&self, id: &JobId, request_id: Option<&str>) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let attempt: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'processing' RETURNING attempts",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(attempt) = attempt else { return Ok(false) };
        event(&mut tx, id, Some(Status::Processing), Status::Processing, "cancel requested", request_id, None, attempt)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A job's audit trail, oldest first.
    pub async fn events(&self, id: &JobId) -> sqlx::Result<Vec<EventRow>> {
        sqlx::query_as("SELECT * FROM job_events WHERE job_id = $1 ORDER BY id").bind(id).fetch_all(&self.pool).await
    }

    /// How many jobs are in each status, for `/metrics` (statuses with no job are absent).
    /// Plain SQL that SQLite and PostgreSQL both run; the count is cast so both return BIGINT.
    pub async fn count_jobs_by_status(&self) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT status, CAST(COUNT(*) AS BIGINT) FROM jobs GROUP BY status").fetch_all(&self.pool).await
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn event(
    tx: &mut sqlx::AnyConnection,
    job_id: &JobId,
    from: Option<Status>,
    to: Status,
    reason: &str,
    request_id: Option<&str>,
    worker: Option<&str>,
    attempt: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO job_events (job_id, at, from_status, to_status, reason, request_id, worker, attempt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(job_id)
    .bind(now_ms())
    .bind(from.map(Status::as_str))
    .bind(to.as_str())
    .bind(reason)
    .bind(request_id)
    .bind(worker)
    .bind(attempt)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}
