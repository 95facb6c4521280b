//! The order aggregate: prices and validates a new order, then guards its status transitions.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{
    Allocation, OrderAction, OrderCommand, OrderError, OrderEvent, OrderLine, OrderStatus,
    PlacedLine, ReturnLine, ReturnedLine, ShipmentLine, ShippedLine,
};
use crate::promotion::{Redemption, MAX_CODES_PER_ORDER};
use crate::values::{
    CustomerId, Money, OrderId, Quantity, Reason, Region, SealedData, Sku, WarehouseId,
};
use uuid::Uuid;

/// Why and until when an order waits for a fraud review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub score: u8,
    pub reasons: Vec<Reason>,
    pub review_deadline_ms: i64,
    /// `Some(true)` approved, `Some(false)` rejected, `None` waiting.
    pub approved: Option<bool>,
}

/// A recorded shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub shipment_id: Uuid,
    pub warehouse_id: WarehouseId,
    pub lines: Vec<ShippedLine>,
    pub amount: Money,
}

/// A recorded return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Return {
    pub return_id: Uuid,
    pub reason: Reason,
    pub lines: Vec<ReturnedLine>,
    pub amount: Money,
}

/// Most lines one order may have; bounds event size and checkout fan-out.
pub const MAX_LINES: usize = 100;

/// Longest payment token accepted, in characters.
pub const MAX_PAYMENT_TOKEN_LEN: usize = 256;

/// A customer order. `Default` is the not-yet-placed order every stream starts from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    order_id: Option<OrderId>,
    customer_id: Option<CustomerId>,
    lines: Vec<PlacedLine>,
    shipping_region: Option<Region>,
    total: Option<Money>,
    payment_token: Option<String>,
    #[serde(default)]
    personal: Option<SealedData>,
    status: Option<OrderStatus>,
    allocation: Vec<Allocation>,
    reject_reason: Option<Reason>,
    cancel_reason: Option<Reason>,
    #[serde(default)]
    shipments: Vec<Shipment>,
    #[serde(default)]
    returns: Vec<Return>,
    #[serde(default)]
    discount: Option<Money>,
    #[serde(default)]
    promotions: Vec<Redemption>,
    #[serde(default)]
    review: Option<Review>,
}

impl Order {
    #[must_use]
    pub fn is_placed(&self) -> bool {
        self.status.is_some()
    }

    /// `None` until the order is placed.
    #[must_use]
    pub fn status(&self) -> Option<OrderStatus> {
        self.status
    }

    #[must_use]
    pub fn order_id(&self) -> Option<OrderId> {
        self.order_id
    }

    #[must_use]
    pub fn customer_id(&self) -> Option<&CustomerId> {
        self.customer_id.as_ref()
    }

    #[must_use]
    pub fn lines(&self) -> &[PlacedLine] {
        &self.lines
    }

    #[must_use]
    pub fn shipping_region(&self) -> Option<&Region> {
        self.shipping_region.as_ref()
    }

    #[must_use]
    pub fn total(&self) -> Option<&Money> {
        self.total.as_ref()
    }

    /// The token as placed, or its fingerprint when [`Order::personal`] holds it sealed.
    #[must_use]
    pub fn payment_token(&self) -> Option<&str> {
        self.payment_token.as_deref()
    }

    /// Personal data and the payment token, encrypted with the customer's key.
    #[must_use]
    pub fn personal(&self) -> Option<&SealedData> {
        self.personal.as_ref()
    }

    /// Empty until the order is confirmed.
    #[must_use]
    pub fn allocation(&self) -> &[Allocation] {
        &self.allocation
    }

    #[must_use]
    pub fn reject_reason(&self) -> Option<&Reason> {
        self.reject_reason.as_ref()
    }

    #[must_use]
    pub fn cancel_reason(&self) -> Option<&Reason> {
        self.cancel_reason.as_ref()
    }

    #[must_use]
    pub fn shipments(&self) -> &[Shipment] {
        &self.shipments
    }

    #[must_use]
    pub fn returns(&self) -> &[Return] {
        &self.returns
    }

    /// What the order's codes took off (`None`: no code used).
    #[must_use]
    pub fn discount(&self) -> Option<&Money> {
        self.discount.as_ref()
    }

    /// The codes redeemed for this order.
    #[must_use]
    pub fn promotions(&self) -> &[Redemption] {
        &self.promotions
    }

    /// The fraud review, if the screen held the order.
    #[must_use]
    pub fn review(&self) -> Option<&Review> {
        self.review.as_ref()
    }

    /// The merchant selling `sku` in this order (`None`: the house, or not ordered).
    #[must_use]
    pub fn merchant_of(&self, sku: &Sku) -> Option<&crate::values::MerchantId> {
        self.lines
            .iter()
            .find(|l| &l.sku == sku)
            .and_then(|l| l.merchant_id.as_ref())
    }

    /// Units of `sku` shipped from `warehouse_id`.
    #[must_use]
    pub fn shipped_from(&self, sku: &Sku, warehouse_id: &WarehouseId) -> u32 {
        self.shipped_where(sku, Some(warehouse_id))
    }

    fn shipped(&self, sku: &Sku) -> u32 {
        self.shipped_where(sku, None)
    }

    /// Units of `sku` shipped, from `warehouse_id` or from anywhere.
    fn shipped_where(&self, sku: &Sku, warehouse_id: Option<&WarehouseId>) -> u32 {
        self.shipments
            .iter()
            .filter(|s| warehouse_id.is_none_or(|w| &s.warehouse_id == w))
            .flat_map(|s| &s.lines)
            .filter(|l| &l.sku == sku)
            .map(|l| l.qty.get())
            .sum()
    }

    /// `qty` units of `sku` at the price they were ordered at, less their share of the
    /// line's discount, when `before` units of it were counted already (shipped, or returned);
    /// `unknown` if not ordered. The line's discount `D` over its `Q` units is spread so
    /// that the first `k` units carry `⌊D·k/Q⌋` of it: every shipment (or return) of a line
    /// adds up to its discounted total exactly.
    fn amount_of(
        &self,
        sku: &Sku,
        qty: Quantity,
        before: u32,
        unknown: OrderError,
    ) -> Result<Money, OrderError> {
        let line = self.lines.iter().find(|l| &l.sku == sku).ok_or(unknown)?;
        let gross = line
            .unit_price
            .checked_mul_qty(qty)
            .map_err(|_| OrderError::AmountOverflow)?;
        let Some(discount) = line.discount.filter(|d| !d.is_zero()) else {
            return Ok(gross);
        };
        let (d, units) = (
            i128::from(discount.amount_minor()),
            i128::from(line.qty.get()),
        );
        let upto = |k: u32| d * i128::from(k.min(line.qty.get())) / units;
        let share = upto(before + qty.get()) - upto(before);
        let share = Money::new(
            i64::try_from(share).map_err(|_| OrderError::AmountOverflow)?,
            gross.currency(),
        )
        .map_err(|_| OrderError::AmountOverflow)?;
        gross
            .checked_sub(&share)
            .map_err(|_| OrderError::AmountOverflow)
    }

