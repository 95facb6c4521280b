//! Authentication and authorisation: every route declares who may call it ([`Access`]);
//! the [`authorize`] middleware checks the bearer key, the role and the per-key rate limit,
//! and puts the [`Actor`] into the request. Deny by default: a route without a declaration
//! cannot be registered (see `app::Api`).

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;

use crate::error::ApiError;
pub use crate::keys::{Actor, Role};
use crate::state::AppState;

/// Who may call a route. `Admin` is always allowed on authenticated routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed (health, metrics, the spec).
    Public,
    /// Any valid key.
    AnyRole,
    /// Keys with one of these roles (and admin).
    Roles(&'static [Role]),
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public | Access::AnyRole => true,
            Access::Roles(roles) => role == Role::Admin || roles.contains(&role),
        }
    }

    /// The roles that may call, for the spec and the role-matrix test.
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| self.allows(*r)).collect()
    }
}

/// A fresh random key for `EMPORIUM_ADMIN_KEY`-style bootstrap use.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("emp_{}", hex::encode(bytes))
}

/// Per-key token buckets.
pub type KeyedLimiter = DefaultKeyedRateLimiter<String>;

pub fn rate_limiter(per_second: u32, burst: u32) -> Option<Arc<KeyedLimiter>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    )))
}

/// Route middleware: 401 without a valid key, 403 for a role the route does not allow,
/// 429 when the key's rate is exceeded.
pub async fn authorize(
    State((state, access)): State<(AppState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    if access == Access::Public {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::Unauthorized.into_response();
    };
    let actor = match state.keys.authenticate(presented).await {
        Ok(Some(actor)) => actor,
        Ok(None) => return ApiError::Unauthorized.into_response(),
        Err(e) => return ApiError::Unavailable(e.to_string()).into_response(),
    };
    if !access.allows(actor.role) {
        return ApiError::Forbidden(format!(
            "a {} key may not call this route",
            actor.role.as_str()
        ))
        .into_response();
    }
    if let Some(limiter) = &state.limiter {
        if let Err(not_until) = limiter.check_key(&actor.key_id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut r = ApiError::TooManyRequests(format!(
                "rate limit of this API key exceeded; retry in {secs} s"
            ))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            metrics::counter!("emporium_rate_limited_total").increment(1);
            return r;
        }
    }
    request.extensions_mut().insert(actor);
    next.run(request).await
}
