//! `GET /v1/events`: the global feed, paged by position cursor as JSON, or streamed whole as
//! NDJSON or CSV for analysts (`Accept: application/x-ndjson` / `text/csv`, or `?format=`).
//!
//! Streams come from [`emporium_event_store::export`]: one query over the position index,
//! rows encoded ([`crate::export`]) into ~64 KiB chunks as they arrive, so memory stays flat
//! whatever the range. Payloads stored at an older version are served upcast to today's
//! shape, in pages and streams alike.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use emporium_event_store::export::{self, EventFilter};
use emporium_event_store::personal::{present_pages, present_stream};
use emporium_event_store::FeedEvent;
use emporium_event_store::RawFeedEvent;
use futures::stream::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ReadProblems};
pub use crate::export::CSV_COLUMNS;
use crate::export::{csv_header, csv_record, ndjson_line, Chunked, Encode};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Media type of the newline-delimited JSON export.
pub const NDJSON: &str = "application/x-ndjson";
/// Media type of the CSV export.
pub const CSV: &str = "text/csv; charset=utf-8; header=present";
/// Response header of a streamed export: the last feed position of the exported range.
pub const FEED_THROUGH: &str = "x-feed-through";
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Feed position to read after (0 = from the start).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Alias of `after`, matching the list convention's `cursor`.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// JSON page: page size (default 100; above 1000 a page holds 1000). NDJSON / CSV: the
    /// most events to stream (default: the whole range).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Only events of this aggregate type (`Order`, `StockItem`, ...).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub aggregate_type: Option<String>,
    /// Only events of this type (`OrderPlaced`, ...).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub event_type: Option<String>,
    /// Only events recorded at or after this instant (RFC 3339, inclusive).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Only events recorded before this instant (RFC 3339, exclusive).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// The representation, overriding `Accept`: `json` (a page), `ndjson`, `csv` or
    /// `parquet` (the whole range, streamed).
    #[param(schema_with = documented_formats)]
    pub format: Option<EventsFormat>,
}

/// The formats this route serves.
fn documented_formats() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["json", "ndjson", "csv", "parquet"]))
        .build()
}

/// Representations of `GET /v1/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventsFormat {
    Json,
    Ndjson,
    Csv,
    Parquet,
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
///
/// Filters (`aggregate_type`, `event_type`, `from`, `to`) apply to every representation.
///
/// - `Accept: application/json` (or none, or `?format=json`): one page, `{events,
///   next_cursor, head}`.
/// - `Accept: application/x-ndjson` (or `?format=ndjson`): the whole matching range after
///   `after`, streamed, one event per line in the page items' shape, in position order.
/// - `Accept: text/csv` (or `?format=csv`): the same as CSV (RFC 4180, CRLF, header row)
///   with columns `position, event_id, recorded_at, aggregate_type, aggregate_id, sequence,
///   event_type, event_version, actor, request_id, correlation_id, causation_id, payload`
///   (the payload as its JSON text).
/// - `Accept: application/vnd.apache.parquet` (or `?format=parquet`): the same as one
///   Parquet file, typed columns (`position` int64, `recorded_at` timestamp UTC, `sequence`
///   int64, the rest strings, `payload` the JSON text), zstd, written and sent a row group
///   (65,536 events) at a time.
///
/// A stream covers positions up to the head when the request arrived, given in the
/// `X-Feed-Through` header: pass it as `after` to export what came later. A failure while
/// streaming aborts the response (no terminating chunk), so a cut export never looks
/// complete.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "A page of the feed (JSON), or the whole matching range streamed (NDJSON, CSV)",
            headers(("X-Feed-Through" = i64, description = "NDJSON / CSV only: the last feed position of the exported range")),
            content(
                (EventsPage = "application/json"),
                (FeedEventDoc = "application/x-ndjson"),
                (String = "text/csv"),
                (Vec<u8> = "application/vnd.apache.parquet")
            )),
        ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let format = match q.format {
        Some(f) => f,
        None => negotiate(headers.get(header::ACCEPT)),
    };
    let filter = filter(&q, format)?;
    match format {
        EventsFormat::Parquet => parquet(&state, &filter).await,
        EventsFormat::Ndjson => stream(&state, &filter, NDJSON, Vec::new(), ndjson_line).await,
        EventsFormat::Csv => stream(&state, &filter, CSV, csv_header(), csv_record).await,
        _ => page(&state, filter).await.map(IntoResponse::into_response),
    }
}

