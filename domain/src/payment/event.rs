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
    /// `reference` was added later (absent in older events; no upcaster needed).
    PaymentCaptured {
        order_id: OrderId,
        amount: Money,
        captured_total: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// `amount` is what was released: the authorisation less what was captured.
    PaymentVoided {
        order_id: OrderId,
        amount: Money,
    },
    PaymentRefunded {
        order_id: OrderId,
        amount: Money,
        refunded_total: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
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
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

impl crate::schema::EventSchema for PaymentEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[
        ("PaymentAuthorized", "1.0"),
        ("PaymentCaptured", "1.0"),
        ("PaymentVoided", "1.0"),
        ("PaymentRefunded", "1.0"),
    ];
}

impl PaymentEvent {
    /// The order this event belongs to (the aggregate id).
    #[must_use]
    pub fn order_id(&self) -> crate::values::OrderId {
        match self {
            Self::PaymentAuthorized { order_id, .. }
            | Self::PaymentCaptured { order_id, .. }
            | Self::PaymentVoided { order_id, .. }
            | Self::PaymentRefunded { order_id, .. } => *order_id,
        }
    }
}
