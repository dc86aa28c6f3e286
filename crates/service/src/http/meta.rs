//! `GET /api/pricing` and `GET /health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::Credits;
use crate::App;

/// `GET /api/pricing`: the configured credits per minute of each model (`CLEARBG_PRICES`).
#[utoipa::path(
    get, path = "/api/pricing", tag = "legacy", operation_id = "pricing", summary = "Prices per model",
    responses(
        (status = 200, description = "Credits per minute per model", body = Pricing)
    )
)]
pub async fn pricing(State(app): State<App>) -> Json<Pricing> {
    Json(Pricing {
        success: true,
        model_pricing_credits_per_minute: app.config.prices.iter().map(|(m, p)| (m.name().to_string(), Credits(p))).collect(),
        billing: "ceil(seconds processed) x credits_per_minute / 60, reserved at start, charged at completion, refunded on failure or cancel",
        price_per_second_cents: None,
        packages: Vec::new(),
    })
}

/// The configured prices.
#[derive(Serialize, ToSchema)]
pub(crate) struct Pricing {
    success: bool,
    /// Model → credits per minute.
    model_pricing_credits_per_minute: BTreeMap<String, Credits>,
    billing: &'static str,
    /// Legacy; always null here.
    price_per_second_cents: Option<f64>,
    #[schema(value_type = Vec<Object>)]
    packages: Vec<Value>,
}

/// `GET /health`: `healthy` (200) when every check in [`crate::health`] passes, else `degraded`
/// (503) with `details` naming what is wrong. `checks` keeps the contract's `api` and adds one
/// boolean per dependency.
#[utoipa::path(
    get, path = "/health", tag = "operations", operation_id = "health", summary = "Health, with every check",
    responses(
        (status = 200, description = "`healthy`: every check passed", body = Health),
        (status = 503, description = "`degraded`: `details` says what is wrong", body = Health)
    )
)]
pub async fn health(State(app): State<App>) -> (StatusCode, Json<Health>) {
    let report = crate::health::report(&app).await;
    let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let health = Health {
        status: if report.healthy { "healthy" } else { "degraded" },
        checks: report.checks,
        details: report.details,
        workers: app.config.workers,
        version: env!("CARGO_PKG_VERSION"),
    };
    (status, Json(health))
}

/// `healthy`, or `degraded` with what is wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `healthy` or `degraded`.
    status: &'static str,
    /// Check → passed: `api`, `database`, `storage`, `ffmpeg`, `onnx_runtime`, `model_light`,
    /// `model_human`, `model_original`, `model_pro`, and `model_video` when that opt-in model is
    /// installed or serves `human`.
    checks: BTreeMap<String, bool>,
    /// Failing check → what is wrong.
    details: BTreeMap<String, String>,
    /// Embedded workers in this process.
    workers: usize,
    version: &'static str,
}
