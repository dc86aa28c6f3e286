//! Signed webhooks, delivered from a durable outbox.
//!
//! A job's `job.started`, `job.completed`, `job.failed` and `job.cancelled` events are rows of
//! `webhook_deliveries`, written by the [`store`](crate::store) in the same transaction as the
//! state change that causes them, with the body already frozen. [`run`] sends due rows, a few at
//! a time and apart from the workers, so a slow or dead receiver never delays a job. A 2xx answer
//! marks a delivery `sent`; anything else is retried with the same delivery id after
//! `CLEARBG_WEBHOOK_RETRY_BASE`, doubling each time, until `CLEARBG_WEBHOOK_MAX_ATTEMPTS`
//! attempts mark it `failed`. Rows outlive restarts, so a pending delivery is sent by the next
//! process. Receivers are reached under the same address rules as `video_url` downloads.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::jobs::Status;
use crate::store::{now_ms, DeliveryRow, JobRow};
use crate::App;

/// Deliveries in flight at once: enough that one dead receiver does not hold up the others.
const MAX_IN_FLIGHT: usize = 8;
/// How often the loop looks for due deliveries when it has nothing to do.
const POLL: Duration = Duration::from_millis(500);
/// A receiver must answer within this (the contract's peers use 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt from start to end, name resolution included.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(15);
/// How far a claimed delivery's due time is pushed ahead: longer than any attempt, so no other
/// loop sends it meanwhile, and a process that dies mid-attempt leaves it due again afterwards.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// What happened to a job, as a webhook announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A worker took the job up for the first time.
    Started,
    /// The output is ready.
    Completed,
    /// The job ended without output.
    Failed,
    /// The job was cancelled (its status is `failed`, `error_code` `cancelled`).
    Cancelled,
}

impl Event {
    /// The wire name, as in `X-Webhook-Event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "job.started",
            Event::Completed => "job.completed",
            Event::Failed => "job.failed",
            Event::Cancelled => "job.cancelled",
        }
    }

    /// The event that announces how `row` ended, or `None` if it has not ended.
    pub fn ended(row: &JobRow) -> Option<Event> {
        match row.status {
            Status::Completed => Some(Event::Completed),
            Status::Failed if row.error_code.as_deref() == Some("cancelled") => Some(Event::Cancelled),
            Status::Failed => Some(Event::Failed),
            _ => None,
        }
    }
}

/// `X-Webhook-Signature`: `"sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body))`, as the
/// official SDKs verify it.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait after failed attempt number `attempts` (1-based): `base`, then twice that, and so on.
pub fn backoff(base: Duration, attempts: i64) -> Duration {
    base.saturating_mul(1 << attempts.clamp(1, 20).saturating_sub(1))
}

/// Sends due deliveries until `stop` turns true, then lets the attempts in flight finish.
pub async fn run(app: App, mut stop: watch::Receiver<bool>) {
    let mut in_flight = JoinSet::new();
    while !*stop.borrow() {
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() < MAX_IN_FLIGHT {
            match app.store.claim_delivery(CLAIM_LEASE).await {
                Ok(Some(delivery)) => {
                    in_flight.spawn(attempt(app.clone(), delivery));
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "looking for due webhook deliveries"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// One attempt at `delivery`, and its outcome recorded.
async fn attempt(app: App, delivery: DeliveryRow) {
    let outcome = tokio::time::timeout(ATTEMPT_LIMIT, send(&app, &delivery))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(ATTEMPT_LIMIT))));
    let (id, job_id, event, attempt) = (&delivery.id, &delivery.job_id, &delivery.event, delivery.attempts);
    let recorded = match outcome {
        Ok(()) => {
            tracing::info!(delivery_id = %id, job_id = %job_id, event = %event, attempt, "webhook delivered");
            crate::metrics::webhook_delivery(event, "delivered");
            app.store.delivery_sent(id).await
        }
        Err(error) => {
            let retry_at = (attempt < app.config.webhook_max_attempts as i64)
                .then(|| now_ms() + backoff(app.config.webhook_retry_base, attempt).as_millis() as i64);
            tracing::warn!(delivery_id = %id, job_id = %job_id, event = %event, attempt, error = %error,
                will_retry = retry_at.is_some(), "webhook delivery failed");
            crate::metrics::webhook_delivery(event, if retry_at.is_some() { "retry" } else { "failed" });
            app.store.delivery_failed(id, &error, retry_at).await
        }
    };
    if let Err(e) = recorded {
        // The claim lease expires and the delivery is attempted again.
        tracing::error!(delivery_id = %id, error = %e, "recording a webhook delivery");
    }
}

/// POSTs the frozen body with fresh timestamp and signature headers; `Ok` on a 2xx.
async fn send(app: &App, delivery: &DeliveryRow) -> Result<(), String> {
    let url = url::Url::parse(&delivery.url).map_err(|e| format!("{} is not a URL: {e}", delivery.url))?;
    let client = crate::fetch::pinned_client(&url, app.config.allow_private_urls)
        .await
        .map_err(|e| e.message)?
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Webhook-Event", &delivery.event)
        .header("X-Webhook-Delivery-Id", &delivery.id)
        .header("X-Webhook-Timestamp", &timestamp)
        .body(delivery.body.clone());
    if let Some(secret) = &app.config.webhook_secret {
        request = request.header("X-Webhook-Signature", signature(secret, &timestamp, &delivery.body));
    }
    let response = request.send().await.map_err(|e| format!("POST {}: {e}", delivery.url))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{} answered HTTP {}", delivery.url, status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Computed apart: python3 -c "import hmac; print(hmac.new(b'key',
        //   b'2026-01-01T00:00:00.000Z.{}', 'sha256').hexdigest())"
        assert_eq!(
            signature("key", "2026-01-01T00:00:00.000Z", b"{}"),
            "sha256=67ebcdd433d9e897a54a8238ec682dae0c97e771a4f5d8b45ff944b989491770"
        );
    }

    #[test]
    fn backoff_doubles() {
        let base = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=4).map(|n| backoff(base, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80]);
        assert!(backoff(base, 1000) >= backoff(base, 20));
    }
}
