//! Liveness and readiness probes (no authentication).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn live() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The process can do its job: the event store answers.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.store.db();
    match db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "database": {"kind": db.kind(), "ok": true}})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "database": {"kind": db.kind(), "ok": false}})),
        ),
    }
}
