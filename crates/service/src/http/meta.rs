//! `GET /api/pricing` and `GET /health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::App;

/// `GET /api/pricing`: the configured credits per minute of each model (`CLEARBG_PRICES`).
pub async fn pricing(State(app): State<App>) -> Json<Value> {
    let per_model: serde_json::Map<String, Value> =
        app.config.prices.iter().map(|(m, p)| (m.to_string(), crate::billing::credits_json(p))).collect();
    Json(json!({
        "success": true,
        "model_pricing_credits_per_minute": per_model,
        "billing": "ceil(seconds processed) x credits_per_minute / 60, reserved at start, charged at completion, refunded on failure or cancel",
        "price_per_second_cents": Value::Null,
        "packages": [],
    }))
}

/// `GET /health`: `healthy` when the database and storage answer, else `degraded` (503).
pub async fn health(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let database = app.store.ping().await.is_ok();
    let storage = app.storage.check().await;
    let healthy = database && storage;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if healthy { "healthy" } else { "degraded" },
            "checks": { "api": true, "database": database, "storage": storage, "workers": app.config.workers },
            "version": env!("CARGO_PKG_VERSION"),
        })),
    )
}
