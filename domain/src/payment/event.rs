//! What happened to a payment. Running totals are included so read models need not add up
//! captures and refunds. Stored forever: change shapes only with a new `event_version` and an
//! upcaster.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{Money, OrderId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentAuthorized {
        order_id: OrderId,
        amount: Money,
    },
    PaymentCaptured {
        order_id: OrderId,
        amount: Money,
        captured_total: Money,
    },
    /// `amount` is the authorisation that was released.
    PaymentVoided {
        order_id: OrderId,
        amount: Money,
    },
    PaymentRefunded {
        order_id: OrderId,
        amount: Money,
        refunded_total: Money,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PaymentAuthorized { .. } => "PaymentAuthorized",
            Self::PaymentCaptured { .. } => "PaymentCaptured",
            Self::PaymentVoided { .. } => "PaymentVoided",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