    fn returned(&self, sku: &Sku) -> u32 {
        self.returns
            .iter()
            .flat_map(|r| &r.lines)
            .filter(|l| &l.sku == sku)
            .map(|l| l.qty.get())
            .sum()
    }

    /// Allocated units not shipped, per (sku, warehouse): what a cancel gives back.
    #[must_use]
    pub fn unshipped(&self) -> Vec<(Sku, WarehouseId, u32)> {
        self.allocation
            .iter()
            .map(|a| {
                let left =
                    a.qty.get() - self.shipped_from(&a.sku, &a.warehouse_id).min(a.qty.get());
                (a.sku.clone(), a.warehouse_id.clone(), left)
            })
            .filter(|(_, _, left)| *left > 0)
            .collect()
    }

    /// The status after shipments and returns: returns first (they only follow shipping),
    /// then how much of the allocation has shipped. A cancelled order stays cancelled.
    fn fulfilment_status(&self, shipments: &[Shipment], returns: &[Return]) -> OrderStatus {
        if self.status == Some(OrderStatus::Cancelled) {
            return OrderStatus::Cancelled;
        }
        let count = |lines: &mut dyn Iterator<Item = u32>| -> u64 { lines.map(u64::from).sum() };
        let ordered = count(&mut self.lines.iter().map(|l| l.qty.get()));
        let shipped = count(&mut shipments.iter().flat_map(|s| &s.lines).map(|l| l.qty.get()));
        let returned = count(&mut returns.iter().flat_map(|r| &r.lines).map(|l| l.qty.get()));
        match (returned, shipped) {
            (r, _) if r > 0 && r == ordered => OrderStatus::Returned,
            (r, _) if r > 0 => OrderStatus::PartiallyReturned,
            (_, s) if s == ordered => OrderStatus::Shipped,
            _ => OrderStatus::PartiallyShipped,
        }
    }

    fn ship(
        &self,
        shipment_id: Uuid,
        warehouse_id: WarehouseId,
        lines: Vec<ShipmentLine>,
    ) -> Result<OrderEvent, OrderError> {
        let (order_id, _) = self.transition(OrderAction::Ship)?;
        if self.shipments.iter().any(|s| s.shipment_id == shipment_id) {
            return Err(OrderError::DuplicateShipment(shipment_id));
        }
        check_lines(lines.iter().map(|l| &l.sku))?;
        // A shipment belongs to one merchant's fulfilment part, captured on its own.
        let mut parts = lines.iter().map(|l| self.merchant_of(&l.sku));
        if let Some(first) = parts.next() {
            if parts.any(|p| p != first) {
                return Err(OrderError::MixedParts);
            }
        }
        let currency = self.total.ok_or(OrderError::NotPlaced)?.currency();
        let mut amount = Money::zero(currency);
        let mut shipped = Vec::with_capacity(lines.len());
        for ShipmentLine { sku, qty } in lines {
            let Some(allocated) = self
                .allocation
                .iter()
                .find(|a| a.sku == sku && a.warehouse_id == warehouse_id)
            else {
                return Err(OrderError::NotAllocated { sku, warehouse_id });
            };
            let remaining = allocated.qty.get() - self.shipped_from(&sku, &warehouse_id);
            if qty.get() > remaining {
                return Err(OrderError::ExceedsAllocation {
                    sku,
                    warehouse_id,
                    requested: qty.get(),
                    remaining,
                });
            }
            let line_amount = self.amount_of(
                &sku,
                qty,
                self.shipped(&sku),
                OrderError::NotAllocated {
                    sku: sku.clone(),
                    warehouse_id: warehouse_id.clone(),
                },
            )?;
            amount = amount
                .checked_add(&line_amount)
                .map_err(|_| OrderError::AmountOverflow)?;
            shipped.push(ShippedLine {
                sku,
                qty,
                amount: line_amount,
            });
        }
        let mut shipments = self.shipments.clone();
        shipments.push(Shipment {
            shipment_id,
            warehouse_id: warehouse_id.clone(),
            lines: shipped.clone(),
            amount,
        });
        Ok(OrderEvent::OrderShipped {
            order_id,
            shipment_id,
            warehouse_id,
            lines: shipped,
            amount,
            status: self.fulfilment_status(&shipments, &self.returns),
        })
    }

    fn take_back(
        &self,
        return_id: Uuid,
        reason: Reason,
        lines: Vec<ReturnLine>,
    ) -> Result<OrderEvent, OrderError> {
        let (order_id, _) = self.transition(OrderAction::Return)?;
        if self.returns.iter().any(|r| r.return_id == return_id) {
            return Err(OrderError::DuplicateReturn(return_id));
        }
        check_lines(lines.iter().map(|l| &l.sku))?;
        let currency = self.total.ok_or(OrderError::NotPlaced)?.currency();
        let mut amount = Money::zero(currency);
        let mut returned = Vec::with_capacity(lines.len());
        for ReturnLine {
            sku,
            qty,
            restock,
            warehouse_id,
        } in lines
        {
            let remaining = self.shipped(&sku) - self.returned(&sku).min(self.shipped(&sku));
            if qty.get() > remaining {
                return Err(OrderError::ExceedsShipped {
                    sku,
                    requested: qty.get(),
                    remaining,
                });
            }
            // Shipped units were captured at their unit price: the refund can never exceed
            // what was captured for them.
            let line_amount = self.amount_of(
                &sku,
                qty,
                self.returned(&sku),
                OrderError::ExceedsShipped {
                    sku: sku.clone(),
                    requested: qty.get(),
                    remaining: 0,
                },
            )?;
            amount = amount
                .checked_add(&line_amount)
                .map_err(|_| OrderError::AmountOverflow)?;
            returned.push(ReturnedLine {
                sku,
                qty,
                restock,
                warehouse_id,
                amount: line_amount,
            });
        }
        let mut returns = self.returns.clone();
        returns.push(Return {
            return_id,
            reason: reason.clone(),
            lines: returned.clone(),
            amount,
        });
        Ok(OrderEvent::ItemsReturned {
            order_id,
            return_id,
            reason,
            lines: returned,
            amount,
            status: self.fulfilment_status(&self.shipments, &returns),
        })
    }

