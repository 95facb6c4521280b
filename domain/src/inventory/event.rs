//! What happened to a stock item. Every event carries the levels *after* the change so read
//! models copy them instead of recomputing reservation rules. Stored forever: change shapes
//! only with a new `event_version` and an upcaster.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{OrderId, Quantity, Reason, Sku, WarehouseId};
use uuid::Uuid;

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
    /// `qty` reserved units of the order left with shipment `shipment_id` (on hand and
    /// reserved both go down by `qty`).
    StockShipped {
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        shipment_id: Uuid,
        qty: Quantity,
        on_hand: u64,
        reserved: u64,
        available: u64,
    },
    /// Returned units put back on hand.
    StockRestocked {
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        return_id: Uuid,
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
            Self::StockShipped { .. } => "StockShipped",
            Self::StockRestocked { .. } => "StockRestocked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

impl crate::schema::EventSchema for StockItemEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[
        ("StockReceived", "1.0"),
        ("StockAdjusted", "1.0"),
        ("StockReserved", "1.0"),
        ("StockReservationReleased", "1.0"),
        ("StockReservationCommitted", "1.0"),
        ("StockShipped", "1.0"),
        ("StockRestocked", "1.0"),
    ];
}

/// Stock of one SKU in one warehouse at one moment: what every stock event announces and
/// what a [`StockItem`](super::StockItem) holds. The one place these three numbers are
/// defined; read models and views copy them, never recompute them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevels {
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
}

impl StockLevels {
    /// Levels for `on_hand` units of which `reserved` are promised to orders.
    #[must_use]
    pub fn new(on_hand: u64, reserved: u64) -> Self {
        Self {
            on_hand,
            reserved,
            available: on_hand.saturating_sub(reserved),
        }
    }
}

impl StockItemEvent {
    /// The warehouse and SKU this event is about, with the levels after it.
    #[must_use]
    pub fn levels(&self) -> (&WarehouseId, &Sku, StockLevels) {
        match self {
            Self::StockReceived {
                warehouse_id,
                sku,
                on_hand,
                reserved,
                available,
                ..
            }
            | Self::StockAdjusted {
                warehouse_id,
                sku,
                on_hand,
                reserved,
                available,
                ..
            }
            | Self::StockReserved {
                warehouse_id,
                sku,
                on_hand,
                reserved,
                available,
                ..
            }
            | Self::StockReservationReleased {
                warehouse_id,
                sku,
                on_hand,
                reserved,
                available,
                ..
            }
            | Self::StockShipped {
                warehouse_id,
                sku,
                on_hand,
                reserved,
                available,
                ..
            }
            | Self::StockRestocked {
                warehouse_id,
                sku,
                on_hand,
                reserved,
                available,
                ..
            }
            | Self::StockReservationCommitted {
                warehouse_id,
                sku,
                on_hand,
                reserved,
                available,
                ..
            } => (
                warehouse_id,
                sku,
                StockLevels {
                    on_hand: *on_hand,
                    reserved: *reserved,
                    available: *available,
                },
            ),
        }
    }

    /// The order a reservation event concerns; `None` for receipts and adjustments.
    #[must_use]
    pub fn order_id(&self) -> Option<OrderId> {
        match self {
            Self::StockReserved { order_id, .. }
            | Self::StockReservationReleased { order_id, .. }
            | Self::StockReservationCommitted { order_id, .. }
            | Self::StockShipped { order_id, .. }
            | Self::StockRestocked { order_id, .. } => Some(*order_id),
            Self::StockReceived { .. } | Self::StockAdjusted { .. } => None,
        }
    }
}
