//! `GET /v1/orders/{id}/timeline`: every event that concerns an order, across aggregates, in
//! global order, with its metadata: what auditors read.

use axum::extract::State;
use axum::Json;
use emporium_domain::order::Order;
use emporium_domain::values::OrderId;
use emporium_event_store::audit::ProofDocument;
use emporium_event_store::FeedEvent;
use serde::{Deserialize, Serialize};

use super::catalog::projection_error;
use crate::error::{ApiError, ReadProblems};
use crate::extract::ApiPath;
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineView {
    pub order_id: String,
    #[schema(value_type = Vec<crate::routes::events::FeedEventDoc>)]
    pub events: Vec<FeedEvent>,
    /// With `?proof=true`: the latest signed digest and, per event it covers, the event's
    /// canonical bytes, seal and Merkle path (docs/audit.md; `emporium verify-proof` checks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub proof: Option<ProofDocument>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Add inclusion proofs against the latest signed digest.
    pub proof: Option<bool>,
}

/// The timeline of one order, or `None` if the order does not exist.
pub async fn timeline(state: &AppState, id: &OrderId) -> Result<Option<TimelineView>, ApiError> {
    let (_, version) = state.store.load::<Order>(&id.to_string()).await?;
    if version == 0 {
        return Ok(None);
    }
    let db = state.store.db();
    let (gen, _) = emporium_projections::runner::state(db, "timeline")
        .await
        .map_err(projection_error)?;
    let positions = emporium_projections::timeline::positions(db, gen, &id.to_string())
        .await
        .map_err(projection_error)?;
    let mut events = state.store.feed().read_positions(&positions).await?;
    for e in &mut events {
        state.keyring.present(&e.event_type, &mut e.payload).await?;
    }
    Ok(Some(TimelineView {
        order_id: id.to_string(),
        events,
        proof: None,
    }))
}

/// Every event concerning the order (order, payment, stock reservations, saga steps) in
/// global order, with position, time, type, payload and metadata.
#[utoipa::path(get, path = "/v1/orders/{id}/timeline", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID)", format = Uuid), TimelineQuery),
    responses((status = 200, description = "The timeline", body = TimelineView), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<TimelineQuery>,
) -> Result<Json<TimelineView>, ApiError> {
    let id = OrderId::parse(&id).map_err(|e| ApiError::field("/id", e))?;
    let mut view = timeline(&state, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no order {id}")))?;
    if q.proof == Some(true) {
        let positions: Vec<i64> = view.events.iter().map(|e| e.position).collect();
        let proof = state.auditor.proofs(&positions).await?.ok_or_else(|| {
            ApiError::conflict(
                "no-digest",
                "no digest has been signed yet: an engine started with --audit-key signs one \
                 every --digest-interval-secs",
            )
        })?;
        view.proof = Some(proof);
    }
    Ok(Json(view))
}