    /// The order id and current status, if `action` is legal now.
    fn transition(&self, action: OrderAction) -> Result<(OrderId, OrderStatus), OrderError> {
        let (Some(order_id), Some(status)) = (self.order_id, self.status) else {
            return Err(OrderError::NotPlaced);
        };
        if status.allows(action) {
            Ok((order_id, status))
        } else {
            Err(OrderError::IllegalTransition {
                from: status,
                action,
            })
        }
    }

    /// The rules, synchronous and side-effect free.
    fn decide(&self, command: OrderCommand) -> Result<OrderEvent, OrderError> {
        match command {
            OrderCommand::PlaceOrder {
                order_id,
                customer_id,
                lines,
                shipping_region,
                payment_token,
                personal,
                promotions,
            } => {
                if self.is_placed() {
                    return Err(OrderError::AlreadyPlaced);
                }
                check_payment_token(&payment_token)?;
                let (mut lines, subtotal) = price_lines(lines)?;
                let discount = apply_discounts(&mut lines, &promotions)?;
                let total = match &discount {
                    Some(d) => subtotal
                        .checked_sub(d)
                        .map_err(|_| OrderError::InvalidDiscount("more than the order".into()))?,
                    None => subtotal,
                };
                Ok(OrderEvent::OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                    shipping_region,
                    total,
                    payment_token,
                    personal,
                    discount,
                    promotions,
                })
            }
            OrderCommand::HoldForReview {
                score,
                reasons,
                review_deadline_ms,
            } => {
                let (order_id, _) = self.transition(OrderAction::Hold)?;
                if self.review.is_some() {
                    // Screened once: a resumed checkout does not hold it again.
                    return Err(OrderError::IllegalTransition {
                        from: OrderStatus::Pending,
                        action: OrderAction::Hold,
                    });
                }
                Ok(OrderEvent::OrderHeldForReview {
                    order_id,
                    score,
                    reasons,
                    review_deadline_ms,
                })
            }
            OrderCommand::ReviewOrder { approve, note } => {
                let (order_id, _) = self.transition(OrderAction::Review)?;
                if approve {
                    Ok(OrderEvent::OrderReviewApproved { order_id, note })
                } else {
                    let text = match &note {
                        Some(n) => format!("rejected in fraud review: {n}"),
                        None => "rejected in fraud review".to_string(),
                    };
                    let reason = Reason::parse(&text.chars().take(500).collect::<String>())
                        .map_err(|_| OrderError::InvalidDiscount("reason".into()))?;
                    Ok(OrderEvent::OrderRejected { order_id, reason })
                }
            }
            OrderCommand::ConfirmOrder { allocation } => {
                let (order_id, _) = self.transition(OrderAction::Confirm)?;
                check_allocation(&self.lines, &allocation)?;
                Ok(OrderEvent::OrderConfirmed {
                    order_id,
                    allocation,
                    total: self.total.ok_or(OrderError::NotPlaced)?,
                })
            }
            OrderCommand::RejectOrder { reason } => {
                let (order_id, _) = self.transition(OrderAction::Reject)?;
                Ok(OrderEvent::OrderRejected { order_id, reason })
            }
            OrderCommand::CancelOrder { reason } => {
                let (order_id, previous_status) = self.transition(OrderAction::Cancel)?;
                if !self.shipments.is_empty() && self.unshipped().is_empty() {
                    return Err(OrderError::NothingToCancel);
                }
                Ok(OrderEvent::OrderCancelled {
                    order_id,
                    reason,
                    previous_status,
                })
            }
            OrderCommand::ShipOrder {
                shipment_id,
                warehouse_id,
                lines,
            } => self.ship(shipment_id, warehouse_id, lines),
            OrderCommand::ReturnItems {
                return_id,
                reason,
                lines,
            } => self.take_back(return_id, reason, lines),
        }
    }
}

/// A shipment or return names each SKU once and has at least one line.
fn check_lines<'a>(skus: impl Iterator<Item = &'a Sku>) -> Result<(), OrderError> {
    let mut seen = BTreeSet::new();
    for sku in skus {
        if !seen.insert(sku) {
            return Err(OrderError::RepeatedLine { sku: sku.clone() });
        }
    }
    if seen.is_empty() {
        return Err(OrderError::NoLines);
    }
    Ok(())
}

/// The token is opaque, but it ends up in a stored event and in calls to the provider, so
/// reject what is obviously not a token.
fn check_payment_token(token: &str) -> Result<(), OrderError> {
    let len = token.chars().count();
    let visible = token.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if (1..=MAX_PAYMENT_TOKEN_LEN).contains(&len) && visible {
        Ok(())
    } else {
        Err(OrderError::InvalidPaymentToken)
    }
}

/// Checks the line rules and computes each line total and the order total.
fn price_lines(lines: Vec<OrderLine>) -> Result<(Vec<PlacedLine>, Money), OrderError> {
    let Some(first) = lines.first() else {
        return Err(OrderError::EmptyOrder);
    };
    if lines.len() > MAX_LINES {
        return Err(OrderError::TooManyLines { max: MAX_LINES });
    }
    let currency = first.unit_price.currency();
    let mut seen = BTreeSet::new();
    for line in &lines {
        if !seen.insert(&line.sku) {
            return Err(OrderError::DuplicateLine {
                sku: line.sku.clone(),
            });
        }
        if line.unit_price.currency() != currency {
            return Err(OrderError::MixedCurrencies {
                expected: currency,
                got: line.unit_price.currency(),
            });
        }
    }

    // Currencies are known to agree, so arithmetic can only fail by exceeding the maximum.
    let mut total = Money::zero(currency);
    let mut placed = Vec::with_capacity(lines.len());
    for OrderLine {
        sku,
        qty,
        unit_price,
        merchant_id,
    } in lines
    {
        let line_total = unit_price
            .checked_mul_qty(qty)
            .map_err(|_| OrderError::AmountOverflow)?;
        total = total
            .checked_add(&line_total)
            .map_err(|_| OrderError::AmountOverflow)?;
        placed.push(PlacedLine {
            sku,
            qty,
            unit_price,
            line_total,
            discount: None,
            merchant_id,
        });
    }
    Ok((placed, total))
}

