//! The payment of one order (aggregate id = the order id): an authorisation that is then
//! captured (possibly in parts), refunded (up to what was captured) or voided.

mod aggregate;
mod command;
mod error;
mod event;
mod status;

pub use aggregate::Payment;
pub use command::PaymentCommand;
pub use error::PaymentError;
pub use event::PaymentEvent;
pub use status::PaymentStatus;
