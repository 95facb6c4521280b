//! What callers may ask of a stock item. Commands that can create the item name the warehouse
//! and SKU so the aggregate can check they reach the right stream; release and commit come from
//! the order saga, which only knows the order.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{OrderId, Quantity, Reason, Sku, WarehouseId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StockItemCommand {
    /// Goods arrived at the warehouse.
    ReceiveStock {
        warehouse_id: WarehouseId,
        sku: Sku,
        qty: Quantity,
    },
    /// A stock count correction (breakage, audit). `delta` is signed, non-zero and at most
    /// [`MAX_ADJUSTMENT`](super::MAX_ADJUSTMENT) in magnitude.
    AdjustStock {
        warehouse_id: WarehouseId,
        sku: Sku,
        delta: i64,
        reason: Reason,
    },
    /// Promise units to an order. Idempotent per order id.
    ReserveStock {
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        qty: Quantity,
    },
    /// Give an order's units back (compensation). Idempotent.
    ReleaseReservation { order_id: OrderId },
    /// The reserved units were shipped: they leave on-hand stock.
    CommitReservation { order_id: OrderId },
    /// Ships `qty` of the order's reservation with a shipment; idempotent per shipment.
    ShipReserved {
        order_id: OrderId,
        shipment_id: Uuid,
        qty: Quantity,
    },
    /// Puts returned units back on hand; idempotent per return.
    RestockReturn {
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        return_id: Uuid,
        qty: Quantity,
    },
}
