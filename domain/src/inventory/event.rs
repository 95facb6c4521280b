//! What happened to a stock item. Every event carries the levels *after* the change so read
//! models copy them instead of recomputing reservation rules. Stored forever: change shapes
//! only with a new `event_version` and an upcaster.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{OrderId, Quantity, Reason, Sku, WarehouseId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StockItemEvent {
    StockReceived {
        warehouse_id: WarehouseId,
        sku: Sku,
        qty: Quantity,
        on_hand: u64,
        reserved: u64,
        available: u64,
    },
    StockAdjusted {
        warehouse_id: WarehouseId,
        sku: Sku,
        delta: i64,
        reason: Reason,
        on_hand: u64,
        reserved: u64,
        available: u64,
    },
    StockReserved {
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        qty: Quantity,
        on_hand: u64,
        reserved: u64,
        available: u64,
    },
    StockReservationReleased {
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        qty: Quantity,
        on_hand: u64,
        reserved: u64,
        available: u64,
    },
    StockReservationCommitted {
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        qty: Quantity,
        on_hand: u64,
        reserved: u64,
        available: u64,
    },
}

impl DomainEvent for StockItemEvent {
    fn event_type(&self) -> String {
        match self {
            Self::StockReceived { .. } => "StockReceived",
            Self::StockAdjusted { .. } => "StockAdjusted",
            Self::StockReserved { .. } => "StockReserved",
            Self::StockReservationReleased { .. } => "StockReservationReleased",
            Self::StockReservationCommitted { .. } => "StockReservationCommitted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
