//! What callers may ask of an order, and the line/allocation shapes they send.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::promotion::Redemption;
use crate::values::{
    CustomerId, MerchantId, Money, OrderId, Quantity, Reason, Region, SealedData, Sku, WarehouseId,
};

/// One requested line: `qty` units of `sku` at `unit_price` (the catalogue price the gateway
/// looked up; the order keeps it so later price changes do not alter the order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub qty: Quantity,
    pub unit_price: Money,
    /// Who sells it (the product's merchant; `None`: the house).
    #[serde(default)]
    pub merchant_id: Option<MerchantId>,
}

/// `qty` units of `sku` taken from `warehouse_id`. An order's allocation may split one SKU
/// across warehouses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub sku: Sku,
    pub warehouse_id: WarehouseId,
    pub qty: Quantity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderCommand {
    PlaceOrder {
        order_id: OrderId,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        shipping_region: Region,
        /// Opaque token from the payment provider; never card data. When `personal` holds
        /// the token sealed, this is only its fingerprint.
        payment_token: String,
        /// Name, e-mail, address lines and the payment token, encrypted with the customer's
        /// key (absent for orders placed without them, as by older clients of the domain).
        #[serde(default)]
        personal: Option<SealedData>,
        /// The codes redeemed for this order, with the discount each decided per line
        /// (`Promotion`'s `Redeem`); the order checks they fit its lines.
        #[serde(default)]
        promotions: Vec<Redemption>,
    },
    /// The fraud screen scored the order above the threshold: it waits for a person's
    /// decision, with its stock still reserved, until `review_deadline_ms`.
    HoldForReview {
        score: u8,
        reasons: Vec<Reason>,
        review_deadline_ms: i64,
    },
    /// A reviewer's decision on a held order: approve (checkout goes on) or reject.
    ReviewOrder {
        approve: bool,
        note: Option<Reason>,
    },
    /// Stock is reserved as `allocation` and payment is authorised.
    ConfirmOrder {
        allocation: Vec<Allocation>,
    },
    RejectOrder {
        reason: Reason,
    },
    CancelOrder {
        reason: Option<Reason>,
    },
    /// Units leave one warehouse, out of that warehouse's allocation.
    ShipOrder {
        shipment_id: Uuid,
        warehouse_id: WarehouseId,
        lines: Vec<ShipmentLine>,
    },
    /// Shipped units come back; `restock` ones go back on hand at `warehouse_id`.
    ReturnItems {
        return_id: Uuid,
        reason: Reason,
        lines: Vec<ReturnLine>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLine {
    pub sku: Sku,
    pub qty: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnLine {
    pub sku: Sku,
    pub qty: Quantity,
    pub restock: bool,
    pub warehouse_id: WarehouseId,
}
