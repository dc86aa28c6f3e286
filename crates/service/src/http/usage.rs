//! `/v1/usage`: what a key's jobs did and what they cost, from the `usage_events` rows written
//! in the same transactions as the changes they record.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::query::QueryFields;
use super::ApiKey;
use crate::error::ApiResult;
use crate::ids::JobId;
use crate::store::Credits;
use crate::wire::timestamp;
use crate::App;

/// Query of the usage routes; numbers are parsed by hand so that bad ones get a 422 naming them.
#[derive(Deserialize)]
pub struct UsageQuery {
    days: Option<String>,
    limit: Option<String>,
}

/// Totals for one UTC day.
#[derive(Serialize, ToSchema)]
#[schema(as = UsageDay)]
pub(crate) struct DayTotals {
    /// `YYYY-MM-DD`.
    date: String,
    jobs: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
    credits_used: Credits,
    credits_refunded: Credits,
}

/// Usage over the last N days.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageSummary {
    success: bool,
    days: i64,
    total_jobs: i64,
    completed_jobs: i64,
    failed_jobs: i64,
    cancelled_jobs: i64,
    credits_used: Credits,
    credits_refunded: Credits,
    credits_balance: Credits,
    /// Oldest first, idle days included.
    daily: Vec<DayTotals>,
}

/// One usage event.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageEvent {
    /// `evt_…`.
    id: String,
    /// `created` `started` `reserved` `completed` `failed` `cancelled` `charged` `refunded`.
    #[serde(rename = "type")]
    kind: String,
    #[schema(value_type = Option<String>)]
    job_id: Option<JobId>,
    request_id: Option<String>,
    credits: Option<Credits>,
    created_at: String,
}

/// The latest usage events, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageEvents {
    success: bool,
    items: Vec<UsageEvent>,
    limit: i64,
}

/// `GET /v1/usage/summary?days=N` (1-90, default 7): totals over the last N UTC days (today
/// included) and one row per day, oldest first, idle days included.
#[utoipa::path(
    get, path = "/v1/usage/summary", tag = "usage", operation_id = "usage_summary", summary = "Usage over the last days",
    params(("days" = Option<i64>, Query, minimum = 1, maximum = 90, description = "Default 7")),
    responses(
        (status = 200, description = "Totals and one row per UTC day", body = UsageSummary),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn summary(
    State(app): State<App>,
    key: ApiKey,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<UsageSummary>> {
    let mut fields = QueryFields::default();
    let days = fields.integer("days", q.days.as_deref(), 7, 1..=90);
    fields.finish()?;
    let rows = app.store.usage_summary(key.owner(), days).await?;
    let sum = |f: fn(&crate::store::UsageDay) -> i64| rows.iter().map(f).sum::<i64>();
    let summary = UsageSummary {
        success: true,
        days,
        total_jobs: sum(|d| d.jobs),
        completed_jobs: sum(|d| d.completed),
        failed_jobs: sum(|d| d.failed),
        cancelled_jobs: sum(|d| d.cancelled),
        credits_used: Credits(sum(|d| d.credits_used)),
        credits_refunded: Credits(sum(|d| d.credits_refunded)),
        credits_balance: Credits(key.0.credits),
        daily: rows
            .into_iter()
            .map(|d| DayTotals {
                date: d.date,
                jobs: d.jobs,
                completed: d.completed,
                failed: d.failed,
                cancelled: d.cancelled,
                credits_used: Credits(d.credits_used),
                credits_refunded: Credits(d.credits_refunded),
            })
            .collect(),
    };
    Ok(Json(summary))
}

/// `GET /v1/usage/events?limit=N` (1-100, default 20): the key's latest job events, newest
/// first: `created`, `started`, `reserved`, `completed`, `failed`, `cancelled`, `charged`,
/// `refunded`, each with its job and the request that caused it (`null` for a worker's doing).
#[utoipa::path(
    get, path = "/v1/usage/events", tag = "usage", operation_id = "usage_events", summary = "Latest usage events",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Default 20")),
    responses(
        (status = 200, description = "The latest events, newest first", body = UsageEvents),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn events(State(app): State<App>, key: ApiKey, Query(q): Query<UsageQuery>) -> ApiResult<Json<UsageEvents>> {
    let mut fields = QueryFields::default();
    let limit = fields.integer("limit", q.limit.as_deref(), 20, 1..=100);
    fields.finish()?;
    let items = app
        .store
        .usage_events(key.owner(), limit)
        .await?
        .into_iter()
        .map(|e| UsageEvent {
            id: format!("evt_{}", e.id),
            kind: e.kind,
            job_id: e.job_id,
            request_id: e.request_id,
            credits: e.credits.map(Credits),
            created_at: timestamp(e.at),
        })
        .collect();
    Ok(Json(UsageEvents { success: true, items, limit }))
}