/// Puts each redemption's line discounts on the lines; checks that every code appears once,
/// that each redemption adds up to its discount, and that no line goes below zero. The
/// order's discount, or `None` without codes.
fn apply_discounts(
    lines: &mut [PlacedLine],
    promotions: &[Redemption],
) -> Result<Option<Money>, OrderError> {
    if promotions.is_empty() {
        return Ok(None);
    }
    if promotions.len() > MAX_CODES_PER_ORDER {
        return Err(OrderError::InvalidDiscount(format!(
            "at most {MAX_CODES_PER_ORDER} promotion codes per order"
        )));
    }
    let bad = |why: &str| OrderError::InvalidDiscount(why.to_string());
    let currency = lines
        .first()
        .ok_or(OrderError::EmptyOrder)?
        .unit_price
        .currency();
    let mut codes = BTreeSet::new();
    let mut total = Money::zero(currency);
    for r in promotions {
        if !codes.insert(&r.code) {
            return Err(bad("a promotion code appears twice"));
        }
        let mut sum = Money::zero(currency);
        for ld in &r.lines {
            let line = lines
                .iter_mut()
                .find(|l| l.sku == ld.sku)
                .ok_or_else(|| bad("a discount names a SKU the order does not have"))?;
            sum = sum.checked_add(&ld.amount).map_err(|_| bad("currency"))?;
            let now = line
                .discount
                .unwrap_or(Money::zero(currency))
                .checked_add(&ld.amount)
                .map_err(|_| bad("currency"))?;
            if now.amount_minor() > line.line_total.amount_minor() {
                return Err(bad("a line's discount exceeds the line"));
            }
            line.discount = Some(now);
        }
        if sum != r.discount {
            return Err(bad("a code's line discounts do not add up to its discount"));
        }
        total = total.checked_add(&sum).map_err(|_| bad("currency"))?;
    }
    Ok(Some(total))
}

