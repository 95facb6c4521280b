//! The warehouse aggregate: decides warehouse commands and folds warehouse events into state.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{WarehouseCommand, WarehouseError, WarehouseEvent};
use crate::values::{Priority, Region, WarehouseId, WarehouseName};

/// A place that holds stock. `Default` is the unregistered warehouse every stream starts from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Warehouse {
    id: Option<WarehouseId>,
    name: Option<WarehouseName>,
    region: Option<Region>,
    priority: Option<Priority>,
    closed: bool,
}

impl Warehouse {
    #[must_use]
    pub fn is_registered(&self) -> bool {
        self.id.is_some()
    }

    /// Registered and not closed: the only state in which stock may be allocated from it.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.is_registered() && !self.closed
    }

    #[must_use]
    pub fn id(&self) -> Option<&WarehouseId> {
        self.id.as_ref()
    }

    #[must_use]
    pub fn name(&self) -> Option<&WarehouseName> {
        self.name.as_ref()
    }

    #[must_use]
    pub fn region(&self) -> Option<&Region> {
        self.region.as_ref()
    }

    #[must_use]
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }

    /// The warehouse as it stands, if it may still be changed.
    fn open(&self) -> Result<(&WarehouseId, Priority), WarehouseError> {
        let (Some(id), Some(priority)) = (&self.id, self.priority) else {
            return Err(WarehouseError::NotRegistered);
        };
        if self.closed {
            return Err(WarehouseError::Closed);
        }
        Ok((id, priority))
    }

    /// The rules, synchronous and side-effect free; `None` means nothing needs recording.
    fn decide(&self, command: WarehouseCommand) -> Result<Option<WarehouseEvent>, WarehouseError> {
        match command {
            WarehouseCommand::RegisterWarehouse {
                id,
                name,
                region,
                priority,
            } => {
                if self.is_registered() {
                    return Err(WarehouseError::AlreadyRegistered);
                }
                Ok(Some(WarehouseEvent::WarehouseRegistered {
                    id,
                    name,
                    region,
                    priority,
                }))
            }
            WarehouseCommand::ChangePriority { priority } => {
                let (id, current) = self.open()?;
                // Setting the current priority again is a retry, not a change: record nothing.
                Ok(
                    (priority != current).then(|| WarehouseEvent::WarehousePriorityChanged {
                        id: id.clone(),
                        old_priority: current,
                        new_priority: priority,
                    }),
                )
            }
            WarehouseCommand::CloseWarehouse => {
                let (id, _) = self.open()?;
                Ok(Some(WarehouseEvent::WarehouseClosed { id: id.clone() }))
            }
        }
    }
}

