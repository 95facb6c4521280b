//! What happened to a warehouse. Stored forever and read by the allocation read model: change
//! shapes only with a new `event_version` and an upcaster.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{Priority, Region, WarehouseId, WarehouseName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WarehouseEvent {
    WarehouseRegistered {
        id: WarehouseId,
        name: WarehouseName,
        region: Region,
        priority: Priority,
    },
    WarehousePriorityChanged {
        id: WarehouseId,
        old_priority: Priority,
        new_priority: Priority,
    },
    WarehouseClosed {
        id: WarehouseId,
    },
}

impl DomainEvent for WarehouseEvent {
    fn event_type(&self) -> String {
        match self {
            Self::WarehouseRegistered { .. } => "WarehouseRegistered",
            Self::WarehousePriorityChanged { .. } => "WarehousePriorityChanged",
            Self::WarehouseClosed { .. } => "WarehouseClosed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

impl crate::schema::EventSchema for WarehouseEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[
        ("WarehouseRegistered", "1.0"),
        ("WarehousePriorityChanged", "1.0"),
        ("WarehouseClosed", "1.0"),
    ];
}
