//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Events are counted where they happen with the [`metrics`] facade (a request ends, the engine
//! finishes a video, a job is charged, a webhook attempt ends); state that lives in the database
//! (jobs by status, the queue) is read from it at scrape time, so every API process sharing the
//! database reports the same numbers and nothing drifts after a restart.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `clearbg_http_requests_total` | counter | `method`, `route` (the route template), `status` |
//! | `clearbg_http_request_duration_seconds` | histogram | `method`, `route`, `status` |
//! | `clearbg_jobs` | gauge | `status` (`created` `pending` `processing` `completed` `failed`) |
//! | `clearbg_queue_depth` | gauge | (jobs waiting for a worker) |
//! | `clearbg_processing_fps` | gauge | `model` (frames per second of the model's last job) |
//! | `clearbg_frames_processed_total` | counter | `model` |
//! | `clearbg_processing_seconds` | histogram | `model` (engine wall time per job) |
//! | `clearbg_credits_charged_millicredits_total` | counter | `model` (1 credit = 1000) |
//! | `clearbg_webhook_deliveries_total` | counter | `event`, `outcome` (`delivered` `retry` `failed`) |
//!
//! Speed over any window is `rate(clearbg_frames_processed_total[5m]) /
//! rate(clearbg_processing_seconds_sum[5m])`; the gauge is the last job's, for a glance.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ids::JobId;
use crate::jobs::{Billing, Status};
use crate::App;

/// Latency buckets, seconds: from a cached GET to a long upload.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];
/// Engine wall time buckets, seconds: a 1-second preview to an hour of ISNet.
const PROCESSING_BUCKETS: [f64; 10] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and starts the
/// thread that folds histogram samples into buckets every few seconds, so memory stays flat
/// between scrapes.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("clearbg_http_request_duration_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("clearbg_processing_seconds".into()), &PROCESSING_BUCKETS)
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will only show database gauges");
        }
        describe();
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        });
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("clearbg_http_requests_total", "HTTP requests answered, by route template and status");
    describe_histogram!(
        "clearbg_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by route template and status"
    );
    describe_gauge!("clearbg_jobs", "Jobs in the database by status (cancelled jobs are failed)");
    describe_gauge!("clearbg_queue_depth", "Jobs queued (pending) and waiting for a worker");
    describe_gauge!("clearbg_processing_fps", "Frames per second of the last job each model finished");
    describe_counter!("clearbg_frames_processed_total", "Video frames the engine processed, by model");
    describe_histogram!("clearbg_processing_seconds", Unit::Seconds, "Engine wall time per job, by model");
    describe_counter!(
        "clearbg_credits_charged_millicredits_total",
        "Credits charged for completed jobs, in millicredits (1 credit = 1000), by model"
    );
    describe_counter!(
        "clearbg_webhook_deliveries_total",
        "Webhook delivery attempts by event and outcome: delivered, retry (failed, will retry), failed (gave up)"
    );
    describe_gauge!("clearbg_build_info", "Always 1; the version is a label");
}

/// Middleware: counts and times every request under its route template (`/v1/jobs/{id}`, never
/// the id itself, so the series stay few; requests matching no route are `unmatched`).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = [
        ("method", method.to_string()),
        ("route", route.unwrap_or_else(|| "unmatched".into())),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("clearbg_http_requests_total", &labels).increment(1);
    metrics::histogram!("clearbg_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: every series in the Prometheus text format, with the job gauges read from the
/// database now. A database that does not answer leaves those gauges at their last values and
/// the scrape still succeeds (`/health` is where that shows).
pub async fn scrape(State(app): State<App>) -> Response {
    let handle = install();
    match app.store.count_jobs_by_status().await {
        Ok(counts) => {
            let count = |s: Status| counts.iter().find(|(name, _)| name == s.as_str()).map_or(0, |(_, n)| *n);
            for status in Status::ALL {
                metrics::gauge!("clearbg_jobs", "status" => status.as_str()).set(count(status) as f64);
            }
            metrics::gauge!("clearbg_queue_depth").set(count(Status::Pending) as f64);
        }
        Err(e) => tracing::warn!(error = %e, "counting jobs for /metrics"),
    }
    metrics::gauge!("clearbg_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
        .into_response()
}

/// The engine finished a video: `frames` in `wall` seconds with `model`.
pub fn engine_run(model: &str, frames: u64, wall: Duration) {
    let secs = wall.as_secs_f64();
    metrics::counter!("clearbg_frames_processed_total", "model" => model.to_string()).increment(frames);
    metrics::histogram!("clearbg_processing_seconds", "model" => model.to_string()).record(secs);
    if secs > 0.0 {
        metrics::gauge!("clearbg_processing_fps", "model" => model.to_string()).set(frames as f64 / secs);
    }
}

/// A job was completed: counts what was charged, as the database recorded it in the completing
/// transaction (the charge is capped by the reservation there, so it is read, not recomputed).
pub async fn job_charged(app: App, job_id: JobId) {
    match app.store.job(&job_id, None).await {
        Ok(Some(row)) if row.billing_status == Some(Billing::Charged) && row.credits_used > 0 => {
            metrics::counter!("clearbg_credits_charged_millicredits_total", "model" => row.spec.model.name())
                .increment(row.credits_used as u64);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(%job_id, error = %e, "reading the charge for /metrics"),
    }
}

/// A webhook attempt ended: `delivered`, `retry` (failed, another attempt is due) or `failed`
/// (failed for good).
pub fn webhook_delivery(event: &str, outcome: &'static str) {
    metrics::counter!("clearbg_webhook_deliveries_total", "event" => event.to_string(), "outcome" => outcome)
        .increment(1);
}
