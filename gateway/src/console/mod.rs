//! The web console under `/console`: pages for operators, analysts, auditors and admins,
//! rendered on the server (maud), with htmx for partial updates and uPlot for charts. Their
//! assets are vendored from the npm registry at pinned versions (`gateway/assets/vendor`,
//! `scripts/vendor-console-assets.sh`) and embedded in the binary, so the console works
//! offline and in embedded mode, and no page loads anything from elsewhere (the CSP says so
//! to the browser too).
//!
//! Sign-in takes an API key once and keeps a session cookie ([`session`]); every page checks
//! the key's role with the same [`Access`] rules the API's routes use, and every form carries
//! the session's CSRF token.

pub mod catalog;
pub mod events;
pub mod orders;
pub mod overview;
pub mod session;
pub mod system;
pub mod views;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::CookieJar;
use maud::html;
use serde::Deserialize;

use crate::auth::{Access, Role};
use crate::error::ApiError;
use crate::state::AppState;
use session::Session;

/// The console's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Overview,
    Orders,
    Catalog,
    Events,
    System,
}

/// A page in the navigation, with who may open it.
pub struct PageSpec {
    pub page: Page,
    pub path: &'static str,
    pub title: &'static str,
    pub access: Access,
}

/// Every page and its access rule (admin may open all), as the API's rules for the same
/// data: analytics is for analysts, orders for operators and auditors, catalog and stock for
/// operators, the feed for analysts and auditors, the system for admins. Client keys cannot
/// sign in at all.
pub const PAGES: &[PageSpec] = &[
    PageSpec {
        page: Page::Overview,
        path: "/console/overview",
        title: "Overview",
        access: Access::Roles(&[Role::Analyst]),
    },
    PageSpec {
        page: Page::Orders,
        path: "/console/orders",
        title: "Orders",
        access: Access::Roles(&[Role::Operator, Role::Auditor]),
    },
    PageSpec {
        page: Page::Catalog,
        path: "/console/catalog",
        title: "Catalog & stock",
        access: Access::Roles(&[Role::Operator]),
    },
    PageSpec {
        page: Page::Events,
        path: "/console/events",
        title: "Events",
        access: Access::Roles(&[Role::Analyst, Role::Auditor]),
    },
    PageSpec {
        page: Page::System,
        path: "/console/system",
        title: "System",
        access: Access::Roles(&[]),
    },
];

fn spec(page: Page) -> &'static PageSpec {
    PAGES.iter().find(|p| p.page == page).unwrap_or(&PAGES[0])
}

/// Why a console request was not served: rendered as an HTML page, never problem+json.
pub enum ConsoleError {
    Forbidden(String),
    NotFound(String),
    Invalid(String),
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Api(e)
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        ConsoleError::Api(ApiError::Unavailable(e.to_string()))
    }
}

impl From<emporium_projections::ProjectionError> for ConsoleError {
    fn from(e: emporium_projections::ProjectionError) -> Self {
        ConsoleError::Api(crate::routes::catalog::projection_error(e))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::Forbidden(m) => views::failure(StatusCode::FORBIDDEN, &m),
            ConsoleError::NotFound(m) => views::failure(StatusCode::NOT_FOUND, &m),
            ConsoleError::Invalid(m) => views::failure(StatusCode::UNPROCESSABLE_ENTITY, &m),
            ConsoleError::Api(e) => {
                if let ApiError::Internal(detail) | ApiError::Unavailable(detail) = &e {
                    tracing::error!(%detail, "console request failed");
                }
                // The API's status and public detail (its mapping keeps database text out).
                let p = e.problem();
                let mut detail = p.detail;
                for f in p.errors {
                    detail.push_str(&format!("; {}: {}", f.pointer, f.detail));
                }
                views::failure(e.status(), &detail)
            }
        }
    }
}

/// Refuses `session` unless its role may open `page`.
pub fn require(session: &Session, page: Page) -> Result<(), ConsoleError> {
    if spec(page).access.allows(session.role) {
        Ok(())
    } else {
        Err(ConsoleError::Forbidden(format!(
            "a {} key may not open the {} page",
            session.role.as_str(),
            spec(page).title
        )))
    }
}

