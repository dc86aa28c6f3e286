//! Requests remembered under their `Idempotency-Key` (`idempotency_keys`), for the middleware in
//! `http::idempotency`: a primary key makes the first request's claim atomic.

use super::{now_ms, Store};

/// How long a key is remembered.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

/// A request remembered under its `Idempotency-Key`: what identifies it and, once it was
/// answered, the answer.
#[derive(sqlx::FromRow)]
pub struct Remembered {
    /// Method, path and body hash of the first request.
    pub fingerprint: String,
    /// Its status, once answered.
    pub status: Option<i64>,
    /// Its body, once answered.
    pub body: Option<Vec<u8>>,
}

impl Store {
    /// Drops `key` if it expired, or if its first request never answered (its process died).
    pub async fn idempotency_forget(&self, scope: &str, key: &str, expired: i64, abandoned: i64) -> sqlx::Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND (created_at < $3 OR (status IS NULL AND created_at < $4))",
        )
        .bind(scope)
        .bind(key)
        .bind(expired)
        .bind(abandoned)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Claims `key` for this request; false if another request has it.
    pub async fn idempotency_claim(&self, scope: &str, key: &str, fingerprint: &str, now: i64) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The request remembered under `key`, if any.
    pub async fn idempotency_get(&self, scope: &str, key: &str) -> sqlx::Result<Option<Remembered>> {
        sqlx::query_as("SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Keeps the answer of the request that claimed `key`.
    pub async fn idempotency_save(&self, scope: &str, key: &str, status: u16, body: &[u8]) -> sqlx::Result<()> {
        sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE scope = $3 AND key = $4")
            .bind(status as i64)
            .bind(body)
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Frees `key` for a retry (its request's answer said "try again").
    pub async fn idempotency_release(&self, scope: &str, key: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Deletes every key older than 24 hours (called by the sweeper).
    pub async fn idempotency_sweep(&self) -> sqlx::Result<u64> {
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now_ms() - IDEMPOTENCY_TTL_MS)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }
}
