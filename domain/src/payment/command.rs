//! What callers (the checkout saga, back office) may ask of a payment.

use serde::{Deserialize, Serialize};

use crate::values::{Money, OrderId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Hold `amount` for the order. The amount may be zero (a free order still goes through
    /// the same flow).
    AuthorizePayment { order_id: OrderId, amount: Money },
    /// Take (part of) the held amount.
    CapturePayment { amount: Money },
    /// Release the hold; only possible before any capture.
    VoidPayment,
    /// Give back (part of) what was captured.
    RefundPayment { amount: Money },
}
