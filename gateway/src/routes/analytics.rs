//! `/v1/analytics/...`: figures over a time range from the analytics read model, and a
//! live SSE stream of the summary.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use chrono::{DateTime, Utc};
use emporium_projections::analytics::{self, Funnel, Range, Summary, TopProduct, WarehouseFigures};
use futures::Stream;
use serde::Deserialize;

use super::catalog::projection_error;
use crate::error::{ApiError, ReadProblems};
use crate::extract::ApiQuery;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start (RFC 3339, inclusive); default: the beginning.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default: now and later.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub from: Option<String>,
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub to: Option<String>,
    /// `units` (default) or `revenue`.
    #[param(pattern = "^(units|revenue)$")]
    pub by: Option<String>,
    /// 1..=1000, default 10.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

fn time(field: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.as_ref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::field(field, "must be an RFC 3339 time"))
        })
        .transpose()
}

fn range(from: &Option<String>, to: &Option<String>) -> Result<Range, ApiError> {
    Ok(Range::new(time("/from", from)?, time("/to", to)?))
}

async fn generation(state: &AppState) -> Result<i64, ApiError> {
    Ok(
        emporium_projections::runner::state(state.store.db(), "analytics")
            .await
            .map_err(projection_error)?
            .0,
    )
}

/// Orders by status, revenue by currency (and per hour and day), average order value.
#[utoipa::path(get, path = "/v1/analytics/summary", tag = "analytics", params(RangeQuery),
    responses((status = 200, description = "Summary over the range", body = Object), ReadProblems))]
pub async fn summary(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Summary>, ApiError> {
    let r = range(&q.from, &q.to)?;
    let gen = generation(&state).await?;
    Ok(Json(
        analytics::summary(state.store.db(), gen, r)
            .await
            .map_err(projection_error)?,
    ))
}

/// Money actually taken and what follows shipping: gross (captured by shipments), refunded
/// (by returns) and net revenue per UTC day and currency; return rate per product; time from
/// confirmation to first shipment per warehouse.
#[utoipa::path(get, path = "/v1/analytics/fulfilment", tag = "analytics", params(RangeQuery),
    responses((status = 200, description = "Fulfilment figures over the range", body = Object), ReadProblems))]
pub async fn fulfilment(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<emporium_projections::fulfilment::Report>, ApiError> {
    let r = range(&q.from, &q.to)?;
    let gen = emporium_projections::runner::state(state.store.db(), "fulfilment")
        .await
        .map_err(projection_error)?
        .0;
    Ok(Json(
        emporium_projections::fulfilment::report(state.store.db(), gen, r)
            .await
            .map_err(projection_error)?,
    ))
}

/// Best-selling products of confirmed orders, by units or revenue.
#[utoipa::path(get, path = "/v1/analytics/top-products", tag = "analytics", params(TopQuery),
    responses((status = 200, description = "Ranking", body = [Object]), ReadProblems))]
pub async fn top_products(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TopQuery>,
) -> Result<Json<Vec<TopProduct>>, ApiError> {
    let r = range(&q.from, &q.to)?;
    let by_revenue = match q.by.as_deref() {
        None | Some("units") => false,
        Some("revenue") => true,
        Some(_) => return Err(ApiError::field("/by", "units or revenue")),
    };
    let limit = q.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("/limit", "must be between 1 and 1000"));
    }
    let gen = generation(&state).await?;
    Ok(Json(
        analytics::top_products(state.store.db(), gen, r, by_revenue, limit)
            .await
            .map_err(projection_error)?,
    ))
}

/// Stock per warehouse and each warehouse's share of shipped lines.
#[utoipa::path(get, path = "/v1/analytics/warehouses", tag = "analytics", params(RangeQuery),
    responses((status = 200, description = "Per warehouse", body = [Object]), ReadProblems))]
pub async fn warehouses(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Vec<WarehouseFigures>>, ApiError> {
    let r = range(&q.from, &q.to)?;
    let gen = generation(&state).await?;
    Ok(Json(
        analytics::warehouses(state.store.db(), gen, r)
            .await
            .map_err(projection_error)?,
    ))
}

/// Per merchant and currency: confirmed orders placed in the range, gross sales (its lines
/// less discounts), the marketplace's commission and the net payable.
#[utoipa::path(get, path = "/v1/analytics/merchants", tag = "analytics", params(RangeQuery),
    responses((status = 200, description = "Per merchant", body = [Object]), ReadProblems))]
pub async fn merchants(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Vec<analytics::MerchantFigures>>, ApiError> {
    let r = range(&q.from, &q.to)?;
    let gen = generation(&state).await?;
    Ok(Json(
        analytics::merchants(state.store.db(), gen, r)
            .await
            .map_err(projection_error)?,
    ))
}

/// Placed → confirmed → cancelled / rejected.
#[utoipa::path(get, path = "/v1/analytics/funnel", tag = "analytics", params(RangeQuery),
    responses((status = 200, description = "Funnel over the range", body = Object), ReadProblems))]
pub async fn funnel(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Funnel>, ApiError> {
    let r = range(&q.from, &q.to)?;
    let gen = generation(&state).await?;
    Ok(Json(
        analytics::funnel(state.store.db(), gen, r)
            .await
            .map_err(projection_error)?,
    ))
}

/// Server-sent events: a `summary` event (all-time, or over `from`/`to`) whenever the
/// analytics projection has moved, checked every 500 ms.
#[utoipa::path(get, path = "/v1/analytics/stream", tag = "analytics", params(RangeQuery),
    responses((status = 200, description = "text/event-stream of `summary` events", content_type = "text/event-stream"), ReadProblems))]
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let r = range(&q.from, &q.to)?;
    let events = futures::stream::unfold((state, -1i64), move |(state, last)| async move {
        loop {
            let db = state.store.db();
            if let Ok((gen, position)) = emporium_projections::runner::state(db, "analytics").await
            {
                if position != last {
                    if let Ok(s) = analytics::summary(db, gen, r).await {
                        let data = serde_json::json!({"position": position, "summary": s});
                        let event = Event::default().event("summary").data(data.to_string());
                        return Some((Ok(event), (state, position)));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
