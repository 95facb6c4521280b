//! The router: every route with its access rule, the shared middleware (request ids,
//! metrics, timeouts, load shedding, idempotency), the OpenAPI document built from the same
//! registrations, and `serve` with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, SecurityRequirement};
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{authorize, Access, Role};
use crate::error::{ApiError, InternalDetail};
use crate::routes::{
    analytics, audit, catalog, customers, events, fulfilment, health, inventory, keys, merchants,
    orders, products, projections, promotions, timeline, warehouses,
};
use crate::state::AppState;

/// Largest accepted request body. Orders are the biggest commands: 100 lines fit in ~10 KiB.
pub const BODY_LIMIT: usize = 256 * 1024;

const OPERATOR: Access = Access::Roles(&[Role::Operator]);
const CLIENT: Access = Access::Roles(&[Role::Client]);
const HISTORY: Access = Access::Roles(&[Role::Analyst, Role::Auditor]);
const ANALYST: Access = Access::Roles(&[Role::Analyst]);
const AUDITOR: Access = Access::Roles(&[Role::Auditor]);
const ADMIN: Access = Access::Roles(&[]);
/// Products and their stock: operators, and merchants for their own (checked per request).
const SELLERS: Access = Access::Roles(&[Role::Operator, Role::Merchant]);
/// Everyone but merchants, who see only their own products.
const BROWSERS: Access =
    Access::Roles(&[Role::Operator, Role::Client, Role::Analyst, Role::Auditor]);

/// One registered route: what the role-matrix and spec tests walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// The template, as in the spec: `/v1/orders/{id}`.
    pub path: String,
    pub access: Access,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Emporium",
        description = "Event-sourced commerce engine. Authenticate with `Authorization: Bearer <api key>`. \
            Errors are RFC 9457 problem+json. Money is integer minor units plus an ISO 4217 currency.",
    ),
    tags(
        (name = "catalog", description = "Products and prices"),
        (name = "warehouses", description = "Warehouses"),
        (name = "inventory", description = "Stock per warehouse and SKU"),
        (name = "orders", description = "Placing, reading and cancelling orders"),
        (name = "merchants", description = "Sellers on the marketplace (admin)"),
        (name = "promotions", description = "Promotion codes and their usage limits"),
        (name = "events", description = "The global event feed"),
        (name = "analytics", description = "Figures over time ranges, and a live stream"),
        (name = "keys", description = "API keys (admin)"),
        (name = "audit", description = "Verifying the log and its signed digests (auditors)"),
        (name = "customers", description = "Customers' personal data (admin)"),
        (name = "operations", description = "Health, metrics and this document"),
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError))
)]
struct ApiDoc;

/// The built application.
pub struct Built {
    pub router: Router,
    pub openapi: OpenApi,
    pub routes: Vec<RouteSpec>,
}

struct Api {
    state: AppState,
    router: OpenApiRouter<AppState>,
    routes: Vec<RouteSpec>,
    command_slots: GlobalConcurrencyLimitLayer,
}

impl Api {
    /// Registers handlers with who may call them. Command methods (POST/PUT/DELETE) also
    /// get load shedding and idempotency keys. Deny by default: every route passes here.
    fn add(
        mut self,
        access: Access,
        (schemas, mut paths, method_router): UtoipaMethodRouter<AppState>,
    ) -> Self {
        let mut is_command = false;
        for (path, item) in paths.paths.iter_mut() {
            let ops = [
                (Method::GET, &mut item.get),
                (Method::POST, &mut item.post),
                (Method::PUT, &mut item.put),
                (Method::DELETE, &mut item.delete),
                (Method::PATCH, &mut item.patch),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                is_command |= method != Method::GET;
                self.routes.push(RouteSpec {
                    method,
                    path: path.clone(),
                    access,
                });
                let roles: Vec<&str> = access.roles().iter().map(|r| r.as_str()).collect();
                let note = match access {
                    Access::Public => "Access: public (no key).".to_string(),
                    _ => format!("Access: {}.", roles.join(", ")),
                };
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
                    _ => note,
                });
                op.security = Some(match access {
                    Access::Public => vec![SecurityRequirement::default()],
                    _ => vec![SecurityRequirement::new("bearer", Vec::<String>::new())],
                });
                let mut ext = utoipa::openapi::extensions::Extensions::default();
                ext.insert("x-emporium-roles".to_string(), serde_json::json!(roles));
                op.extensions = Some(ext);
            }
        }
        let mut method_router = method_router;
        if is_command {
            // Slots inside idempotency: a request waiting for a racing one with its key
            // holds no command slot.
            method_router = method_router
                .route_layer(
                    ServiceBuilder::new()
                        .layer(HandleErrorLayer::new(|_: BoxError| async {
                            ApiError::Overloaded
                        }))
                        .layer(LoadShedLayer::new())
                        .layer(self.command_slots.clone()),
                )
                .route_layer(from_fn_with_state(
                    self.state.clone(),
                    crate::idempotency::middleware,
                ));
        }
        let method_router =
            method_router.route_layer(from_fn_with_state((self.state.clone(), access), authorize));
        self.router = self.router.routes((schemas, paths, method_router));
        self
    }
}

