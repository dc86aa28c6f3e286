//! The webhook outbox: deliveries written with the job change they announce, then claimed and
//! sent by [`crate::webhooks::run`].

use std::time::Duration;

use sqlx::FromRow;

use super::jobs::JobRow;
use super::{now_ms, Store};
use crate::ids::JobId;
use crate::webhooks::Event;
use crate::wire::{timestamp, Job, Links, WebhookBody};

/// A webhook delivery as stored; the columns are described in `migrations/0002_webhooks.sql`.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct DeliveryRow {
    pub id: String,
    pub job_id: JobId,
    pub event: String,
    pub url: String,
    pub body: Vec<u8>,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub status: String,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// Takes the most overdue pending delivery for one attempt: counts the attempt and pushes its
    /// due time `lease` ahead, so that no other delivery loop (in this process or another on the
    /// same database) sends it meanwhile, and one that dies mid-attempt leaves it due again.
    pub async fn claim_delivery(&self, lease: Duration) -> sqlx::Result<Option<DeliveryRow>> {
        let now = now_ms();
        sqlx::query_as(&format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, updated_at = $2 \
             WHERE id = (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at, id LIMIT 1{}) AND status = 'pending' AND next_attempt_at <= $4 RETURNING *",
            self.skip_locked()
        ))
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(now)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records that the receiver accepted a delivery.
    pub async fn delivery_sent(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'sent', updated_at = $1 WHERE id = $2 AND status = 'pending'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Records a failed attempt: due again at `retry_at`, or `failed` for good when `None`.
    pub async fn delivery_failed(&self, id: &str, error: &str, retry_at: Option<i64>) -> sqlx::Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE webhook_deliveries SET status = CASE WHEN $1 IS NULL THEN 'failed' ELSE 'pending' END, \
             next_attempt_at = COALESCE($2, next_attempt_at), last_error = $3, updated_at = $4 WHERE id = $5 AND status = 'pending'",
        )
        .bind(retry_at)
        .bind(retry_at)
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }
}

/// Queues the delivery of `event` for `row` (the job as the transition left it) in the caller's
/// transaction, if the job has a `webhook_url`.
///
/// Why in the transaction: the delivery and the job change commit together or not at all, so a
/// crash can neither lose an event nor announce a change that never happened. Why the body is
/// built here, from the row the transition returned, rather than after the commit: it then shows
/// the job exactly as it was at the event (a `job.started` body never shows a job that completed
/// meanwhile), every retry sends the same bytes, and nothing is left to fill in after a crash.
/// Its `data.webhook_events` is the state of the job's earlier deliveries. A job starts once and
/// ends once, so a second delivery of the same event is ignored (a job handed back at shutdown
/// and claimed again is not announced twice).
pub(super) async fn enqueue_webhook(
    tx: &mut sqlx::AnyConnection,
    row: &JobRow,
    event: Event,
    links: Links<'_>,
) -> sqlx::Result<()> {
    let Some(url) = &row.spec.webhook_url else { return Ok(()) };
    let id = format!("whd_{}", uuid::Uuid::new_v4().simple());
    let now = now_ms();
    let body =
        WebhookBody { event: event.as_str(), delivery_id: &id, created_at: timestamp(now), data: Job::new(row, links) };
    let body = serde_json::to_vec(&body).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, job_id, event, url, body, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id, event) DO NOTHING",
    )
    .bind(&id)
    .bind(&row.id)
    .bind(event.as_str())
    .bind(url)
    .bind(body)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}
