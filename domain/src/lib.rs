//! Emporium's pure domain: value types, and the event-sourced aggregates that decide what may
//! happen to products, warehouses, stock, orders and payments.
//!
//! Architecture invariant: this crate does no I/O. It knows nothing of databases, HTTP or
//! NATS; aggregates are `cqrs_es::Aggregate`s with `Services = ()`, and anything external is
//! looked up by the caller before it builds a command.
//!
//! # Layout
//!
//! - [`values`]: validated newtypes ([`Sku`], [`OrderId`], [`Quantity`], [`Money`], ...).
//!   Holding one means its rules were checked; deserialising one checks them again.
//! - One module per aggregate, each split into `aggregate.rs` (state, rules in `handle`,
//!   plain assignment in `apply`, given/when/then tests), `command.rs`, `event.rs` and
//!   `error.rs`:
//!   - [`product`]: catalogue entry per SKU ([`Product`], type `"Product"`).
//!   - [`warehouse`]: a place that holds stock ([`Warehouse`], type `"Warehouse"`).
//!   - [`inventory`]: stock of one SKU in one warehouse, with per-order reservations
//!     ([`StockItem`], type `"StockItem"`, id from [`stock_item_id`]).
//!   - [`order`]: a customer order and its life cycle ([`Order`], type `"Order"`).
//!   - [`payment`]: the payment of one order ([`Payment`], type `"Payment"`, id = order id).
//!   - [`merchant`]: a seller, its commission and its webhook ([`Merchant`], type
//!     `"Merchant"`).
//!   - [`promotion`]: a promotion code, its terms and its redemptions ([`Promotion`], type
//!     `"Promotion"`, id = the code upper case).
//!   - [`checkout`]: the checkout saga's memory of one order ([`Checkout`], type
//!     `"Checkout"`, id = order id).
//! - [`schema`]: every event type's name and current version ([`EventSchema`]) and the union
//!   [`Event`] of all domain events that projections, sagas and views match on.
//!
//! Events are a stored and published contract: each names itself after its variant
//! (`event_type`) at the version its [`EventSchema`] lists, and carries the facts read models need (stock levels
//! after the change, order totals) so projections never re-run business rules.

pub mod checkout;
pub mod inventory;
pub mod merchant;
pub mod order;
pub mod payment;
pub mod product;
pub mod promotion;
pub mod schema;
pub mod values;
pub mod warehouse;

#[cfg(test)]
mod fixtures;

pub use checkout::{Checkout, CheckoutCommand, CheckoutError, CheckoutEvent};
pub use inventory::{
    stock_item_id, StockItem, StockItemCommand, StockItemError, StockItemEvent, StockLevels,
};
pub use merchant::{Merchant, MerchantCommand, MerchantError, MerchantEvent};
pub use order::{
    Allocation, Order, OrderAction, OrderCommand, OrderError, OrderEvent, OrderLine, OrderStatus,
    PlacedLine,
};
pub use payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
pub use product::{Product, ProductCommand, ProductError, ProductEvent};
pub use promotion::{Promotion, PromotionCommand, PromotionError, PromotionEvent};
pub use schema::{Event, EventSchema};
pub use values::{
    Category, Currency, CustomerId, Description, Money, OrderId, Priority, Quantity, Reason,
    Region, Sku, Title, ValueError, WarehouseId, WarehouseName, MAX_AMOUNT_MINOR,
};
pub use warehouse::{Warehouse, WarehouseCommand, WarehouseError, WarehouseEvent};
