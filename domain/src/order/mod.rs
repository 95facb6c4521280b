//! Customer orders, one aggregate per [`OrderId`](crate::values::OrderId): what was bought at
//! which price, and where the order stands in its life cycle (pending → confirmed, or rejected
//! or cancelled). Stock and payment live in their own aggregates; the checkout saga connects
//! them and reports back with confirm/reject.

mod aggregate;
mod command;
mod error;
mod event;
mod status;

pub use aggregate::{Order, MAX_LINES, MAX_PAYMENT_TOKEN_LEN};
pub use command::{Allocation, OrderCommand, OrderLine};
pub use error::OrderError;
pub use event::{OrderEvent, PlacedLine};
pub use status::{OrderAction, OrderStatus};
