//! Durable state: keys, uploads, jobs and their audit trail, in SQL.
//!
//! Every job state change is one transaction that updates the job only if it is still in the
//! state the caller expects, and appends a row to `job_events` — so two workers can never both
//! claim a job, a cancel can never be lost to a completion, and the audit trail never misses a
//! transition. Transactions begin with their write, so SQLite takes its write lock up front.
//! The transitions that a webhook announces also queue its delivery in the same transaction
//! (see `enqueue_webhook`).

use std::time::Duration;

use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, FromRow};

use crate::jobs::{JobSpec, Status};
use crate::webhooks::Event;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An API key as stored (never the key itself).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct KeyRecord {
    /// Public id of the key.
    #[serde(rename = "key_fingerprint")]
    pub fingerprint: String,
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

/// An uploaded file.
#[derive(Debug, Clone, FromRow)]
pub struct UploadRecord {
    /// `vid_…`.
    pub id: String,
    /// Owning key's fingerprint.
    pub owner: Option<String>,
    /// Where it is in storage.
    pub object_key: String,
    /// The client's file name.
    pub filename: String,
    /// The media type it was accepted as.
    pub content_type: String,
    /// Bytes.
    pub size_bytes: i64,
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Upload time (ms).
    pub created_at: i64,
    /// When the sweeper deleted the file (ms).
    pub deleted_at: Option<i64>,
}

/// A job as stored; the columns are described in `migrations/0001_init.sql`.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct JobRow {
    pub id: String,
    pub owner: Option<String>,
    pub status: String,
    pub spec: String,
    pub warnings: String,
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
    pub cancel_requested: i64,
    pub created_at: i64,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
    pub output_deleted_at: Option<i64>,
    /// `null` (draft or unbilled) | `pending` | `reserved` | `charged` | `refunded`.
    pub billing_status: Option<String>,
    /// Millicredits held at start (or by the worker, once a URL input's duration is known).
    pub credits_reserved: i64,
    /// Millicredits charged at completion.
    pub credits_used: i64,
    /// `{"job.started":"sent",…}`: each webhook event's delivery status, from `webhook_deliveries`.
    pub webhook_events: String,
}

