//! Console sign-in sessions: an API key presented once on the sign-in form becomes a random
//! session token in an HttpOnly, SameSite=Strict cookie. Only the token's SHA-256 is stored
//! (table `console_sessions`, owned here), with the key id, its role and the session's CSRF
//! token. Every request re-checks that the key still exists unrevoked and takes its role from
//! the key, so revoking a key or changing what it may do ends its console access at once, on
//! every engine.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use emporium_event_store::{on_db, Db};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keys::{Actor, Role};
use crate::state::AppState;

/// The cookie's name; its path is `/console`, so the API never sees it.
pub const COOKIE: &str = "emporium_console";
/// How long a sign-in lasts.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(8);

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    pub key_id: String,
    pub role: Role,
    /// Every form carries it; a POST without it is refused.
    pub csrf: String,
}

impl Session {
    /// The same caller the API would see for this key (console actions are recorded with
    /// the key's id, as API calls are).
    pub fn actor(&self) -> Actor {
        Actor {
            key_id: self.key_id.clone(),
            role: self.role,
            customer_id: None,
            merchant_id: None,
        }
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// Starts a session for `actor` and returns the cookie that carries it. Expired sessions
/// are swept here, so the table holds only live ones plus those that lapsed since the last
/// sign-in.
pub async fn start(db: &Db, actor: &Actor, secure: bool) -> Result<Cookie<'static>, sqlx::Error> {
    let token = random_hex();
    let now = chrono::Utc::now();
    let sweep = db.sql("DELETE FROM console_sessions WHERE expires_at < $1");
    let insert = db.sql(
        "INSERT INTO console_sessions (token_hash, key_id, role, csrf, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    );
    let (at, until) = (now.timestamp_millis(), (now + LIFETIME).timestamp_millis());
    on_db!(db, pool => {
        sqlx::query(&sweep).bind(at).execute(pool).await?;
        sqlx::query(&insert)
            .bind(token_hash(&token))
            .bind(&actor.key_id)
            .bind(actor.role.as_str())
            .bind(random_hex())
            .bind(at)
            .bind(until)
            .execute(pool)
            .await?;
    });
    Ok(cookie(token, secure, LIFETIME.num_seconds()))
}

/// Ends the session behind `token` (sign-out).
pub async fn end(db: &Db, token: &str) -> Result<(), sqlx::Error> {
    let sql = db.sql("DELETE FROM console_sessions WHERE token_hash = $1");
    on_db!(db, pool => {
        sqlx::query(&sql).bind(token_hash(token)).execute(pool).await?;
    });
    Ok(())
}

/// The cookie that clears the session cookie in the browser.
pub fn cleared(secure: bool) -> Cookie<'static> {
    cookie(String::new(), secure, 0)
}

fn cookie(value: String, secure: bool, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build((COOKIE, value))
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build()
}

/// Whether the browser reached us over TLS: directly we serve plain HTTP, so only a proxy
/// that terminates TLS can say so (`X-Forwarded-Proto: https`). The cookie is then `Secure`.
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Looks up the session behind `token`: live, and its key still valid. The role is the
/// key's current one.
pub async fn find(state: &AppState, token: &str) -> Result<Option<Session>, sqlx::Error> {
    // Tokens we issue are 64 hex digits; anything else cannot match and is not looked up.
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let db = state.store.db();
    let sql = db.sql(
        "SELECT s.key_id, s.role, s.csrf, k.role AS key_role, k.key_id AS known \
           FROM console_sessions s \
           LEFT JOIN api_keys k ON k.key_id = s.key_id AND k.revoked_at IS NULL \
          WHERE s.token_hash = $1 AND s.expires_at > $2",
    );
    type Row = (String, String, String, Option<String>, Option<String>);
    let row: Option<Row> = on_db!(db, pool => {
        sqlx::query_as(&sql)
            .bind(token_hash(token))
            .bind(chrono::Utc::now().timestamp_millis())
            .fetch_optional(pool)
            .await?
    });
    let Some((key_id, role, csrf, key_role, known)) = row else {
        return Ok(None);
    };
    let role = match (known, key_role) {
        (Some(_), Some(r)) => Role::parse(&r),
        // The in-memory bootstrap admin key has no row; it counts while it is configured.
        _ if key_id == "admin" && state.keys.has_bootstrap() => Role::parse(&role),
        _ => None,
    };
    Ok(role.map(|role| Session { key_id, role, csrf }))
}

/// Why a console request has no usable session.
pub enum NoSession {
    /// Not signed in (or the session lapsed, or its key was revoked): go to sign-in.
    SignIn,
    /// The database did not answer.
    Unavailable,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::SignIn => Redirect::to("/console/login").into_response(),
            NoSession::Unavailable => super::views::failure(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "The database does not answer; try again shortly.",
            ),
        }
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NoSession> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(COOKIE).map(|c| c.value().to_string()) else {
            return Err(NoSession::SignIn);
        };
        match find(state, &token).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(NoSession::SignIn),
            Err(e) => {
                tracing::warn!(error = %e, "console session lookup failed");
                Err(NoSession::Unavailable)
            }
        }
    }
}

impl OptionalFromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, NoSession> {
        match <Session as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(s) => Ok(Some(s)),
            Err(NoSession::SignIn) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The session token in a request's cookie, if any (for sign-out).
pub fn token_of(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(COOKIE)
        .map(|c| c.value().to_string())
}

/// Whether a state-changing request came from our own pages: a browser sends `Origin` on
/// every cross-site POST, and it must then name this host. (The CSRF token is the main
/// guard; this refuses a forged sign-in, which has no session and so no token yet.)
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    // Behind a proxy the browser's host may arrive as `X-Forwarded-Host`.
    [header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .any(|host| host.eq_ignore_ascii_case(authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_our_own_host_may_post() {
        // No Origin: not a cross-site browser request (curl, an old browser's same-site form).
        assert!(same_origin(&headers(&[("host", "shop.example:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "shop.example:8080"),
            ("origin", "http://shop.example:8080")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "console.shop.example"),
            ("origin", "https://console.shop.example")
        ])));
        for origin in [
            "http://evil.example",
            "http://shop.example:8081",
            "null",
            "http://shop.example:8080.evil.example",
        ] {
            let h = headers(&[("host", "shop.example:8080"), ("origin", origin)]);
            assert!(!same_origin(&h), "{origin}");
        }
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped() {
        let c = cookie("t".into(), false, 60).to_string();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=60"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Secure"));
        assert!(cookie("t".into(), true, 60).to_string().contains("Secure"));
    }
}
