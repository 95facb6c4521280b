//! The product catalogue entry, one aggregate per SKU: what is sold, under which title and at
//! which price, and whether it can still be sold.

mod aggregate;
mod command;
mod error;
mod event;

pub use aggregate::Product;
pub use command::ProductCommand;
pub use error::ProductError;
pub use event::ProductEvent;
