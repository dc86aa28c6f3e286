//! Durable state in SQL, one file per group of tables, each adding its statements to [`Store`]:
//!
//! - [`keys`]: API keys (`api_keys`).
//! - [`uploads`]: uploaded files (`uploads`).
//! - [`jobs`]: jobs and their audit trail (`jobs`, `job_events`): creation, start, cancel, failure.
//! - [`leases`]: a worker's hold on a job: claim, heartbeat, completion, hand-back, recovery.
//! - [`ledger`]: credits — reservations, charges, refunds, admin changes (`credit_ledger`).
//! - [`usage`]: what each key did, per event and per day (`usage_events`).
//! - [`outbox`]: webhook deliveries waiting to be sent (`webhook_deliveries`).
//! - [`idempotency`]: answers kept for retried requests (`idempotency_keys`).
//! - [`retention`]: files past the retention period.
//!
//! Every job state change is one transaction that updates the job only if it is still in the
//! state the caller expects, and appends a row to `job_events` — so two workers can never both
//! claim a job, a cancel can never be lost to a completion, and the audit trail never misses a
//! transition. Transactions begin with their write, so SQLite takes its write lock up front.
//! The transitions that a webhook announces also queue its delivery in the same transaction
//! (see [`outbox`]), and those that end a job settle its credits in it (see [`ledger`]).

mod idempotency;
mod jobs;
mod keys;
mod leases;
mod ledger;
mod outbox;
mod retention;
#[cfg(test)]
mod tests;
mod uploads;
mod usage;

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use idempotency::{Remembered, IDEMPOTENCY_TTL_MS};
pub use jobs::{EventRow, JobRow};
pub use keys::KeyRecord;
pub use leases::{Advance, HandBack, Output};
pub use ledger::{Adjustment, Credits, LedgerRow, Reservation, MILLIS};
pub use outbox::DeliveryRow;
pub use uploads::UploadRecord;
pub use usage::{UsageDay, UsageRow};

use crate::jobs::Status;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Which database a [`Store`] talks to. The SQL is written once, in the subset both speak
/// (`$n` placeholders, `RETURNING`, `ON CONFLICT`, `CASE`); the few statements that differ ask
/// for their backend's form here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file, one host: the embedded default.
    Sqlite,
    /// Shared by any number of API and worker processes on any hosts.
    Postgres,
}

/// The PostgreSQL channel that says "a job was queued": idle workers `LISTEN` on it. The
/// notification is sent inside the transaction that queues the job, so it is delivered exactly
/// when the job becomes visible, and never for a transaction that rolled back.
pub const QUEUE_CHANNEL: &str = "clearbg_jobs";

/// `NOTIFY` on [`QUEUE_CHANNEL`]: a plain statement, because `pg_notify()` returns a `void`
/// column that the Any driver cannot read.
const NOTIFY_QUEUED: &str = "NOTIFY clearbg_jobs";

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

const JOB_COLUMNS: &str = "id, owner, status, spec, warnings, progress, error, error_code, output_key, output_sha256, \
    output_size_bytes, duration_seconds, frames, fps, eta_seconds, attempts, lease_owner, lease_expires_at, cancel_requested, created_at, \
    queued_at, started_at, completed_at, updated_at, output_deleted_at, billing_status, credits_reserved, credits_used";

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH` or
    /// `postgres://…`) and brings its schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, pool) = if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = rest.split('?').next().unwrap_or(rest);
            if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            // Create the file when missing, as `mode=rwc` asks, unless the URL says otherwise.
            let url = if rest.contains("mode=") {
                url.to_string()
            } else {
                format!("{url}{}mode=rwc", if rest.contains('?') { '&' } else { '?' })
            };
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL + NORMAL survives process crashes (kill -9); only an OS crash can
                        // lose the last commits. Writers wait for each other instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON")
                            .await
                            .map(|_| ())
                    })
                })
                .connect(&url)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            (Backend::Sqlite, pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool =
                AnyPoolOptions::new().max_connections(10).acquire_timeout(Duration::from_secs(30)).connect(url).await?;
            // Migrations take an advisory lock, so processes starting together apply them once.
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            (Backend::Postgres, pool)
        } else {
            anyhow::bail!("unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE");
        };
        Ok(Store { pool, backend, url: url.to_string() })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL it was opened with (for a second connection, such as a `LISTEN`er).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL without its password, for logs.
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                let _ = url.set_password(None);
                url.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }

    /// The columns of a [`JobRow`], with `webhook_events` aggregated the backend's way.
    fn job_columns(&self) -> String {
        let deliveries = match self.backend {
            Backend::Sqlite => "json_group_object(event, status)",
            Backend::Postgres => "json_object_agg(event, status)::text",
        };
        format!(
            "{JOB_COLUMNS}, COALESCE((SELECT {deliveries} FROM webhook_deliveries d WHERE d.job_id = jobs.id), '{{}}') AS webhook_events"
        )
    }

    /// Lets concurrent claims pass over rows another transaction is claiming, instead of
    /// queueing behind its lock and then finding the row taken: with PostgreSQL, N workers
    /// claim N different jobs at once. SQLite has one writer at a time and needs nothing.
    fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Wakes the idle workers of every process when `tx` commits (PostgreSQL `NOTIFY`; with
    /// SQLite the workers share this process and [`crate::App::queued`] wakes them).
    async fn announce_queued(&self, tx: &mut sqlx::AnyConnection) -> sqlx::Result<()> {
        if self.backend == Backend::Postgres {
            tx.execute(NOTIFY_QUEUED).await?;
        }
        Ok(())
    }

    /// Reads a row of every table a request or a job touches, for health checks: `SELECT 1`
    /// answers even from a database file whose pages are garbage; a read of the tables does not.
    pub async fn check_tables(&self) -> sqlx::Result<()> {
        for table in ["settings", "api_keys", "uploads", "jobs", "job_events", "credit_ledger", "webhook_deliveries"] {
            sqlx::query(&format!("SELECT * FROM {table} LIMIT 1")).fetch_optional(&self.pool).await?;
        }
        Ok(())
    }

    /// Returns the setting `name`, creating it with `make()` the first time.
    pub async fn setting_or_insert(&self, name: &str, make: impl FnOnce() -> String) -> sqlx::Result<String> {
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(make())
            .execute(&self.pool)
            .await?;
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1").bind(name).fetch_one(&self.pool).await
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// No such job for this owner.
    #[error("no such job")]
    NotFound,
    /// The job is not in the state the change needs; nothing was changed.
    #[error("the job is {}", .0.as_str())]
    WrongState(Status),
    /// The key's balance does not cover the reservation; nothing was changed.
    #[error("Not enough credits to process this video: {}", shortfall(*.needed, *.balance))]
    InsufficientCredits {
        /// Millicredits asked for (`None`: any positive balance, for an input of unknown length).
        needed: Option<i64>,
        /// Millicredits the key has.
        balance: i64,
    },
}

fn shortfall(needed: Option<i64>, balance: i64) -> String {
    let balance = Credits(balance);
    match needed {
        Some(needed) => format!("it needs {} credits and the balance is {balance}", Credits(needed)),
        None => format!("the balance is {balance}; add credits and start it again"),
    }
}

/// sha256 of an API key, hex.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
