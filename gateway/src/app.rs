//! The router: every route, its middleware, and `serve` with graceful shutdown.

use std::future::Future;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::require_key;
use crate::error::{ApiError, InternalDetail};
use crate::routes::{events, health, inventory, orders, products, warehouses};
use crate::state::AppState;

/// Largest accepted request body. Orders are the biggest commands: 100 lines fit in ~10 KiB.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Builds the application router over `state`.
pub fn app(state: AppState) -> Router {
    let authenticated = Router::new()
        .route(
            "/v1/warehouses",
            post(warehouses::register).get(warehouses::list),
        )
        .route("/v1/warehouses/{id}", get(warehouses::get))
        .route(
            "/v1/warehouses/{id}/priority",
            put(warehouses::change_priority),
        )
        .route("/v1/warehouses/{id}/close", post(warehouses::close))
        .route("/v1/products", post(products::create))
        .route(
            "/v1/products/{sku}",
            get(products::get).put(products::change_details),
        )
        .route("/v1/products/{sku}/price", put(products::change_price))
        .route(
            "/v1/products/{sku}/discontinue",
            post(products::discontinue),
        )
        .route(
            "/v1/inventory/{warehouse_id}/{sku}/receive",
            post(inventory::receive),
        )
        .route(
            "/v1/inventory/{warehouse_id}/{sku}/adjust",
            post(inventory::adjust),
        )
        .route("/v1/inventory/{sku}", get(inventory::by_sku))
        .route("/v1/orders", post(orders::place))
        .route("/v1/orders/{id}", get(orders::get))
        .route("/v1/orders/{id}/cancel", post(orders::cancel))
        .route("/v1/events", get(events::list))
        .route_layer(from_fn_with_state(state.clone(), require_key));

    Router::new()
        .merge(authenticated)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(log_internal_errors))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no route for {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> Response {
    let mut r = ApiError::BadRequest(format!(
        "method {} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
    .into_response();
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// 5xx causes are logged here, once, and never sent to the client.
async fn log_internal_errors(response: Response) -> Response {
    if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
        tracing::error!(status = %response.status(), %detail, "request failed");
    }
    response
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