/// The allocation must cover every ordered unit exactly once: per SKU the allocated
/// quantities add up to the ordered quantity, and no (sku, warehouse) pair repeats, because
/// reservations are idempotent per order and item, so a repeated pair would reserve only once.
fn check_allocation(lines: &[PlacedLine], allocation: &[Allocation]) -> Result<(), OrderError> {
    let mut pairs = BTreeSet::new();
    let mut allocated: BTreeMap<&Sku, u64> = BTreeMap::new();
    for entry in allocation {
        if !pairs.insert((&entry.sku, &entry.warehouse_id)) {
            return Err(OrderError::DuplicateAllocation {
                sku: entry.sku.clone(),
                warehouse_id: entry.warehouse_id.clone(),
            });
        }
        *allocated.entry(&entry.sku).or_default() += u64::from(entry.qty.get());
    }
    for line in lines {
        let ordered = u64::from(line.qty.get());
        let got = allocated.remove(&line.sku).unwrap_or(0);
        if got != ordered {
            return Err(OrderError::AllocationMismatch {
                sku: line.sku.clone(),
                ordered,
                allocated: got,
            });
        }
    }
    if let Some((sku, got)) = allocated.into_iter().next() {
        return Err(OrderError::AllocationMismatch {
            sku: sku.clone(),
            ordered: 0,
            allocated: got,
        });
    }
    Ok(())
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                shipping_region,
                total,
                payment_token,
                personal,
                discount,
                promotions,
            } => {
                self.discount = discount;
                self.promotions = promotions;
                self.order_id = Some(order_id);
                self.customer_id = Some(customer_id);
                self.lines = lines;
                self.shipping_region = Some(shipping_region);
                self.total = Some(total);
                self.payment_token = Some(payment_token);
                self.personal = personal;
                self.status = Some(OrderStatus::Pending);
            }
            OrderEvent::OrderHeldForReview {
                score,
                reasons,
                review_deadline_ms,
                ..
            } => {
                self.review = Some(Review {
                    score,
                    reasons,
                    review_deadline_ms,
                    approved: None,
                });
                self.status = Some(OrderStatus::UnderReview);
            }
            OrderEvent::OrderReviewApproved { .. } => {
                if let Some(r) = self.review.as_mut() {
                    r.approved = Some(true);
                }
                self.status = Some(OrderStatus::Pending);
            }
            OrderEvent::OrderConfirmed { allocation, .. } => {
                self.allocation = allocation;
                self.status = Some(OrderStatus::Confirmed);
            }
            OrderEvent::OrderRejected { reason, .. } => {
                if let Some(r) = self.review.as_mut().filter(|r| r.approved.is_none()) {
                    r.approved = Some(false);
                }
                self.reject_reason = Some(reason);
                self.status = Some(OrderStatus::Rejected);
            }
            OrderEvent::OrderCancelled { reason, .. } => {
                self.cancel_reason = reason;
                self.status = Some(OrderStatus::Cancelled);
            }
            OrderEvent::OrderShipped {
                shipment_id,
                warehouse_id,
                lines,
                amount,
                status,
                ..
            } => {
                self.shipments.push(Shipment {
                    shipment_id,
                    warehouse_id,
                    lines,
                    amount,
                });
                self.status = Some(status);
            }
            OrderEvent::ItemsReturned {
                return_id,
                reason,
                lines,
                amount,
                status,
                ..
            } => {
                self.returns.push(Return {
                    return_id,
                    reason,
                    lines,
                    amount,
                });
                self.status = Some(status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::fixtures::{
        customer_id, eur, order_id, qty, reason, region, sku, usd, warehouse_id,
    };
    use crate::values::MAX_AMOUNT_MINOR;

    type OrderTest = TestFramework<Order>;

    fn line(code: &str, n: i64, unit_price: Money) -> OrderLine {
        OrderLine {
            sku: sku(code),
            qty: qty(n),
            unit_price,
            merchant_id: None,
        }
    }

    fn place(lines: Vec<OrderLine>) -> OrderCommand {
        OrderCommand::PlaceOrder {
            order_id: order_id(1),
            customer_id: customer_id("cust-1"),
            lines,
            shipping_region: region("eu-west"),
            payment_token: "tok_visa".to_owned(),
            personal: None,
            promotions: vec![],
        }
    }

    fn standard_lines() -> Vec<OrderLine> {
        vec![line("LAMP-1", 2, eur(1999)), line("BULB-7", 3, eur(250))]
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: order_id(1),
            customer_id: customer_id("cust-1"),
            lines: vec![
                PlacedLine {
                    sku: sku("LAMP-1"),
                    qty: qty(2),
                    unit_price: eur(1999),
                    line_total: eur(3998),
                    discount: None,
                    merchant_id: None,
                },
                PlacedLine {
                    sku: sku("BULB-7"),
                    qty: qty(3),
                    unit_price: eur(250),
                    line_total: eur(750),
                    discount: None,
                    merchant_id: None,
                },
            ],
            shipping_region: region("eu-west"),
            total: eur(4748),
            payment_token: "tok_visa".to_owned(),
            personal: None,
            discount: None,
            promotions: vec![],
        }
    }

    fn alloc(code: &str, warehouse: &str, n: i64) -> Allocation {
        Allocation {
            sku: sku(code),
            warehouse_id: warehouse_id(warehouse),
            qty: qty(n),
        }
    }

    fn standard_allocation() -> Vec<Allocation> {
        vec![alloc("LAMP-1", "wh-1", 2), alloc("BULB-7", "wh-2", 3)]
    }

    fn confirmed() -> OrderEvent {
        OrderEvent::OrderConfirmed {
            order_id: order_id(1),
            allocation: standard_allocation(),
            total: eur(4748),
        }
    }

    fn rejected() -> OrderEvent {
        OrderEvent::OrderRejected {
            order_id: order_id(1),
            reason: reason("out of stock"),
        }
    }

    fn cancelled(previous_status: OrderStatus) -> OrderEvent {
        OrderEvent::OrderCancelled {
            order_id: order_id(1),
            reason: None,
            previous_status,
        }
    }

    fn confirm(allocation: Vec<Allocation>) -> OrderCommand {
        OrderCommand::ConfirmOrder { allocation }
    }

    fn reject() -> OrderCommand {
        OrderCommand::RejectOrder {
            reason: reason("out of stock"),
        }
    }

    fn cancel() -> OrderCommand {
        OrderCommand::CancelOrder { reason: None }
    }

    // --- placing ---

    #[test]
    fn placing_an_order_records_line_totals_and_the_order_total() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(standard_lines()))
            .then_expect_events(vec![placed()]);
    }

    #[test]
    fn placing_an_order_twice_is_rejected() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(place(standard_lines()))
            .then_expect_error(OrderError::AlreadyPlaced);
    }

    #[test]
    fn placing_an_order_without_lines_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![]))
            .then_expect_error(OrderError::EmptyOrder);
    }

    #[test]
    fn placing_an_order_with_more_than_100_lines_is_rejected() {
        let lines = (0..=MAX_LINES)
            .map(|i| line(&format!("SKU-{i}"), 1, eur(1)))
            .collect();
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(lines))
            .then_expect_error(OrderError::TooManyLines { max: 100 });
    }

    #[test]
    fn placing_an_order_with_exactly_100_lines_is_accepted() {
        let lines = (0..MAX_LINES)
            .map(|i| line(&format!("SKU-{i}"), 1, eur(1)))
            .collect();
        let events = OrderTest::with(())
            .given_no_previous_events()
            .when(place(lines))
            .inspect_result()
            .unwrap();
        assert!(matches!(
            &events[..],
            [OrderEvent::OrderPlaced { lines, total, .. }]
                if lines.len() == MAX_LINES && *total == eur(100)
        ));
    }

    #[test]
    fn placing_an_order_with_the_same_sku_on_two_lines_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![
                line("LAMP-1", 1, eur(1999)),
                line("LAMP-1", 1, eur(1999)),
            ]))
            .then_expect_error(OrderError::DuplicateLine { sku: sku("LAMP-1") });
    }

    #[test]
    fn placing_an_order_priced_in_two_currencies_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![
                line("LAMP-1", 1, eur(1999)),
                line("BULB-7", 1, usd(250)),
            ]))
            .then_expect_error(OrderError::MixedCurrencies {
                expected: eur(0).currency(),
                got: usd(0).currency(),
            });
    }

    #[test]
    fn placing_an_order_whose_line_total_exceeds_the_maximum_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![line("LAMP-1", 2, eur(MAX_AMOUNT_MINOR))]))
            .then_expect_error(OrderError::AmountOverflow);
    }

    #[test]
    fn placing_an_order_whose_total_exceeds_the_maximum_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(vec![
                line("LAMP-1", 1, eur(MAX_AMOUNT_MINOR)),
                line("BULB-7", 1, eur(1)),
            ]))
            .then_expect_error(OrderError::AmountOverflow);
    }

    #[test]
    fn placing_an_order_with_a_malformed_payment_token_is_rejected() {
        for token in [
            "",
            "tok visa",
            "tok\n",
            &"t".repeat(MAX_PAYMENT_TOKEN_LEN + 1),
        ] {
            OrderTest::with(())
                .given_no_previous_events()
                .when(OrderCommand::PlaceOrder {
                    order_id: order_id(1),
                    customer_id: customer_id("cust-1"),
                    lines: standard_lines(),
                    shipping_region: region("eu-west"),
                    payment_token: token.to_owned(),
                    personal: None,
                    promotions: vec![],
                })
                .then_expect_error(OrderError::InvalidPaymentToken);
        }
    }

    // --- before placing ---

    #[test]
    fn confirming_an_order_that_was_never_placed_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(confirm(standard_allocation()))
            .then_expect_error(OrderError::NotPlaced);
    }

    #[test]
    fn rejecting_an_order_that_was_never_placed_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(reject())
            .then_expect_error(OrderError::NotPlaced);
    }

    #[test]
    fn cancelling_an_order_that_was_never_placed_is_rejected() {
        OrderTest::with(())
            .given_no_previous_events()
            .when(cancel())
            .then_expect_error(OrderError::NotPlaced);
    }

    // --- confirming ---

    #[test]
    fn confirming_a_pending_order_records_the_allocation_and_total() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(confirm(standard_allocation()))
            .then_expect_events(vec![confirmed()]);
    }

    #[test]
    fn confirming_with_a_sku_split_across_warehouses_is_accepted() {
        let allocation = vec![
            alloc("LAMP-1", "wh-1", 1),
            alloc("LAMP-1", "wh-2", 1),
            alloc("BULB-7", "wh-2", 3),
        ];
        OrderTest::with(())
            .given(vec![placed()])
            .when(confirm(allocation.clone()))
            .then_expect_events(vec![OrderEvent::OrderConfirmed {
                order_id: order_id(1),
                allocation,
                total: eur(4748),
            }]);
    }

    #[test]
    fn confirming_with_fewer_units_allocated_than_ordered_is_rejected() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(confirm(vec![
                alloc("LAMP-1", "wh-1", 1),
                alloc("BULB-7", "wh-2", 3),
            ]))
            .then_expect_error(OrderError::AllocationMismatch {
                sku: sku("LAMP-1"),
                ordered: 2,
                allocated: 1,
            });
    }

    #[test]
    fn confirming_with_more_units_allocated_than_ordered_is_rejected() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(confirm(vec![
                alloc("LAMP-1", "wh-1", 2),
                alloc("BULB-7", "wh-2", 3),
                alloc("BULB-7", "wh-3", 1),
            ]))
            .then_expect_error(OrderError::AllocationMismatch {
                sku: sku("BULB-7"),
                ordered: 3,
                allocated: 4,
            });
    }

    #[test]
    fn confirming_with_an_ordered_sku_left_out_is_rejected() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(confirm(vec![alloc("LAMP-1", "wh-1", 2)]))
            .then_expect_error(OrderError::AllocationMismatch {
                sku: sku("BULB-7"),
                ordered: 3,
                allocated: 0,
            });
    }

    #[test]
    fn confirming_with_a_sku_that_was_not_ordered_is_rejected() {
        let mut allocation = standard_allocation();
        allocation.push(alloc("CHAIR-9", "wh-1", 1));
        OrderTest::with(())
            .given(vec![placed()])
            .when(confirm(allocation))
            .then_expect_error(OrderError::AllocationMismatch {
                sku: sku("CHAIR-9"),
                ordered: 0,
                allocated: 1,
            });
    }

    #[test]
    fn confirming_with_the_same_sku_and_warehouse_twice_is_rejected() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(confirm(vec![
                alloc("LAMP-1", "wh-1", 1),
                alloc("LAMP-1", "wh-1", 1),
                alloc("BULB-7", "wh-2", 3),
            ]))
            .then_expect_error(OrderError::DuplicateAllocation {
                sku: sku("LAMP-1"),
                warehouse_id: warehouse_id("wh-1"),
            });
    }

    #[test]
    fn confirming_a_confirmed_order_is_rejected() {
        OrderTest::with(())
            .given(vec![placed(), confirmed()])
            .when(confirm(standard_allocation()))
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Confirmed,
                action: OrderAction::Confirm,
            });
    }

    #[test]
    fn confirming_a_rejected_order_is_rejected() {
        OrderTest::with(())
            .given(vec![placed(), rejected()])
            .when(confirm(standard_allocation()))
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Rejected,
                action: OrderAction::Confirm,
            });
    }

    // --- rejecting ---

    #[test]
    fn rejecting_a_pending_order_records_the_reason() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(reject())
            .then_expect_events(vec![rejected()]);
    }

    #[test]
    fn rejecting_a_confirmed_order_is_rejected() {
        OrderTest::with(())
            .given(vec![placed(), confirmed()])
            .when(reject())
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Confirmed,
                action: OrderAction::Reject,
            });
    }

    #[test]
    fn rejecting_a_cancelled_order_is_rejected() {
        OrderTest::with(())
            .given(vec![placed(), cancelled(OrderStatus::Pending)])
            .when(reject())
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Cancelled,
                action: OrderAction::Reject,
            });
    }

    // --- cancelling ---

    #[test]
    fn cancelling_a_pending_order_records_that_it_was_pending() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::CancelOrder {
                reason: Some(reason("changed my mind")),
            })
            .then_expect_events(vec![OrderEvent::OrderCancelled {
                order_id: order_id(1),
                reason: Some(reason("changed my mind")),
                previous_status: OrderStatus::Pending,
            }]);
    }

    #[test]
    fn cancelling_a_confirmed_order_records_that_it_was_confirmed() {
        OrderTest::with(())
            .given(vec![placed(), confirmed()])
            .when(cancel())
            .then_expect_events(vec![cancelled(OrderStatus::Confirmed)]);
    }

    #[test]
    fn cancelling_a_cancelled_order_is_rejected() {
        OrderTest::with(())
            .given(vec![placed(), cancelled(OrderStatus::Pending)])
            .when(cancel())
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Cancelled,
                action: OrderAction::Cancel,
            });
    }

    #[test]
    fn cancelling_a_rejected_order_is_rejected() {
        OrderTest::with(())
            .given(vec![placed(), rejected()])
            .when(cancel())
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Rejected,
                action: OrderAction::Cancel,
            });
    }

    // --- state, statuses and contracts ---

    #[test]
    fn applying_order_events_updates_the_getters() {
        let mut order = Order::default();
        assert!(!order.is_placed());
        assert_eq!(order.status(), None);

        order.apply(placed());
        assert_eq!(order.status(), Some(OrderStatus::Pending));
        assert_eq!(order.order_id(), Some(order_id(1)));
        assert_eq!(order.customer_id(), Some(&customer_id("cust-1")));
        assert_eq!(order.lines().len(), 2);
        assert_eq!(order.total(), Some(&eur(4748)));
        assert_eq!(order.shipping_region(), Some(&region("eu-west")));
        assert_eq!(order.payment_token(), Some("tok_visa"));
        assert!(order.allocation().is_empty());

        order.apply(confirmed());
        assert_eq!(order.status(), Some(OrderStatus::Confirmed));
        assert_eq!(order.allocation(), &standard_allocation()[..]);

        order.apply(OrderEvent::OrderCancelled {
            order_id: order_id(1),
            reason: Some(reason("too slow")),
            previous_status: OrderStatus::Confirmed,
        });
        assert_eq!(order.status(), Some(OrderStatus::Cancelled));
        assert_eq!(order.cancel_reason(), Some(&reason("too slow")));
    }

    #[test]
    fn applying_a_rejection_exposes_the_reason() {
        let mut order = Order::default();
        order.apply(placed());
        order.apply(rejected());
        assert_eq!(order.status(), Some(OrderStatus::Rejected));
        assert_eq!(order.reject_reason(), Some(&reason("out of stock")));
    }

    #[test]
    fn only_rejected_and_cancelled_orders_are_terminal() {
        assert!(!OrderStatus::Pending.is_terminal());
        assert!(!OrderStatus::Confirmed.is_terminal());
        assert!(OrderStatus::Rejected.is_terminal());
        assert!(OrderStatus::Cancelled.is_terminal());
    }

    #[test]
    fn order_statuses_and_actions_serialise_in_lowercase() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<OrderStatus>(&json).unwrap(), status);
        }
        assert_eq!(
            serde_json::to_string(&OrderAction::Cancel).unwrap(),
            "\"cancel\""
        );
        assert_eq!(
            OrderError::IllegalTransition {
                from: OrderStatus::Rejected,
                action: OrderAction::Confirm
            }
            .to_string(),
            "cannot confirm an order that is rejected"
        );
    }

    #[test]
    fn order_events_are_named_after_their_variant_at_version_1_0() {
        assert_eq!(placed().event_type(), "OrderPlaced");
        assert_eq!(confirmed().event_type(), "OrderConfirmed");
        assert_eq!(rejected().event_type(), "OrderRejected");
        assert_eq!(
            cancelled(OrderStatus::Pending).event_type(),
            "OrderCancelled"
        );
        assert_eq!(placed().event_version(), "1.0");
    }

    #[test]
    fn order_events_survive_a_serde_round_trip() {
        for event in [
            placed(),
            confirmed(),
            rejected(),
            cancelled(OrderStatus::Confirmed),
        ] {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<OrderEvent>(&json).unwrap(), event);
        }
        let json = serde_json::to_value(cancelled(OrderStatus::Confirmed)).unwrap();
        assert_eq!(json["OrderCancelled"]["previous_status"], "confirmed");
    }

    fn confirmed_two_warehouses() -> Vec<OrderEvent> {
        let lines = vec![line("LAMP-1", 3, eur(250)), line("BULB-7", 1, eur(99))];
        let (placed, total) = price_lines(lines).unwrap();
        vec![
            OrderEvent::OrderPlaced {
                order_id: order_id(1),
                customer_id: customer_id("c-1"),
                lines: placed,
                shipping_region: region("eu-west"),
                total,
                payment_token: "tok_ok".into(),
                personal: None,
                discount: None,
                promotions: vec![],
            },
            OrderEvent::OrderConfirmed {
                order_id: order_id(1),
                allocation: vec![
                    Allocation {
                        sku: sku("LAMP-1"),
                        warehouse_id: warehouse_id("wh-a"),
                        qty: qty(2),
                    },
                    Allocation {
                        sku: sku("LAMP-1"),
                        warehouse_id: warehouse_id("wh-b"),
                        qty: qty(1),
                    },
                    Allocation {
                        sku: sku("BULB-7"),
                        warehouse_id: warehouse_id("wh-b"),
                        qty: qty(1),
                    },
                ],
                total,
            },
        ]
    }

    fn ship(id: u128, wh: &str, lines: &[(&str, i64)]) -> OrderCommand {
        OrderCommand::ShipOrder {
            shipment_id: Uuid::from_u128(id),
            warehouse_id: warehouse_id(wh),
            lines: lines
                .iter()
                .map(|(s, n)| crate::order::ShipmentLine {
                    sku: sku(s),
                    qty: qty(*n),
                })
                .collect(),
        }
    }

    fn fold(events: Vec<OrderEvent>) -> Order {
        let mut o = Order::default();
        events.into_iter().for_each(|e| o.apply(e));
        o
    }

    fn decide_all(mut events: Vec<OrderEvent>, commands: Vec<OrderCommand>) -> Vec<OrderEvent> {
        for c in commands {
            let e = fold(events.clone()).decide(c).unwrap();
            events.push(e);
        }
        events
    }

    #[test]
    fn shipments_capture_exactly_the_order_total_and_end_shipped() {
        let events = decide_all(
            confirmed_two_warehouses(),
            vec![
                ship(1, "wh-a", &[("LAMP-1", 2)]),
                ship(2, "wh-b", &[("LAMP-1", 1), ("BULB-7", 1)]),
            ],
        );
        let order = fold(events);
        assert_eq!(order.status(), Some(OrderStatus::Shipped));
        let captured: i64 = order
            .shipments()
            .iter()
            .map(|s| s.amount.amount_minor())
            .sum();
        assert_eq!(captured, order.total().unwrap().amount_minor());
        assert_eq!(order.shipments()[0].amount, eur(500));
    }

    #[test]
    fn a_shipment_beyond_the_allocation_or_from_another_warehouse_is_refused() {
        let order = fold(confirmed_two_warehouses());
        assert_eq!(
            order.decide(ship(1, "wh-a", &[("LAMP-1", 3)])),
            Err(OrderError::ExceedsAllocation {
                sku: sku("LAMP-1"),
                warehouse_id: warehouse_id("wh-a"),
                requested: 3,
                remaining: 2,
            })
        );
        assert_eq!(
            order.decide(ship(1, "wh-a", &[("BULB-7", 1)])),
            Err(OrderError::NotAllocated {
                sku: sku("BULB-7"),
                warehouse_id: warehouse_id("wh-a"),
            })
        );
        let shipped = fold(decide_all(
            confirmed_two_warehouses(),
            vec![ship(1, "wh-a", &[("LAMP-1", 2)])],
        ));
        assert_eq!(
            shipped.decide(ship(1, "wh-b", &[("LAMP-1", 1)])),
            Err(OrderError::DuplicateShipment(Uuid::from_u128(1)))
        );
    }

    #[test]
    fn a_cancelled_order_cannot_ship_and_a_cancel_after_a_shipment_keeps_what_shipped() {
        let cancelled = fold(decide_all(
            confirmed_two_warehouses(),
            vec![OrderCommand::CancelOrder { reason: None }],
        ));
        assert_eq!(
            cancelled.decide(ship(1, "wh-a", &[("LAMP-1", 1)])),
            Err(OrderError::IllegalTransition {
                from: OrderStatus::Cancelled,
                action: OrderAction::Ship,
            })
        );
        let partly = fold(decide_all(
            confirmed_two_warehouses(),
            vec![
                ship(1, "wh-a", &[("LAMP-1", 2)]),
                OrderCommand::CancelOrder { reason: None },
            ],
        ));
        assert_eq!(partly.status(), Some(OrderStatus::Cancelled));
        assert_eq!(
            partly.unshipped(),
            vec![
                (sku("LAMP-1"), warehouse_id("wh-b"), 1),
                (sku("BULB-7"), warehouse_id("wh-b"), 1)
            ]
        );
    }

    #[test]
    fn returns_refund_the_unit_price_and_never_exceed_what_shipped() {
        let ret = |id: u128, n: i64| OrderCommand::ReturnItems {
            return_id: Uuid::from_u128(id),
            reason: reason("damaged"),
            lines: vec![crate::order::ReturnLine {
                sku: sku("LAMP-1"),
                qty: qty(n),
                restock: true,
                warehouse_id: warehouse_id("wh-a"),
            }],
        };
        let events = decide_all(
            confirmed_two_warehouses(),
            vec![ship(1, "wh-a", &[("LAMP-1", 1)]), ret(5, 1)],
        );
        let order = fold(events);
        assert_eq!(order.status(), Some(OrderStatus::PartiallyReturned));
        assert_eq!(order.returns()[0].amount, eur(250));
        assert_eq!(
            order.decide(ret(6, 1)),
            Err(OrderError::ExceedsShipped {
                sku: sku("LAMP-1"),
                requested: 1,
                remaining: 0,
            })
        );
    }

    // --- promotions ---

    fn redemption(code: &str, lines: &[(&str, i64)]) -> Redemption {
        let lines: Vec<crate::promotion::LineDiscount> = lines
            .iter()
            .map(|(s, a)| crate::promotion::LineDiscount {
                sku: sku(s),
                amount: eur(*a),
            })
            .collect();
        Redemption {
            code: crate::values::PromoCode::parse(code).unwrap(),
            discount: eur(lines.iter().map(|l| l.amount.amount_minor()).sum()),
            lines,
        }
    }

    fn place_with(promotions: Vec<Redemption>) -> OrderCommand {
        let OrderCommand::PlaceOrder {
            order_id,
            customer_id,
            lines,
            shipping_region,
            payment_token,
            personal,
            ..
        } = place(standard_lines())
        else {
            unreachable!()
        };
        OrderCommand::PlaceOrder {
            order_id,
            customer_id,
            lines,
            shipping_region,
            payment_token,
            personal,
            promotions,
        }
    }

    #[test]
    fn codes_discount_their_lines_and_the_total_is_what_is_left() {
        let promotions = vec![
            redemption("TEN", &[("LAMP-1", 400), ("BULB-7", 75)]),
            redemption("FIVER", &[("BULB-7", 500)]),
        ];
        let OrderEvent::OrderPlaced {
            lines,
            total,
            discount,
            ..
        } = placed()
        else {
            unreachable!()
        };
        let mut lines = lines;
        lines[0].discount = Some(eur(400));
        lines[1].discount = Some(eur(575));
        let OrderEvent::OrderPlaced {
            order_id,
            customer_id,
            shipping_region,
            payment_token,
            personal,
            ..
        } = placed()
        else {
            unreachable!()
        };
        assert_eq!((total, discount), (eur(4748), None));
        OrderTest::with(())
            .given_no_previous_events()
            .when(place_with(promotions.clone()))
            .then_expect_events(vec![OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                shipping_region,
                total: eur(4748 - 975),
                payment_token,
                personal,
                discount: Some(eur(975)),
                promotions,
            }]);
    }

    #[test]
    fn a_discount_beyond_its_line_or_on_an_unknown_line_is_refused() {
        for bad in [
            vec![redemption("BIG", &[("BULB-7", 751)])],
            vec![
                redemption("AA", &[("BULB-7", 700)]),
                redemption("BB", &[("BULB-7", 51)]),
            ],
            vec![redemption("XX", &[("NOPE-1", 1)])],
            vec![
                redemption("XX", &[("BULB-7", 1)]),
                redemption("XX", &[("LAMP-1", 1)]),
            ],
        ] {
            let result = OrderTest::with(())
                .given_no_previous_events()
                .when(place_with(bad))
                .inspect_result();
            assert!(
                matches!(result, Err(OrderError::InvalidDiscount(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn shipments_and_returns_of_a_discounted_line_add_up_to_its_net_total() {
        // 3 units at 2.50 with 1.00 off: captures 2.17 (⌊100·1/3⌋ = 33 off), 2.17, 2.16.
        let lines = vec![line("LAMP-1", 3, eur(250))];
        let (mut placed_lines, subtotal) = price_lines(lines).unwrap();
        placed_lines[0].discount = Some(eur(100));
        let events = vec![
            OrderEvent::OrderPlaced {
                order_id: order_id(1),
                customer_id: customer_id("c-1"),
                lines: placed_lines,
                shipping_region: region("eu-west"),
                total: subtotal.checked_sub(&eur(100)).unwrap(),
                payment_token: "tok_ok".into(),
                personal: None,
                discount: Some(eur(100)),
                promotions: vec![redemption("CC", &[("LAMP-1", 100)])],
            },
            OrderEvent::OrderConfirmed {
                order_id: order_id(1),
                allocation: vec![alloc("LAMP-1", "wh-a", 3)],
                total: eur(650),
            },
        ];
        let mut order = Order::default();
        for e in events {
            order.apply(e);
        }
        let mut captured = 0;
        for _ in 0..3 {
            let e = order
                .decide(OrderCommand::ShipOrder {
                    shipment_id: Uuid::now_v7(),
                    warehouse_id: warehouse_id("wh-a"),
                    lines: vec![ShipmentLine {
                        sku: sku("LAMP-1"),
                        qty: qty(1),
                    }],
                })
                .unwrap();
            if let OrderEvent::OrderShipped { amount, .. } = &e {
                captured += amount.amount_minor();
            }
            order.apply(e);
        }
        assert_eq!(captured, 650);
        let e = order
            .decide(OrderCommand::ReturnItems {
                return_id: Uuid::now_v7(),
                reason: reason("broken"),
                lines: vec![ReturnLine {
                    sku: sku("LAMP-1"),
                    qty: qty(3),
                    restock: true,
                    warehouse_id: warehouse_id("wh-a"),
                }],
            })
            .unwrap();
        let OrderEvent::ItemsReturned { amount, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(amount, eur(650));
    }

    // --- fraud review ---

    fn held() -> OrderEvent {
        OrderEvent::OrderHeldForReview {
            order_id: order_id(1),
            score: 80,
            reasons: vec![reason("order value 4748 at or above 1000")],
            review_deadline_ms: 5_000,
        }
    }

    #[test]
    fn a_held_order_waits_for_review_and_can_be_approved_once() {
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::HoldForReview {
                score: 80,
                reasons: vec![reason("order value 4748 at or above 1000")],
                review_deadline_ms: 5_000,
            })
            .then_expect_events(vec![held()]);
        OrderTest::with(())
            .given(vec![placed(), held()])
            .when(confirm(standard_allocation()))
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::UnderReview,
                action: OrderAction::Confirm,
            });
        OrderTest::with(())
            .given(vec![placed(), held()])
            .when(OrderCommand::ReviewOrder {
                approve: true,
                note: None,
            })
            .then_expect_events(vec![OrderEvent::OrderReviewApproved {
                order_id: order_id(1),
                note: None,
            }]);
        // Approved: pending again, confirmable, and never held a second time.
        let approved = OrderEvent::OrderReviewApproved {
            order_id: order_id(1),
            note: None,
        };
        OrderTest::with(())
            .given(vec![placed(), held(), approved.clone()])
            .when(confirm(standard_allocation()))
            .then_expect_events(vec![confirmed()]);
        OrderTest::with(())
            .given(vec![placed(), held(), approved])
            .when(OrderCommand::HoldForReview {
                score: 90,
                reasons: vec![],
                review_deadline_ms: 9_000,
            })
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Pending,
                action: OrderAction::Hold,
            });
    }

    #[test]
    fn a_rejected_review_rejects_the_order_and_a_held_order_can_be_cancelled() {
        OrderTest::with(())
            .given(vec![placed(), held()])
            .when(OrderCommand::ReviewOrder {
                approve: false,
                note: Some(reason("stolen card")),
            })
            .then_expect_events(vec![OrderEvent::OrderRejected {
                order_id: order_id(1),
                reason: reason("rejected in fraud review: stolen card"),
            }]);
        OrderTest::with(())
            .given(vec![placed()])
            .when(OrderCommand::ReviewOrder {
                approve: true,
                note: None,
            })
            .then_expect_error(OrderError::IllegalTransition {
                from: OrderStatus::Pending,
                action: OrderAction::Review,
            });
        OrderTest::with(())
            .given(vec![placed(), held()])
            .when(OrderCommand::CancelOrder { reason: None })
            .then_expect_events(vec![cancelled(OrderStatus::UnderReview)]);
    }
}
