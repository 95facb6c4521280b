//! The promotion aggregate: checks its terms when created, and decides each redemption's
//! discount under its limits.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{
    Benefit, LineDiscount, PricedLine, PromotionCommand, PromotionError, PromotionEvent,
    PromotionTerms, Redemption,
};
use crate::values::{CustomerId, Money, OrderId, PromoCode};

/// Most codes one order may carry.
pub const MAX_CODES_PER_ORDER: usize = 5;

/// Most SKUs, most categories and most merchants one promotion's scope may list.
pub const MAX_SCOPE_ENTRIES: usize = 100;

/// A promotion code. `Default` is the code not created yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    code: Option<PromoCode>,
    terms: Option<PromotionTerms>,
    uses: u32,
    /// Standing redemptions by order: what makes `Redeem` idempotent and `Release` exact.
    redemptions: imbl::OrdMap<OrderId, (CustomerId, Redemption)>,
    per_customer: imbl::OrdMap<CustomerId, u32>,
}

impl Promotion {
    #[must_use]
    pub fn code(&self) -> Option<&PromoCode> {
        self.code.as_ref()
    }

    #[must_use]
    pub fn terms(&self) -> Option<&PromotionTerms> {
        self.terms.as_ref()
    }

    /// Standing redemptions (released ones not counted).
    #[must_use]
    pub fn uses(&self) -> u32 {
        self.uses
    }

    /// The standing redemption of `order_id`, if any.
    #[must_use]
    pub fn redemption_of(&self, order_id: &OrderId) -> Option<&Redemption> {
        self.redemptions.get(order_id).map(|(_, r)| r)
    }

    fn decide(&self, command: PromotionCommand) -> Result<Option<PromotionEvent>, PromotionError> {
        match command {
            PromotionCommand::Create { code, terms } => {
                if self.code.is_some() {
                    return Err(PromotionError::AlreadyExists);
                }
                check_terms(&terms)?;
                Ok(Some(PromotionEvent::PromotionCreated { code, terms }))
            }
            PromotionCommand::Redeem {
                order_id,
                customer_id,
                at_ms,
                subtotal,
                lines,
            } => {
                let (Some(code), Some(terms)) = (&self.code, &self.terms) else {
                    return Err(PromotionError::NotFound);
                };
                if self.redemptions.contains_key(&order_id) {
                    return Ok(None);
                }
                if at_ms < terms.starts_at_ms || terms.ends_at_ms.is_some_and(|end| at_ms >= end) {
                    return Err(PromotionError::NotActive);
                }
                let currency = subtotal.currency();
                for m in terms.min_order.iter().chain(match &terms.benefit {
                    Benefit::AmountOff(a) => Some(a),
                    Benefit::PercentOff(_) => None,
                }) {
                    if m.currency() != currency {
                        return Err(PromotionError::WrongCurrency {
                            expected: m.currency(),
                            got: currency,
                        });
                    }
                }
                if let Some(min) = terms.min_order {
                    if subtotal.amount_minor() < min.amount_minor() {
                        return Err(PromotionError::BelowMinimum { min, subtotal });
                    }
                }
                let eligible: Vec<&PricedLine> = lines
                    .iter()
                    .filter(|l| terms.scope.covers(l) && !l.amount.is_zero())
                    .collect();
                if eligible.is_empty() {
                    return Err(PromotionError::NotApplicable);
                }
                if terms.max_uses.is_some_and(|max| self.uses >= max) {
                    return Err(PromotionError::Exhausted);
                }
                let used = self.per_customer.get(&customer_id).copied().unwrap_or(0);
                if terms.max_uses_per_customer.is_some_and(|max| used >= max) {
                    return Err(PromotionError::CustomerLimitReached);
                }
                let amounts: Vec<i64> = eligible.iter().map(|l| l.amount.amount_minor()).collect();
                let sum: i128 = amounts.iter().map(|a| i128::from(*a)).sum();
                let discount = match terms.benefit {
                    Benefit::PercentOff(p) => sum * i128::from(p) / 100,
                    Benefit::AmountOff(a) => i128::from(a.amount_minor()).min(sum),
                };
                let discount =
                    i64::try_from(discount).map_err(|_| PromotionError::AmountOverflow)?;
                let shares = split_discount(discount, &amounts);
                let mut line_discounts = Vec::with_capacity(eligible.len());
                for (line, share) in eligible.iter().zip(shares) {
                    if share > 0 {
                        line_discounts.push(LineDiscount {
                            sku: line.sku.clone(),
                            amount: Money::new(share, currency)
                                .map_err(|_| PromotionError::AmountOverflow)?,
                        });
                    }
                }
                Ok(Some(PromotionEvent::PromotionRedeemed {
                    code: code.clone(),
                    order_id,
                    customer_id,
                    redemption: Redemption {
                        code: code.clone(),
                        discount: Money::new(discount, currency)
                            .map_err(|_| PromotionError::AmountOverflow)?,
                        lines: line_discounts,
                    },
                    uses: self.uses + 1,
                }))
            }
            PromotionCommand::Release { order_id } => {
                let Some(code) = &self.code else {
                    return Err(PromotionError::NotFound);
                };
                Ok(self.redemptions.get(&order_id).map(|(customer_id, _)| {
                    PromotionEvent::PromotionReleased {
                        code: code.clone(),
                        order_id,
                        customer_id: customer_id.clone(),
                        uses: self.uses.saturating_sub(1),
                    }
                }))
            }
        }
    }
}

