//! Warehouses, one aggregate per warehouse id: where stock can live, in which region, and how
//! strongly the allocator should prefer it.

mod aggregate;
mod command;
mod error;
mod event;

pub use aggregate::Warehouse;
pub use command::WarehouseCommand;
pub use error::WarehouseError;
pub use event::WarehouseEvent;
