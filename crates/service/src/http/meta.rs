//! `GET /api/pricing` and `GET /health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::store::Credits;
use crate::App;

/// `GET /api/pricing`: the configured credits per minute of each model (`CLEARBG_PRICES`).
#[utoipa::path(
    get, path = "/api/pricing", tag = "legacy", operation_id = "pricing", summary = "Prices per model",
    responses(
        (status = 200, description = "Credits per minute per model", body = super::schemas::Pricing)
    )
)]
pub async fn pricing(State(app): State<App>) -> Json<Value> {
    let per_model: serde_json::Map<String, Value> =
        app.config.prices.iter().map(|(m, p)| (m.to_string(), json!(Credits(p)))).collect();
    Json(json!({
        "success": true,
        "model_pricing_credits_per_minute": per_model,
        "billing": "ceil(seconds processed) x credits_per_minute / 60, reserved at start, charged at completion, refunded on failure or cancel",
        "price_per_second_cents": Value::Null,
        "packages": [],
    }))
}

/// `GET /health`: `healthy` (200) when every check in [`crate::health`] passes, else `degraded`
/// (503) with `details` naming what is wrong. `checks` keeps the contract's `api` and adds one
/// boolean per dependency.
#[utoipa::path(
    get, path = "/health", tag = "operations", operation_id = "health", summary = "Health, with every check",
    responses(
        (status = 200, description = "`healthy`: every check passed", body = super::schemas::Health),
        (status = 503, description = "`degraded`: `details` says what is wrong", body = super::schemas::Health)
    )
)]
pub async fn health(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let report = crate::health::report(&app).await;
    let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if report.healthy { "healthy" } else { "degraded" },
            "checks": report.checks,
            "details": report.details,
            "workers": app.config.workers,
            "version": env!("CARGO_PKG_VERSION"),
        })),
    )
}
