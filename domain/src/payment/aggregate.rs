//! The payment aggregate: keeps captures within the authorisation and refunds within the
//! captures, in the authorisation's currency.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
use crate::values::{Money, OrderId};

/// The payment of one order. `Default` is the payment nothing has happened to yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    order_id: Option<OrderId>,
    status: PaymentStatus,
    authorized: Option<Money>,
    captured: Option<Money>,
    refunded: Option<Money>,
    /// References of the captures and refunds recorded (shipment and return ids).
    #[serde(default)]
    references: std::collections::BTreeSet<String>,
}

impl Payment {
    #[must_use]
    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    #[must_use]
    pub fn order_id(&self) -> Option<OrderId> {
        self.order_id
    }

    /// The authorised amount; `None` before authorisation.
    #[must_use]
    pub fn authorized(&self) -> Option<Money> {
        self.authorized
    }

    /// Captured so far (zero in the payment's currency until the first capture); `None`
    /// before authorisation.
    #[must_use]
    pub fn captured(&self) -> Option<Money> {
        self.captured.or_else(|| self.zero())
    }

    /// Refunded so far (zero until the first refund); `None` before authorisation.
    #[must_use]
    pub fn refunded(&self) -> Option<Money> {
        self.refunded.or_else(|| self.zero())
    }

    fn zero(&self) -> Option<Money> {
        self.authorized.map(|a| Money::zero(a.currency()))
    }

    /// The order id and authorised amount, if the payment is live (authorised, not voided).
    fn live(&self) -> Result<(OrderId, Money), PaymentError> {
        match (self.status, self.order_id, self.authorized) {
            (PaymentStatus::Voided, ..) => Err(PaymentError::AlreadyVoided),
            (PaymentStatus::Authorized, Some(order_id), Some(authorized)) => {
                Ok((order_id, authorized))
            }
            _ => Err(PaymentError::NotAuthorized),
        }
    }

    /// Checks an amount to capture or refund against the payment's currency and returns it.
    fn check_amount(authorized: Money, amount: Money) -> Result<Money, PaymentError> {
        if amount.is_zero() {
            return Err(PaymentError::ZeroAmount);
        }
        if amount.currency() != authorized.currency() {
            return Err(PaymentError::CurrencyMismatch {
                expected: authorized.currency(),
                got: amount.currency(),
            });
        }
        Ok(amount)
    }

    /// How much of `limit` is `used` (zero if nothing yet) and how much remains. The
    /// fallbacks never trigger on streams this aggregate wrote (same currency, used <= limit);
    /// they keep a corrupted stream from panicking, and the caller's range check then refuses.
    fn balance(limit: Money, used: Option<Money>) -> (Money, Money) {
        let zero = Money::zero(limit.currency());
        let used = used.unwrap_or(zero);
        (used, limit.checked_sub(&used).unwrap_or(zero))
    }

    /// The rules, synchronous and side-effect free.
    /// The authorised amount of a payment whose refunds are still possible: authorised, or
    /// voided after partial captures (the captured part stays refundable).
    fn refundable(&self) -> Result<(OrderId, Money), PaymentError> {
        match (self.status, self.order_id, self.authorized) {
            (PaymentStatus::Authorized | PaymentStatus::Voided, Some(order_id), Some(a)) => {
                Ok((order_id, a))
            }
            _ => Err(PaymentError::NotAuthorized),
        }
    }

    fn seen(&self, reference: Option<&String>) -> bool {
        reference.is_some_and(|r| self.references.contains(r))
    }

    fn decide(&self, command: PaymentCommand) -> Result<Option<PaymentEvent>, PaymentError> {
        match command {
            PaymentCommand::CapturePayment { reference, .. }
            | PaymentCommand::RefundPayment { reference, .. }
                if self.seen(reference.as_ref()) =>
            {
                Ok(None)
            }
            other => self.decide_new(other).map(Some),
        }
    }

