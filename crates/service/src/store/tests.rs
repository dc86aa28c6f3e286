//! Every test runs twice: on a SQLite file and on a PostgreSQL database of its own.

use super::*;
use serde_json::Value;

use crate::ids::JobId;
use crate::jobs::{parse_spec, Billing, JobSpec, Mode};
use crate::storage::{Signer, Storage};
use crate::testing::PgDatabase;
use crate::wire::Links;

/// A throwaway database: a temporary SQLite file, or a PostgreSQL database of the test's own.
enum TestDb {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] PgDatabase),
}

/// A job id in a test.
fn job_id(id: &str) -> JobId {
    JobId::from(id)
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
            let db = PgDatabase::create();
            let store = Store::open(&db.url).await.unwrap();
            assert_eq!(store.backend(), Backend::Postgres);
            (TestDb::Postgres(db), store)
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
    store.insert_job(&job_id("job_d"), None, &draft(), Status::Created, None, Reservation::None).await.unwrap();
    assert!(next(&mut listener).await.is_none(), "a draft is not announced");
    store.start_job(&job_id("job_d"), None, &draft(), None, Reservation::None).await.unwrap();
    let n = next(&mut listener).await.expect("the start is announced");
    assert_eq!(n.channel(), QUEUE_CHANNEL);
    // A start refused for credits rolls back, and announces nothing.
    let (_, key) = store.create_key("c", None, 0, None).await.unwrap();
    store
        .insert_job(&job_id("job_e"), Some(&key.fingerprint), &draft(), Status::Created, None, Reservation::None)
        .await
        .unwrap();
    let refused = store.start_job(&job_id("job_e"), Some(&key.fingerprint), &draft(), None, Reservation::Now(1)).await;
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
            .insert_job(&job_id(&format!("job_{n}")), Some(&fp), &draft(), Status::Created, None, Reservation::None)
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..40)
        .map(|n| {
            let (store, fp) = (store.clone(), fp.clone());
            tokio::spawn(async move {
                store.start_job(&job_id(&format!("job_{n}")), Some(&fp), &draft(), None, Reservation::Now(1_000)).await
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
    let started: JobId = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'pending' LIMIT 1")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert!(store.fail(&started, None, Status::Pending, "cancelled", "x", None, links()).await.unwrap());
    let row = store.job(&started, None).await.unwrap().unwrap();
    assert_eq!((row.billing_status, row.credits_reserved), (Some(Billing::Refunded), 1_000));
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
            .insert_job(&job_id(&format!("job_{n:02}")), None, &queued, Status::Pending, None, Reservation::None)
            .await
            .unwrap();
    }
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(row) = store.claim(&format!("w{w}"), Duration::from_secs(60), links()).await.unwrap() {
                    assert_eq!((row.status, row.attempts), (Status::Processing, 1));
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
    let expected: Vec<JobId> = (0..30).map(|n| job_id(&format!("job_{n:02}"))).collect();
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
        .insert_job(&job_id("job_a"), Some(&key.fingerprint), &queued, Status::Pending, None, Reservation::Now(3_000))
        .await
        .unwrap();
    let lease = Duration::from_millis(200);
    assert_eq!(store.claim("dead", lease, links()).await.unwrap().unwrap().id, "job_a");
    assert!(store.recover_expired(2, links()).await.unwrap().is_empty(), "the lease is still live");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.recover_expired(2, links()).await.unwrap(), vec![job_id("job_a")]);
    let second = store.claim("alive", lease, links()).await.unwrap().unwrap();
    assert_eq!((second.attempts, second.lease_owner.as_deref()), (2, Some("alive")));
    // The first worker is fenced off: no heartbeat, no completion, no failure.
    assert_eq!(store.heartbeat(&job_id("job_a"), "dead", lease, advance(50.0)).await.unwrap(), None);
    let out = Output {
        key: "outputs/job_a.webm".into(),
        sha256: "00".into(),
        size_bytes: 1,
        duration_seconds: 1.0,
        frames: 1,
        fps: 10.0,
        keyframes: 1,
    };
    assert!(!store.complete(&job_id("job_a"), "dead", &out, 750, links()).await.unwrap());
    assert!(!store.fail(&job_id("job_a"), Some("dead"), Status::Processing, "x", "x", None, links()).await.unwrap());
    // Its second worker dies too: with max_attempts 2 the job fails and is refunded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.recover_expired(2, links()).await.unwrap(), vec![job_id("job_a")]);
    let row = store.job(&job_id("job_a"), None).await.unwrap().unwrap();
    assert_eq!((row.status, row.error_code.as_deref()), (Status::Failed, Some("attempts_exhausted")));
    assert_eq!(row.billing_status, Some(Billing::Refunded));
    assert_eq!(store.key_by_fingerprint(&key.fingerprint).await.unwrap().unwrap().credits, 10_000);
    let trail: Vec<(i64, String)> =
        store.events(&job_id("job_a")).await.unwrap().into_iter().map(|e| (e.attempt, e.to_status)).collect();
    let expected = [(0, "pending"), (1, "processing"), (1, "pending"), (2, "processing"), (2, "failed")];
    assert_eq!(trail, expected.map(|(a, s)| (a, s.to_string())));
}

async fn heartbeats_keep_the_highest_progress_and_carry_cancels(backend: Backend) {
    let (_db, store) = store(backend).await;
    let queued = spec(serde_json::json!({"video_url": "http://h/a.mp4"}));
    store.insert_job(&job_id("job_h"), None, &queued, Status::Pending, None, Reservation::None).await.unwrap();
    let lease = Duration::from_secs(60);
    store.claim("w", lease, links()).await.unwrap().unwrap();
    assert_eq!(store.heartbeat(&job_id("job_h"), "w", lease, advance(40.0)).await.unwrap(), Some(false));
    assert_eq!(store.heartbeat(&job_id("job_h"), "w", lease, advance(30.0)).await.unwrap(), Some(false));
    assert_eq!(store.job(&job_id("job_h"), None).await.unwrap().unwrap().progress, 40.0);
    assert!(store.request_cancel(&job_id("job_h"), Some("req_1")).await.unwrap());
    assert_eq!(store.heartbeat(&job_id("job_h"), "w", lease, advance(45.0)).await.unwrap(), Some(true));
    assert!(store.release(&job_id("job_h"), "w", HandBack::Shutdown, "shutdown").await.unwrap());
    let row = store.job(&job_id("job_h"), None).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts, row.progress), (Status::Pending, 0, 0.0));
    // Settings are written once, whoever asks first.
    assert_eq!(store.setting_or_insert("s", || "one".into()).await.unwrap(), "one");
    assert_eq!(store.setting_or_insert("s", || "two".into()).await.unwrap(), "one");
}

