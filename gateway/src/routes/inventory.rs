//! Inventory: receive and adjust stock per (warehouse, sku); read levels per sku.

use axum::extract::State;
use axum::Json;
use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand, StockItemError};
use emporium_domain::values::{Quantity, Reason};
use serde::{Deserialize, Serialize};

use super::products::{load_product_as, parse_sku};
use super::warehouses::{load_warehouse, parse_warehouse_id};
use super::{execute, Fields};
use crate::error::{ApiError, CommandProblems, ReadProblems};
use crate::extract::{ApiJson, ApiPath, RequestContext};
use crate::state::AppState;

impl From<StockItemError> for ApiError {
    fn from(e: StockItemError) -> Self {
        let code = match &e {
            StockItemError::InsufficientStock { .. } => "insufficient_stock",
            StockItemError::InvalidAdjustment { .. } => {
                return ApiError::field("/delta", e);
            }
            StockItemError::NegativeOnHand { .. } => "negative_on_hand",
            StockItemError::AdjustmentBelowReserved { .. } => "adjustment_below_reserved",
            StockItemError::OnHandOverflow => "on_hand_overflow",
            StockItemError::NoReservation { .. } => "no_reservation",
            StockItemError::WrongItem { .. } => "wrong_item",
        };
        ApiError::conflict(code, e)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveBody {
    #[schema(schema_with = crate::schema::quantity)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub qty: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    #[schema(schema_with = crate::schema::adjustment)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub delta: i64,
    #[schema(schema_with = crate::schema::reason)]
    pub reason: String,
}

#[derive(Debug, Serialize, Clone, Copy, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct Levels {
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StockLevelView {
    pub warehouse_id: String,
    pub sku: String,
    #[serde(flatten)]
    pub levels: Levels,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkuInventoryView {
    pub sku: String,
    pub warehouses: Vec<StockLevelView>,
    pub total: Levels,
}

fn levels(item: &StockItem) -> Levels {
    let l = item.levels();
    Levels {
        on_hand: l.on_hand,
        reserved: l.reserved,
        available: l.available,
    }
}

/// Checks the warehouse is open and the product exists before touching stock.
async fn target(
    state: &AppState,
    actor: &crate::keys::Actor,
    warehouse_id: &str,
    sku: &str,
) -> Result<
    (
        emporium_domain::values::WarehouseId,
        emporium_domain::values::Sku,
    ),
    ApiError,
> {
    let warehouse_id = parse_warehouse_id(warehouse_id)?;
    let sku = parse_sku(sku)?;
    let warehouse = load_warehouse(state, &warehouse_id).await?;
    if !warehouse.is_open() {
        return Err(ApiError::conflict(
            "warehouse_closed",
            format!("warehouse {warehouse_id} is closed"),
        ));
    }
    load_product_as(state, actor, &sku).await?;
    Ok((warehouse_id, sku))
}

/// Stock arrives at a warehouse.
#[utoipa::path(post, path = "/v1/inventory/{warehouse_id}/{sku}/receive", tag = "inventory", request_body = ReceiveBody,
    params(("warehouse_id" = String, Path, description = "Warehouse id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), ("sku" = String, Path, description = "Product SKU", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Levels after receiving", body = StockLevelView), CommandProblems))]
pub async fn receive(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath((warehouse_id, sku)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ReceiveBody>,
) -> Result<Json<StockLevelView>, ApiError> {
    let qty = Quantity::new(body.qty).map_err(|e| ApiError::field("/qty", e))?;
    let (warehouse_id, sku) = target(&state, &ctx.actor, &warehouse_id, &sku).await?;
    let id = stock_item_id(&warehouse_id, &sku);
    execute::<StockItem>(
        &state,
        &ctx,
        &id,
        StockItemCommand::ReceiveStock {
            warehouse_id: warehouse_id.clone(),
            sku: sku.clone(),
            qty,
        },
    )
    .await?;
    let (item, _) = state.store.load::<StockItem>(&id).await?;
    Ok(Json(StockLevelView {
        warehouse_id: warehouse_id.to_string(),
        sku: sku.to_string(),
        levels: levels(&item),
    }))
}

/// Correct a count (positive or negative delta, with a reason). On hand may not drop below what is reserved.
#[utoipa::path(post, path = "/v1/inventory/{warehouse_id}/{sku}/adjust", tag = "inventory", request_body = AdjustBody,
    params(("warehouse_id" = String, Path, description = "Warehouse id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), ("sku" = String, Path, description = "Product SKU", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Levels after the adjustment", body = StockLevelView), CommandProblems))]
pub async fn adjust(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath((warehouse_id, sku)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<AdjustBody>,
) -> Result<Json<StockLevelView>, ApiError> {
    let mut f = Fields::default();
    let reason = f.check("/reason", Reason::parse(&body.reason));
    if body.delta == 0 {
        f.push("/delta", "must not be zero");
    }
    let reason = match reason {
        Some(r) if f.is_empty() => r,
        _ => return Err(f.into_error()),
    };
    let (warehouse_id, sku) = target(&state, &ctx.actor, &warehouse_id, &sku).await?;
    let id = stock_item_id(&warehouse_id, &sku);
    execute::<StockItem>(
        &state,
        &ctx,
        &id,
        StockItemCommand::AdjustStock {
            warehouse_id: warehouse_id.clone(),
            sku: sku.clone(),
            delta: body.delta,
            reason,
        },
    )
    .await?;
    let (item, _) = state.store.load::<StockItem>(&id).await?;
    Ok(Json(StockLevelView {
        warehouse_id: warehouse_id.to_string(),
        sku: sku.to_string(),
        levels: levels(&item),
    }))
}

/// On hand, reserved and available stock of a SKU in every warehouse that ever held it, and
/// the total; with `as_of`, as they were then.
#[utoipa::path(get, path = "/v1/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "Product SKU", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), super::AsOfQuery),
    responses((status = 200, description = "Levels per warehouse and in total", body = SkuInventoryView), ReadProblems))]
pub async fn by_sku(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(sku): ApiPath<String>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<super::AsOfQuery>,
) -> Result<Json<SkuInventoryView>, ApiError> {
    let sku = parse_sku(&sku)?;
    let at = q.point()?;
    load_product_as(&state, &ctx.actor, &sku).await?;
    let mut warehouses = Vec::new();
    let mut total = Levels::default();
    for wid in state
        .store
        .aggregate_ids::<emporium_domain::Warehouse>()
        .await?
    {
        let Ok(warehouse_id) = emporium_domain::values::WarehouseId::parse(&wid) else {
            continue;
        };
        let (item, version) =
            super::load_at::<StockItem>(&state, &stock_item_id(&warehouse_id, &sku), at).await?;
        if version == 0 {
            continue;
        }
        let l = levels(&item);
        total.on_hand += l.on_hand;
        total.reserved += l.reserved;
        total.available += l.available;
        warehouses.push(StockLevelView {
            warehouse_id: warehouse_id.to_string(),
            sku: sku.to_string(),
            levels: l,
        });
    }
    Ok(Json(SkuInventoryView {
        sku: sku.to_string(),
        warehouses,
        total,
    }))
}
