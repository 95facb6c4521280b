//! The checkout saga's durable state: an event-sourced aggregate per order (id = order id,
//! type `"Checkout"`). Its events are the saga's steps, so they appear in the order's
//! timeline, and a restarted worker resumes from them. Every command is idempotent:
//! repeating a step records nothing. The saga itself (I/O, payment calls) lives in the
//! `sagas` crate; this is only its memory.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::order::Allocation;
use crate::values::OrderId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutCommand {
    Start {
        order_id: OrderId,
        deadline_ms: i64,
    },
    RecordReservation {
        allocation: Vec<Allocation>,
    },
    RecordAuthorization {
        amount_minor: i64,
        currency: String,
    },
    /// A held order was approved after its review: the payment gets a fresh deadline from
    /// now. Recorded once.
    Resume {
        deadline_ms: i64,
    },
    Complete,
    Fail {
        reason: String,
    },
    /// Everything the order held was given back after it was cancelled (before, during or
    /// after its checkout). Needs no started checkout; recorded once.
    Compensate {
        order_id: OrderId,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckoutEvent {
    /// The saga took the order; the payment must be authorized before `deadline_ms`.
    CheckoutStarted { order_id: OrderId, deadline_ms: i64 },
    /// Every allocated quantity is reserved.
    CheckoutStockReserved {
        order_id: OrderId,
        allocation: Vec<Allocation>,
    },
    CheckoutPaymentAuthorized {
        order_id: OrderId,
        amount_minor: i64,
        currency: String,
    },
    /// The order's fraud review approved it; the payment must be authorized before
    /// `deadline_ms`.
    CheckoutResumed { order_id: OrderId, deadline_ms: i64 },
    /// The order is confirmed.
    CheckoutCompleted { order_id: OrderId },
    /// The order was rejected (or cancelled) and everything held for it released.
    CheckoutFailed { order_id: OrderId, reason: String },
    /// The order was cancelled and everything it held (stock, payment) given back.
    CheckoutCompensated { order_id: OrderId },
}

impl DomainEvent for CheckoutEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CheckoutStarted { .. } => "CheckoutStarted",
            Self::CheckoutStockReserved { .. } => "CheckoutStockReserved",
            Self::CheckoutPaymentAuthorized { .. } => "CheckoutPaymentAuthorized",
            Self::CheckoutResumed { .. } => "CheckoutResumed",
            Self::CheckoutCompleted { .. } => "CheckoutCompleted",
            Self::CheckoutFailed { .. } => "CheckoutFailed",
            Self::CheckoutCompensated { .. } => "CheckoutCompensated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("the checkout has not started")]
    NotStarted,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Checkout {
    order_id: Option<OrderId>,
    deadline_ms: i64,
    allocation: Option<Vec<Allocation>>,
    authorized: bool,
    finished: Option<bool>,
    #[serde(default)]
    compensated: bool,
    #[serde(default)]
    resumed: bool,
}

impl Checkout {
    pub fn order_id(&self) -> Option<OrderId> {
        self.order_id
    }
    pub fn is_started(&self) -> bool {
        self.order_id.is_some()
    }
    pub fn deadline_ms(&self) -> i64 {
        self.deadline_ms
    }
    pub fn allocation(&self) -> Option<&[Allocation]> {
        self.allocation.as_deref()
    }
    pub fn is_authorized(&self) -> bool {
        self.authorized
    }
    /// `Some(true)` completed, `Some(false)` failed, `None` still running.
    pub fn finished(&self) -> Option<bool> {
        self.finished
    }
    /// Whether the checkout went on after a fraud review approved the order.
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }
    /// Whether a cancellation's compensation was recorded.
    pub fn is_compensated(&self) -> bool {
        self.compensated
    }
}

impl Aggregate for Checkout {
    const TYPE: &'static str = "Checkout";
    type Command = CheckoutCommand;
    type Event = CheckoutEvent;
    type Error = CheckoutError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CheckoutCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CheckoutError> {
        let event = match command {
            CheckoutCommand::Start {
                order_id,
                deadline_ms,
            } => {
                if self.is_started() {
                    return Ok(());
                }
                CheckoutEvent::CheckoutStarted {
                    order_id,
                    deadline_ms,
                }
            }
            CheckoutCommand::Compensate { order_id } => {
                if self.compensated {
                    return Ok(());
                }
                CheckoutEvent::CheckoutCompensated { order_id }
            }
            _ if self.finished.is_some() => return Ok(()),
            CheckoutCommand::RecordReservation { allocation } => {
                let order_id = self.order_id.ok_or(CheckoutError::NotStarted)?;
                if self.allocation.as_ref() == Some(&allocation) {
                    return Ok(());
                }
                CheckoutEvent::CheckoutStockReserved {
                    order_id,
                    allocation,
                }
            }
            CheckoutCommand::RecordAuthorization {
                amount_minor,
                currency,
            } => {
                let order_id = self.order_id.ok_or(CheckoutError::NotStarted)?;
                if self.authorized {
                    return Ok(());
                }
                CheckoutEvent::CheckoutPaymentAuthorized {
                    order_id,
                    amount_minor,
                    currency,
                }
            }
            CheckoutCommand::Resume { deadline_ms } => {
                let order_id = self.order_id.ok_or(CheckoutError::NotStarted)?;
                if self.resumed {
                    return Ok(());
                }
                CheckoutEvent::CheckoutResumed {
                    order_id,
                    deadline_ms,
                }
            }
            CheckoutCommand::Complete => CheckoutEvent::CheckoutCompleted {
                order_id: self.order_id.ok_or(CheckoutError::NotStarted)?,
            },
            CheckoutCommand::Fail { reason } => CheckoutEvent::CheckoutFailed {
                order_id: self.order_id.ok_or(CheckoutError::NotStarted)?,
                reason,
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: CheckoutEvent) {
        match event {
            CheckoutEvent::CheckoutStarted {
                order_id,
                deadline_ms,
            } => {
                self.order_id = Some(order_id);
                self.deadline_ms = deadline_ms;
            }
            CheckoutEvent::CheckoutStockReserved { allocation, .. } => {
                self.allocation = Some(allocation)
            }
            CheckoutEvent::CheckoutPaymentAuthorized { .. } => self.authorized = true,
            CheckoutEvent::CheckoutResumed { deadline_ms, .. } => {
                self.resumed = true;
                self.deadline_ms = deadline_ms;
            }
            CheckoutEvent::CheckoutCompleted { .. } => self.finished = Some(true),
            CheckoutEvent::CheckoutFailed { .. } => self.finished = Some(false),
            CheckoutEvent::CheckoutCompensated { order_id } => {
                self.order_id = self.order_id.or(Some(order_id));
                self.finished = self.finished.or(Some(false));
                self.compensated = true;
            }
        }
    }
}

impl crate::schema::EventSchema for CheckoutEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[
        ("CheckoutStarted", "1.0"),
        ("CheckoutStockReserved", "1.0"),
        ("CheckoutPaymentAuthorized", "1.0"),
        ("CheckoutResumed", "1.0"),
        ("CheckoutCompleted", "1.0"),
        ("CheckoutFailed", "1.0"),
        ("CheckoutCompensated", "1.0"),
    ];
}

impl CheckoutEvent {
    /// The order this checkout step belongs to (the aggregate id).
    #[must_use]
    pub fn order_id(&self) -> OrderId {
        match self {
            Self::CheckoutStarted { order_id, .. }
            | Self::CheckoutStockReserved { order_id, .. }
            | Self::CheckoutPaymentAuthorized { order_id, .. }
            | Self::CheckoutResumed { order_id, .. }
            | Self::CheckoutCompleted { order_id }
            | Self::CheckoutFailed { order_id, .. }
            | Self::CheckoutCompensated { order_id } => *order_id,
        }
    }

    /// Whether the checkout's run ended with this event (completed, failed, or compensated
    /// after a cancel).
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::CheckoutCompleted { .. }
                | Self::CheckoutFailed { .. }
                | Self::CheckoutCompensated { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type F = TestFramework<Checkout>;

    fn oid() -> OrderId {
        OrderId::parse("0190f6a2-7c3e-7d41-9a51-1c2b3d4e5f60").unwrap()
    }

    fn started() -> CheckoutEvent {
        CheckoutEvent::CheckoutStarted {
            order_id: oid(),
            deadline_ms: 10,
        }
    }

    #[test]
    fn starting_twice_records_once() {
        F::with(())
            .given(vec![started()])
            .when(CheckoutCommand::Start {
                order_id: oid(),
                deadline_ms: 99,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn steps_need_a_started_checkout() {
        F::with(())
            .given_no_previous_events()
            .when(CheckoutCommand::Complete)
            .then_expect_error(CheckoutError::NotStarted);
    }

    #[test]
    fn a_finished_checkout_ignores_further_steps() {
        F::with(())
            .given(vec![
                started(),
                CheckoutEvent::CheckoutCompleted { order_id: oid() },
            ])
            .when(CheckoutCommand::Fail {
                reason: "late".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn recording_the_same_authorization_twice_records_once() {
        F::with(())
            .given(vec![
                started(),
                CheckoutEvent::CheckoutPaymentAuthorized {
                    order_id: oid(),
                    amount_minor: 5,
                    currency: "EUR".into(),
                },
            ])
            .when(CheckoutCommand::RecordAuthorization {
                amount_minor: 5,
                currency: "EUR".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_cancelled_order_is_compensated_once_started_or_not() {
        F::with(())
            .given_no_previous_events()
            .when(CheckoutCommand::Compensate { order_id: oid() })
            .then_expect_events(vec![CheckoutEvent::CheckoutCompensated { order_id: oid() }]);
        F::with(())
            .given(vec![
                started(),
                CheckoutEvent::CheckoutCompleted { order_id: oid() },
            ])
            .when(CheckoutCommand::Compensate { order_id: oid() })
            .then_expect_events(vec![CheckoutEvent::CheckoutCompensated { order_id: oid() }]);
        F::with(())
            .given(vec![
                started(),
                CheckoutEvent::CheckoutCompensated { order_id: oid() },
            ])
            .when(CheckoutCommand::Compensate { order_id: oid() })
            .then_expect_events(vec![]);
    }
}
