//! Orders for operators and auditors: find one by id or list a customer's, filter by status,
//! page newest first with a keyset cursor; an order's page with its lines, allocation,
//! payment, shipments and returns, and (for auditors, as in the API) its timeline with every
//! event's actor, correlation and causation and an expandable payload.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use emporium_domain::order::Order;
use emporium_domain::values::OrderId;
use emporium_projections::analytics::{self, OrderFilter};
use maud::html;
use serde::Deserialize;

use super::session::Session;
use super::views::{layout, money, time_ms};
use super::{require, ConsoleError, Page};
use crate::auth::{Access, Role};
use crate::routes::orders::{full_view, load_order};
use crate::state::AppState;

/// Orders per page.
const PAGE: i64 = 50;
/// Longest search text accepted (an order id is 36 characters, a customer id at most 64).
const MAX_Q: usize = 128;
const STATUSES: [&str; 8] = [
    "pending",
    "confirmed",
    "rejected",
    "cancelled",
    "partially_shipped",
    "shipped",
    "partially_returned",
    "returned",
];
/// Who may see an order's timeline: the API's rule for `GET /v1/orders/{id}/timeline`.
const TIMELINE: Access = Access::Roles(&[Role::Auditor]);

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    before: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::Orders)?;
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.len() > MAX_Q || q.chars().any(char::is_control)) {
        return Err(ConsoleError::Invalid(format!(
            "search text must be at most {MAX_Q} characters without control characters"
        )));
    }
    // An order id goes straight to its page.
    if let Some(id) = q.and_then(|q| OrderId::parse(q).ok()) {
        return Ok(Redirect::to(&format!("/console/orders/{id}")).into_response());
    }
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    if status.is_some_and(|s| !STATUSES.contains(&s)) {
        return Err(ConsoleError::Invalid(format!(
            "status must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(
            b.split_once('_')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .filter(|(_, id)| id.len() <= 64)
                .ok_or_else(|| ConsoleError::Invalid("not a cursor of this list".into()))?,
        ),
    };
    let db = state.store.db();
    let (gen, _) = emporium_projections::runner::state(db, "analytics").await?;
    let filter = OrderFilter {
        customer_id: q.map(str::to_string),
        status: status.map(str::to_string),
        before,
        limit: PAGE,
    };
    let rows = analytics::list_orders(db, gen, &filter).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| {
            rows.last()
                .map(|r| format!("{}_{}", r.placed_at, r.order_id))
        })
        .flatten();
    let link = |cursor: &str| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(q) = q {
            s.append_pair("q", q);
        }
        if let Some(st) = status {
            s.append_pair("status", st);
        }
        s.append_pair("before", cursor);
        format!("/console/orders?{}", s.finish())
    };
    let body = html! {
        h1 { "Orders" }
        form.filters method="get" action="/console/orders"
            hx-get="/console/orders" hx-target="#results" hx-select="#results" hx-swap="outerHTML" hx-push-url="true" {
            label { "Order id or customer " input type="search" name="q" value=[q] maxlength=(MAX_Q) placeholder="order id or customer id"; }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES { option value=(s) selected[status == Some(s)] { (s) } }
                }
            }
            button type="submit" { "Find" }
        }
        div #results {
            table.list {
                thead { tr { th { "Placed" } th { "Order" } th { "Customer" } th { "Status" } th { "Lines" } th { "Total" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (time_ms(r.placed_at)) }
                            td { a href={"/console/orders/" (r.order_id)} { (r.order_id) } }
                            td { (r.customer_id) }
                            td { span class={"status " (r.status)} { (r.status) } }
                            td.num { (r.line_count) }
                            td.num { (money(r.total_minor, &r.currency)) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "No orders match." } }
            @if let Some(n) = &next { p { a.next href=(link(n)) { "Older orders →" } } }
        }
    };
    Ok(layout(Some(&session), "Orders", Some(Page::Orders), body).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::Orders)?;
    let id = OrderId::parse(&id).map_err(|e| ConsoleError::Invalid(format!("order id: {e}")))?;
    let order: Order = match load_order(&state, &id).await {
        Ok(o) => o,
        Err(crate::error::ApiError::NotFound(_)) => {
            return Err(ConsoleError::NotFound(format!("no order {id}")))
        }
        Err(e) => return Err(e.into()),
    };
    let view = full_view(&state, &id, &order).await?;
    let (payment, _) = state
        .store
        .load::<emporium_domain::payment::Payment>(&id.to_string())
        .await
        .map_err(crate::error::ApiError::from)?;
    let timeline = if TIMELINE.allows(session.role) {
        crate::routes::timeline::timeline(&state, &id).await?
    } else {
        None
    };
    let badge = match &timeline {
        Some(t) => Some(verification(&state, t).await),
        None => None,
    };
    let m = |b: &crate::routes::MoneyBody| money(b.amount_minor, &b.currency);
    let body = html! {
        h1 { "Order " code { (view.order_id) } }
        p { "Customer " strong { (view.customer_id) } " · status " span class={"status " (view.status)} #order-status { (view.status) }
            " · total " strong { (m(&view.total)) } }
        @if let Some(r) = &view.reject_reason { p.error { "Rejected: " (r) } }
        section.cards {
            div.card {
                h2 { "Lines" }
                table { thead { tr { th { "SKU" } th { "Qty" } th { "Unit" } th { "Total" } } }
                    tbody { @for l in &view.lines { tr { td { (l.sku) } td.num { (l.qty) } td.num { (m(&l.unit_price)) } td.num { (m(&l.line_total)) } } } } }
            }
            div.card {
                h2 { "Allocation" }
                @if view.allocation.is_empty() { p.muted { "Not allocated." } }
                @else {
                    table { thead { tr { th { "SKU" } th { "Warehouse" } th { "Qty" } } }
                        tbody { @for a in &view.allocation { tr { td { (a.sku) } td { (a.warehouse_id) } td.num { (a.qty) } } } } }
                }
            }
            div.card {
                h2 { "Payment" }
                p #payment-status { (payment.status().as_str()) }
                ul {
                    @if let Some(a) = payment.authorized() { li { "authorised " (a.to_string()) } }
                    li { "captured " (m(&view.captured)) }
                    li { "refunded " (m(&view.refunded)) }
                }
            }
        }
        @if !view.shipments.is_empty() || !view.returns.is_empty() {
            section.card {
                h2 { "Shipments and returns" }
                table #shipments {
                    thead { tr { th { "Shipment" } th { "Warehouse" } th { "Lines" } th { "Captured" } } }
                    tbody {
                        @for sh in &view.shipments {
                            tr { td { code { (sh.shipment_id) } } td { (sh.warehouse_id) }
                                 td { @for l in &sh.lines { span.stock { (l.sku) " × " (l.qty) } } }
                                 td.num { (m(&sh.amount)) } }
                        }
                    }
                }
                @if !view.returns.is_empty() {
                    table #returns {
                        thead { tr { th { "Return" } th { "Reason" } th { "Lines (restocked to)" } th { "Refunded" } } }
                        tbody {
                            @for r in &view.returns {
                                tr { td { code { (r.return_id) } } td { (r.reason) }
                                     td { @for l in &r.lines { span.stock { (l.sku) " × " (l.qty)
                                         @if l.restock { " → " (l.warehouse_id) } } } }
                                     td.num { (m(&r.amount)) } }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Timeline" }
            @if let Some((class, text)) = &badge { p #verification class={"badge " (class)} { (text) } }
            @match &timeline {
                None => p.muted { "The timeline is for auditors (as in the API)." },
                Some(t) => {
                    table #timeline {
                        thead { tr { th { "Position" } th { "Recorded" } th { "Event" } th { "Aggregate" } th { "Actor" } th { "Correlation" } th { "Causation" } } }
                        tbody {
                            @for e in &t.events {
                                tr.event data-position=(e.position) {
                                    td.num { (e.position) }
                                    td { (e.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")) }
                                    td {
                                        details {
                                            summary.event-type { (e.event_type) }
                                            pre { (serde_json::to_string_pretty(&e.payload).unwrap_or_default()) }
                                        }
                                    }
                                    td { (e.aggregate_type) " " code { (e.aggregate_id) } }
                                    td { (e.metadata.actor) }
                                    td.correlation { code { (e.metadata.correlation_id) } }
                                    td { code { (e.metadata.causation_id) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(Some(&session), "Order", Some(Page::Orders), body).into_response())
}

/// The order's events checked against the latest signed digest: each event's canonical bytes
/// and seal, and its Merkle path to the signed root (`verify_proof_document`, the check an
/// auditor can run offline). Returns a CSS class and the badge's text.
async fn verification(
    state: &AppState,
    t: &crate::routes::timeline::TimelineView,
) -> (&'static str, String) {
    use emporium_event_store::audit::{parse_public_key, verify_proof_document};
    let positions: Vec<i64> = t.events.iter().map(|e| e.position).collect();
    let doc = match state.auditor.proofs(&positions).await {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            return (
                "pending",
                "Not verifiable yet: no digest has been signed (an engine started with \
                 --audit-key signs them)"
                    .into(),
            )
        }
        Err(emporium_event_store::StoreError::Tampered(why)) => {
            return ("failed", format!("Verification failed: {why}"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: proofs could not be read");
            return (
                "pending",
                "Not checked: the database did not answer; reload to try again".into(),
            );
        }
    };
    // The engine's own key when it has one; otherwise the digest's, which proves the
    // events are in what was signed, not who signed it.
    let (key, pinned) = match state.audit_public_key {
        Some(k) => (Ok(k), true),
        None => (parse_public_key(&doc.digest.public_key), false),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => return ("failed", format!("Verification failed: {e}")),
    };
    match verify_proof_document(&doc, &key) {
        Ok(n) => (
            "verified",
            format!(
                "Verified: {n} of {} events are in the log signed at position {}{}; later \
                 events are covered by the next digest",
                positions.len(),
                doc.digest.position,
                if pinned {
                    " with this engine's key"
                } else {
                    " (by the key in the digest)"
                }
            ),
        ),
        Err(e) => ("failed", format!("Verification failed: {e}")),
    }
}
