//! What happened to an order. Events carry computed facts (line totals, order total, the
//! previous status) so read models never redo pricing. Stored forever: change shapes only with
//! a new `event_version` and an upcaster.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{Allocation, OrderStatus};
use crate::promotion::Redemption;
use crate::values::{
    CustomerId, MerchantId, Money, OrderId, Quantity, Reason, Region, SealedData, Sku, WarehouseId,
};
use uuid::Uuid;

/// An order line as accepted, with its total (`unit_price × qty`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedLine {
    pub sku: Sku,
    pub qty: Quantity,
    pub unit_price: Money,
    /// `unit_price × qty`, before any discount.
    pub line_total: Money,
    /// What the order's promotion codes take off this line (absent: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Money>,
    /// Who sells it: the line belongs to that merchant's fulfilment part (absent: the house).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<MerchantId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced {
        order_id: OrderId,
        customer_id: CustomerId,
        lines: Vec<PlacedLine>,
        shipping_region: Region,
        /// What the customer pays: the lines' totals less `discount`.
        total: Money,
        /// The payment token's fingerprint when `personal` holds the token itself.
        payment_token: String,
        /// Personal data and the payment token, encrypted with the customer's key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        personal: Option<SealedData>,
        /// Σ of the line discounts (absent: no code was used).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        discount: Option<Money>,
        /// The codes redeemed and what each took off which line.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        promotions: Vec<Redemption>,
    },
    /// The fraud screen held the order for a person's review; its stock stays reserved.
    OrderHeldForReview {
        order_id: OrderId,
        score: u8,
        reasons: Vec<Reason>,
        review_deadline_ms: i64,
    },
    /// A reviewer approved a held order; its checkout goes on (a rejection is an
    /// `OrderRejected`, its actor the reviewer).
    OrderReviewApproved {
        order_id: OrderId,
        note: Option<Reason>,
    },
    OrderConfirmed {
        order_id: OrderId,
        allocation: Vec<Allocation>,
        total: Money,
    },
    OrderRejected {
        order_id: OrderId,
        reason: Reason,
    },
    OrderCancelled {
        order_id: OrderId,
        reason: Option<Reason>,
        /// Tells the saga whether there is stock to release and payment to void.
        previous_status: OrderStatus,
    },
    /// Units left `warehouse_id`; `amount` is what this shipment captures (Σ unit price ×
    /// quantity, so the shipments of an order add up to its total exactly).
    OrderShipped {
        order_id: OrderId,
        shipment_id: Uuid,
        warehouse_id: WarehouseId,
        lines: Vec<ShippedLine>,
        amount: Money,
        status: OrderStatus,
    },
    /// Shipped units came back; `amount` is what this return refunds.
    ItemsReturned {
        order_id: OrderId,
        return_id: Uuid,
        reason: Reason,
        lines: Vec<ReturnedLine>,
        amount: Money,
        status: OrderStatus,
    },
}

/// A shipped line and the amount it captures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedLine {
    pub sku: Sku,
    pub qty: Quantity,
    pub amount: Money,
}

/// A returned line and the amount it refunds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnedLine {
    pub sku: Sku,
    pub qty: Quantity,
    pub restock: bool,
    pub warehouse_id: WarehouseId,
    pub amount: Money,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderHeldForReview { .. } => "OrderHeldForReview",
            Self::OrderReviewApproved { .. } => "OrderReviewApproved",
            Self::OrderConfirmed { .. } => "OrderConfirmed",
            Self::OrderRejected { .. } => "OrderRejected",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::OrderShipped { .. } => "OrderShipped",
            Self::ItemsReturned { .. } => "ItemsReturned",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

impl crate::schema::EventSchema for OrderEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[
        ("OrderPlaced", "1.0"),
        ("OrderHeldForReview", "1.0"),
        ("OrderReviewApproved", "1.0"),
        ("OrderConfirmed", "1.0"),
        ("OrderRejected", "1.0"),
        ("OrderCancelled", "1.0"),
        ("OrderShipped", "1.0"),
        ("ItemsReturned", "1.0"),
    ];
}

impl OrderEvent {
    /// The order this event belongs to (the aggregate id).
    #[must_use]
    pub fn order_id(&self) -> crate::values::OrderId {
        match self {
            Self::OrderPlaced { order_id, .. }
            | Self::OrderHeldForReview { order_id, .. }
            | Self::OrderReviewApproved { order_id, .. }
            | Self::OrderConfirmed { order_id, .. }
            | Self::OrderRejected { order_id, .. }
            | Self::OrderCancelled { order_id, .. }
            | Self::OrderShipped { order_id, .. }
            | Self::ItemsReturned { order_id, .. } => *order_id,
        }
    }
}