impl Aggregate for Warehouse {
    const TYPE: &'static str = "Warehouse";
    type Command = WarehouseCommand;
    type Event = WarehouseEvent;
    type Error = WarehouseError;
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
            WarehouseEvent::WarehouseRegistered {
                id,
                name,
                region,
                priority,
            } => {
                self.id = Some(id);
                self.name = Some(name);
                self.region = Some(region);
                self.priority = Some(priority);
            }
            WarehouseEvent::WarehousePriorityChanged { new_priority, .. } => {
                self.priority = Some(new_priority);
            }
            WarehouseEvent::WarehouseClosed { .. } => {
                self.closed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::fixtures::{priority, region, warehouse_id, warehouse_name};

    type WarehouseTest = TestFramework<Warehouse>;

    fn register() -> WarehouseCommand {
        WarehouseCommand::RegisterWarehouse {
            id: warehouse_id("wh-1"),
            name: warehouse_name("Main"),
            region: region("eu-west"),
            priority: priority(10),
        }
    }

    fn registered() -> WarehouseEvent {
        WarehouseEvent::WarehouseRegistered {
            id: warehouse_id("wh-1"),
            name: warehouse_name("Main"),
            region: region("eu-west"),
            priority: priority(10),
        }
    }

    fn closed() -> WarehouseEvent {
        WarehouseEvent::WarehouseClosed {
            id: warehouse_id("wh-1"),
        }
    }

    #[test]
    fn registering_a_new_warehouse_records_it() {
        WarehouseTest::with(())
            .given_no_previous_events()
            .when(register())
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn registering_a_warehouse_twice_is_rejected() {
        WarehouseTest::with(())
            .given(vec![registered()])
            .when(register())
            .then_expect_error(WarehouseError::AlreadyRegistered);
    }

    #[test]
    fn changing_the_priority_of_an_unregistered_warehouse_is_rejected() {
        WarehouseTest::with(())
            .given_no_previous_events()
            .when(WarehouseCommand::ChangePriority {
                priority: priority(1),
            })
            .then_expect_error(WarehouseError::NotRegistered);
    }

    #[test]
    fn closing_an_unregistered_warehouse_is_rejected() {
        WarehouseTest::with(())
            .given_no_previous_events()
            .when(WarehouseCommand::CloseWarehouse)
            .then_expect_error(WarehouseError::NotRegistered);
    }

    #[test]
    fn changing_the_priority_records_the_old_and_new_priority() {
        WarehouseTest::with(())
            .given(vec![registered()])
            .when(WarehouseCommand::ChangePriority {
                priority: priority(3),
            })
            .then_expect_events(vec![WarehouseEvent::WarehousePriorityChanged {
                id: warehouse_id("wh-1"),
                old_priority: priority(10),
                new_priority: priority(3),
            }]);
    }

    #[test]
    fn changing_the_priority_to_the_current_priority_records_nothing() {
        WarehouseTest::with(())
            .given(vec![registered()])
            .when(WarehouseCommand::ChangePriority {
                priority: priority(10),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn changing_the_priority_of_a_closed_warehouse_is_rejected() {
        WarehouseTest::with(())
            .given(vec![registered(), closed()])
            .when(WarehouseCommand::ChangePriority {
                priority: priority(3),
            })
            .then_expect_error(WarehouseError::Closed);
    }

    #[test]
    fn closing_a_warehouse_records_it() {
        WarehouseTest::with(())
            .given(vec![registered()])
            .when(WarehouseCommand::CloseWarehouse)
            .then_expect_events(vec![closed()]);
    }

    #[test]
    fn closing_a_closed_warehouse_is_rejected() {
        WarehouseTest::with(())
            .given(vec![registered(), closed()])
            .when(WarehouseCommand::CloseWarehouse)
            .then_expect_error(WarehouseError::Closed);
    }

    #[test]
    fn applying_warehouse_events_updates_the_getters() {
        let mut warehouse = Warehouse::default();
        assert!(!warehouse.is_registered());
        assert!(!warehouse.is_open());

        warehouse.apply(registered());
        warehouse.apply(WarehouseEvent::WarehousePriorityChanged {
            id: warehouse_id("wh-1"),
            old_priority: priority(10),
            new_priority: priority(3),
        });
        assert!(warehouse.is_open());
        assert_eq!(warehouse.id(), Some(&warehouse_id("wh-1")));
        assert_eq!(warehouse.name(), Some(&warehouse_name("Main")));
        assert_eq!(warehouse.region(), Some(&region("eu-west")));
        assert_eq!(warehouse.priority(), Some(priority(3)));

        warehouse.apply(closed());
        assert!(warehouse.is_registered());
        assert!(!warehouse.is_open());
    }

    #[test]
    fn warehouse_events_are_named_after_their_variant_at_version_1_0() {
        assert_eq!(registered().event_type(), "WarehouseRegistered");
        assert_eq!(closed().event_type(), "WarehouseClosed");
        assert_eq!(registered().event_version(), "1.0");
    }

    #[test]
    fn warehouse_events_survive_a_serde_round_trip() {
        let event = registered();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"WarehouseRegistered":{"id":"wh-1","name":"Main","region":"eu-west","priority":10}}"#
        );
        assert_eq!(
            serde_json::from_str::<WarehouseEvent>(&json).unwrap(),
            event
        );
    }
}
