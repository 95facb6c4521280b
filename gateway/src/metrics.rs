//! Prometheus metrics: one process-wide recorder, an HTTP layer that counts and times every
//! request by matched route and status, and `/metrics` rendering (with pool gauges taken at
//! scrape time). Served only to loopback peers unless `metrics_public` is set.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use emporium_event_store::Db;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::state::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the global recorder once (later calls, e.g. from tests, share it).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .ok()?
                .install_recorder()
                .ok()
                .inspect(|_| preregister())
        })
        .as_ref()
}

/// Series that should read 0 rather than be absent before their first event.
fn preregister() {
    use cqrs_es::Aggregate;
    use emporium_domain::{Checkout, Order, Payment, Product, StockItem, Warehouse};
    for aggregate in [
        Product::TYPE,
        Warehouse::TYPE,
        StockItem::TYPE,
        Order::TYPE,
        Payment::TYPE,
        Checkout::TYPE,
    ] {
        metrics::counter!("emporium_command_retries_total", "aggregate" => aggregate).increment(0);
        for outcome in ["accepted", "rejected", "conflict", "unavailable", "error"] {
            metrics::counter!("emporium_commands_total", "aggregate" => aggregate, "outcome" => outcome)
                .increment(0);
        }
    }
    metrics::counter!("emporium_rate_limited_total").increment(0);
    metrics::counter!("emporium_seal_lookups_total").increment(0);
    metrics::counter!("emporium_load_shed_total").increment(0);
}

/// Counts and times each request under its route template (`/v1/orders/{id}`), never the
/// raw path, so label cardinality stays bounded.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("emporium_http_requests_total", &labels).increment(1);
    metrics::histogram!("emporium_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 403, description = "Not a loopback peer", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn render(State(state): State<AppState>, request: Request) -> Response {
    // Without connection info (an in-process `oneshot`), the caller is local by definition.
    let local = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_none_or(|ConnectInfo(addr)| addr.ip().is_loopback());
    if !local && !state.config.metrics_public {
        return ApiError::Forbidden("metrics are served to loopback peers only".into())
            .into_response();
    }
    let (size, idle, max) = match state.store.db() {
        Db::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        Db::Sqlite(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
    };
    metrics::gauge!("emporium_db_pool_connections", "state" => "open").set(f64::from(size));
    metrics::gauge!("emporium_db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("emporium_db_pool_connections", "state" => "in_use")
        .set(f64::from(size).max(idle as f64) - idle as f64);
    metrics::gauge!("emporium_db_pool_connections", "state" => "max").set(f64::from(max));
    if let Ok(views) = crate::routes::projections::views(&state).await {
        for v in views {
            metrics::gauge!("emporium_projection_lag", "projection" => v.name.clone())
                .set(v.lag as f64);
            metrics::gauge!("emporium_projection_position", "projection" => v.name)
                .set(v.position as f64);
        }
    }
    let body = handle().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
