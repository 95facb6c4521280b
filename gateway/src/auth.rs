//! Bearer-key authentication. For now one admin key (from `EMPORIUM_ADMIN_KEY` or generated
//! at start); keys are compared as SHA-256 digests in constant time, so the plain key is
//! never kept after start-up.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller, put into request extensions by [`require_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Recorded as the `actor` of every event the request writes.
    pub key_id: String,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
}

/// The keys the server accepts, as digests.
#[derive(Clone)]
pub struct KeyRing {
    admin_digest: [u8; 32],
}

impl KeyRing {
    pub fn with_admin_key(key: &str) -> Self {
        Self {
            admin_digest: digest(key),
        }
    }

    pub fn authenticate(&self, presented: &str) -> Option<Actor> {
        let d = digest(presented);
        if bool::from(d.ct_eq(&self.admin_digest)) {
            Some(Actor {
                key_id: "admin".to_string(),
                role: Role::Admin,
            })
        } else {
            None
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh random admin key (256 bits, hex), for when none is configured.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("emp_{}", hex::encode(bytes))
}

/// Middleware: rejects requests without a known key (deny by default).
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    let actor = state
        .keys
        .authenticate(presented)
        .ok_or(ApiError::Unauthorized)?;
    request.extensions_mut().insert(actor);
    Ok(next.run(request).await)
}