impl JobRow {
    /// The parsed status.
    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Failed)
    }

    /// The parsed spec.
    pub fn spec(&self) -> JobSpec {
        serde_json::from_str(&self.spec).expect("specs are written by this service")
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

/// A webhook delivery as stored; the columns are described in `migrations/0002_webhooks.sql`.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct DeliveryRow {
    pub id: String,
    pub job_id: String,
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

/// Shows a job as the API does. The transitions that a webhook announces need it, because the
/// webhook's body (the job as `GET /v1/jobs/{id}` shows it) is built inside their transaction.
pub trait JobView: Sync {
    /// The job's JSON.
    fn job_view(&self, row: &JobRow) -> Value;
}

/// Why a state change could not happen.
#[derive(Debug)]
pub enum Conflict {
    /// No such job for this owner.
    NotFound,
    /// The job is in another state.
    State(Status),
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

    /// The connection pool, for modules that keep their own tables (idempotency keys).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
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

    // ---- settings ----

    /// Returns the setting `name`, creating it with `make()` the first time.
    pub async fn setting_or_insert(&self, name: &str, make: impl FnOnce() -> String) -> sqlx::Result<String> {
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(make())
            .execute(&self.pool)
            .await?;
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1").bind(name).fetch_one(&self.pool).await
    }

    // ---- keys ----

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
            fingerprint: format!("kfp_{}", &hash[..16]),
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
    pub async fn touch_key(&self, fingerprint: &str) -> sqlx::Result<()> {
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
    pub async fn set_key_status(&self, fingerprint: &str, status: &str) -> sqlx::Result<Option<KeyRecord>> {
        sqlx::query_as("UPDATE api_keys SET status = $1 WHERE fingerprint = $2 RETURNING *")
            .bind(status)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await
    }

    // ---- uploads ----

    /// Records a stored upload.
    pub async fn insert_upload(&self, u: &UploadRecord) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, owner, object_key, filename, content_type, size_bytes, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&u.id)
        .bind(&u.owner)
        .bind(&u.object_key)
        .bind(&u.filename)
        .bind(&u.content_type)
        .bind(u.size_bytes)
        .bind(&u.sha256)
        .bind(u.created_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// An upload by id.
    pub async fn upload(&self, id: &str) -> sqlx::Result<Option<UploadRecord>> {
        sqlx::query_as("SELECT * FROM uploads WHERE id = $1").bind(id).fetch_optional(&self.pool).await
    }

    // ---- jobs ----

    /// Stores a new job in `status` (`created` or `pending`); a `pending` one makes its
    /// `reservation` on the owner's balance in the same transaction, or is not stored at all.
    pub async fn insert_job(
        &self,
        id: &str,
        owner: Option<&str>,
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
    pub async fn job(&self, id: &str, owner: Option<&str>) -> sqlx::Result<Option<JobRow>> {
        let cols = self.job_columns();
        let row: Option<JobRow> = sqlx::query_as(&format!("SELECT {cols} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.filter(|r| owner.is_none() || r.owner.as_deref() == owner))
    }

    /// A page of `owner`'s jobs, newest first, and how many there are in all.
    pub async fn list_jobs(
        &self,
        owner: &str,
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
        id: &str,
        owner: Option<&str>,
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
        usage(&mut tx, row.owner.as_deref(), "started", id, request_id, None).await?;
        reserve(&mut tx, row.owner.as_deref(), id, request_id, reservation).await?;
        self.announce_queued(&mut tx).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn conflict(&self, id: &str, owner: Option<&str>) -> StoreError {
        match self.job(id, owner).await {
            Ok(Some(row)) => StoreError::Conflict(Conflict::State(row.status())),
            Ok(None) => StoreError::Conflict(Conflict::NotFound),
            Err(e) => StoreError::Db(e),
        }
    }

    /// Puts jobs whose worker stopped renewing its lease back in the queue, or fails them once
    /// they have used every attempt (queueing `job.failed` with `view`). Returns the jobs it
    /// touched.
    pub async fn recover_expired(&self, max_attempts: u32, view: &dyn JobView) -> sqlx::Result<Vec<String>> {
        let cols = self.job_columns();
        let now = now_ms();
        let expired: Vec<(String, Option<String>, i64)> = sqlx::query_as(
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
                    usage(&mut tx, row.owner.as_deref(), "failed", &id, None, None).await?;
                    settle(&mut tx, &row, None).await?;
                }
                if to == Status::Pending {
                    self.announce_queued(&mut tx).await?;
                }
                if let Some(ended) = Event::ended(&row) {
                    enqueue_webhook(&mut tx, &row, ended, view).await?;
                }
                touched.push(id.clone());
            }
            tx.commit().await?;
        }
        Ok(touched)
    }

    /// Claims the oldest queued job for `worker` with a lease of `lease`, queueing `job.started`
    /// (with `view`) the first time the job is claimed. A job handed back to wait out a backoff
    /// is queued in the future ([`HandBack::RetryAt`]) and is passed over until then.
    pub async fn claim(&self, worker: &str, lease: Duration, view: &dyn JobView) -> sqlx::Result<Option<JobRow>> {
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
            enqueue_webhook(&mut tx, row, Event::Started, view).await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Renews `worker`'s lease and records progress. Returns `None` if the lease was lost (the
    /// job was taken from this worker), else whether a cancel was requested.
    pub async fn heartbeat(
        &self,
        id: &str,
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
    /// `view`. Charges `cost` millicredits (never more than the reservation, which is released)
    /// in the same transaction.
    pub async fn complete(
        &self,
        id: &str,
        worker: &str,
        out: &Output,
        cost: i64,
        view: &dyn JobView,
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
        usage(&mut tx, row.owner.as_deref(), "completed", id, None, None).await?;
        settle(&mut tx, &row, None).await?;
        enqueue_webhook(&mut tx, &row, Event::Completed, view).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a job as `failed` if it is in state `from` and, with `worker`, still held by it;
    /// queues `job.failed` (or `job.cancelled` for the code `cancelled`) with `view`.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail(
        &self,
        id: &str,
        worker: Option<&str>,
        from: Status,
        code: &str,
        message: &str,
        request_id: Option<&str>,
        view: &dyn JobView,
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
        usage(&mut tx, row.owner.as_deref(), kind, id, request_id, None).await?;
        settle(&mut tx, &row, request_id).await?;
        if let Some(ended) = Event::ended(&row) {
            enqueue_webhook(&mut tx, &row, ended, view).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Gives a job that `worker` still holds back to the queue, as `how` says, with `reason` in
    /// its audit trail.
    pub async fn release(&self, id: &str, worker: &str, how: HandBack, reason: &str) -> sqlx::Result<bool> {
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

    /// Asks the worker running a job to stop; recorded in the audit trail.
    pub async fn request_cancel(&self, id: &str, request_id: Option<&str>) -> sqlx::Result<bool> {
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
    pub async fn events(&self, id: &str) -> sqlx::Result<Vec<EventRow>> {
        sqlx::query_as("SELECT * FROM job_events WHERE job_id = $1 ORDER BY id").bind(id).fetch_all(&self.pool).await
    }

    // ---- credits and usage ----

    /// Holds `amount` millicredits for a started job whose input's duration the worker has just
    /// learnt (billing `pending` → `reserved`), if `worker` still holds it. `Ok(false)`: nothing
    /// to do (already reserved, or the job was taken from this worker). A short balance changes
    /// nothing and is [`StoreError::InsufficientCredits`].
    pub async fn reserve_for_job(&self, id: &str, worker: &str, amount: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let owner: Option<Option<String>> = sqlx::query_scalar(
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
        reserve(&mut tx, owner.as_deref(), id, None, Reservation::Now(amount)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A key by fingerprint.
    pub async fn key_by_fingerprint(&self, fingerprint: &str) -> sqlx::Result<Option<KeyRecord>> {
        sqlx::query_as("SELECT * FROM api_keys WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await
    }

    /// An admin's change of a key's balance, with an `adjust` ledger row. `Ok(None)`: no such
    /// key. A change that would take the balance below zero changes nothing and is
    /// [`StoreError::InsufficientCredits`]. Returns the key as it is after, and the change.
    pub async fn adjust_credits(
        &self,
        fingerprint: &str,
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
    pub async fn ledger(&self, fingerprint: &str, limit: i64) -> sqlx::Result<Vec<LedgerRow>> {
        sqlx::query_as("SELECT * FROM credit_ledger WHERE key_fingerprint = $1 ORDER BY id DESC LIMIT $2")
            .bind(fingerprint)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// A key's balance rebuilt from its ledger alone (the sum of every row).
    pub async fn ledger_balance(&self, fingerprint: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_ledger WHERE key_fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_one(&self.pool)
        .await
    }

    /// Rebuilds every key's cached balance from the ledger; returns the keys whose cache was
    /// wrong, with the cached and the rebuilt balance (empty when all agree, as they should).
    pub async fn rebuild_balances(&self) -> sqlx::Result<Vec<(String, i64, i64)>> {
        const LEDGER: &str =
            "(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_ledger l WHERE l.key_fingerprint = api_keys.fingerprint)";
        let wrong: Vec<(String, i64, i64)> =
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

    /// Whether `object_key` should hold a file: an upload's or a job output's that retention has
    /// not deleted. When storage cannot read such a key, storage failed, not the job's input.
    /// (Asked only after a failed read, so the scan of unindexed columns costs nothing normally.)
    pub async fn holds_file(&self, object_key: &str) -> sqlx::Result<bool> {
        let count: i64 = sqlx::query_scalar(
            "SELECT CAST((SELECT COUNT(*) FROM uploads WHERE object_key = $1 AND deleted_at IS NULL) \
             + (SELECT COUNT(*) FROM jobs WHERE output_key = $2 AND output_deleted_at IS NULL) AS BIGINT)",
        )
        .bind(object_key)
        .bind(object_key)
        .fetch_one(&self.pool)
        .await?;
        Ok(count > 0)
    }

    /// The probed duration of an upload, if known.
    pub async fn upload_duration(&self, id: &str) -> sqlx::Result<Option<f64>> {
        sqlx::query_scalar("SELECT duration_seconds FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map(Option::flatten)
    }

    /// Records the probed duration of an upload.
    pub async fn set_upload_duration(&self, id: &str, seconds: f64) -> sqlx::Result<()> {
        sqlx::query("UPDATE uploads SET duration_seconds = $1 WHERE id = $2")
            .bind(seconds)
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// A key's usage events, newest first, at most `limit`.
    pub async fn usage_events(&self, fingerprint: &str, limit: i64) -> sqlx::Result<Vec<UsageRow>> {
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
    pub async fn usage_summary(&self, fingerprint: &str, days: i64) -> sqlx::Result<Vec<UsageDay>> {
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

    // ---- webhook deliveries ----

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

    // ---- retention ----

    /// Uploads stored before `cutoff` and not yet deleted.
    pub async fn expired_uploads(&self, cutoff: i64) -> sqlx::Result<Vec<UploadRecord>> {
        sqlx::query_as("SELECT * FROM uploads WHERE created_at < $1 AND deleted_at IS NULL LIMIT 500")
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await
    }

    /// Marks an upload's file deleted.
    pub async fn mark_upload_deleted(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE uploads SET deleted_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Completed jobs whose output was stored before `cutoff` and is still there.
    pub async fn expired_outputs(&self, cutoff: i64) -> sqlx::Result<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT id, output_key FROM jobs WHERE output_key IS NOT NULL AND output_deleted_at IS NULL AND completed_at < $1 LIMIT 500",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
    }

    /// Marks a job's output deleted, with an audit event.
    pub async fn mark_output_deleted(&self, id: &str) -> sqlx::Result<()> {
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

    /// How many jobs are in each status, for `/metrics` (statuses with no job are absent).
    /// Plain SQL that SQLite and PostgreSQL both run; the count is cast so both return BIGINT.
    pub async fn count_jobs_by_status(&self) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT status, CAST(COUNT(*) AS BIGINT) FROM jobs GROUP BY status").fetch_all(&self.pool).await
    }
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

/// Errors of a conditional state change.
#[derive(Debug)]
pub enum StoreError {
    /// The database failed.
    Db(sqlx::Error),
    /// The job was not there or not in the expected state.
    Conflict(Conflict),
    /// The key's balance does not cover the reservation; nothing was changed.
    InsufficientCredits {
        /// Millicredits asked for (`None`: any positive balance, for an input of unknown length).
        needed: Option<i64>,
        /// Millicredits the key has.
        balance: i64,
    },
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
    fn columns(self) -> (Option<&'static str>, i64) {
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
    pub key_fingerprint: String,
    /// `grant`, `reserve`, `release`, `charge`, `refund` or `adjust`.
    pub kind: String,
    /// Signed change of the balance, millicredits.
    pub amount: i64,
    /// The balance after it, millicredits.
    pub balance_after: i64,
    /// The job it is for.
    pub job_id: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Free text.
    pub note: Option<String>,
    /// When (ms).
    pub at: i64,
}

/// One usage event of a key.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct UsageRow {
    /// Order of the event.
    pub id: i64,
    /// `created`, `started`, `reserved`, `completed`, `failed`, `cancelled`, `charged` or `refunded`.
    #[sqlx(rename = "type")]
    pub kind: String,
    /// The job.
    pub job_id: Option<String>,
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

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Db(e)
    }
}

/// What a ledger row records besides its amount.
struct Entry<'a> {
    kind: &'a str,
    job_id: Option<&'a str>,
    request_id: Option<&'a str>,
    note: Option<&'a str>,
}

async fn ledger(
    tx: &mut sqlx::AnyConnection,
    fingerprint: &str,
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
async fn credit(tx: &mut sqlx::AnyConnection, fingerprint: &str, amount: i64, entry: &Entry<'_>) -> sqlx::Result<()> {
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
    fingerprint: &str,
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
async fn reserve(
    tx: &mut sqlx::AnyConnection,
    owner: Option<&str>,
    job_id: &str,
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
async fn settle(tx: &mut sqlx::AnyConnection, row: &JobRow, request_id: Option<&str>) -> sqlx::Result<()> {
    let Some(owner) = row.owner.as_deref() else { return Ok(()) };
    let job_id = Some(row.id.as_str());
    match row.billing_status.as_deref() {
        Some("charged") => {
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
        Some("refunded") => {
            if row.credits_reserved > 0 {
                let entry = Entry { kind: "refund", job_id, request_id, note: None };
                credit(tx, owner, row.credits_reserved, &entry).await?;
            }
            usage(tx, Some(owner), "refunded", &row.id, request_id, Some(row.credits_reserved)).await
        }
        _ => Ok(()),
    }
}

/// Records a usage event of the job's owner (anonymous jobs have none).
async fn usage(
    tx: &mut sqlx::AnyConnection,
    owner: Option<&str>,
    kind: &str,
    job_id: &str,
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

/// sha256 of an API key, hex.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
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
async fn enqueue_webhook(
    tx: &mut sqlx::AnyConnection,
    row: &JobRow,
    event: Event,
    view: &dyn JobView,
) -> sqlx::Result<()> {
    let Some(url) = row.spec().webhook_url else { return Ok(()) };
    let id = format!("whd_{}", uuid::Uuid::new_v4().simple());
    let now = now_ms();
    let body = crate::webhooks::body(event, &id, now, view.job_view(row));
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

#[allow(clippy::too_many_arguments)]
async fn event(
    tx: &mut sqlx::AnyConnection,
    job_id: &str,
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

#[cfg(test)]
mod tests {
    //! Every test runs twice: on a SQLite file and on a PostgreSQL database of its own.

    use super::*;
    use crate::jobs::{parse_spec, Mode};

    /// A throwaway database: a temporary SQLite file, or a PostgreSQL database created on the
    /// server at `CLEARBG_TEST_POSTGRES` (default: the local one, trust auth) and dropped after.
    enum TestDb {
        Sqlite(#[allow(dead_code)] tempfile::TempDir),
        Postgres { admin: String, name: String },
    }

    fn admin_url() -> String {
        std::env::var("CLEARBG_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let TestDb::Postgres { admin, name } = self else { return };
            let (admin, drop) = (admin.clone(), format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            // Dropped from a plain thread: the test's runtime may be shutting down.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&admin).await?;
                    conn.execute(drop.as_str()).await.map(|_| ())
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop the test database {name}: {dropped:?}");
            }
        }
    }

    async fn store(backend: Backend) -> (TestDb, Store) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("t.db").display());
                let store = Store::open(&url).await.unwrap();
                (TestDb::Sqlite(dir), store)
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = admin_url();
                let name = format!("clearbg_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (set CLEARBG_TEST_POSTGRES): {e}"));
                conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
                let guard = TestDb::Postgres { admin: admin.clone(), name: name.clone() };
                let url = match admin.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => unreachable!("a postgres URL has a path"),
                };
                let store = Store::open(&url).await.unwrap();
                assert_eq!(store.backend(), Backend::Postgres);
                (guard, store)
            }
        }
    }

    /// `both!(name)` runs `async fn name(backend)` as `name::sqlite` and `name::postgres`.
    macro_rules! both {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name(super::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name(super::Backend::Postgres).await
                }
            }
        )*};
    }

    both!(
        concurrent_reservations_never_overdraw_and_the_ledger_rebuilds_the_balance,
        concurrent_claims_take_each_job_exactly_once,
        an_expired_lease_gives_the_job_to_another_worker_and_fences_the_first,
        heartbeats_keep_the_highest_progress_and_carry_cancels,
        a_job_handed_back_to_retry_waits_out_its_backoff,
        webhook_outbox_and_usage_summary,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_announces_queued_jobs_on_commit_only() {
        let (_db, store) = store(Backend::Postgres).await;
        let mut listener = sqlx::postgres::PgListener::connect(store.url()).await.unwrap();
        listener.listen(QUEUE_CHANNEL).await.unwrap();
        // A draft queues nothing; a start announces the job once its transaction commits.
        store.insert_job("job_d", None, &draft(), Status::Created, None, Reservation::None).await.unwrap();
        assert!(next(&mut listener).await.is_none(), "a draft is not announced");
        store.start_job("job_d", None, &draft(), None, Reservation::None).await.unwrap();
        let n = next(&mut listener).await.expect("the start is announced");
        assert_eq!(n.channel(), QUEUE_CHANNEL);
        // A start refused for credits rolls back, and announces nothing.
        let (_, key) = store.create_key("c", None, 0, None).await.unwrap();
        store
            .insert_job("job_e", Some(&key.fingerprint), &draft(), Status::Created, None, Reservation::None)
            .await
            .unwrap();
        let refused = store.start_job("job_e", Some(&key.fingerprint), &draft(), None, Reservation::Now(1)).await;
        assert!(matches!(refused, Err(StoreError::InsufficientCredits { .. })));
        assert!(next(&mut listener).await.is_none(), "a rolled-back start is not announced");
    }

    /// The next notification within half a second, if one comes.
    async fn next(listener: &mut sqlx::postgres::PgListener) -> Option<sqlx::postgres::PgNotification> {
        tokio::time::timeout(Duration::from_millis(500), listener.recv()).await.ok().map(|n| n.unwrap())
    }

    fn advance(percent: f64) -> Advance {
        Advance { percent, ..Advance::default() }
    }

    fn draft() -> JobSpec {
        spec(serde_json::json!({"video_url": "http://h/a.mp4", "auto_start": false}))
    }

    fn spec(body: Value) -> JobSpec {
        parse_spec(&body, None, Mode::Create).unwrap()
    }

    async fn concurrent_reservations_never_overdraw_and_the_ledger_rebuilds_the_balance(backend: Backend) {
        let (_db, store) = store(backend).await;
        let (_, key) = store.create_key("c", None, 10_000, None).await.unwrap();
        let fp = key.fingerprint.clone();
        for n in 0..40 {
            store
                .insert_job(&format!("job_{n}"), Some(&fp), &draft(), Status::Created, None, Reservation::None)
                .await
                .unwrap();
        }
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let (store, fp) = (store.clone(), fp.clone());
                tokio::spawn(async move {
                    store.start_job(&format!("job_{n}"), Some(&fp), &draft(), None, Reservation::Now(1_000)).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::InsufficientCredits { needed: Some(1_000), .. }) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(ok, 10);
        assert_eq!(store.key_by_fingerprint(&fp).await.unwrap().unwrap().credits, 0);
        assert_eq!(store.ledger_balance(&fp).await.unwrap(), 0);
        assert!(store.rebuild_balances().await.unwrap().is_empty(), "the cache agrees with the ledger");

        // A cancel refunds; a corrupted cache is found and rebuilt from the ledger.
        let started: String = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'pending' LIMIT 1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(store.fail(&started, None, Status::Pending, "cancelled", "x", None, &NoView).await.unwrap());
        let row = store.job(&started, None).await.unwrap().unwrap();
        assert_eq!((row.billing_status.as_deref(), row.credits_reserved), (Some("refunded"), 1_000));
        assert_eq!(store.ledger_balance(&fp).await.unwrap(), 1_000);
        sqlx::query("UPDATE api_keys SET credits = 5").execute(&store.pool).await.unwrap();
        assert_eq!(store.rebuild_balances().await.unwrap(), vec![(fp.clone(), 5, 1_000)]);
        assert_eq!(store.key_by_fingerprint(&fp).await.unwrap().unwrap().credits, 1_000);
        let over = store.adjust_credits(&fp, Adjustment::Add(-1_001), None, None).await;
        assert!(matches!(over, Err(StoreError::InsufficientCredits { balance: 1_000, .. })));
        let (k, change) = store.adjust_credits(&fp, Adjustment::Set(250), Some("n"), None).await.unwrap().unwrap();
        assert_eq!((k.credits, change), (250, -750));
        let ledger = store.ledger(&fp, 100).await.unwrap();
        assert_eq!(ledger.iter().map(|r| r.amount).sum::<i64>(), 250, "the ledger explains the balance");
    }

    async fn concurrent_claims_take_each_job_exactly_once(backend: Backend) {
        let (_db, store) = store(backend).await;
        let queued = spec(serde_json::json!({"video_url": "http://h/a.mp4"}));
        for n in 0..30 {
            store
                .insert_job(&format!("job_{n:02}"), None, &queued, Status::Pending, None, Reservation::None)
                .await
                .unwrap();
        }
        let workers: Vec<_> = (0..6)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while let Some(row) = store.claim(&format!("w{w}"), Duration::from_secs(60), &NoView).await.unwrap()
                    {
                        assert_eq!((row.status(), row.attempts), (Status::Processing, 1));
                        mine.push(row.id);
                    }
                    mine
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for w in workers {
            claimed.extend(w.await.unwrap());
        }
        claimed.sort();
        let expected: Vec<String> = (0..30).map(|n| format!("job_{n:02}")).collect();
        assert_eq!(claimed, expected, "every job claimed, none twice");
        for id in &expected {
            let claims = store.events(id).await.unwrap().into_iter().filter(|e| e.to_status == "processing").count();
            assert_eq!(claims, 1, "{id}: one claim in the audit trail");
        }
    }

    async fn an_expired_lease_gives_the_job_to_another_worker_and_fences_the_first(backend: Backend) {
        let (_db, store) = store(backend).await;
        let (_, key) = store.create_key("c", None, 10_000, None).await.unwrap();
        let queued = spec(serde_json::json!({"video_url": "http://h/a.mp4"}));
        store
            .insert_job("job_a", Some(&key.fingerprint), &queued, Status::Pending, None, Reservation::Now(3_000))
            .await
            .unwrap();
        let lease = Duration::from_millis(200);
        assert_eq!(store.claim("dead", lease, &NoView).await.unwrap().unwrap().id, "job_a");
        assert!(store.recover_expired(2, &NoView).await.unwrap().is_empty(), "the lease is still live");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.recover_expired(2, &NoView).await.unwrap(), vec!["job_a".to_string()]);
        let second = store.claim("alive", lease, &NoView).await.unwrap().unwrap();
        assert_eq!((second.attempts, second.lease_owner.as_deref()), (2, Some("alive")));
        // The first worker is fenced off: no heartbeat, no completion, no failure.
        assert_eq!(store.heartbeat("job_a", "dead", lease, advance(50.0)).await.unwrap(), None);
        let out = Output {
            key: "outputs/job_a.webm".into(),
            sha256: "00".into(),
            size_bytes: 1,
            duration_seconds: 1.0,
            frames: 1,
            fps: 10.0,
            keyframes: 1,
        };
        assert!(!store.complete("job_a", "dead", &out, 750, &NoView).await.unwrap());
        assert!(!store.fail("job_a", Some("dead"), Status::Processing, "x", "x", None, &NoView).await.unwrap());
        // Its second worker dies too: with max_attempts 2 the job fails and is refunded.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.recover_expired(2, &NoView).await.unwrap(), vec!["job_a".to_string()]);
        let row = store.job("job_a", None).await.unwrap().unwrap();
        assert_eq!((row.status(), row.error_code.as_deref()), (Status::Failed, Some("attempts_exhausted")));
        assert_eq!(row.billing_status.as_deref(), Some("refunded"));
        assert_eq!(store.key_by_fingerprint(&key.fingerprint).await.unwrap().unwrap().credits, 10_000);
        let trail: Vec<(i64, String)> =
            store.events("job_a").await.unwrap().into_iter().map(|e| (e.attempt, e.to_status)).collect();
        let expected = [(0, "pending"), (1, "processing"), (1, "pending"), (2, "processing"), (2, "failed")];
        assert_eq!(trail, expected.map(|(a, s)| (a, s.to_string())));
    }

    async fn heartbeats_keep_the_highest_progress_and_carry_cancels(backend: Backend) {
        let (_db, store) = store(backend).await;
        let queued = spec(serde_json::json!({"video_url": "http://h/a.mp4"}));
        store.insert_job("job_h", None, &queued, Status::Pending, None, Reservation::None).await.unwrap();
        let lease = Duration::from_secs(60);
        store.claim("w", lease, &NoView).await.unwrap().unwrap();
        assert_eq!(store.heartbeat("job_h", "w", lease, advance(40.0)).await.unwrap(), Some(false));
        assert_eq!(store.heartbeat("job_h", "w", lease, advance(30.0)).await.unwrap(), Some(false));
        assert_eq!(store.job("job_h", None).await.unwrap().unwrap().progress, 40.0);
        assert!(store.request_cancel("job_h", Some("req_1")).await.unwrap());
        assert_eq!(store.heartbeat("job_h", "w", lease, advance(45.0)).await.unwrap(), Some(true));
        assert!(store.release("job_h", "w", HandBack::Shutdown, "shutdown").await.unwrap());
        let row = store.job("job_h", None).await.unwrap().unwrap();
        assert_eq!((row.status(), row.attempts, row.progress), (Status::Pending, 0, 0.0));
        // Settings are written once, whoever asks first.
        assert_eq!(store.setting_or_insert("s", || "one".into()).await.unwrap(), "one");
        assert_eq!(store.setting_or_insert("s", || "two".into()).await.unwrap(), "one");
    }

    async fn a_job_handed_back_to_retry_waits_out_its_backoff(backend: Backend) {
        let (_db, store) = store(backend).await;
        let queued = spec(serde_json::json!({"video_url": "http://h/a.mp4"}));
        store.insert_job("job_r", None, &queued, Status::Pending, None, Reservation::None).await.unwrap();
        let lease = Duration::from_secs(60);
        store.claim("w1", lease, &NoView).await.unwrap().unwrap();
        let retry_at = now_ms() + 1_500;
        assert!(!store.release("job_r", "w2", HandBack::RetryAt(retry_at), "not its job").await.unwrap());
        assert!(store.release("job_r", "w1", HandBack::RetryAt(retry_at), "ffmpeg_missing: …").await.unwrap());
        let row = store.job("job_r", None).await.unwrap().unwrap();
        assert_eq!(
            (row.status(), row.attempts, row.queued_at),
            (Status::Pending, 1, Some(retry_at)),
            "the attempt counts"
        );
        // A job queued later but due now goes first; the handed-back one waits for its time.
        store.insert_job("job_s", None, &queued, Status::Pending, None, Reservation::None).await.unwrap();
        assert_eq!(store.claim("w2", lease, &NoView).await.unwrap().unwrap().id, "job_s");
        assert!(store.claim("w2", lease, &NoView).await.unwrap().is_none(), "claimed before its backoff ended");
        tokio::time::sleep(Duration::from_millis((retry_at - now_ms()).max(0) as u64 + 50)).await;
        let again = store.claim("w2", lease, &NoView).await.unwrap().expect("claimable once the backoff ends");
        assert_eq!((again.id.as_str(), again.attempts), ("job_r", 2));
        let trail: Vec<(i64, String)> =
            store.events("job_r").await.unwrap().into_iter().map(|e| (e.attempt, e.to_status)).collect();
        let expected = [(0, "pending"), (1, "processing"), (1, "pending"), (2, "processing")];
        assert_eq!(trail, expected.map(|(a, s)| (a, s.to_string())));
    }

    async fn webhook_outbox_and_usage_summary(backend: Backend) {
        let (_db, store) = store(backend).await;
        let (_, key) = store.create_key("c", None, 10_000, None).await.unwrap();
        let fp = key.fingerprint.clone();
        let hooked = spec(serde_json::json!({"video_url": "http://h/a.mp4", "webhook_url": "http://h/hook"}));
        store
            .insert_job("job_w", Some(&fp), &hooked, Status::Pending, Some("req_1"), Reservation::Now(1_500))
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        store.claim("w", lease, &NoView).await.unwrap().unwrap();
        let row = store.job("job_w", None).await.unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&row.webhook_events).unwrap(),
            serde_json::json!({"job.started": "pending"})
        );
        let delivery = store.claim_delivery(Duration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!((delivery.event.as_str(), delivery.attempts), ("job.started", 1));
        assert!(store.claim_delivery(Duration::from_secs(30)).await.unwrap().is_none(), "in flight: not due");
        store.delivery_sent(&delivery.id).await.unwrap();
        let out = Output {
            key: "outputs/job_w.webm".into(),
            sha256: "00".into(),
            size_bytes: 1,
            duration_seconds: 2.0,
            frames: 50,
            fps: 10.0,
            keyframes: 1,
        };
        assert!(store.complete("job_w", "w", &out, 1_000, &NoView).await.unwrap());
        let row = store.job("job_w", None).await.unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&row.webhook_events).unwrap(),
            serde_json::json!({"job.started": "sent", "job.completed": "pending"})
        );
        assert_eq!((row.credits_used, store.key_by_fingerprint(&fp).await.unwrap().unwrap().credits), (1_000, 9_000));
        let days = store.usage_summary(&fp, 2).await.unwrap();
        assert_eq!(days.len(), 2);
        let today = &days[1];
        assert_eq!(today.date, chrono::Utc::now().date_naive().to_string());
        assert_eq!((today.jobs, today.completed, today.credits_used), (1, 1, 1_000));
        let kinds: Vec<String> = store.usage_events(&fp, 10).await.unwrap().into_iter().map(|u| u.kind).collect();
        assert_eq!(kinds, ["charged", "completed", "reserved", "started", "created"]);
    }

    struct NoView;
    impl JobView for NoView {
        fn job_view(&self, _: &JobRow) -> Value {
            Value::Null
        }
    }
}
