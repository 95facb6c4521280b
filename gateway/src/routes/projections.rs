//! `GET /v1/projections`: each projection's live generation, position, the feed head and lag.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::catalog::projection_error;
use crate::error::{ApiError, ReadProblems};
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectionView {
    pub name: String,
    pub generation: i64,
    pub position: i64,
    pub head: i64,
    pub lag: i64,
    /// Whether this process runs it (another process may, when it is not).
    pub active_here: bool,
}

pub(crate) async fn views(state: &AppState) -> Result<Vec<ProjectionView>, ApiError> {
    let db = state.store.db();
    let head = state.store.feed().head().await?;
    let mut out = Vec::new();
    for p in emporium_projections::all() {
        let (generation, position) = emporium_projections::runner::state(db, p.name())
            .await
            .map_err(projection_error)?;
        let active_here = state
            .projections
            .iter()
            .find(|(n, _)| *n == p.name())
            .is_some_and(|(_, s)| s.active.load(std::sync::atomic::Ordering::Relaxed));
        out.push(ProjectionView {
            name: p.name().to_string(),
            generation,
            position,
            head,
            lag: (head - position).max(0),
            active_here,
        });
    }
    Ok(out)
}

/// Projection positions and lag.
#[utoipa::path(get, path = "/v1/projections", tag = "operations",
    responses((status = 200, description = "Every projection", body = Vec<ProjectionView>), ReadProblems))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ProjectionView>>, ApiError> {
    Ok(Json(views(&state).await?))
}