fn check_terms(terms: &PromotionTerms) -> Result<(), PromotionError> {
    match &terms.benefit {
        Benefit::PercentOff(p) if !(1..=100).contains(p) => {
            return Err(PromotionError::BadPercentage)
        }
        Benefit::AmountOff(a) if a.is_zero() => return Err(PromotionError::ZeroAmount),
        Benefit::AmountOff(a) => {
            if terms
                .min_order
                .is_some_and(|m| m.currency() != a.currency())
            {
                return Err(PromotionError::MixedCurrencies);
            }
        }
        Benefit::PercentOff(_) => {}
    }
    if terms
        .ends_at_ms
        .is_some_and(|end| end <= terms.starts_at_ms)
    {
        return Err(PromotionError::EmptyWindow);
    }
    if terms.max_uses == Some(0) || terms.max_uses_per_customer == Some(0) {
        return Err(PromotionError::ZeroLimit);
    }
    if terms.scope.skus.len() > MAX_SCOPE_ENTRIES
        || terms.scope.categories.len() > MAX_SCOPE_ENTRIES
        || terms.scope.merchants.len() > MAX_SCOPE_ENTRIES
    {
        return Err(PromotionError::ScopeTooLarge {
            max: MAX_SCOPE_ENTRIES,
        });
    }
    Ok(())
}

/// Splits `discount` over lines of `amounts` in proportion to them: each line first gets the
/// floor of its exact share, then the minor units left go one each to the lines with the
/// largest remainders (ties to the earlier line). The shares add up to `discount` exactly
/// and, when `discount` is at most the amounts' sum, no share exceeds its line.
#[must_use]
pub fn split_discount(discount: i64, amounts: &[i64]) -> Vec<i64> {
    let sum: i128 = amounts.iter().map(|a| i128::from(*a)).sum();
    if sum <= 0 || discount <= 0 {
        return vec![0; amounts.len()];
    }
    let d = i128::from(discount);
    let mut shares: Vec<i128> = amounts.iter().map(|a| d * i128::from(*a) / sum).collect();
    let mut left = d - shares.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..amounts.len()).collect();
    // Remainders as numerators over `sum`; a stable sort keeps ties in line order.
    order.sort_by_key(|&i| std::cmp::Reverse(d * i128::from(amounts[i]) % sum));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
        .into_iter()
        .map(|s| i64::try_from(s).unwrap_or(i64::MAX))
        .collect()
}

