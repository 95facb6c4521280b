//! The names and current versions of every event type, and the one union of all domain
//! events that consumers (projections, sagas, views) match on.
//!
//! Stored events are a contract: an event type keeps its name forever, and a change of shape
//! bumps its version here and comes with an upcaster (registered in the event store) that
//! turns the older stored shape into today's.

use crate::checkout::CheckoutEvent;
use crate::inventory::StockItemEvent;
use crate::merchant::MerchantEvent;
use crate::order::OrderEvent;
use crate::payment::PaymentEvent;
use crate::product::ProductEvent;
use crate::promotion::PromotionEvent;
use crate::values::OrderId;
use crate::warehouse::WarehouseEvent;

/// An aggregate's event enum: every variant's `event_type` with its current `event_version`.
pub trait EventSchema {
    /// `(event_type, current event_version)` of every variant.
    const EVENTS: &'static [(&'static str, &'static str)];

    /// The current version of `event_type`, if this enum has such a variant.
    #[must_use]
    fn current_version(event_type: &str) -> Option<&'static str> {
        Self::EVENTS
            .iter()
            .find(|(t, _)| *t == event_type)
            .map(|(_, v)| *v)
    }
}

/// The version `DomainEvent::event_version` reports: the schema's, so the two cannot drift.
pub(crate) fn version_of<E: EventSchema>(event_type: &str) -> String {
    E::current_version(event_type).unwrap_or("1.0").to_owned()
}

/// Any domain event, tagged by the aggregate that emitted it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Product(ProductEvent),
    Warehouse(WarehouseEvent),
    StockItem(StockItemEvent),
    Order(OrderEvent),
    Payment(PaymentEvent),
    Checkout(CheckoutEvent),
    Promotion(PromotionEvent),
    Merchant(MerchantEvent),
}

impl Event {
    /// The order this event concerns, for events not stored on an order-keyed aggregate
    /// (stock reservations name their order). `None` for catalogue and warehouse events.
    #[must_use]
    pub fn order_id(&self) -> Option<OrderId> {
        match self {
            Event::Order(e) => Some(e.order_id()),
            Event::Payment(e) => Some(e.order_id()),
            Event::Checkout(e) => Some(e.order_id()),
            Event::StockItem(e) => e.order_id(),
            Event::Promotion(e) => e.order_id(),
            Event::Product(_) | Event::Warehouse(_) | Event::Merchant(_) => None,
        }
    }
}
