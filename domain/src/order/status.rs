//! The order life cycle: its states and the actions that move between them.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Placed; stock and payment are being secured.
    Pending,
    /// Stock reserved and payment authorised. Final for the checkout saga, though the
    /// customer may still cancel.
    Confirmed,
    /// Checkout failed (no stock, payment declined). Terminal.
    Rejected,
    /// Called off by the customer or an operator. Terminal.
    Cancelled,
}

impl OrderStatus {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    /// Nothing can happen to the order any more.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Rejected | Self::Cancelled)
    }

    /// Whether `action` is legal from this status: confirm and reject only while pending,
    /// cancel while pending or confirmed.
    #[must_use]
    pub const fn allows(self, action: OrderAction) -> bool {
        match action {
            OrderAction::Confirm | OrderAction::Reject => matches!(self, Self::Pending),
            OrderAction::Cancel => matches!(self, Self::Pending | Self::Confirmed),
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status-changing action, named in [`OrderError::IllegalTransition`](super::OrderError).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderAction {
    Confirm,
    Reject,
    Cancel,
}

impl OrderAction {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Reject => "reject",
            Self::Cancel => "cancel",
        }
    }
}

impl fmt::Display for OrderAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
