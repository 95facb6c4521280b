//! Customer orders, one aggregate per [`OrderId`](crate::values::OrderId): what was bought at
//! which price, and where the order stands in its life cycle (pending → confirmed, or rejected
//! or cancelled; then shipped in parts from the allocated warehouses, and returned in parts). Stock and payment live in their own aggregates; the checkout saga connects
//! them and reports back with confirm/reject.

mod aggregate;
mod command;
mod error;
mod event;
mod status;

pub use aggregate::{Order, MAX_LINES, MAX_PAYMENT_TOKEN_LEN};
pub use aggregate::{Return, Review, Shipment};
pub use command::{Allocation, OrderCommand, OrderLine, ReturnLine, ShipmentLine};
pub use error::OrderError;
pub use event::{OrderEvent, PlacedLine, ReturnedLine, ShippedLine};
pub use status::{OrderAction, OrderStatus};
