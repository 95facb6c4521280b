//! The analysts' overview, from the analytics read model: orders per minute over the last
//! hour; orders, revenue per currency, the checkout funnel and top products over the last
//! 24 hours; stock by warehouse. Kept current in the browser by a server-sent event stream of
//! the same figures whenever the projection moves.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use emporium_projections::analytics;
use futures::Stream;
use maud::html;
use serde_json::{json, Value};

use super::session::{self, Session};
use super::views::{json_block, layout, money};
use super::{require, ConsoleError, Page};
use crate::state::AppState;

/// How often the stream looks for a moved projection.
const STREAM_POLL: Duration = Duration::from_millis(250);
/// How often the stream re-checks that its session still stands.
const SESSION_CHECK: Duration = Duration::from_secs(10);
/// Minutes the orders chart covers.
const CHART_MINUTES: i64 = 60;

/// Longest the overview's figures are served after the analytics projection moved on: the
/// figures cost tens of milliseconds of database work, so under a stream of orders they are
/// computed at most this often per engine, however many people watch.
const MAX_STALE: Duration = Duration::from_millis(500);
/// Longest the projection's position is taken as known: viewers' pages and streams within
/// this interval share one position check.
const RECHECK: Duration = Duration::from_millis(200);

/// The last computed figures, with the projection position and minute they are for.
#[derive(Default)]
pub struct FiguresCache {
    // A tokio mutex, held while checking and computing: the first caller does the work while
    // the others wait for its answer instead of running the same reads at once.
    last: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    /// Generation, position and minute the figures are for.
    key: (i64, i64, i64),
    computed: tokio::time::Instant,
    /// When the projection's position was last found unchanged (or computed).
    checked: tokio::time::Instant,
    figures: Arc<Value>,
}

impl FiguresCache {
    /// The figures for the projection as it is now, or computed less than [`MAX_STALE`] ago
    /// for an earlier position (never for another generation or minute).
    pub async fn get(&self, state: &AppState) -> Result<Arc<Value>, ConsoleError> {
        let minute = chrono::Utc::now().timestamp_millis() / 60_000;
        let mut last = self.last.lock().await;
        if let Some(c) = last.as_ref() {
            if c.key.2 == minute && c.checked.elapsed() < RECHECK {
                return Ok(c.figures.clone());
            }
        }
        let (gen, position) =
            emporium_projections::runner::state(state.store.db(), "analytics").await?;
        if let Some(c) = last.as_mut() {
            let (g, p, m) = c.key;
            if g == gen && m == minute && (p == position || c.computed.elapsed() < MAX_STALE) {
                c.checked = tokio::time::Instant::now();
                return Ok(c.figures.clone());
            }
        }
        let figures = Arc::new(figures(state).await?);
        let now = tokio::time::Instant::now();
        *last = Some(Cached {
            key: (gen, position, minute),
            computed: now,
            checked: now,
            figures: figures.clone(),
        });
        Ok(figures)
    }
}

