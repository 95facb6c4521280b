//! `GET /v1/events`: the global feed, paged by position cursor.

use axum::extract::State;
use axum::Json;
use emporium_event_store::FeedEvent;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ReadProblems};
use crate::extract::ApiQuery;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Feed position to read after (0 = from the start).
    pub after: Option<i64>,
    /// Alias of `after`, matching the list convention's `cursor`.
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    #[schema(value_type = Vec<FeedEventDoc>)]
    pub events: Vec<FeedEvent>,
    /// Pass as `after` (or `cursor`) for the next page; absent when this page was short.
    pub next_cursor: Option<String>,
    pub head: i64,
}

/// The global feed: every event in commit order, after a position cursor.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "A page of the feed", body = EventsPage), ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let after = match (&q.after, &q.cursor) {
        (Some(a), _) => *a,
        (None, Some(c)) => c
            .parse::<i64>()
            .map_err(|_| ApiError::field("/cursor", "must be a feed position"))?,
        (None, None) => 0,
    };
    if after < 0 {
        return Err(ApiError::field("/after", "must be >= 0"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("/limit", "must be between 1 and 1000"));
    }
    let feed = state.store.feed();
    let events = feed.read_after(after, limit).await?;
    let head = feed.head().await?;
    let next_cursor = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.position.to_string()))
        .flatten();
    Ok(Json(EventsPage {
        events,
        next_cursor,
        head,
    }))
}

/// One event of the feed, as documented in the OpenAPI spec (mirrors `FeedEvent`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FeedEventDoc {
    /// Gap-free position in commit order.
    position: i64,
    event_id: uuid::Uuid,
    aggregate_type: String,
    aggregate_id: String,
    /// 1-based sequence within the aggregate.
    sequence: i64,
    event_type: String,
    event_version: String,
    /// The event body, `{"<EventType>": {...}}`.
    payload: serde_json::Value,
    metadata: MetadataDoc,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Who and what caused an event.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct MetadataDoc {
    /// API key id (or `system:<component>`).
    actor: String,
    request_id: String,
    correlation_id: String,
    causation_id: String,
}
