//! What callers (the checkout saga, back office) may ask of a payment.

use serde::{Deserialize, Serialize};

use crate::values::{Money, OrderId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Hold `amount` for the order. The amount may be zero (a free order still goes through
    /// the same flow).
    AuthorizePayment { order_id: OrderId, amount: Money },
    /// Take (part of) the held amount. `reference` (a shipment id) makes it idempotent: a
    /// capture with a reference already captured records nothing.
    CapturePayment {
        amount: Money,
        reference: Option<String>,
    },
    /// Release what is held and not captured.
    VoidPayment,
    /// Give back (part of) what was captured; idempotent per `reference` (a return id).
    RefundPayment {
        amount: Money,
        reference: Option<String>,
    },
}