    fn decide_new(&self, command: PaymentCommand) -> Result<PaymentEvent, PaymentError> {
        match command {
            PaymentCommand::AuthorizePayment { order_id, amount } => match self.status {
                PaymentStatus::New => Ok(PaymentEvent::PaymentAuthorized { order_id, amount }),
                PaymentStatus::Authorized => Err(PaymentError::AlreadyAuthorized),
                PaymentStatus::Voided => Err(PaymentError::AlreadyVoided),
            },
            PaymentCommand::CapturePayment { amount, reference } => {
                let (order_id, authorized) = self.live()?;
                let amount = Self::check_amount(authorized, amount)?;
                let (captured, remaining) = Self::balance(authorized, self.captured());
                let exceeded = PaymentError::CaptureExceedsAuthorized {
                    requested: amount,
                    remaining,
                };
                if amount.amount_minor() > remaining.amount_minor() {
                    return Err(exceeded);
                }
                let captured_total = captured.checked_add(&amount).map_err(|_| exceeded)?;
                Ok(PaymentEvent::PaymentCaptured {
                    order_id,
                    amount,
                    captured_total,
                    reference,
                })
            }
            PaymentCommand::VoidPayment => {
                let (order_id, authorized) = self.live()?;
                let (_, uncaptured) = Self::balance(authorized, self.captured());
                if uncaptured.is_zero() && !authorized.is_zero() {
                    return Err(PaymentError::AlreadyCaptured);
                }
                Ok(PaymentEvent::PaymentVoided {
                    order_id,
                    amount: uncaptured,
                })
            }
            PaymentCommand::RefundPayment { amount, reference } => {
                let (order_id, authorized) = self.refundable()?;
                let amount = Self::check_amount(authorized, amount)?;
                let captured = self
                    .captured()
                    .unwrap_or(Money::zero(authorized.currency()));
                let (refunded, remaining) = Self::balance(captured, self.refunded());
                let exceeded = PaymentError::RefundExceedsCaptured {
                    requested: amount,
                    remaining,
                };
                if amount.amount_minor() > remaining.amount_minor() {
                    return Err(exceeded);
                }
                let refunded_total = refunded.checked_add(&amount).map_err(|_| exceeded)?;
                Ok(PaymentEvent::PaymentRefunded {
                    order_id,
                    amount,
                    refunded_total,
                    reference,
                })
            }
        }
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "Payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
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
            PaymentEvent::PaymentAuthorized { order_id, amount } => {
                self.order_id = Some(order_id);
                self.authorized = Some(amount);
                self.status = PaymentStatus::Authorized;
            }
            PaymentEvent::PaymentCaptured {
                captured_total,
                reference,
                ..
            } => {
                self.captured = Some(captured_total);
                self.references.extend(reference);
            }
            PaymentEvent::PaymentVoided { .. } => {
                self.status = PaymentStatus::Voided;
            }
            PaymentEvent::PaymentRefunded {
                refunded_total,
                reference,
                ..
            } => {
                self.refunded = Some(refunded_total);
                self.references.extend(reference);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::fixtures::{eur, order_id, usd};

    type PaymentTest = TestFramework<Payment>;

    fn authorized(amount: i64) -> PaymentEvent {
        PaymentEvent::PaymentAuthorized {
            order_id: order_id(1),
            amount: eur(amount),
        }
    }

    fn captured(amount: i64, total: i64) -> PaymentEvent {
        PaymentEvent::PaymentCaptured {
            order_id: order_id(1),
            amount: eur(amount),
            captured_total: eur(total),
            reference: None,
        }
    }

    fn refunded(amount: i64, total: i64) -> PaymentEvent {
        PaymentEvent::PaymentRefunded {
            order_id: order_id(1),
            amount: eur(amount),
            refunded_total: eur(total),
            reference: None,
        }
    }

    fn voided() -> PaymentEvent {
        PaymentEvent::PaymentVoided {
            order_id: order_id(1),
            amount: eur(1000),
        }
    }

    fn authorize(amount: i64) -> PaymentCommand {
        PaymentCommand::AuthorizePayment {
            order_id: order_id(1),
            amount: eur(amount),
        }
    }

    fn capture(amount: Money) -> PaymentCommand {
        PaymentCommand::CapturePayment {
            amount,
            reference: None,
        }
    }

    fn refund(amount: Money) -> PaymentCommand {
        PaymentCommand::RefundPayment {
            amount,
            reference: None,
        }
    }

    // --- authorising ---

    #[test]
    fn authorizing_a_new_payment_records_the_amount() {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(authorize(1000))
            .then_expect_events(vec![authorized(1000)]);
    }

    #[test]
    fn authorizing_a_zero_amount_is_allowed_for_free_orders() {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(authorize(0))
            .then_expect_events(vec![authorized(0)]);
    }

    #[test]
    fn authorizing_twice_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000)])
            .when(authorize(1000))
            .then_expect_error(PaymentError::AlreadyAuthorized);
    }

    #[test]
    fn authorizing_a_voided_payment_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), voided()])
            .when(authorize(1000))
            .then_expect_error(PaymentError::AlreadyVoided);
    }

    // --- before authorising ---

    #[test]
    fn capturing_an_unauthorized_payment_is_rejected() {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(capture(eur(100)))
            .then_expect_error(PaymentError::NotAuthorized);
    }

    #[test]
    fn voiding_an_unauthorized_payment_is_rejected() {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(PaymentCommand::VoidPayment)
            .then_expect_error(PaymentError::NotAuthorized);
    }

    #[test]
    fn refunding_an_unauthorized_payment_is_rejected() {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(refund(eur(100)))
            .then_expect_error(PaymentError::NotAuthorized);
    }

    // --- capturing ---

    #[test]
    fn capturing_part_of_the_authorization_records_the_running_total() {
        PaymentTest::with(())
            .given(vec![authorized(1000), captured(300, 300)])
            .when(capture(eur(700)))
            .then_expect_events(vec![captured(700, 1000)]);
    }

    #[test]
    fn capturing_more_than_remains_authorized_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), captured(300, 300)])
            .when(capture(eur(701)))
            .then_expect_error(PaymentError::CaptureExceedsAuthorized {
                requested: eur(701),
                remaining: eur(700),
            });
    }

    #[test]
    fn capturing_zero_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000)])
            .when(capture(eur(0)))
            .then_expect_error(PaymentError::ZeroAmount);
    }

    #[test]
    fn capturing_in_another_currency_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000)])
            .when(capture(usd(100)))
            .then_expect_error(PaymentError::CurrencyMismatch {
                expected: eur(0).currency(),
                got: usd(0).currency(),
            });
    }

    #[test]
    fn capturing_a_voided_payment_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), voided()])
            .when(capture(eur(100)))
            .then_expect_error(PaymentError::AlreadyVoided);
    }

    // --- voiding ---

    #[test]
    fn voiding_an_uncaptured_payment_releases_the_authorization() {
        PaymentTest::with(())
            .given(vec![authorized(1000)])
            .when(PaymentCommand::VoidPayment)
            .then_expect_events(vec![voided()]);
    }

    #[test]
    fn voiding_after_a_partial_capture_releases_only_the_uncaptured_remainder() {
        PaymentTest::with(())
            .given(vec![authorized(1000), captured(1, 1)])
            .when(PaymentCommand::VoidPayment)
            .then_expect_events(vec![PaymentEvent::PaymentVoided {
                order_id: order_id(1),
                amount: eur(999),
            }]);
    }

    #[test]
    fn voiding_after_a_full_capture_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), captured(1000, 1000)])
            .when(PaymentCommand::VoidPayment)
            .then_expect_error(PaymentError::AlreadyCaptured);
    }

    #[test]
    fn a_capture_or_refund_with_a_known_reference_records_nothing() {
        let with_ref = |e: PaymentEvent| match e {
            PaymentEvent::PaymentCaptured {
                order_id,
                amount,
                captured_total,
                ..
            } => PaymentEvent::PaymentCaptured {
                order_id,
                amount,
                captured_total,
                reference: Some("s-1".into()),
            },
            other => other,
        };
        PaymentTest::with(())
            .given(vec![authorized(1000), with_ref(captured(400, 400))])
            .when(PaymentCommand::CapturePayment {
                amount: eur(400),
                reference: Some("s-1".into()),
            })
            .then_expect_events(vec![]);
        PaymentTest::with(())
            .given(vec![authorized(1000), with_ref(captured(400, 400))])
            .when(PaymentCommand::CapturePayment {
                amount: eur(600),
                reference: Some("s-2".into()),
            })
            .then_expect_events(vec![PaymentEvent::PaymentCaptured {
                order_id: order_id(1),
                amount: eur(600),
                captured_total: eur(1000),
                reference: Some("s-2".into()),
            }]);
    }

    #[test]
    fn what_was_captured_stays_refundable_after_the_remainder_is_voided() {
        PaymentTest::with(())
            .given(vec![
                authorized(1000),
                captured(400, 400),
                PaymentEvent::PaymentVoided {
                    order_id: order_id(1),
                    amount: eur(600),
                },
            ])
            .when(refund(eur(400)))
            .then_expect_events(vec![refunded(400, 400)]);
    }

    #[test]
    fn voiding_twice_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), voided()])
            .when(PaymentCommand::VoidPayment)
            .then_expect_error(PaymentError::AlreadyVoided);
    }

    // --- refunding ---

    #[test]
    fn refunding_part_of_the_capture_records_the_running_total() {
        PaymentTest::with(())
            .given(vec![
                authorized(1000),
                captured(800, 800),
                refunded(300, 300),
            ])
            .when(refund(eur(500)))
            .then_expect_events(vec![refunded(500, 800)]);
    }

    #[test]
    fn refunding_more_than_remains_captured_is_rejected() {
        PaymentTest::with(())
            .given(vec![
                authorized(1000),
                captured(800, 800),
                refunded(300, 300),
            ])
            .when(refund(eur(501)))
            .then_expect_error(PaymentError::RefundExceedsCaptured {
                requested: eur(501),
                remaining: eur(500),
            });
    }

    #[test]
    fn refunding_before_any_capture_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000)])
            .when(refund(eur(1)))
            .then_expect_error(PaymentError::RefundExceedsCaptured {
                requested: eur(1),
                remaining: eur(0),
            });
    }

    #[test]
    fn refunding_zero_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), captured(800, 800)])
            .when(refund(eur(0)))
            .then_expect_error(PaymentError::ZeroAmount);
    }

    #[test]
    fn refunding_in_another_currency_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), captured(800, 800)])
            .when(refund(usd(100)))
            .then_expect_error(PaymentError::CurrencyMismatch {
                expected: eur(0).currency(),
                got: usd(0).currency(),
            });
    }

    #[test]
    fn refunding_a_voided_payment_that_captured_nothing_is_rejected() {
        PaymentTest::with(())
            .given(vec![authorized(1000), voided()])
            .when(refund(eur(1)))
            .then_expect_error(PaymentError::RefundExceedsCaptured {
                requested: eur(1),
                remaining: eur(0),
            });
    }

    // --- state and contracts ---

    #[test]
    fn applying_payment_events_updates_the_running_totals() {
        let mut payment = Payment::default();
        assert_eq!(payment.status(), PaymentStatus::New);
        assert_eq!(payment.captured(), None);

        payment.apply(authorized(1000));
        assert_eq!(payment.status(), PaymentStatus::Authorized);
        assert_eq!(payment.order_id(), Some(order_id(1)));
        assert_eq!(payment.authorized(), Some(eur(1000)));
        assert_eq!(payment.captured(), Some(eur(0)));
        assert_eq!(payment.refunded(), Some(eur(0)));

        payment.apply(captured(600, 600));
        payment.apply(refunded(100, 100));
        assert_eq!(payment.captured(), Some(eur(600)));
        assert_eq!(payment.refunded(), Some(eur(100)));
    }

    #[test]
    fn applying_a_void_marks_the_payment_voided() {
        let mut payment = Payment::default();
        payment.apply(authorized(1000));
        payment.apply(voided());
        assert_eq!(payment.status(), PaymentStatus::Voided);
        assert_eq!(payment.status().as_str(), "voided");
    }

    #[test]
    fn payment_events_are_named_after_their_variant_at_version_1_0() {
        assert_eq!(authorized(1).event_type(), "PaymentAuthorized");
        assert_eq!(captured(1, 1).event_type(), "PaymentCaptured");
        assert_eq!(voided().event_type(), "PaymentVoided");
        assert_eq!(refunded(1, 1).event_type(), "PaymentRefunded");
        assert_eq!(voided().event_version(), "1.0");
    }

    #[test]
    fn payment_events_survive_a_serde_round_trip() {
        let event = captured(300, 300);
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"PaymentCaptured":{"order_id":"00000000-0000-0000-0000-000000000001","amount":{"amount_minor":300,"currency":"EUR"},"captured_total":{"amount_minor":300,"currency":"EUR"}}}"#
        );
        assert_eq!(serde_json::from_str::<PaymentEvent>(&json).unwrap(), event);
        assert_eq!(
            serde_json::to_string(&PaymentStatus::Authorized).unwrap(),
            "\"authorized\""
        );
    }
}
