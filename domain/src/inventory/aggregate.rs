//! The stock item aggregate: decides stock commands and folds stock events into state.
//!
//! Invariant kept by every decision: `on_hand - reserved >= 0`, so `available` never goes
//! negative and a reservation can always be shipped.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{StockItemCommand, StockItemError, StockItemEvent, StockLevels as Levels};
use crate::values::{OrderId, Quantity, Reason, Sku, WarehouseId};
use uuid::Uuid;

/// Largest absolute `delta` one stock adjustment may carry.
pub const MAX_ADJUSTMENT: i64 = 1_000_000;

/// The aggregate id of the stock of `sku` in `warehouse_id`. `:` cannot occur in either
/// identifier, so the id is unambiguous.
#[must_use]
pub fn stock_item_id(warehouse_id: &WarehouseId, sku: &Sku) -> String {
    format!("{warehouse_id}:{sku}")
}

/// Stock of one SKU in one warehouse. `Default` is an item nothing has happened to yet, which
/// behaves as "nothing on hand" rather than as an error, so reservations against unknown
/// items fail with [`StockItemError::InsufficientStock`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StockItem {
    warehouse_id: Option<WarehouseId>,
    sku: Option<Sku>,
    on_hand: u64,
    /// Open reservations by order. A persistent map: cloning the item (every command on a
    /// cached copy does) shares the tree instead of copying it, so a hot item with thousands
    /// of open reservations costs the same to decide on as a fresh one.
    reservations: imbl::OrdMap<OrderId, u32>,
    /// The sum of `reservations`, kept by `apply`.
    reserved: u64,
    /// Shipments already taken out of a still-open reservation: a repeated shipment is a
    /// no-op. Dropped with the reservation once it is used up or released.
    #[serde(default)]
    shipped: imbl::OrdMap<OrderId, imbl::Vector<Uuid>>,
    /// Returns already restocked here (returns are rare; kept for good).
    #[serde(default)]
    restocked: imbl::OrdSet<Uuid>,
}

impl StockItem {
    #[must_use]
    pub fn warehouse_id(&self) -> Option<&WarehouseId> {
        self.warehouse_id.as_ref()
    }

    #[must_use]
    pub fn sku(&self) -> Option<&Sku> {
        self.sku.as_ref()
    }

    #[must_use]
    pub fn on_hand(&self) -> u64 {
        self.on_hand
    }

