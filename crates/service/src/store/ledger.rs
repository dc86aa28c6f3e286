//! Credits: the append-only ledger beside each key's cached balance. Every change of a balance
//! is one conditional statement (so concurrent debits never overdraw) plus its ledger row, in
//! the caller's transaction.

use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;

use super::jobs::JobRow;
use super::keys::KeyRecord;
use super::usage::usage;
use super::{now_ms, Store, StoreError};
use crate::ids::{JobId, KeyFingerprint};
use crate::jobs::Billing;

/// An amount of credits, kept in millicredits (the ledger's unit) and shown in credits: an
/// integer when whole (`5`), else a decimal (`0.25`), in JSON as in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(value_type = f64)]
pub struct Credits(pub i64);

/// Millicredits in a credit.
pub const MILLIS: i64 = 1000;

impl Serialize for Credits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % MILLIS == 0 {
            s.serialize_i64(self.0 / MILLIS)
        } else {
            s.serialize_f64(self.0 as f64 / MILLIS as f64)
        }
    }
}

impl std::fmt::Display for Credits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 % MILLIS == 0 {
            write!(f, "{}", self.0 / MILLIS)
        } else {
            write!(f, "{}", self.0 as f64 / MILLIS as f64)
        }
    }
}

/// What starting a job holds on its key's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Nothing: a draft, or an anonymous (legacy) job, which is not billed.
    None,
    /// The input's duration is not known yet (a URL): the balance must be positive now, and the
    /// worker reserves once it has probed the input ([`Store::reserve_for_job`]).
    Later,
    /// Hold this many millicredits now, or refuse the start.
    Now(i64),
}

impl Reservation {
    pub(super) fn columns(self) -> (Option<&'static str>, i64) {
        match self {
            Reservation::None => (None, 0),
            Reservation::Later => (Some("pending"), 0),
            Reservation::Now(amount) => (Some("reserved"), amount),
        }
    }
}

/// How an admin changes a balance.
#[derive(Debug, Clone, Copy)]
pub enum Adjustment {
    /// Add (or, negative, take away) millicredits.
    Add(i64),
    /// Set the balance to this many millicredits.
    Set(i64),
}

/// One row of the append-only credit ledger.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct LedgerRow {
    /// Order of the row.
    pub id: i64,
    /// The key.
    pub key_fingerprint: KeyFingerprint,
    /// `grant`, `reserve`, `release`, `charge`, `refund` or `adjust`.
    pub kind: String,
    /// Signed change of the balance, millicredits.
    pub amount: i64,
    /// The balance after it, millicredits.
    pub balance_after: i64,
    /// The job it is for.
    pub job_id: Option<JobId>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Free text.
    pub note: Option<String>,
    /// When (ms).
    pub at: i64,
}

