//! After checkout: shipments (units leave a warehouse, their amount is captured) and
//! returns (units come back, their amount is refunded, restocked ones go back on hand).
//!
//! The order aggregate decides each step; the request then settles it (stock, provider,
//! Payment aggregate) through the saga's idempotent settlement, which the saga worker also
//! runs when the event reaches it, so a crash between the two loses nothing.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use emporium_domain::order::{Order, OrderCommand, Return, ReturnLine, Shipment, ShipmentLine};
use emporium_domain::values::{OrderId, Quantity, Reason, Sku, WarehouseId};
use emporium_domain::warehouse::Warehouse;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::orders::{load_order, load_visible_order, parse_order_id};
use super::{execute, Fields, MoneyBody};
use crate::error::{ApiError, CommandProblems};
use crate::extract::{ApiJson, ApiPath, RequestContext};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentBody {
    #[schema(schema_with = crate::schema::warehouse_id)]
    pub warehouse_id: String,
    /// 1 to 100 lines out of this warehouse's allocation; lines naming one SKU are merged.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ShipmentLineBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentLineBody {
    #[schema(schema_with = crate::schema::sku)]
    pub sku: String,
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(schema_with = crate::schema::quantity)]
    pub qty: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnBody {
    #[schema(schema_with = crate::schema::reason)]
    pub reason: String,
    /// 1 to 100 lines, each SKU once.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ReturnLineBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnLineBody {
    #[schema(schema_with = crate::schema::sku)]
    pub sku: String,
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(schema_with = crate::schema::quantity)]
    pub qty: i64,
    /// Put the units back on hand at `warehouse_id`.
    pub restock: bool,
    #[schema(schema_with = crate::schema::warehouse_id)]
    pub warehouse_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MovedLineView {
    pub sku: String,
    pub qty: u32,
    pub amount: MoneyBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShipmentView {
    pub shipment_id: String,
    pub order_id: String,
    pub warehouse_id: String,
    pub lines: Vec<MovedLineView>,
    /// What this shipment captures.
    pub amount: MoneyBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReturnedLineView {
    pub sku: String,
    pub qty: u32,
    pub restock: bool,
    pub warehouse_id: String,
    pub amount: MoneyBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReturnView {
    pub return_id: String,
    pub order_id: String,
    pub reason: String,
    pub lines: Vec<ReturnedLineView>,
    /// What this return refunds.
    pub amount: MoneyBody,
}

impl ShipmentView {
    pub(crate) fn of(order_id: &OrderId, s: &Shipment) -> Self {
        Self {
            shipment_id: s.shipment_id.to_string(),
            order_id: order_id.to_string(),
            warehouse_id: s.warehouse_id.to_string(),
            lines: s
                .lines
                .iter()
                .map(|l| MovedLineView {
                    sku: l.sku.to_string(),
                    qty: l.qty.get(),
                    amount: MoneyBody::from_money(&l.amount),
                })
                .collect(),
            amount: MoneyBody::from_money(&s.amount),
        }
    }
}

impl ReturnView {
    pub(crate) fn of(order_id: &OrderId, r: &Return) -> Self {
        Self {
            return_id: r.return_id.to_string(),
            order_id: order_id.to_string(),
            reason: r.reason.to_string(),
            lines: r
                .lines
                .iter()
                .map(|l| ReturnedLineView {
                    sku: l.sku.to_string(),
                    qty: l.qty.get(),
                    restock: l.restock,
                    warehouse_id: l.warehouse_id.to_string(),
                    amount: MoneyBody::from_money(&l.amount),
                })
                .collect(),
            amount: MoneyBody::from_money(&r.amount),
        }
    }
}

/// The id of a shipment or return: derived from the `Idempotency-Key` (so a retry after a
/// lost response names the same one and records nothing new), else fresh.
fn step_id(ctx: &RequestContext, headers: &HeaderMap, order: &OrderId, kind: &str) -> Uuid {
    match crate::idempotency::key_of(headers) {
        Some(key) => Uuid::new_v5(
            &crate::idempotency::order_id_for(&ctx.actor, key),
            format!("{kind}\n{order}").as_bytes(),
        ),
        None => Uuid::now_v7(),
    }
}

/// The request's context joined to the order's flow: its events carry the order's
/// correlation id unless the client names one.
async fn in_order_flow(
    state: &crate::state::AppState,
    mut ctx: RequestContext,
    id: &OrderId,
) -> Result<RequestContext, ApiError> {
    if ctx.correlation_id.is_none() {
        if let Some(placed) = state.store.first_event::<Order>(&id.to_string()).await? {
            ctx.correlation_id = Some(placed.metadata.correlation_id);
        }
    }
    Ok(ctx)
}

/// Validated lines: each SKU once (repeats merged), quantities in range.
fn merge_lines(f: &mut Fields, raw: impl Iterator<Item = (String, i64)>) -> Vec<(Sku, Quantity)> {
    let mut lines: Vec<(Sku, Quantity)> = Vec::new();
    for (i, (sku, qty)) in raw.enumerate() {
        let sku = f.check(&format!("/lines/{i}/sku"), Sku::parse(&sku));
        let qty = f.check(&format!("/lines/{i}/qty"), Quantity::new(qty));
        let (Some(sku), Some(qty)) = (sku, qty) else {
            continue;
        };
        match lines.iter_mut().find(|(s, _)| s == &sku) {
            Some((_, total)) => {
                match Quantity::new(i64::from(total.get()) + i64::from(qty.get())) {
                    Ok(q) => *total = q,
                    Err(e) => f.push(&format!("/lines/{i}/qty"), e),
                }
            }
            None => lines.push((sku, qty)),
        }
    }
    lines
}

fn check_count(f: &mut Fields, n: usize) {
    if n == 0 {
        f.push("/lines", "at least one line is needed");
    }
    if n > emporium_domain::order::MAX_LINES {
        f.push("/lines", "at most 100 lines");
    }
}

/// Ship units of a confirmed order from one of its allocated warehouses: their
/// reservations are committed (on hand and reserved go down) and their amount captured.
/// With an `Idempotency-Key`, a retry answers the same shipment.
#[utoipa::path(post, path = "/v1/orders/{id}/shipments", tag = "orders", request_body = ShipmentBody,
    params(("id" = String, Path, description = "Order id (UUID)", format = Uuid),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: same key and body, same answer", pattern = "^[!-~]{1,255}$")),
    responses((status = 201, description = "Shipped", body = ShipmentView), CommandProblems))]
pub async fn ship(
    State(state): State<crate::state::AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ShipmentBody>,
) -> Result<(StatusCode, Json<ShipmentView>), ApiError> {
    let id = parse_order_id(&id)?;
    let mut f = Fields::default();
    let warehouse_id = f.check("/warehouse_id", WarehouseId::parse(&body.warehouse_id));
    check_count(&mut f, body.lines.len());
    let lines = merge_lines(&mut f, body.lines.into_iter().map(|l| (l.sku, l.qty)));
    let (Some(warehouse_id), true) = (warehouse_id, f.is_empty()) else {
        return Err(f.into_error());
    };
    load_visible_order(&state, &ctx.actor, &id).await?;
    let ctx = in_order_flow(&state, ctx, &id).await?;
    let shipment_id = step_id(&ctx, &headers, &id, "shipment");
    let command = OrderCommand::ShipOrder {
        shipment_id,
        warehouse_id,
        lines: lines
            .into_iter()
            .map(|(sku, qty)| ShipmentLine { sku, qty })
            .collect(),
    };
    match execute::<Order>(&state, &ctx, &id.to_string(), command).await {
        Ok(()) => {}
        // A retry whose first run recorded the shipment: answer with it.
        Err(ApiError::Conflict {
            code: "duplicate_shipment",
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    if let Err(e) = state
        .checkout
        .settle_shipment(&id, shipment_id, &ctx.metadata())
        .await
    {
        // Recorded is shipped: the saga settles it when the event reaches it.
        tracing::warn!(order = %id, error = %e, "shipment recorded; settling it is left to the saga");
    }
    let order = load_order(&state, &id).await?;
    let Some(s) = order
        .shipments()
        .iter()
        .find(|s| s.shipment_id == shipment_id)
    else {
        return Err(ApiError::Internal("recorded shipment not found".into()));
    };
    Ok((StatusCode::CREATED, Json(ShipmentView::of(&id, s))))
}

/// Take back shipped units: their amount is refunded (never more than was captured for
/// them) and `restock` lines go back on hand at their warehouse.
#[utoipa::path(post, path = "/v1/orders/{id}/returns", tag = "orders", request_body = ReturnBody,
    params(("id" = String, Path, description = "Order id (UUID)", format = Uuid),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: same key and body, same answer", pattern = "^[!-~]{1,255}$")),
    responses((status = 201, description = "Returned", body = ReturnView), CommandProblems))]
pub async fn take_back(
    State(state): State<crate::state::AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReturnBody>,
) -> Result<(StatusCode, Json<ReturnView>), ApiError> {
    let id = parse_order_id(&id)?;
    let mut f = Fields::default();
    let reason = f.check("/reason", Reason::parse(&body.reason));
    check_count(&mut f, body.lines.len());
    let mut lines = Vec::with_capacity(body.lines.len());
    for (i, l) in body.lines.iter().enumerate() {
        let sku = f.check(&format!("/lines/{i}/sku"), Sku::parse(&l.sku));
        let qty = f.check(&format!("/lines/{i}/qty"), Quantity::new(l.qty));
        let wh = f.check(
            &format!("/lines/{i}/warehouse_id"),
            WarehouseId::parse(&l.warehouse_id),
        );
        if let (Some(sku), Some(qty), Some(warehouse_id)) = (sku, qty, wh) {
            lines.push(ReturnLine {
                sku,
                qty,
                restock: l.restock,
                warehouse_id,
            });
        }
    }
    let (Some(reason), true) = (reason, f.is_empty()) else {
        return Err(f.into_error());
    };
    load_visible_order(&state, &ctx.actor, &id).await?;
    for l in lines.iter().filter(|l| l.restock) {
        let (w, _) = state
            .store
            .load::<Warehouse>(l.warehouse_id.as_str())
            .await?;
        if !w.is_registered() {
            return Err(ApiError::NotFound(format!(
                "no warehouse {} to restock {} in",
                l.warehouse_id, l.sku
            )));
        }
    }
    let ctx = in_order_flow(&state, ctx, &id).await?;
    let return_id = step_id(&ctx, &headers, &id, "return");
    let command = OrderCommand::ReturnItems {
        return_id,
        reason,
        lines,
    };
    match execute::<Order>(&state, &ctx, &id.to_string(), command).await {
        Ok(()) => {}
        Err(ApiError::Conflict {
            code: "duplicate_return",
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    if let Err(e) = state
        .checkout
        .settle_return(&id, return_id, &ctx.metadata())
        .await
    {
        tracing::warn!(order = %id, error = %e, "return recorded; settling it is left to the saga");
    }
    let order = load_order(&state, &id).await?;
    let Some(r) = order.returns().iter().find(|r| r.return_id == return_id) else {
        return Err(ApiError::Internal("recorded return not found".into()));
    };
    Ok((StatusCode::CREATED, Json(ReturnView::of(&id, r))))
}