/// Every figure the overview shows, as the page embeds it and the stream sends it, computed
/// now (pages and streams go through [`FiguresCache`]).
pub async fn figures(state: &AppState) -> Result<Value, ConsoleError> {
    let db = state.store.db();
    let (gen, position) = emporium_projections::runner::state(db, "analytics").await?;
    // Orders, revenue, funnel and best sellers of the last 24 hours: what is happening now,
    // read through the `placed_at` index, so the cost follows a day's orders rather than
    // the whole history (the API's range routes answer for any period).
    let day_ago = chrono::Utc::now().timestamp_millis() - 24 * 3_600_000;
    let now_minute = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000;
    let since = now_minute - (CHART_MINUTES - 1) * 60_000;
    // Four independent reads at once: the figures take as long as the slowest.
    let (glance, per_minute, top, stock) = tokio::try_join!(
        analytics::glance(db, gen, day_ago),
        analytics::orders_per_minute(db, gen, since),
        analytics::top_products_since(db, gen, day_ago, 5),
        analytics::stock_by_warehouse(db, gen),
    )?;
    // Every minute of the hour, with zeros, so the chart's time axis does not jump.
    let (mut t, mut n) = (Vec::new(), Vec::new());
    let mut counts = per_minute.into_iter().peekable();
    for i in 0..CHART_MINUTES {
        let m = since + i * 60_000;
        let mut c = 0;
        while let Some((at, k)) = counts.peek() {
            if *at < m {
                counts.next();
            } else {
                if *at == m {
                    c = *k;
                }
                break;
            }
        }
        t.push(m / 1000);
        n.push(c);
    }
    let status = |s: &str| glance.by_status.get(s).copied().unwrap_or(0);
    Ok(json!({
        "position": position,
        "orders": glance.orders,
        "revenue": glance.revenue_by_currency.iter()
            .map(|(c, m)| json!({"currency": c, "minor": m, "text": money(*m, c)}))
            .collect::<Vec<_>>(),
        "funnel": [
            {"step": "placed", "count": glance.orders},
            {"step": "confirmed (ever)", "count": glance.ever_confirmed},
            {"step": "confirmed now", "count": status("confirmed")},
            {"step": "pending", "count": status("pending")},
            {"step": "rejected", "count": status("rejected")},
            {"step": "cancelled", "count": status("cancelled")},
        ],
        "top": top.iter().map(|p| json!({
            "sku": p.sku, "units": p.units, "revenue": money(p.revenue_minor, &p.currency),
        })).collect::<Vec<_>>(),
        "stock": stock.iter().map(|(w, on_hand, reserved, available)| json!({
            "warehouse": w, "on_hand": on_hand, "reserved": reserved, "available": available,
        })).collect::<Vec<_>>(),
        "per_minute": {"t": t, "n": n},
    }))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, ConsoleError> {
    require(&session, Page::Overview)?;
    let f = state.overview.get(&state).await?;
    let rows = |key: &str| f[key].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Overview" }
        section.cards {
            div.card { h2 { "Orders, last 24 h" } p.big #orders-count { (text(&f["orders"])) } }
            div.card {
                h2 { "Revenue (confirmed), last 24 h" }
                ul #revenue { @for r in rows("revenue") { li { (text(&r["text"])) } } }
            }
            div.card.wide {
                h2 { "Orders per minute, last hour" }
                div #orders-chart data-total=(f["per_minute"]["n"].as_array().map_or(0, |n| n.iter().filter_map(Value::as_i64).sum::<i64>())) {}
            }
        }
        section.cards {
            div.card {
                h2 { "Checkout funnel, last 24 h" }
                table #funnel { tbody { @for s in rows("funnel") { tr { th { (text(&s["step"])) } td.num { (text(&s["count"])) } } } } }
            }
            div.card {
                h2 { "Top products, last 24 h (units)" }
                table #top { thead { tr { th { "SKU" } th { "Units" } th { "Revenue" } } }
                    tbody { @for p in rows("top") { tr { td { (text(&p["sku"])) } td.num { (text(&p["units"])) } td.num { (text(&p["revenue"])) } } } } }
            }
            div.card {
                h2 { "Stock by warehouse" }
                table #stock { thead { tr { th { "Warehouse" } th { "On hand" } th { "Reserved" } th { "Available" } } }
                    tbody { @for w in rows("stock") { tr { td { (text(&w["warehouse"])) } td.num { (text(&w["on_hand"])) } td.num { (text(&w["reserved"])) } td.num { (text(&w["available"])) } } } } }
            }
        }
        p.muted #live-status { "Live: analytics at feed position " span #position { (text(&f["position"])) } }
        (json_block("overview-data", &f))
    };
    Ok(layout(Some(&session), "Overview", Some(Page::Overview), body).into_response())
}

/// `overview` events with [`figures`] whenever the analytics projection has moved, checked
/// every 250 ms; the stream ends when its session does.
pub async fn stream(
    State(state): State<AppState>,
    session: Session,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    require(&session, Page::Overview)?;
    let token = session::token_of(&headers).unwrap_or_default();
    // What the browser last got: the projection position and the chart's first minute.
    let start = (state, token, (-1i64, 0i64), tokio::time::Instant::now());
    let events = futures::stream::unfold(start, |(state, token, last, mut checked)| async move {
        loop {
            if checked.elapsed() >= SESSION_CHECK {
                match session::find(&state, &token).await {
                    Ok(Some(s)) if super::spec(Page::Overview).access.allows(s.role) => {}
                    Ok(_) => return None,
                    Err(_) => {}
                }
                checked = tokio::time::Instant::now();
            }
            if let Ok(f) = state.overview.get(&state).await {
                let mark = (
                    f["position"].as_i64().unwrap_or(-1),
                    f["per_minute"]["t"][0].as_i64().unwrap_or(0),
                );
                if mark != last {
                    let event = Event::default().event("overview").data(f.to_string());
                    return Some((Ok(event), (state, token, mark, checked)));
                }
            }
            tokio::time::sleep(STREAM_POLL).await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