/// Validates the query into an export filter (`limit` as each representation reads it).
pub(crate) fn filter(q: &EventsQuery, format: EventsFormat) -> Result<EventFilter, ApiError> {
    let mut errors = Vec::new();
    let cursor = q.cursor.as_deref().map(|c| {
        c.parse::<i64>().unwrap_or_else(|_| {
            errors.push(field("/cursor", "must be a feed position"));
            0
        })
    });
    let after = q.after.or(cursor).unwrap_or(0);
    if after < 0 {
        errors.push(field("/after", "must be >= 0"));
    }
    let limit = match (format, q.limit) {
        // A page holds at most 1000 events: a larger `limit` gets 1000 (and a cursor).
        (EventsFormat::Json, l) => {
            let l = l.unwrap_or(100);
            if l < 1 {
                errors.push(field("/limit", "must be at least 1"));
            }
            Some(l.min(1000))
        }
        (_, Some(l)) if l < 1 => {
            errors.push(field("/limit", "must be at least 1"));
            None
        }
        (_, l) => l,
    };
    let mut name = |pointer: &str, v: &Option<String>| match v.as_deref() {
        Some(s) if s.is_empty() || s.chars().count() > 200 => {
            errors.push(field(pointer, "must be 1 to 200 characters"));
            None
        }
        other => other.map(str::to_string),
    };
    let aggregate_type = name("/aggregate_type", &q.aggregate_type);
    let event_type = name("/event_type", &q.event_type);
    let mut time = |pointer: &str, v: &Option<String>| {
        let s = v.as_deref()?;
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                errors.push(field(
                    pointer,
                    "must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z",
                ));
                None
            }
        }
    };
    // `to` at or before `from` is an empty range, answered as such.
    let from = time("/from", &q.from);
    let to = time("/to", &q.to);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(EventFilter {
        after,
        upto: None,
        aggregate_type,
        event_type,
        from,
        to,
        limit,
    })
}

fn field(pointer: &str, detail: &str) -> crate::error::FieldError {
    crate::error::FieldError::new(pointer, detail)
}

/// The representation `Accept` prefers (highest `q`, then first listed); a page when it
/// names nothing this route serves.
fn negotiate(accept: Option<&HeaderValue>) -> EventsFormat {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return EventsFormat::Json;
    };
    let mut best: Option<(f32, EventsFormat)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let format = match media.as_str() {
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                EventsFormat::Ndjson
            }
            "text/csv" => EventsFormat::Csv,
            "application/vnd.apache.parquet" | "application/x-parquet" => EventsFormat::Parquet,
            "application/json" | "application/*" | "*/*" => EventsFormat::Json,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    best.map_or(EventsFormat::Json, |(_, f)| f)
}

/// One JSON page, as before the export existed: the feed's own page read when unfiltered.
pub(crate) async fn page(
    state: &AppState,
    filter: EventFilter,
) -> Result<Json<EventsPage>, ApiError> {
    let limit = filter.limit.unwrap_or(100);
    let feed = state.store.feed();
    let unfiltered = filter.aggregate_type.is_none()
        && filter.event_type.is_none()
        && filter.from.is_none()
        && filter.to.is_none();
    let mut events = if unfiltered {
        feed.read_current(filter.after, limit).await?
    } else {
        let export = export::open(&state.store, &filter).await?;
        let raw: Vec<RawFeedEvent> = export
            .events
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        raw.into_iter().map(parsed).collect::<Result<_, _>>()?
    };
    for e in &mut events {
        state.keyring.present(&e.event_type, &mut e.payload).await?;
    }
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

/// A raw event with its payload parsed, so filtered pages print exactly like unfiltered ones.
fn parsed(e: RawFeedEvent) -> Result<FeedEvent, ApiError> {
    let payload = serde_json::from_str(e.payload.get())
        .map_err(|err| ApiError::Internal(format!("stored payload is not JSON: {err}")))?;
    Ok(e.map(|_| payload))
}

/// A streamed export: headers now, the body as the rows arrive.
async fn stream(
    state: &AppState,
    filter: &EventFilter,
    content_type: &'static str,
    preamble: Vec<u8>,
    encode: Encode,
) -> Result<Response, ApiError> {
    let export = export::open(&state.store, filter).await?;
    let events = present_stream(state.keyring.clone(), export.events);
    let body = Chunked::new(events, preamble, encode);
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(FEED_THROUGH, HeaderValue::from(export.through));
    Ok(response)
}

async fn parquet(state: &AppState, filter: &EventFilter) -> Result<Response, ApiError> {
    let export = export::open_pages(&state.store, filter).await?;
    let body = crate::parquet::encode(present_pages(state.keyring.clone(), export.pages));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::parquet::CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(FEED_THROUGH, HeaderValue::from(export.through));
    Ok(response)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_preferred_representation() {
        let n = |s: &'static str| negotiate(Some(&HeaderValue::from_static(s)));
        assert_eq!(negotiate(None), EventsFormat::Json);
        assert_eq!(n("application/x-ndjson"), EventsFormat::Ndjson);
        assert_eq!(n("text/csv"), EventsFormat::Csv);
        assert_eq!(n("text/html, */*;q=0.8"), EventsFormat::Json);
        assert_eq!(n("application/json;q=0.5, text/csv"), EventsFormat::Csv);
        assert_eq!(n("text/csv;q=0, application/json"), EventsFormat::Json);
        assert_eq!(n("application/x-ndjson, text/csv"), EventsFormat::Ndjson);
        assert_eq!(n("application/vnd.apache.parquet"), EventsFormat::Parquet);
    }
}
