//! `GET /api/pricing` and `GET /health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::App;

/// Credits per minute of output per model, as RemoveBGVideo publishes them.
pub const CREDITS_PER_MINUTE: [(&str, u32); 4] = [("original", 60), ("light", 45), ("pro", 180), ("human", 45)];

/// `GET /api/pricing`.
pub async fn pricing() -> Json<Value> {
    let per_model: serde_json::Map<String, Value> =
        CREDITS_PER_MINUTE.iter().map(|(m, c)| (m.to_string(), json!(c))).collect();
    Json(json!({
        "success": true,
        "model_pricing_credits_per_minute": per_model,
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
