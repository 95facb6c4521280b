//! The order life cycle: its states and the actions that move between them.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Placed; stock and payment are being secured.
    Pending,
    /// The fraud screen held it for a person's decision; its stock stays reserved.
    #[serde(rename = "under_review")]
    UnderReview,
    /// Stock reserved and payment authorised. Final for the checkout saga, though the
    /// customer may still cancel.
    Confirmed,
    /// Checkout failed (no stock, payment declined). Terminal.
    Rejected,
    /// Called off by the customer or an operator; after a partial shipment, what was not
    /// shipped. Only returns of shipped units can follow.
    Cancelled,
    /// Some of the allocation has left the warehouses.
    #[serde(rename = "partially_shipped")]
    PartiallyShipped,
    /// Everything ordered has been shipped.
    Shipped,
    /// Some shipped units came back.
    #[serde(rename = "partially_returned")]
    PartiallyReturned,
    /// Every ordered unit was shipped and came back.
    Returned,
}

impl OrderStatus {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::UnderReview => "under_review",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::PartiallyShipped => "partially_shipped",
            Self::Shipped => "shipped",
            Self::PartiallyReturned => "partially_returned",
            Self::Returned => "returned",
        }
    }

    /// Nothing can happen to the order any more.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Rejected | Self::Cancelled)
    }

    /// Whether `action` is legal from this status: confirm and hold only while pending,
    /// reject while pending or under review, review only under review;
    /// cancel until everything has shipped; ship once confirmed; return once something
    /// shipped. The aggregate checks quantities on top (what is left to ship or return).
    #[must_use]
    pub const fn allows(self, action: OrderAction) -> bool {
        match action {
            OrderAction::Confirm | OrderAction::Hold => matches!(self, Self::Pending),
            OrderAction::Reject => matches!(self, Self::Pending | Self::UnderReview),
            OrderAction::Review => matches!(self, Self::UnderReview),
            OrderAction::Cancel => matches!(
                self,
                Self::Pending
                    | Self::UnderReview
                    | Self::Confirmed
                    | Self::PartiallyShipped
                    | Self::PartiallyReturned
            ),
            OrderAction::Ship => matches!(
                self,
                Self::Confirmed | Self::PartiallyShipped | Self::PartiallyReturned
            ),
            OrderAction::Return => matches!(
                self,
                Self::PartiallyShipped
                    | Self::Shipped
                    | Self::PartiallyReturned
                    | Self::Returned
                    | Self::Cancelled
            ),
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
    Ship,
    Return,
    Hold,
    Review,
}

impl OrderAction {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Reject => "reject",
            Self::Cancel => "cancel",
            Self::Ship => "ship",
            Self::Return => "return items of",
            Self::Hold => "hold for review",
            Self::Review => "review",
        }
    }
}

impl fmt::Display for OrderAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