async fn a_job_handed_back_to_retry_waits_out_its_backoff(backend: Backend) {
    let (_db, store) = store(backend).await;
    let queued = spec(serde_json::json!({"video_url": "http://h/a.mp4"}));
    store.insert_job(&job_id("job_r"), None, &queued, Status::Pending, None, Reservation::None).await.unwrap();
    let lease = Duration::from_secs(60);
    store.claim("w1", lease, links()).await.unwrap().unwrap();
    let retry_at = now_ms() + 1_500;
    assert!(!store.release(&job_id("job_r"), "w2", HandBack::RetryAt(retry_at), "not its job").await.unwrap());
    assert!(store.release(&job_id("job_r"), "w1", HandBack::RetryAt(retry_at), "ffmpeg_missing: …").await.unwrap());
    let row = store.job(&job_id("job_r"), None).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts, row.queued_at), (Status::Pending, 1, Some(retry_at)), "the attempt counts");
    // A job queued later but due now goes first; the handed-back one waits for its time.
    store.insert_job(&job_id("job_s"), None, &queued, Status::Pending, None, Reservation::None).await.unwrap();
    assert_eq!(store.claim("w2", lease, links()).await.unwrap().unwrap().id, "job_s");
    assert!(store.claim("w2", lease, links()).await.unwrap().is_none(), "claimed before its backoff ended");
    tokio::time::sleep(Duration::from_millis((retry_at - now_ms()).max(0) as u64 + 50)).await;
    let again = store.claim("w2", lease, links()).await.unwrap().expect("claimable once the backoff ends");
    assert_eq!((again.id.as_str(), again.attempts), ("job_r", 2));
    let trail: Vec<(i64, String)> =
        store.events(&job_id("job_r")).await.unwrap().into_iter().map(|e| (e.attempt, e.to_status)).collect();
    let expected = [(0, "pending"), (1, "processing"), (1, "pending"), (2, "processing")];
    assert_eq!(trail, expected.map(|(a, s)| (a, s.to_string())));
}

async fn webhook_outbox_and_usage_summary(backend: Backend) {
    let (_db, store) = store(backend).await;
    let (_, key) = store.create_key("c", None, 10_000, None).await.unwrap();
    let fp = key.fingerprint.clone();
    let hooked = spec(serde_json::json!({"video_url": "http://h/a.mp4", "webhook_url": "http://h/hook"}));
    store
        .insert_job(&job_id("job_w"), Some(&fp), &hooked, Status::Pending, Some("req_1"), Reservation::Now(1_500))
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    store.claim("w", lease, links()).await.unwrap().unwrap();
    let row = store.job(&job_id("job_w"), None).await.unwrap().unwrap();
    assert_eq!(serde_json::json!(row.webhook_events), serde_json::json!({"job.started": "pending"}));
    let delivery = store.claim_delivery(Duration::from_secs(30)).await.unwrap().unwrap();
    assert_eq!((delivery.event.as_str(), delivery.attempts), ("job.started", 1));
    // The body is frozen from the job as the claim left it: the typed view the routes send.
    let body: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!((body["event"].as_str(), body["delivery_id"] == delivery.id.as_str()), (Some("job.started"), true));
    assert_eq!((body["data"]["id"].as_str(), body["data"]["status"].as_str()), (Some("job_w"), Some("processing")));
    assert_eq!((body["data"]["credits_reserved"].as_f64(), body["data"]["attempts"].as_i64()), (Some(1.5), Some(1)));
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
    assert!(store.complete(&job_id("job_w"), "w", &out, 1_000, links()).await.unwrap());
    let row = store.job(&job_id("job_w"), None).await.unwrap().unwrap();
    assert_eq!(
        serde_json::json!(row.webhook_events),
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

/// Links for the webhook bodies these tests queue, signed for a local storage that holds nothing.
fn links() -> Links<'static> {
    static STORAGE: std::sync::LazyLock<Storage> = std::sync::LazyLock::new(|| {
        let dir = std::env::temp_dir().join("clearbg-store-tests");
        Storage::open(&format!("file://{}", dir.display()), Signer::new(b"test", "http://127.0.0.1:8080")).unwrap()
    });
    Links { storage: &STORAGE, ttl: Duration::from_secs(60) }
}
