//! Usage events of each key, and their sum per UTC day.

use serde::Serialize;
use sqlx::FromRow;

use super::{now_ms, Store};
use crate::ids::{JobId, KeyFingerprint};

/// One usage event of a key.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct UsageRow {
    /// Order of the event.
    pub id: i64,
    /// `created`, `started`, `reserved`, `completed`, `failed`, `cancelled`, `charged` or `refunded`.
    #[sqlx(rename = "type")]
    pub kind: String,
    /// The job.
    pub job_id: Option<JobId>,
    /// The request that caused it (`None` for a worker's doing).
    pub request_id: Option<String>,
    /// Millicredits, for `reserved`, `charged` and `refunded`.
    pub credits: Option<i64>,
    /// When (ms).
    pub at: i64,
}

/// One day of a usage summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// Jobs created.
    pub jobs: i64,
    /// Jobs completed.
    pub completed: i64,
    /// Jobs failed, cancelled ones included.
    pub failed: i64,
    /// Of those, cancelled.
    pub cancelled: i64,
    /// Millicredits charged.
    pub credits_used: i64,
    /// Millicredits refunded.
    pub credits_refunded: i64,
}

impl Store {
    /// A key's usage events, newest first, at most `limit`.
    pub async fn usage_events(&self, fingerprint: &KeyFingerprint, limit: i64) -> sqlx::Result<Vec<UsageRow>> {
        sqlx::query_as(
            "SELECT id, type, job_id, request_id, credits, at FROM usage_events WHERE key_fingerprint = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(fingerprint)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// A key's usage per UTC day for the `days` days ending today, oldest first; every day has
    /// a row, idle ones zero.
    pub async fn usage_summary(&self, fingerprint: &KeyFingerprint, days: i64) -> sqlx::Result<Vec<UsageDay>> {
        let today = chrono::Utc::now().date_naive();
        let first = today - chrono::Duration::days(days - 1);
        let since = first.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis();
        // Days are counted in whole UTC days since the epoch, which both databases compute alike.
        let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT at / 86400000 AS day, type, COUNT(*), CAST(COALESCE(SUM(credits), 0) AS BIGINT) FROM usage_events \
             WHERE key_fingerprint = $1 AND at >= $2 GROUP BY at / 86400000, type",
        )
        .bind(fingerprint)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<UsageDay> = (0..days)
            .map(|n| UsageDay { date: (first + chrono::Duration::days(n)).to_string(), ..UsageDay::default() })
            .collect();
        for (day, kind, count, credits) in rows {
            let day = chrono::DateTime::from_timestamp(day * 86_400, 0).map(|t| t.date_naive().to_string());
            let Some(d) = out.iter_mut().find(|d| Some(&d.date) == day.as_ref()) else { continue };
            match kind.as_str() {
                "created" => d.jobs += count,
                "completed" => d.completed += count,
                "failed" => d.failed += count,
                "cancelled" => {
                    d.failed += count;
                    d.cancelled += count;
                }
                "charged" => d.credits_used += credits,
                "refunded" => d.credits_refunded += credits,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Records a usage event of the job's owner (anonymous jobs have none).
pub(super) async fn usage(
    tx: &mut sqlx::AnyConnection,
    owner: Option<&KeyFingerprint>,
    kind: &str,
    job_id: &JobId,
    request_id: Option<&str>,
    credits: Option<i64>,
) -> sqlx::Result<()> {
    let Some(owner) = owner else { return Ok(()) };
    sqlx::query(
        "INSERT INTO usage_events (key_fingerprint, type, job_id, request_id, credits, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(owner)
    .bind(kind)
    .bind(job_id)
    .bind(request_id)
    .bind(credits)
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map(|_| ())
}
