//! Why a stock command was refused: one variant per broken rule.

use thiserror::Error;

use super::MAX_ADJUSTMENT;
use crate::values::{OrderId, Sku, WarehouseId};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StockItemError {
    #[error("insufficient stock of {sku}: requested {requested}, available {available}")]
    InsufficientStock {
        sku: Sku,
        requested: u32,
        available: u64,
    },
    #[error(
        "a stock adjustment must be non-zero and at most {MAX_ADJUSTMENT} in size (got {delta})"
    )]
    InvalidAdjustment { delta: i64 },
    #[error("adjusting by {delta} would make on-hand stock negative (on hand: {on_hand})")]
    NegativeOnHand { delta: i64, on_hand: u64 },
    #[error(
        "adjusting by {delta} would leave less on hand than is reserved \
         (on hand: {on_hand}, reserved: {reserved})"
    )]
    AdjustmentBelowReserved {
        delta: i64,
        on_hand: u64,
        reserved: u64,
    },
    #[error("on-hand stock would exceed {max}", max = u64::MAX)]
    OnHandOverflow,
    #[error("order {order_id} holds no reservation on this item")]
    NoReservation { order_id: OrderId },
    #[error(
        "command for {got_warehouse_id}:{got_sku} was sent to stock item \
         {expected_warehouse_id}:{expected_sku}"
    )]
    WrongItem {
        expected_warehouse_id: WarehouseId,
        expected_sku: Sku,
        got_warehouse_id: WarehouseId,
        got_sku: Sku,
    },
}