impl Aggregate for Promotion {
    const TYPE: &'static str = "Promotion";
    type Command = PromotionCommand;
    type Event = PromotionEvent;
    type Error = PromotionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PromotionEvent::PromotionCreated { code, terms } => {
                self.code = Some(code);
                self.terms = Some(terms);
            }
            PromotionEvent::PromotionRedeemed {
                order_id,
                customer_id,
                redemption,
                uses,
                ..
            } => {
                self.uses = uses;
                *self.per_customer.entry(customer_id.clone()).or_insert(0) += 1;
                self.redemptions.insert(order_id, (customer_id, redemption));
            }
            PromotionEvent::PromotionReleased {
                order_id,
                customer_id,
                uses,
                ..
            } => {
                self.uses = uses;
                if let Some(n) = self.per_customer.get_mut(&customer_id) {
                    *n = n.saturating_sub(1);
                }
                self.redemptions.remove(&order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::fixtures::{category, customer_id, eur, order_id, sku, usd};
    use crate::promotion::Scope;

    type PromoTest = TestFramework<Promotion>;

    fn code() -> PromoCode {
        PromoCode::parse("SAVE10").unwrap()
    }

    fn terms(benefit: Benefit) -> PromotionTerms {
        PromotionTerms {
            benefit,
            min_order: None,
            scope: Scope::default(),
            starts_at_ms: 1_000,
            ends_at_ms: Some(10_000),
            max_uses: Some(2),
            max_uses_per_customer: Some(1),
        }
    }

    fn created(benefit: Benefit) -> PromotionEvent {
        PromotionEvent::PromotionCreated {
            code: code(),
            terms: terms(benefit),
        }
    }

    fn line(s: &str, cat: &str, amount: i64) -> PricedLine {
        PricedLine {
            sku: sku(s),
            category: Some(category(cat)),
            merchant_id: None,
            amount: eur(amount),
        }
    }

    fn redeem(order: u128, customer: &str, lines: Vec<PricedLine>) -> PromotionCommand {
        let sum = lines.iter().map(|l| l.amount.amount_minor()).sum();
        PromotionCommand::Redeem {
            order_id: order_id(order),
            customer_id: customer_id(customer),
            at_ms: 5_000,
            subtotal: eur(sum),
            lines,
        }
    }

    fn redeemed(
        order: u128,
        customer: &str,
        discount: i64,
        lines: &[(&str, i64)],
        uses: u32,
    ) -> PromotionEvent {
        PromotionEvent::PromotionRedeemed {
            code: code(),
            order_id: order_id(order),
            customer_id: customer_id(customer),
            redemption: Redemption {
                code: code(),
                discount: eur(discount),
                lines: lines
                    .iter()
                    .map(|(s, a)| LineDiscount {
                        sku: sku(s),
                        amount: eur(*a),
                    })
                    .collect(),
            },
            uses,
        }
    }

    #[test]
    fn a_percentage_is_rounded_down_and_split_exactly_over_the_lines() {
        // 10 % of 333 + 333 + 334 = 100; shares 33.3, 33.3, 33.4 → 33, 33, 34.
        PromoTest::with(())
            .given(vec![created(Benefit::PercentOff(10))])
            .when(redeem(
                1,
                "c1",
                vec![
                    line("A", "x", 333),
                    line("B", "x", 333),
                    line("C", "x", 334),
                ],
            ))
            .then_expect_events(vec![redeemed(
                1,
                "c1",
                100,
                &[("A", 33), ("B", 33), ("C", 34)],
                1,
            )]);
        // 15 % of 999 = 149.85 → 149.
        PromoTest::with(())
            .given(vec![created(Benefit::PercentOff(15))])
            .when(redeem(1, "c1", vec![line("A", "x", 999)]))
            .then_expect_events(vec![redeemed(1, "c1", 149, &[("A", 149)], 1)]);
    }

    #[test]
    fn a_fixed_amount_is_capped_at_the_eligible_lines_and_only_in_its_currency() {
        let mut t = terms(Benefit::AmountOff(eur(5_000)));
        t.scope.categories = vec![category("audio")];
        PromoTest::with(())
            .given(vec![PromotionEvent::PromotionCreated {
                code: code(),
                terms: t.clone(),
            }])
            .when(redeem(
                1,
                "c1",
                vec![line("A", "audio", 1_000), line("B", "books", 9_000)],
            ))
            .then_expect_events(vec![redeemed(1, "c1", 1_000, &[("A", 1_000)], 1)]);
        PromoTest::with(())
            .given(vec![PromotionEvent::PromotionCreated {
                code: code(),
                terms: t,
            }])
            .when(PromotionCommand::Redeem {
                order_id: order_id(1),
                customer_id: customer_id("c1"),
                at_ms: 5_000,
                subtotal: usd(1_000),
                lines: vec![PricedLine {
                    sku: sku("A"),
                    category: Some(category("audio")),
                    merchant_id: None,
                    amount: usd(1_000),
                }],
            })
            .then_expect_error(PromotionError::WrongCurrency {
                expected: eur(0).currency(),
                got: usd(0).currency(),
            });
    }

    #[test]
    fn a_merchant_scope_narrows_to_that_sellers_lines() {
        let merchant = |m: &str| crate::values::MerchantId::parse(m).unwrap();
        let mut t = terms(Benefit::PercentOff(10));
        t.scope.merchants = vec![merchant("acme"), merchant(crate::merchant::HOUSE)];
        t.scope.categories = vec![category("audio")];
        let sold_by = |s: &str, cat: &str, m: Option<&str>, amount: i64| PricedLine {
            merchant_id: m.map(merchant),
            ..line(s, cat, amount)
        };
        PromoTest::with(())
            .given(vec![PromotionEvent::PromotionCreated {
                code: code(),
                terms: t.clone(),
            }])
            .when(redeem(
                1,
                "c1",
                vec![
                    sold_by("A", "audio", Some("acme"), 1_000),
                    sold_by("B", "audio", Some("other"), 2_000),
                    sold_by("C", "books", Some("acme"), 3_000),
                    sold_by("D", "audio", None, 500),
                ],
            ))
            .then_expect_events(vec![redeemed(1, "c1", 150, &[("A", 100), ("D", 50)], 1)]);
        PromoTest::with(())
            .given(vec![PromotionEvent::PromotionCreated {
                code: code(),
                terms: t,
            }])
            .when(redeem(
                1,
                "c1",
                vec![sold_by("B", "audio", Some("other"), 2_000)],
            ))
            .then_expect_error(PromotionError::NotApplicable);
        let mut big = terms(Benefit::PercentOff(10));
        big.scope.merchants = (0..=MAX_SCOPE_ENTRIES)
            .map(|i| merchant(&format!("m{i}")))
            .collect();
        PromoTest::with(())
            .given_no_previous_events()
            .when(PromotionCommand::Create {
                code: code(),
                terms: big,
            })
            .then_expect_error(PromotionError::ScopeTooLarge {
                max: MAX_SCOPE_ENTRIES,
            });
    }

    #[test]
    fn limits_window_minimum_and_scope_are_enforced() {
        PromoTest::with(())
            .given(vec![
                created(Benefit::PercentOff(10)),
                redeemed(1, "c1", 10, &[("A", 10)], 1),
                redeemed(2, "c2", 10, &[("A", 10)], 2),
            ])
            .when(redeem(3, "c3", vec![line("A", "x", 100)]))
            .then_expect_error(PromotionError::Exhausted);
        PromoTest::with(())
            .given(vec![
                created(Benefit::PercentOff(10)),
                redeemed(1, "c1", 10, &[("A", 10)], 1),
            ])
            .when(redeem(2, "c1", vec![line("A", "x", 100)]))
            .then_expect_error(PromotionError::CustomerLimitReached);
        // A release gives the use back, to the code and to the customer.
        PromoTest::with(())
            .given(vec![
                created(Benefit::PercentOff(10)),
                redeemed(1, "c1", 10, &[("A", 10)], 1),
                PromotionEvent::PromotionReleased {
                    code: code(),
                    order_id: order_id(1),
                    customer_id: customer_id("c1"),
                    uses: 0,
                },
            ])
            .when(redeem(2, "c1", vec![line("A", "x", 100)]))
            .then_expect_events(vec![redeemed(2, "c1", 10, &[("A", 10)], 1)]);
        let mut late = redeem(1, "c1", vec![line("A", "x", 100)]);
        if let PromotionCommand::Redeem { at_ms, .. } = &mut late {
            *at_ms = 10_000;
        }
        PromoTest::with(())
            .given(vec![created(Benefit::PercentOff(10))])
            .when(late)
            .then_expect_error(PromotionError::NotActive);
        let mut t = terms(Benefit::PercentOff(10));
        t.min_order = Some(eur(5_000));
        PromoTest::with(())
            .given(vec![PromotionEvent::PromotionCreated {
                code: code(),
                terms: t,
            }])
            .when(redeem(1, "c1", vec![line("A", "x", 4_999)]))
            .then_expect_error(PromotionError::BelowMinimum {
                min: eur(5_000),
                subtotal: eur(4_999),
            });
        let mut t = terms(Benefit::PercentOff(10));
        t.scope.skus = vec![sku("Z")];
        PromoTest::with(())
            .given(vec![PromotionEvent::PromotionCreated {
                code: code(),
                terms: t,
            }])
            .when(redeem(1, "c1", vec![line("A", "x", 100)]))
            .then_expect_error(PromotionError::NotApplicable);
    }

    #[test]
    fn redeeming_twice_for_one_order_changes_nothing() {
        PromoTest::with(())
            .given(vec![
                created(Benefit::PercentOff(10)),
                redeemed(1, "c1", 10, &[("A", 10)], 1),
            ])
            .when(redeem(1, "c1", vec![line("A", "x", 100)]))
            .then_expect_events(vec![]);
        PromoTest::with(())
            .given(vec![created(Benefit::PercentOff(10))])
            .when(PromotionCommand::Release {
                order_id: order_id(9),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn bad_terms_are_refused() {
        for (t, e) in [
            (terms(Benefit::PercentOff(0)), PromotionError::BadPercentage),
            (
                terms(Benefit::PercentOff(101)),
                PromotionError::BadPercentage,
            ),
            (
                terms(Benefit::AmountOff(eur(0))),
                PromotionError::ZeroAmount,
            ),
            (
                PromotionTerms {
                    ends_at_ms: Some(1_000),
                    ..terms(Benefit::PercentOff(5))
                },
                PromotionError::EmptyWindow,
            ),
            (
                PromotionTerms {
                    max_uses: Some(0),
                    ..terms(Benefit::PercentOff(5))
                },
                PromotionError::ZeroLimit,
            ),
            (
                PromotionTerms {
                    min_order: Some(usd(1)),
                    ..terms(Benefit::AmountOff(eur(5)))
                },
                PromotionError::MixedCurrencies,
            ),
        ] {
            PromoTest::with(())
                .given_no_previous_events()
                .when(PromotionCommand::Create {
                    code: code(),
                    terms: t,
                })
                .then_expect_error(e);
        }
    }

    #[test]
    fn shares_always_add_up_and_never_exceed_their_line() {
        let mut seed = 7u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        for _ in 0..2_000 {
            let n = 1 + next(6) as usize;
            let amounts: Vec<i64> = (0..n).map(|_| next(100_000) as i64).collect();
            let sum: i64 = amounts.iter().sum();
            let discount = if sum == 0 {
                0
            } else {
                next(sum as u64 + 1) as i64
            };
            let shares = split_discount(discount, &amounts);
            assert_eq!(
                shares.iter().sum::<i64>(),
                if sum == 0 { 0 } else { discount }
            );
            for (s, a) in shares.iter().zip(&amounts) {
                assert!(*s >= 0 && s <= a, "{shares:?} over {amounts:?}");
            }
        }
    }
}
