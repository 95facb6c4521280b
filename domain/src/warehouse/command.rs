//! What callers may ask of a warehouse; fields are validated value types.

use serde::{Deserialize, Serialize};

use crate::values::{Priority, Region, WarehouseId, WarehouseName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WarehouseCommand {
    RegisterWarehouse {
        id: WarehouseId,
        name: WarehouseName,
        region: Region,
        priority: Priority,
    },
    ChangePriority {
        priority: Priority,
    },
    CloseWarehouse,
}