/// Builds the router and its OpenAPI document over `state`.
pub fn build(state: AppState) -> Built {
    crate::metrics::handle();
    let api = Api {
        router: OpenApiRouter::with_openapi(ApiDoc::openapi()),
        routes: Vec::new(),
        command_slots: GlobalConcurrencyLimitLayer::new(state.config.max_inflight_commands.max(1)),
        state: state.clone(),
    };
    let api = api
        .add(OPERATOR, routes!(warehouses::register))
        .add(OPERATOR, routes!(warehouses::list))
        .add(OPERATOR, routes!(warehouses::get))
        .add(OPERATOR, routes!(warehouses::change_priority))
        .add(OPERATOR, routes!(warehouses::close))
        .add(SELLERS, routes!(products::create))
        .add(Access::AnyRole, routes!(products::get))
        .add(SELLERS, routes!(products::change_details))
        .add(SELLERS, routes!(products::change_price))
        .add(SELLERS, routes!(products::discontinue))
        .add(SELLERS, routes!(inventory::receive))
        .add(SELLERS, routes!(inventory::adjust))
        .add(SELLERS, routes!(inventory::by_sku))
        .add(CLIENT, routes!(orders::place))
        .add(
            Access::Roles(&[Role::Client, Role::Merchant]),
            routes!(orders::get),
        )
        .add(CLIENT, routes!(orders::cancel))
        .add(OPERATOR, routes!(orders::review))
        .add(ADMIN, routes!(merchants::register))
        .add(Access::Roles(&[Role::Merchant]), routes!(merchants::get))
        .add(OPERATOR, routes!(promotions::create))
        .add(OPERATOR, routes!(promotions::get))
        .add(CLIENT, routes!(orders::payment))
        .add(OPERATOR, routes!(fulfilment::ship))
        .add(OPERATOR, routes!(fulfilment::take_back))
        .add(AUDITOR, routes!(timeline::get))
        .add(AUDITOR, routes!(audit::verify))
        .add(AUDITOR, routes!(audit::digest))
        .add(BROWSERS, routes!(catalog::search))
        .add(ANALYST, routes!(analytics::summary))
        .add(ANALYST, routes!(analytics::top_products))
        .add(ANALYST, routes!(analytics::warehouses))
        .add(ANALYST, routes!(analytics::funnel))
        .add(ANALYST, routes!(analytics::merchants))
        .add(ANALYST, routes!(analytics::fulfilment))
        .add(ANALYST, routes!(analytics::stream))
        .add(ANALYST, routes!(projections::list))
        .add(ADMIN, routes!(projections::rebuild_search))
        .add(HISTORY, routes!(events::list))
        .add(ADMIN, routes!(customers::erase))
        .add(ADMIN, routes!(keys::create))
        .add(ADMIN, routes!(keys::list))
        .add(ADMIN, routes!(keys::revoke))
        .add(Access::Public, routes!(health::live))
        .add(Access::Public, routes!(health::ready))
        .add(Access::Public, routes!(crate::metrics::render));
    let Api {
        router, mut routes, ..
    } = api;
    let (router, mut openapi) = router.split_for_parts();

    // The document and its viewer are served by utoipa-swagger-ui; list them too.
    for path in ["/openapi.json", "/docs"] {
        let op = utoipa::openapi::path::OperationBuilder::new()
            .tag("operations")
            .description(Some("Access: public (no key)."))
            .security(SecurityRequirement::default())
            .response(
                "200",
                utoipa::openapi::Response::new(match path {
                    "/docs" => "Interactive API viewer (HTML)",
                    _ => "This OpenAPI 3.1 document",
                }),
            )
            .build();
        openapi.paths.paths.insert(
            path.to_string(),
            utoipa::openapi::path::PathItem::new(utoipa::openapi::HttpMethod::Get, op),
        );
        routes.push(RouteSpec {
            method: Method::GET,
            path: path.to_string(),
            access: Access::Public,
        });
    }
    if let Some(components) = openapi.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An Emporium API key"))
                    .build(),
            ),
        );
    }

    let timeout = state.config.request_timeout;
    let router = router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi.clone()))
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(log_internal_errors))
        .layer(from_fn(crate::metrics::track))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: BoxError| async move {
                    if e.is::<tower::timeout::error::Elapsed>() {
                        ApiError::Timeout
                    } else {
                        ApiError::Internal(e.to_string())
                    }
                }))
                .layer(TimeoutLayer::new(timeout)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|r: &Request| {
            let id = r
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %r.method(), uri = %r.uri().path(), request_id = %id)
        })
        .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(bound_client_ids));
    Built {
        router,
        openapi,
        routes,
    }
}

/// Longest request or correlation id kept from a client.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Whether a client's id may travel into event metadata, logs and bus messages: 1 to 128
/// visible ASCII characters.
pub fn acceptable_client_id(v: &[u8]) -> bool {
    (1..=MAX_CLIENT_ID_LEN).contains(&v.len()) && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Drops an `X-Request-Id` or `X-Correlation-Id` that is not [`acceptable_client_id`]: the
/// request then gets a fresh id, as one that sent none. Client ids are copied into every
/// event's metadata and into the NATS message, so an unbounded one could make an event
/// too big to publish.
async fn bound_client_ids(mut request: Request) -> Request {
    for name in ["x-request-id", "x-correlation-id"] {
        let bad = request
            .headers()
            .get_all(name)
            .iter()
            .any(|v| !acceptable_client_id(v.as_bytes()));
        if bad || request.headers().get_all(name).iter().count() > 1 {
            request.headers_mut().remove(name);
        }
    }
    request
}

/// The application router over `state`.
pub fn app(state: AppState) -> Router {
    build(state).router
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

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests
/// (up to `drain`), so nothing a client was told is accepted is cut off.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves the application over `state`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, app(state), shutdown).await
}

/// Background upkeep while serving: expired idempotency records are purged hourly.
pub async fn upkeep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match crate::idempotency::purge_expired(state.store.db()).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency records"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging idempotency records"),
        }
    }
}
