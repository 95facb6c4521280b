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

/// The process can do its job: the event store answers. With NATS configured, the relay's
/// state and lag are reported too; NATS being down does not make the engine unready (commands
/// are still accepted: the store is the outbox), it shows as `"degraded"`.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Ready (or degraded: NATS down, relay catching up)"), (status = 503, description = "Not ready: the database does not answer")))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (status, body) = readiness(&state).await;
    (status, Json(body))
}

/// The readiness report: database, bus and relay, and the overall word (the console's
/// System page shows it too).
pub(crate) async fn readiness(state: &AppState) -> (StatusCode, serde_json::Value) {
    use std::sync::atomic::Ordering;
    let db = state.store.db();
    // A database that does not answer within a second is not ready: the pool would
    // otherwise keep the probe waiting for a connection for its whole acquire timeout.
    let db_ok = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), db.ping()).await,
        Ok(Ok(()))
    );
    let mut body = json!({"database": {"kind": db.kind(), "ok": db_ok}});
    let mut degraded = false;
    match &state.bus {
        Some(bus) => {
            let connected = matches!(
                bus.client.connection_state(),
                async_nats::connection::State::Connected
            );
            degraded |= !connected;
            let r = &bus.relay;
            body["bus"] = json!({
                "kind": "nats",
                "connected": connected,
                "relay": {
                    "leader": r.leader.load(Ordering::Relaxed),
                    "position": r.position.load(Ordering::Relaxed),
                    "head": r.head.load(Ordering::Relaxed),
                    "lag": r.lag(),
                    "published": r.published.load(Ordering::Relaxed),
                },
            });
        }
        None => body["bus"] = json!({"kind": "in-process", "connected": true}),
    }
    let (status, word) = match (db_ok, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    body["status"] = json!(word);
    (status, body)
}
