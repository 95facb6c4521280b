//! What happened to a promotion code.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::PromotionTerms;
use crate::values::{CustomerId, Money, OrderId, PromoCode, Sku};

/// The discount one code gives one order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineDiscount {
    pub sku: Sku,
    pub amount: Money,
}

/// A code's use by one order: the discount, and how it splits over the lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub code: PromoCode,
    pub discount: Money,
    pub lines: Vec<LineDiscount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromotionEvent {
    PromotionCreated {
        code: PromoCode,
        terms: PromotionTerms,
    },
    PromotionRedeemed {
        code: PromoCode,
        order_id: OrderId,
        customer_id: CustomerId,
        redemption: Redemption,
        /// Uses standing after this one.
        uses: u32,
    },
    PromotionReleased {
        code: PromoCode,
        order_id: OrderId,
        customer_id: CustomerId,
        uses: u32,
    },
}

impl DomainEvent for PromotionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PromotionCreated { .. } => "PromotionCreated",
            Self::PromotionRedeemed { .. } => "PromotionRedeemed",
            Self::PromotionReleased { .. } => "PromotionReleased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

impl crate::schema::EventSchema for PromotionEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[
        ("PromotionCreated", "1.0"),
        ("PromotionRedeemed", "1.0"),
        ("PromotionReleased", "1.0"),
    ];
}

impl PromotionEvent {
    /// The order a redemption or release concerns.
    #[must_use]
    pub fn order_id(&self) -> Option<OrderId> {
        match self {
            Self::PromotionCreated { .. } => None,
            Self::PromotionRedeemed { order_id, .. } | Self::PromotionReleased { order_id, .. } => {
                Some(*order_id)
            }
        }
    }
}
