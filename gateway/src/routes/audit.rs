//! Auditors' checks of the log itself: `GET /v1/audit/verify` recomputes every seal (and the
//! latest signed digest's root) and names the first broken position; `GET /v1/audit/digest`
//! shows the latest signed digest. docs/audit.md explains both.

use axum::extract::State;
use axum::Json;
use emporium_event_store::audit::{SignedDigest, VerifyReport};
use serde::Deserialize;

use crate::error::{ApiError, ReadProblems};
use crate::extract::ApiQuery;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// First feed position to check (default 1). The signed digest's root is recomputed only
    /// on a walk from position 1.
    #[param(minimum = 1)]
    pub from: Option<i64>,
    /// Last feed position to check (default: the end of the log).
    #[param(minimum = 1)]
    pub to: Option<i64>,
}

/// Recompute the seals of a range of the log and the latest digest's Merkle root: `ok`, the
/// first broken position and why, and up to 100 problems. `to` below `from` is an empty
/// range: nothing checked.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    params(VerifyQuery),
    responses((status = 200, description = "What verification found", body = serde_json::Value), ReadProblems))]
pub async fn verify(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<VerifyQuery>,
) -> Result<Json<VerifyReport>, ApiError> {
    for (name, value) in [("/from", q.from), ("/to", q.to)] {
        if let Some(v) = value {
            if v < 1 {
                return Err(ApiError::field(name, "must be at least 1"));
            }
        }
    }
    let report = state
        .auditor
        .verify(q.from, q.to, state.audit_public_key.as_ref(), &|_| {})
        .await?;
    Ok(Json(report))
}

/// The latest signed digest: the Merkle root over positions 1..position, its Ed25519
/// signature and the public key that made it.
#[utoipa::path(get, path = "/v1/audit/digest", tag = "audit",
    responses((status = 200, description = "The latest signed digest", body = serde_json::Value), ReadProblems))]
pub async fn digest(State(state): State<AppState>) -> Result<Json<SignedDigest>, ApiError> {
    state
        .auditor
        .latest_digest()
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no digest has been signed yet".into()))
}
