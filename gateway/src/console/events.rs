//! The feed for analysts and auditors: filter by event type, aggregate type and time range,
//! page by position cursor, and download the same selection in every export format the API
//! offers (NDJSON, CSV, Parquet), through the API's own export code.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::session::Session;
use super::views::layout;
use super::{require, ConsoleError, Page};
use crate::extract::ApiQuery;
use crate::routes::events::{self as api, EventsFormat, EventsQuery};
use crate::state::AppState;

/// Events per page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct EventsForm {
    event_type: Option<String>,
    aggregate_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    format: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A browser's `datetime-local` value (`2026-12-07T10:30`) is read as UTC; anything else
/// goes to the API's RFC 3339 check as it is.
fn time(v: &Option<String>) -> Option<String> {
    given(v).map(|s| {
        if s.len() == 16 && s.as_bytes().get(10) == Some(&b'T') {
            format!("{s}:00Z")
        } else {
            s
        }
    })
}

impl EventsForm {
    fn query(&self, format: EventsFormat, limit: Option<i64>) -> EventsQuery {
        EventsQuery {
            after: None,
            cursor: given(&self.cursor),
            limit,
            aggregate_type: given(&self.aggregate_type),
            event_type: given(&self.event_type),
            from: time(&self.from),
            to: time(&self.to),
            format: Some(format),
        }
    }

    /// This selection's query string (without cursor), plus `extra`.
    fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("event_type", &self.event_type),
            ("aggregate_type", &self.aggregate_type),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = given(v) {
                s.append_pair(k, &v);
            }
        }
        for (k, v) in extra {
            s.append_pair(k, v);
        }
        format!("{path}?{}", s.finish())
    }
}

/// Every event type the domain defines, for the type field's suggestions.
fn event_types() -> Vec<&'static str> {
    use emporium_domain::{
        CheckoutEvent, EventSchema, OrderEvent, PaymentEvent, ProductEvent, StockItemEvent,
        WarehouseEvent,
    };
    [
        OrderEvent::EVENTS,
        PaymentEvent::EVENTS,
        StockItemEvent::EVENTS,
        ProductEvent::EVENTS,
        WarehouseEvent::EVENTS,
        CheckoutEvent::EVENTS,
    ]
    .iter()
    .flat_map(|e| e.iter().map(|(t, _)| *t))
    .collect()
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<EventsForm>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::Events)?;
    let filter = api::filter(&f.query(EventsFormat::Json, Some(PAGE)), EventsFormat::Json)?;
    let page = api::page(&state, filter).await?.0;
    let body = html! {
        h1 { "Events" }
        form.filters method="get" action="/console/events"
            hx-get="/console/events" hx-target="#results" hx-select="#results" hx-swap="outerHTML" hx-push-url="true" {
            label { "Event type " input type="text" name="event_type" value=[given(&f.event_type)] maxlength="200" list="event-types"; }
            datalist #event-types { @for t in event_types() { option value=(t) {} } }
            label { "Aggregate type " input type="text" name="aggregate_type" value=[given(&f.aggregate_type)] maxlength="200" placeholder="Order"; }
            label { "From (UTC) " input type="datetime-local" name="from" value=[given(&f.from)]; }
            label { "To (UTC) " input type="datetime-local" name="to" value=[given(&f.to)]; }
            button type="submit" { "Filter" }
        }
        div #results {
            p.downloads {
                "Download this selection: "
                a #download-csv href=(f.link("/console/events/download", &[("format", "csv")])) { "CSV" } " · "
                a #download-ndjson href=(f.link("/console/events/download", &[("format", "ndjson")])) { "NDJSON" } " · "
                a #download-parquet href=(f.link("/console/events/download", &[("format", "parquet")])) { "Parquet" }
                span.muted { " (feed head " (page.head) ")" }
            }
            table.list #events {
                thead { tr { th { "Position" } th { "Recorded" } th { "Event" } th { "Aggregate" } th { "Actor" } th { "Correlation" } } }
                tbody {
                    @for e in &page.events {
                        tr.event {
                            td.num { (e.position) }
                            td { (e.recorded_at.format("%Y-%m-%d %H:%M:%S UTC")) }
                            td { details { summary.event-type { (e.event_type) } pre { (serde_json::to_string_pretty(&e.payload).unwrap_or_default()) } } }
                            td { (e.aggregate_type) " " code { (e.aggregate_id) } }
                            td { (e.metadata.actor) }
                            td { code { (e.metadata.correlation_id) } }
                        }
                    }
                }
            }
            @if page.events.is_empty() { p.muted { "No events match." } }
            @if let Some(c) = &page.next_cursor {
                p { a.next href=(f.link("/console/events", &[("cursor", c)])) { "Later events →" } }
            }
        }
    };
    Ok(layout(Some(&session), "Events", Some(Page::Events), body).into_response())
}

/// The selection as a file, streamed by the API's export (`format` = csv, ndjson, parquet).
pub async fn download(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<EventsForm>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::Events)?;
    let (format, ext) = match f.format.as_deref() {
        Some("csv") => (EventsFormat::Csv, "csv"),
        Some("ndjson") => (EventsFormat::Ndjson, "ndjson"),
        Some("parquet") => (EventsFormat::Parquet, "parquet"),
        _ => {
            return Err(ConsoleError::Invalid(
                "format must be csv, ndjson or parquet".into(),
            ))
        }
    };
    let query = EventsForm { cursor: None, ..f }.query(format, None);
    let mut r = api::list(State(state), HeaderMap::new(), ApiQuery(query)).await?;
    if r.status().is_success() {
        let name = format!("attachment; filename=\"emporium-events.{ext}\"");
        if let Ok(v) = HeaderValue::from_str(&name) {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(r)
}
