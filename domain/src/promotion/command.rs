//! What callers may ask of a promotion, and the terms it is created with.

use serde::{Deserialize, Serialize};

use crate::values::{Category, CustomerId, MerchantId, Money, OrderId, PromoCode, Sku};

/// What a code takes off the eligible lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Benefit {
    /// 1 to 100 percent of the eligible lines.
    PercentOff(u8),
    /// A fixed amount, at most the eligible lines' sum; only for orders in its currency.
    AmountOff(Money),
}

/// Where a code applies. A line is eligible when its SKU or its category is listed (both
/// empty: every product) **and**, when merchants are listed, its seller is one of them. The
/// merchant list narrows rather than widens, so a merchant-funded code never discounts
/// another merchant's lines whatever else its scope lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub skus: Vec<Sku>,
    #[serde(default)]
    pub categories: Vec<Category>,
    /// Sellers whose lines the code covers; the house merchant stands for lines without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merchants: Vec<MerchantId>,
}

impl Scope {
    #[must_use]
    pub fn covers(&self, line: &PricedLine) -> bool {
        let product = (self.skus.is_empty() && self.categories.is_empty())
            || self.skus.contains(&line.sku)
            || line
                .category
                .as_ref()
                .is_some_and(|c| self.categories.contains(c));
        let seller = self.merchants.is_empty()
            || self.merchants.iter().any(|m| {
                m.as_str()
                    == line
                        .merchant_id
                        .as_ref()
                        .map_or(crate::merchant::HOUSE, MerchantId::as_str)
            });
        product && seller
    }
}

/// A promotion's terms, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionTerms {
    pub benefit: Benefit,
    /// The order's sum before any discount must reach this (same currency).
    pub min_order: Option<Money>,
    pub scope: Scope,
    /// Valid from this moment (ms since the epoch, inclusive) ...
    pub starts_at_ms: i64,
    /// ... until this one (exclusive); `None`: no end.
    pub ends_at_ms: Option<i64>,
    /// Redemptions in all (released ones given back); `None`: unlimited.
    pub max_uses: Option<u32>,
    /// Redemptions per customer; `None`: unlimited.
    pub max_uses_per_customer: Option<u32>,
}

/// An order line as a promotion sees it: what the catalog says of it and what it costs after
/// the codes applied before this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: Sku,
    pub category: Option<Category>,
    /// Who sells it; `None`: the house.
    pub merchant_id: Option<MerchantId>,
    /// What is left to discount: the line total less earlier codes' discounts.
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromotionCommand {
    Create {
        code: PromoCode,
        terms: PromotionTerms,
    },
    /// Use the code for an order. Idempotent per order: a repeat changes nothing and the
    /// first redemption's discount stands.
    Redeem {
        order_id: OrderId,
        customer_id: CustomerId,
        /// When the order is placed (ms since the epoch).
        at_ms: i64,
        /// The order's sum before any discount.
        subtotal: Money,
        lines: Vec<PricedLine>,
    },
    /// Give a use back: the order was rejected or cancelled before it was paid for, or was
    /// never placed. A no-op for an order that holds no redemption.
    Release { order_id: OrderId },
}
