//! API keys: stored as a hash and a public fingerprint, never as the key itself.

use rand::RngCore;
use serde::Serialize;
use sqlx::FromRow;

use super::ledger::{ledger, Entry};
use super::{hash_key, now_ms, Store};
use crate::ids::KeyFingerprint;

/// An API key as stored (never the key itself).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct KeyRecord {
    /// Public id of the key.
    #[serde(rename = "key_fingerprint")]
    pub fingerprint: KeyFingerprint,
    /// sha256 of the key.
    #[serde(skip)]
    pub key_hash: String,
    /// Who the key is for.
    pub client_id: String,
    /// Free text.
    pub note: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last authenticated request (ms), to the minute.
    pub last_used_at: Option<i64>,
    /// The balance in millicredits: a cache of the sum of the key's `credit_ledger` rows.
    pub credits: i64,
}

impl Store {
    /// Creates a key for `client_id` with a first grant of `grant` millicredits (a ledger row);
    /// returns the key (shown once) and its record.
    pub async fn create_key(
        &self,
        client_id: &str,
        note: Option<&str>,
        grant: i64,
        request_id: Option<&str>,
    ) -> sqlx::Result<(String, KeyRecord)> {
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut secret);
        let key = format!("cbg_{}", hex::encode(secret));
        let hash = hash_key(&key);
        let record = KeyRecord {
            fingerprint: KeyFingerprint::of_hash(&hash),
            key_hash: hash,
            client_id: client_id.to_string(),
            note: note.map(str::to_string),
            status: "active".into(),
            created_at: now_ms(),
            last_used_at: None,
            credits: grant.max(0),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (fingerprint, key_hash, client_id, note, status, created_at, credits) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.fingerprint)
        .bind(&record.key_hash)
        .bind(&record.client_id)
        .bind(&record.note)
        .bind(&record.status)
        .bind(record.created_at)
        .bind(record.credits)
        .execute(&mut *tx)
        .await?;
        if record.credits > 0 {
            let entry = Entry { kind: "grant", job_id: None, request_id, note: Some("initial grant") };
            ledger(&mut tx, &record.fingerprint, record.credits, record.credits, &entry).await?;
        }
        tx.commit().await?;
        Ok((key, record))
    }

    /// The record of `key`, if it exists (active or not).
    pub async fn find_key(&self, key: &str) -> sqlx::Result<Option<KeyRecord>> {
        sqlx::query_as("SELECT * FROM api_keys WHERE key_hash = $1")
            .bind(hash_key(key))
            .fetch_optional(&self.pool)
            .await
    }

    /// Records that a key was used, at most once a minute per key.
    pub async fn touch_key(&self, fingerprint: &KeyFingerprint) -> sqlx::Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE fingerprint = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(fingerprint)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> sqlx::Result<Vec<KeyRecord>> {
        sqlx::query_as("SELECT * FROM api_keys ORDER BY created_at, fingerprint").fetch_all(&self.pool).await
    }

    /// Sets a key `active` or `disabled`; `None` if there is no such key.
    pub async fn set_key_status(&self, fingerprint: &KeyFingerprint, status: &str) -> sqlx::Result<Option<KeyRecord>> {
        sqlx::query_as("UPDATE api_keys SET status = $1 WHERE fingerprint = $2 RETURNING *")
            .bind(status)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await
    }

    /// A key by fingerprint.
    pub async fn key_by_fingerprint(&self, fingerprint: &KeyFingerprint) -> sqlx::Result<Option<KeyRecord>> {
        sqlx::query_as("SELECT * FROM api_keys WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await
    }
}
