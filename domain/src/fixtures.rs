//! Terse constructors for test data, so aggregate tests read as given/when/then rather than
//! as parsing boilerplate. Panics on invalid input: a bad fixture is a bug in the test.

use crate::values::{
    Category, Currency, CustomerId, Description, Money, OrderId, Priority, Quantity, Reason,
    Region, Sku, Title, WarehouseId, WarehouseName,
};

pub(crate) fn sku(value: &str) -> Sku {
    Sku::parse(value).unwrap()
}

pub(crate) fn warehouse_id(value: &str) -> WarehouseId {
    WarehouseId::parse(value).unwrap()
}

pub(crate) fn warehouse_name(value: &str) -> WarehouseName {
    WarehouseName::parse(value).unwrap()
}

pub(crate) fn customer_id(value: &str) -> CustomerId {
    CustomerId::parse(value).unwrap()
}

pub(crate) fn region(value: &str) -> Region {
    Region::parse(value).unwrap()
}

pub(crate) fn priority(value: i64) -> Priority {
    Priority::new(value).unwrap()
}

pub(crate) fn qty(value: i64) -> Quantity {
    Quantity::new(value).unwrap()
}

pub(crate) fn reason(value: &str) -> Reason {
    Reason::parse(value).unwrap()
}

pub(crate) fn title(value: &str) -> Title {
    Title::parse(value).unwrap()
}

pub(crate) fn description(value: &str) -> Description {
    Description::parse(value).unwrap()
}

pub(crate) fn category(value: &str) -> Category {
    Category::parse(value).unwrap()
}

pub(crate) fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

pub(crate) fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, currency("EUR")).unwrap()
}

pub(crate) fn usd(amount_minor: i64) -> Money {
    Money::new(amount_minor, currency("USD")).unwrap()
}

/// Deterministic order ids: `order_id(1)` is always the same order.
pub(crate) fn order_id(n: u128) -> OrderId {
    OrderId::from_uuid(uuid::Uuid::from_u128(n))
}
