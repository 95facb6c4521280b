//! `GET /v1/projections`: each projection's live generation, position, the feed head and lag.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::catalog::projection_error;
use crate::error::{ApiError, CommandProblems, ReadProblems};
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
    // This process's catalog search index (each engine keeps its own).
    if let Some(search) = &state.search {
        let position = search.position();
        out.push(ProjectionView {
            name: "search".to_string(),
            generation: search.generation(),
            position,
            head,
            lag: (head - position).max(0),
            active_here: true,
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RebuildStarted {
    /// The generation serving now; the rebuilt one takes the next number when swapped in.
    pub generation: i64,
}

/// Rebuild this process's catalog search index from the whole feed while the current one
/// serves, then swap it in (blue/green). Progress: `generation` in `GET /v1/projections`.
#[utoipa::path(post, path = "/v1/projections/search/rebuild", tag = "operations",
    responses((status = 202, description = "Rebuild started", body = RebuildStarted),
        CommandProblems))]
pub async fn rebuild_search(
    State(state): State<AppState>,
) -> Result<(axum::http::StatusCode, Json<RebuildStarted>), ApiError> {
    let Some(search) = state.search.clone() else {
        return Err(ApiError::Unavailable(
            "catalog search does not run in this process".into(),
        ));
    };
    if !search.start_rebuild(state.store.clone()) {
        return Err(ApiError::conflict(
            "rebuild_running",
            "a rebuild of the search index is already running",
        ));
    }
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(RebuildStarted {
            generation: search.generation(),
        }),
    ))
}