/// Refuses a state-changing request without the session's CSRF token or from another site.
pub fn check_form(
    session: &Session,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<(), ConsoleError> {
    if !session::same_origin(headers) || !session.csrf_matches(csrf) {
        return Err(ConsoleError::Forbidden(
            "this form was not sent from a console page (missing or wrong CSRF token)".into(),
        ));
    }
    Ok(())
}

/// Longest API key accepted on the sign-in form (ours are 86 characters).
const MAX_KEY_LEN: usize = 256;

/// The console's routes, merged into the application router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/{name}", get(asset))
        .route("/console/overview", get(overview::page))
        .route("/console/overview/stream", get(overview::stream))
        .route("/console/orders", get(orders::list))
        .route("/console/orders/{id}", get(orders::show))
        .route("/console/catalog", get(catalog::page))
        .route("/console/events", get(events::page))
        .route("/console/events/download", get(events::download))
        .route("/console/system", get(system::page))
        .route(
            "/console/system/rebuild-search",
            post(system::rebuild_search),
        )
        .route("/console/system/keys", post(system::create_key))
        .route("/console/system/keys/{id}/revoke", post(system::revoke_key))
        .layer(axum::middleware::map_response(protect))
}

/// Headers on every console response: nothing may load from elsewhere or frame the console;
/// pages are not cached (they show live data and a CSRF token).
async fn protect(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The first page the signed-in role may open.
async fn home(session: Option<Session>) -> Redirect {
    match session {
        None => Redirect::to("/console/login"),
        Some(s) => Redirect::to(
            PAGES
                .iter()
                .find(|p| p.access.allows(s.role))
                .map_or("/console/login", |p| p.path),
        ),
    }
}

fn login_form(message: Option<&str>) -> maud::Markup {
    views::layout(
        None,
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with an API key of an operator, analyst, auditor or admin." }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form.signin method="post" action="/console/login" {
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="off" required maxlength=(MAX_KEY_LEN);
                button type="submit" { "Sign in" }
            }
        },
    )
}

async fn login_page() -> maud::Markup {
    login_form(None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !session::same_origin(&headers) {
        return views::failure(
            StatusCode::FORBIDDEN,
            "sign-in from another site is refused",
        );
    }
    let key = f.key.trim();
    let refused = |status: StatusCode, m: &str| (status, login_form(Some(m))).into_response();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "Enter an API key.");
    }
    let actor = match state.keys.authenticate(key).await {
        Ok(Some(a)) => a,
        Ok(None) => return refused(StatusCode::UNAUTHORIZED, "That key is not valid."),
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in: key lookup failed");
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database does not answer; try again shortly.",
            );
        }
    };
    match actor.role {
        Role::Client => {
            return refused(
                StatusCode::FORBIDDEN,
                "Client keys cannot sign in to the console.",
            )
        }
        Role::Merchant => {
            return refused(
                StatusCode::FORBIDDEN,
                "Merchant keys cannot sign in to the console.",
            )
        }
        _ => {}
    }
    match session::start(state.store.db(), &actor, session::over_tls(&headers)).await {
        Ok(cookie) => (CookieJar::new().add(cookie), Redirect::to("/console")).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in: session not stored");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database does not answer; try again shortly.",
            )
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    check_form(&session, &headers, f.csrf.as_deref())?;
    if let Some(token) = session::token_of(&headers) {
        session::end(state.store.db(), &token).await?;
    }
    let jar = CookieJar::new().add(session::cleared(session::over_tls(&headers)));
    Ok((jar, Redirect::to("/console/login")).into_response())
}

/// The embedded assets: our own stylesheet and script, and the vendored htmx and uPlot.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match name.as_str() {
        "console.css" => (
            include_bytes!("../../assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_bytes!("../../assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx.min.js" => (
            include_bytes!("../../assets/vendor/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "uPlot.iife.min.js" => (
            include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "uPlot.min.css" => (
            include_bytes!("../../assets/vendor/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        _ => return views::failure(StatusCode::NOT_FOUND, "no such asset"),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