    #[must_use]
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// On hand minus reserved. Saturating only guards against hand-edited event streams; the
    /// command rules never let reserved exceed on hand.
    #[must_use]
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved())
    }

    /// On hand, reserved and available now.
    #[must_use]
    pub fn levels(&self) -> Levels {
        Levels::new(self.on_hand, self.reserved())
    }

    #[must_use]
    pub fn reservation_for(&self, order_id: &OrderId) -> Option<u32> {
        self.reservations.get(order_id).copied()
    }

    /// Refuses commands addressed to another (warehouse, sku) than the one this stream is
    /// about: that would be a routing bug upstream, and silently accepting it would mix stock.
    fn check_item(&self, warehouse_id: &WarehouseId, sku: &Sku) -> Result<(), StockItemError> {
        match (&self.warehouse_id, &self.sku) {
            (Some(own_warehouse), Some(own_sku))
                if own_warehouse != warehouse_id || own_sku != sku =>
            {
                Err(StockItemError::WrongItem {
                    expected_warehouse_id: own_warehouse.clone(),
                    expected_sku: own_sku.clone(),
                    got_warehouse_id: warehouse_id.clone(),
                    got_sku: sku.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The existing reservation of `order_id` together with the item's identity.
    fn reservation(&self, order_id: &OrderId) -> Option<(WarehouseId, Sku, Quantity)> {
        let qty = Quantity::try_from(self.reservation_for(order_id)?).ok()?;
        Some((self.warehouse_id.clone()?, self.sku.clone()?, qty))
    }

    /// The rules, synchronous and side-effect free; `None` means nothing needs recording.
    fn decide(&self, command: StockItemCommand) -> Result<Option<StockItemEvent>, StockItemError> {
        match command {
            StockItemCommand::ReceiveStock {
                warehouse_id,
                sku,
                qty,
            } => self.receive(warehouse_id, sku, qty).map(Some),
            StockItemCommand::AdjustStock {
                warehouse_id,
                sku,
                delta,
                reason,
            } => self.adjust(warehouse_id, sku, delta, reason).map(Some),
            StockItemCommand::ReserveStock {
                warehouse_id,
                sku,
                order_id,
                qty,
            } => self.reserve(warehouse_id, sku, order_id, qty),
            StockItemCommand::ReleaseReservation { order_id } => Ok(self.release(order_id)),
            StockItemCommand::CommitReservation { order_id } => self.commit(order_id).map(Some),
            StockItemCommand::ShipReserved {
                order_id,
                shipment_id,
                qty,
            } => self.ship(order_id, shipment_id, qty),
            StockItemCommand::RestockReturn {
                warehouse_id,
                sku,
                order_id,
                return_id,
                qty,
            } => {
                if self.restocked.contains(&return_id) {
                    return Ok(None);
                }
                self.check_item(&warehouse_id, &sku)?;
                let on_hand = self
                    .on_hand
                    .checked_add(u64::from(qty.get()))
                    .ok_or(StockItemError::OnHandOverflow)?;
                let levels = Levels::new(on_hand, self.reserved());
                Ok(Some(StockItemEvent::StockRestocked {
                    warehouse_id,
                    sku,
                    order_id,
                    return_id,
                    qty,
                    on_hand: levels.on_hand,
                    reserved: levels.reserved,
                    available: levels.available,
                }))
            }
        }
    }

    /// Ships part (or all) of an order's reservation. A shipment already taken from the
    /// reservation records nothing; so does one whose reservation is used up, since the
    /// order aggregate never lets shipments exceed the allocation.
    fn ship(
        &self,
        order_id: OrderId,
        shipment_id: Uuid,
        qty: Quantity,
    ) -> Result<Option<StockItemEvent>, StockItemError> {
        let Some((warehouse_id, sku, reserved)) = self.reservation(&order_id) else {
            return Ok(None);
        };
        if self
            .shipped
            .get(&order_id)
            .is_some_and(|done| done.contains(&shipment_id))
        {
            return Ok(None);
        }
        if qty.get() > reserved.get() {
            return Err(StockItemError::InsufficientStock {
                sku,
                requested: qty.get(),
                available: u64::from(reserved.get()),
            });
        }
        let n = u64::from(qty.get());
        let levels = Levels::new(self.on_hand.saturating_sub(n), self.reserved() - n);
        Ok(Some(StockItemEvent::StockShipped {
            warehouse_id,
            sku,
            order_id,
            shipment_id,
            qty,
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.available,
        }))
    }

    fn receive(
        &self,
        warehouse_id: WarehouseId,
        sku: Sku,
        qty: Quantity,
    ) -> Result<StockItemEvent, StockItemError> {
        self.check_item(&warehouse_id, &sku)?;
        let on_hand = self
            .on_hand
            .checked_add(u64::from(qty.get()))
            .ok_or(StockItemError::OnHandOverflow)?;
        let levels = Levels::new(on_hand, self.reserved());
        Ok(StockItemEvent::StockReceived {
            warehouse_id,
            sku,
            qty,
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.available,
        })
    }

    fn adjust(
        &self,
        warehouse_id: WarehouseId,
        sku: Sku,
        delta: i64,
        reason: Reason,
    ) -> Result<StockItemEvent, StockItemError> {
        if delta == 0 || delta.unsigned_abs() > MAX_ADJUSTMENT.unsigned_abs() {
            return Err(StockItemError::InvalidAdjustment { delta });
        }
        self.check_item(&warehouse_id, &sku)?;
        let reserved = self.reserved();
        let on_hand = i128::from(self.on_hand) + i128::from(delta);
        if on_hand < 0 {
            return Err(StockItemError::NegativeOnHand {
                delta,
                on_hand: self.on_hand,
            });
        }
        if on_hand < i128::from(reserved) {
            return Err(StockItemError::AdjustmentBelowReserved {
                delta,
                on_hand: self.on_hand,
                reserved,
            });
        }
        let on_hand = u64::try_from(on_hand).map_err(|_| StockItemError::OnHandOverflow)?;
        let levels = Levels::new(on_hand, reserved);
        Ok(StockItemEvent::StockAdjusted {
            warehouse_id,
            sku,
            delta,
            reason,
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.available,
        })
    }

    fn reserve(
        &self,
        warehouse_id: WarehouseId,
        sku: Sku,
        order_id: OrderId,
        qty: Quantity,
    ) -> Result<Option<StockItemEvent>, StockItemError> {
        self.check_item(&warehouse_id, &sku)?;
        // Idempotent per order: the saga may redeliver a reserve after a crash, and a second
        // reservation would double-book. The first quantity stands.
        if self.reservations.contains_key(&order_id) {
            return Ok(None);
        }
        let available = self.available();
        if u64::from(qty.get()) > available {
            return Err(StockItemError::InsufficientStock {
                sku,
                requested: qty.get(),
                available,
            });
        }
        let levels = Levels::new(self.on_hand, self.reserved() + u64::from(qty.get()));
        Ok(Some(StockItemEvent::StockReserved {
            warehouse_id,
            sku,
            order_id,
            qty,
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.available,
        }))
    }

    fn release(&self, order_id: OrderId) -> Option<StockItemEvent> {
        // Nothing to release is success: compensation must be safe to retry, and a
        // reservation that never happened needs no undoing.
        let (warehouse_id, sku, qty) = self.reservation(&order_id)?;
        let levels = Levels::new(self.on_hand, self.reserved() - u64::from(qty.get()));
        Some(StockItemEvent::StockReservationReleased {
            warehouse_id,
            sku,
            order_id,
            qty,
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.available,
        })
    }

    fn commit(&self, order_id: OrderId) -> Result<StockItemEvent, StockItemError> {
        // Unlike release, shipping goods nobody reserved is a real error.
        let Some((warehouse_id, sku, qty)) = self.reservation(&order_id) else {
            return Err(StockItemError::NoReservation { order_id });
        };
        let shipped = u64::from(qty.get());
        let levels = Levels::new(
            self.on_hand.saturating_sub(shipped),
            self.reserved() - shipped,
        );
        Ok(StockItemEvent::StockReservationCommitted {
            warehouse_id,
            sku,
            order_id,
            qty,
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.available,
        })
    }
}

impl Aggregate for StockItem {
    const TYPE: &'static str = "StockItem";
    type Command = StockItemCommand;
    type Event = StockItemEvent;
    type Error = StockItemError;
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

    // `reserved` and `available` in events are derived from `on_hand` and the reservations,
    // so only those two are stored.
    fn apply(&mut self, event: Self::Event) {
        match event {
            StockItemEvent::StockReceived {
                warehouse_id,
                sku,
                on_hand,
                ..
            }
            | StockItemEvent::StockAdjusted {
                warehouse_id,
                sku,
                on_hand,
                ..
            } => {
                self.warehouse_id = Some(warehouse_id);
                self.sku = Some(sku);
                self.on_hand = on_hand;
            }
            StockItemEvent::StockReserved {
                order_id,
                qty,
                on_hand,
                ..
            } => {
                if let Some(before) = self.reservations.insert(order_id, qty.get()) {
                    self.reserved -= u64::from(before);
                }
                self.reserved += u64::from(qty.get());
                self.on_hand = on_hand;
            }
            StockItemEvent::StockReservationReleased {
                order_id, on_hand, ..
            }
            | StockItemEvent::StockReservationCommitted {
                order_id, on_hand, ..
            } => {
                if let Some(qty) = self.reservations.remove(&order_id) {
                    self.reserved -= u64::from(qty);
                }
                self.shipped.remove(&order_id);
                self.on_hand = on_hand;
            }
            StockItemEvent::StockShipped {
                order_id,
                shipment_id,
                qty,
                on_hand,
                ..
            } => {
                let n = qty.get();
                match self.reservations.get(&order_id).copied() {
                    Some(held) if held > n => {
                        self.reservations.insert(order_id, held - n);
                        self.shipped
                            .entry(order_id)
                            .or_default()
                            .push_back(shipment_id);
                        self.reserved -= u64::from(n);
                    }
                    Some(held) => {
                        self.reservations.remove(&order_id);
                        self.shipped.remove(&order_id);
                        self.reserved -= u64::from(held);
                    }
                    None => {}
                }
                self.on_hand = on_hand;
            }
            StockItemEvent::StockRestocked {
                warehouse_id,
                sku,
                return_id,
                on_hand,
                ..
            } => {
                self.warehouse_id = Some(warehouse_id);
                self.sku = Some(sku);
                self.restocked.insert(return_id);
                self.on_hand = on_hand;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::fixtures::{order_id, qty, reason, sku, warehouse_id};

    type StockTest = TestFramework<StockItem>;

    fn receive(n: i64) -> StockItemCommand {
        StockItemCommand::ReceiveStock {
            warehouse_id: warehouse_id("wh-1"),
            sku: sku("LAMP-1"),
            qty: qty(n),
        }
    }

    fn received(n: i64, on_hand: u64, reserved: u64) -> StockItemEvent {
        StockItemEvent::StockReceived {
            warehouse_id: warehouse_id("wh-1"),
            sku: sku("LAMP-1"),
            qty: qty(n),
            on_hand,
            reserved,
            available: on_hand - reserved,
        }
    }

    fn adjust(delta: i64) -> StockItemCommand {
        StockItemCommand::AdjustStock {
            warehouse_id: warehouse_id("wh-1"),
            sku: sku("LAMP-1"),
            delta,
            reason: reason("stock count"),
        }
    }

    fn adjusted(delta: i64, on_hand: u64, reserved: u64) -> StockItemEvent {
        StockItemEvent::StockAdjusted {
            warehouse_id: warehouse_id("wh-1"),
            sku: sku("LAMP-1"),
            delta,
            reason: reason("stock count"),
            on_hand,
            reserved,
            available: on_hand - reserved,
        }
    }

    fn reserve(order: u128, n: i64) -> StockItemCommand {
        StockItemCommand::ReserveStock {
            warehouse_id: warehouse_id("wh-1"),
            sku: sku("LAMP-1"),
            order_id: order_id(order),
            qty: qty(n),
        }
    }

    fn reserved(order: u128, n: i64, on_hand: u64, reserved: u64) -> StockItemEvent {
        StockItemEvent::StockReserved {
            warehouse_id: warehouse_id("wh-1"),
            sku: sku("LAMP-1"),
            order_id: order_id(order),
            qty: qty(n),
            on_hand,
            reserved,
            available: on_hand - reserved,
        }
    }

    /// Ten on hand, three of them reserved by order 1.
    fn ten_on_hand_three_reserved() -> Vec<StockItemEvent> {
        vec![received(10, 10, 0), reserved(1, 3, 10, 3)]
    }

    #[test]
    fn stock_item_ids_join_warehouse_and_sku() {
        assert_eq!(
            stock_item_id(&warehouse_id("wh-1"), &sku("LAMP-1")),
            "wh-1:LAMP-1"
        );
    }

    #[test]
    fn receiving_stock_for_a_new_item_records_the_new_levels() {
        StockTest::with(())
            .given_no_previous_events()
            .when(receive(10))
            .then_expect_events(vec![received(10, 10, 0)]);
    }

    #[test]
    fn receiving_stock_adds_to_on_hand_and_keeps_reservations() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(receive(5))
            .then_expect_events(vec![received(5, 15, 3)]);
    }

    #[test]
    fn receiving_stock_beyond_the_on_hand_limit_is_rejected() {
        StockTest::with(())
            .given(vec![StockItemEvent::StockReceived {
                warehouse_id: warehouse_id("wh-1"),
                sku: sku("LAMP-1"),
                qty: qty(1),
                on_hand: u64::MAX,
                reserved: 0,
                available: u64::MAX,
            }])
            .when(receive(1))
            .then_expect_error(StockItemError::OnHandOverflow);
    }

    #[test]
    fn receiving_stock_for_another_warehouse_is_rejected() {
        StockTest::with(())
            .given(vec![received(10, 10, 0)])
            .when(StockItemCommand::ReceiveStock {
                warehouse_id: warehouse_id("wh-2"),
                sku: sku("LAMP-1"),
                qty: qty(1),
            })
            .then_expect_error(StockItemError::WrongItem {
                expected_warehouse_id: warehouse_id("wh-1"),
                expected_sku: sku("LAMP-1"),
                got_warehouse_id: warehouse_id("wh-2"),
                got_sku: sku("LAMP-1"),
            });
    }

    #[test]
    fn reserving_another_sku_on_this_item_is_rejected() {
        StockTest::with(())
            .given(vec![received(10, 10, 0)])
            .when(StockItemCommand::ReserveStock {
                warehouse_id: warehouse_id("wh-1"),
                sku: sku("CHAIR-9"),
                order_id: order_id(1),
                qty: qty(1),
            })
            .then_expect_error(StockItemError::WrongItem {
                expected_warehouse_id: warehouse_id("wh-1"),
                expected_sku: sku("LAMP-1"),
                got_warehouse_id: warehouse_id("wh-1"),
                got_sku: sku("CHAIR-9"),
            });
    }

    #[test]
    fn adjusting_stock_up_records_the_new_levels() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(adjust(4))
            .then_expect_events(vec![adjusted(4, 14, 3)]);
    }

    #[test]
    fn adjusting_stock_down_to_the_reserved_quantity_is_allowed() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(adjust(-7))
            .then_expect_events(vec![adjusted(-7, 3, 3)]);
    }

    #[test]
    fn adjusting_an_unknown_item_upwards_establishes_it() {
        StockTest::with(())
            .given_no_previous_events()
            .when(adjust(2))
            .then_expect_events(vec![adjusted(2, 2, 0)]);
    }

    #[test]
    fn adjusting_by_zero_is_rejected() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(adjust(0))
            .then_expect_error(StockItemError::InvalidAdjustment { delta: 0 });
    }

    #[test]
    fn adjusting_by_more_than_the_maximum_is_rejected() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(adjust(-1_000_001))
            .then_expect_error(StockItemError::InvalidAdjustment { delta: -1_000_001 });
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(adjust(i64::MIN))
            .then_expect_error(StockItemError::InvalidAdjustment { delta: i64::MIN });
    }

    #[test]
    fn adjusting_on_hand_below_zero_is_rejected() {
        StockTest::with(())
            .given(vec![received(10, 10, 0)])
            .when(adjust(-11))
            .then_expect_error(StockItemError::NegativeOnHand {
                delta: -11,
                on_hand: 10,
            });
    }

    #[test]
    fn adjusting_on_hand_below_the_reserved_quantity_is_rejected() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(adjust(-8))
            .then_expect_error(StockItemError::AdjustmentBelowReserved {
                delta: -8,
                on_hand: 10,
                reserved: 3,
            });
    }

    #[test]
    fn reserving_available_stock_records_the_reservation_and_new_levels() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(reserve(2, 7))
            .then_expect_events(vec![reserved(2, 7, 10, 10)]);
    }

    #[test]
    fn reserving_more_than_available_is_rejected() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(reserve(2, 8))
            .then_expect_error(StockItemError::InsufficientStock {
                sku: sku("LAMP-1"),
                requested: 8,
                available: 7,
            });
    }

    #[test]
    fn reserving_an_item_that_was_never_received_is_rejected() {
        StockTest::with(())
            .given_no_previous_events()
            .when(reserve(1, 1))
            .then_expect_error(StockItemError::InsufficientStock {
                sku: sku("LAMP-1"),
                requested: 1,
                available: 0,
            });
    }

    #[test]
    fn reserving_again_for_the_same_order_records_nothing() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(reserve(1, 5))
            .then_expect_events(vec![]);
    }

    #[test]
    fn releasing_a_reservation_makes_its_units_available_again() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(StockItemCommand::ReleaseReservation {
                order_id: order_id(1),
            })
            .then_expect_events(vec![StockItemEvent::StockReservationReleased {
                warehouse_id: warehouse_id("wh-1"),
                sku: sku("LAMP-1"),
                order_id: order_id(1),
                qty: qty(3),
                on_hand: 10,
                reserved: 0,
                available: 10,
            }]);
    }

    #[test]
    fn releasing_a_reservation_that_does_not_exist_records_nothing() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(StockItemCommand::ReleaseReservation {
                order_id: order_id(2),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn committing_a_reservation_ships_its_units() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(StockItemCommand::CommitReservation {
                order_id: order_id(1),
            })
            .then_expect_events(vec![StockItemEvent::StockReservationCommitted {
                warehouse_id: warehouse_id("wh-1"),
                sku: sku("LAMP-1"),
                order_id: order_id(1),
                qty: qty(3),
                on_hand: 7,
                reserved: 0,
                available: 7,
            }]);
    }

    #[test]
    fn committing_without_a_reservation_is_rejected() {
        StockTest::with(())
            .given(ten_on_hand_three_reserved())
            .when(StockItemCommand::CommitReservation {
                order_id: order_id(2),
            })
            .then_expect_error(StockItemError::NoReservation {
                order_id: order_id(2),
            });
    }

    /// Runs `command` against `history` through `handle` and appends what it emitted.
    fn run(history: &mut Vec<StockItemEvent>, command: StockItemCommand) {
        let emitted = StockTest::with(())
            .given(history.clone())
            .when(command)
            .inspect_result()
            .unwrap();
        history.extend(emitted);
    }

    #[test]
    fn shipments_take_parts_of_a_reservation_once_each() {
        let mut history = Vec::new();
        run(&mut history, receive(10));
        run(&mut history, reserve(1, 5));
        let ship = |id: u128, n: i64| StockItemCommand::ShipReserved {
            order_id: order_id(1),
            shipment_id: Uuid::from_u128(id),
            qty: qty(n),
        };
        run(&mut history, ship(7, 2));
        run(&mut history, ship(7, 2));
        assert_eq!(history.len(), 3, "a repeated shipment records nothing");
        let mut item = StockItem::default();
        history.iter().cloned().for_each(|e| item.apply(e));
        assert_eq!((item.on_hand(), item.reserved()), (8, 3));
        assert_eq!(item.reservation_for(&order_id(1)), Some(3));
        // More than what is left of the reservation is refused.
        let err = StockTest::with(())
            .given(history.clone())
            .when(ship(8, 4))
            .inspect_result();
        assert!(err.is_err());
        run(&mut history, ship(8, 3));
        run(&mut history, ship(8, 3));
        run(&mut history, ship(7, 2));
        assert_eq!(history.len(), 4);
        let mut item = StockItem::default();
        history.iter().cloned().for_each(|e| item.apply(e));
        assert_eq!(
            (item.on_hand(), item.reserved(), item.available()),
            (5, 0, 5)
        );
        assert_eq!(item.reservation_for(&order_id(1)), None);
    }

    #[test]
    fn a_return_is_restocked_once() {
        let mut history = Vec::new();
        run(&mut history, receive(1));
        let restock = StockItemCommand::RestockReturn {
            warehouse_id: warehouse_id("wh-1"),
            sku: sku("LAMP-1"),
            order_id: order_id(1),
            return_id: Uuid::from_u128(9),
            qty: qty(2),
        };
        run(&mut history, restock.clone());
        run(&mut history, restock);
        assert_eq!(history.len(), 2);
        let mut item = StockItem::default();
        history.into_iter().for_each(|e| item.apply(e));
        assert_eq!(item.on_hand(), 3);
    }

    #[test]
    fn applying_the_emitted_events_yields_the_levels_they_announce() {
        let mut history = Vec::new();
        run(&mut history, receive(10));
        run(&mut history, reserve(1, 3));
        run(&mut history, reserve(2, 2));
        run(&mut history, reserve(2, 2));
        run(&mut history, adjust(-1));
        run(
            &mut history,
            StockItemCommand::ReleaseReservation {
                order_id: order_id(2),
            },
        );
        run(
            &mut history,
            StockItemCommand::CommitReservation {
                order_id: order_id(1),
            },
        );
        assert_eq!(history.len(), 6, "the repeated reserve must not emit");

        let mut item = StockItem::default();
        for event in history {
            let announced = match &event {
                StockItemEvent::StockReceived {
                    on_hand,
                    reserved,
                    available,
                    ..
                }
                | StockItemEvent::StockAdjusted {
                    on_hand,
                    reserved,
                    available,
                    ..
                }
                | StockItemEvent::StockReserved {
                    on_hand,
                    reserved,
                    available,
                    ..
                }
                | StockItemEvent::StockReservationReleased {
                    on_hand,
                    reserved,
                    available,
                    ..
                }
                | StockItemEvent::StockReservationCommitted {
                    on_hand,
                    reserved,
                    available,
                    ..
                }
                | StockItemEvent::StockShipped {
                    on_hand,
                    reserved,
                    available,
                    ..
                }
                | StockItemEvent::StockRestocked {
                    on_hand,
                    reserved,
                    available,
                    ..
                } => (*on_hand, *reserved, *available),
            };
            item.apply(event);
            assert_eq!(
                (item.on_hand(), item.reserved(), item.available()),
                announced
            );
        }
        assert_eq!(item.on_hand(), 6);
        assert_eq!(item.reserved(), 0);
        assert_eq!(item.available(), 6);
        assert_eq!(item.reservation_for(&order_id(1)), None);
        assert_eq!(item.warehouse_id(), Some(&warehouse_id("wh-1")));
        assert_eq!(item.sku(), Some(&sku("LAMP-1")));
    }

    #[test]
    fn applying_a_reservation_exposes_it_per_order() {
        let mut item = StockItem::default();
        for event in ten_on_hand_three_reserved() {
            item.apply(event);
        }
        assert_eq!(item.reservation_for(&order_id(1)), Some(3));
        assert_eq!(item.reservation_for(&order_id(2)), None);
        assert_eq!(
            (item.on_hand(), item.reserved(), item.available()),
            (10, 3, 7)
        );
    }

    #[test]
    fn a_stock_item_snapshot_survives_a_serde_round_trip() {
        let mut item = StockItem::default();
        for event in ten_on_hand_three_reserved() {
            item.apply(event);
        }
        let json = serde_json::to_string(&item).unwrap();
        assert_eq!(serde_json::from_str::<StockItem>(&json).unwrap(), item);
    }

    #[test]
    fn stock_events_are_named_after_their_variant_at_version_1_0() {
        assert_eq!(received(1, 1, 0).event_type(), "StockReceived");
        assert_eq!(adjusted(1, 1, 0).event_type(), "StockAdjusted");
        assert_eq!(reserved(1, 1, 1, 1).event_type(), "StockReserved");
        assert_eq!(received(1, 1, 0).event_version(), "1.0");
        let json = serde_json::to_string(&reserved(1, 1, 1, 1)).unwrap();
        assert_eq!(
            serde_json::from_str::<StockItemEvent>(&json).unwrap(),
            reserved(1, 1, 1, 1)
        );
    }
}
