//! Stock of one SKU in one warehouse: what is on hand, what is promised to orders, and what is
//! still available. One aggregate per (warehouse, sku) pair, addressed by [`stock_item_id`].

mod aggregate;
mod command;
mod error;
mod event;

pub use aggregate::{stock_item_id, StockItem, MAX_ADJUSTMENT};
pub use command::StockItemCommand;
pub use error::StockItemError;
pub use event::{StockItemEvent, StockLevels};