impl Store {
    /// Holds `amount` millicredits for a started job whose input's duration the worker has just
    /// learnt (billing `pending` → `reserved`), if `worker` still holds it. `Ok(false)`: nothing
    /// to do (already reserved, or the job was taken from this worker). A short balance changes
    /// nothing and is [`StoreError::InsufficientCredits`].
    pub async fn reserve_for_job(&self, id: &JobId, worker: &str, amount: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let owner: Option<Option<KeyFingerprint>> = sqlx::query_scalar(
            "UPDATE jobs SET billing_status = 'reserved', credits_reserved = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'processing' AND lease_owner = $4 AND billing_status = 'pending' RETURNING owner",
        )
        .bind(amount)
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(owner) = owner else { return Ok(false) };
        reserve(&mut tx, owner.as_ref(), id, None, Reservation::Now(amount)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An admin's change of a key's balance, with an `adjust` ledger row. `Ok(None)`: no such
    /// key. A change that would take the balance below zero changes nothing and is
    /// [`StoreError::InsufficientCredits`]. Returns the key as it is after, and the change.
    pub async fn adjust_credits(
        &self,
        fingerprint: &KeyFingerprint,
        adjustment: Adjustment,
        note: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Option<(KeyRecord, i64)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The write comes first, so the transaction holds the write lock before it reads.
        let before: Option<i64> =
            sqlx::query_scalar("UPDATE api_keys SET credits = credits WHERE fingerprint = $1 RETURNING credits")
                .bind(fingerprint)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(before) = before else { return Ok(None) };
        let change = match adjustment {
            Adjustment::Add(n) => n,
            Adjustment::Set(n) => n - before,
        };
        if before + change < 0 {
            return Err(StoreError::InsufficientCredits { needed: Some(-change), balance: before });
        }
        let after: i64 =
            sqlx::query_scalar("UPDATE api_keys SET credits = credits + $1 WHERE fingerprint = $2 RETURNING credits")
                .bind(change)
                .bind(fingerprint)
                .fetch_one(&mut *tx)
                .await?;
        let entry = Entry { kind: "adjust", job_id: None, request_id, note };
        ledger(&mut tx, fingerprint, change, after, &entry).await?;
        let record = sqlx::query_as("SELECT * FROM api_keys WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((record, change)))
    }

    /// A key's ledger, newest first, at most `limit` rows.
    pub async fn ledger(&self, fingerprint: &KeyFingerprint, limit: i64) -> sqlx::Result<Vec<LedgerRow>> {
        sqlx::query_as("SELECT * FROM credit_ledger WHERE key_fingerprint = $1 ORDER BY id DESC LIMIT $2")
            .bind(fingerprint)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// A key's balance rebuilt from its ledger alone (the sum of every row).
    pub async fn ledger_balance(&self, fingerprint: &KeyFingerprint) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_ledger WHERE key_fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_one(&self.pool)
        .await
    }

    /// Rebuilds every key's cached balance from the ledger; returns the keys whose cache was
    /// wrong, with the cached and the rebuilt balance (empty when all agree, as they should).
    pub async fn rebuild_balances(&self) -> sqlx::Result<Vec<(KeyFingerprint, i64, i64)>> {
        const LEDGER: &str =
            "(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_ledger l WHERE l.key_fingerprint = api_keys.fingerprint)";
        let wrong: Vec<(KeyFingerprint, i64, i64)> =
            sqlx::query_as(&format!("SELECT fingerprint, credits, {LEDGER} FROM api_keys WHERE credits != {LEDGER}"))
                .fetch_all(&self.pool)
                .await?;
        for (fingerprint, _, _) in &wrong {
            sqlx::query(&format!("UPDATE api_keys SET credits = {LEDGER} WHERE fingerprint = $1"))
                .bind(fingerprint)
                .execute(&self.pool)
                .await?;
        }
        Ok(wrong)
    }
}

/// What a ledger row records besides its amount.
pub(super) struct Entry<'a> {
    pub(super) kind: &'a str,
    pub(super) job_id: Option<&'a JobId>,
    pub(super) request_id: Option<&'a str>,
    pub(super) note: Option<&'a str>,
}

pub(super) async fn ledger(
    tx: &mut sqlx::AnyConnection,
    fingerprint: &KeyFingerprint,
    amount: i64,
    balance_after: i64,
    entry: &Entry<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO credit_ledger (key_fingerprint, kind, amount, balance_after, job_id, request_id, note, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(fingerprint)
    .bind(entry.kind)
    .bind(amount)
    .bind(balance_after)
    .bind(entry.job_id)
    .bind(entry.request_id)
    .bind(entry.note)
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

/// Adds `amount` (≥ 0) to a balance, with its ledger row.
async fn credit(
    tx: &mut sqlx::AnyConnection,
    fingerprint: &KeyFingerprint,
    amount: i64,
    entry: &Entry<'_>,
) -> sqlx::Result<()> {
    let after: Option<i64> =
        sqlx::query_scalar("UPDATE api_keys SET credits = credits + $1 WHERE fingerprint = $2 RETURNING credits")
            .bind(amount)
            .bind(fingerprint)
            .fetch_optional(&mut *tx)
            .await?;
    match after {
        Some(after) => ledger(tx, fingerprint, amount, after, entry).await,
        None => Ok(()),
    }
}

/// Takes `amount` from a balance only if the balance covers it — one conditional statement, so
/// concurrent debits can never overdraw — with its ledger row.
async fn debit(
    tx: &mut sqlx::AnyConnection,
    fingerprint: &KeyFingerprint,
    amount: i64,
    entry: &Entry<'_>,
) -> Result<(), StoreError> {
    let after: Option<i64> = sqlx::query_scalar(
        "UPDATE api_keys SET credits = credits - $1 WHERE fingerprint = $2 AND credits >= $3 RETURNING credits",
    )
    .bind(amount)
    .bind(fingerprint)
    .bind(amount)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(after) = after else {
        let balance: Option<i64> = sqlx::query_scalar("SELECT credits FROM api_keys WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(&mut *tx)
            .await?;
        return Err(StoreError::InsufficientCredits { needed: Some(amount), balance: balance.unwrap_or(0) });
    };
    ledger(tx, fingerprint, -amount, after, entry).await?;
    Ok(())
}

/// Makes a started job's reservation in the caller's transaction.
pub(super) async fn reserve(
    tx: &mut sqlx::AnyConnection,
    owner: Option<&KeyFingerprint>,
    job_id: &JobId,
    request_id: Option<&str>,
    reservation: Reservation,
) -> Result<(), StoreError> {
    let Some(owner) = owner else { return Ok(()) };
    match reservation {
        Reservation::None => Ok(()),
        Reservation::Later => {
            let balance: i64 = sqlx::query_scalar("SELECT credits FROM api_keys WHERE fingerprint = $1")
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
            if balance > 0 {
                Ok(())
            } else {
                Err(StoreError::InsufficientCredits { needed: None, balance })
            }
        }
        Reservation::Now(amount) => {
            if amount > 0 {
                let entry = Entry { kind: "reserve", job_id: Some(job_id), request_id, note: None };
                debit(tx, owner, amount, &entry).await?;
            }
            usage(tx, Some(owner), "reserved", job_id, request_id, Some(amount)).await?;
            Ok(())
        }
    }
}

/// Settles a job's billing right after the transition that ended it (`row` as it left it):
/// `charged` releases the reservation and charges `credits_used`; `refunded` gives the
/// reservation back.
pub(super) async fn settle(tx: &mut sqlx::AnyConnection, row: &JobRow, request_id: Option<&str>) -> sqlx::Result<()> {
    let Some(owner) = row.owner.as_ref() else { return Ok(()) };
    let job_id = Some(&row.id);
    match row.billing_status {
        Some(Billing::Charged) => {
            if row.credits_reserved > 0 {
                let entry = Entry { kind: "release", job_id, request_id, note: None };
                credit(tx, owner, row.credits_reserved, &entry).await?;
            }
            if row.credits_used > 0 {
                // Never more than was just released, so this cannot fail.
                let entry = Entry { kind: "charge", job_id, request_id, note: None };
                debit(tx, owner, row.credits_used, &entry).await.map_err(|e| match e {
                    StoreError::Db(e) => e,
                    other => sqlx::Error::Protocol(format!("charging more than was reserved: {other:?}")),
                })?;
            }
            usage(tx, Some(owner), "charged", &row.id, request_id, Some(row.credits_used)).await
        }
        Some(Billing::Refunded) => {
            if row.credits_reserved > 0 {
                let entry = Entry { kind: "refund", job_id, request_id, note: None };
                credit(tx, owner, row.credits_reserved, &entry).await?;
            }
            usage(tx, Some(owner), "refunded", &row.id, request_id, Some(row.credits_reserved)).await
        }
        _ => Ok(()),
    }
}
