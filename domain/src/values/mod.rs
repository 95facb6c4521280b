//! Value types shared by every aggregate: identifiers, quantities, money and bounded texts.
//!
//! Each type has private fields and is only built by a fallible constructor, so holding one
//! means its rules were checked. Deserialisation goes through the same constructor
//! (`serde(try_from = ..)`), which makes a malformed request body or a tampered stored event
//! fail loudly instead of slipping an invalid value into an aggregate.

use thiserror::Error;

mod currency;
mod ident;
mod money;
mod order_id;
mod quantity;
mod sealed;
mod text;

pub use currency::Currency;
pub use ident::{CustomerId, MerchantId, PromoCode, Region, Sku, WarehouseId, PROMO_CODE_MAX};
pub use money::{Money, MAX_AMOUNT_MINOR};
pub use order_id::OrderId;
pub use quantity::{Priority, Quantity};
pub use sealed::SealedData;
pub use text::{Category, Description, Reason, Title, WarehouseName};

/// Why a raw value was refused. The messages are shown to API users as they are.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// A required text or identifier was empty (after trimming, for trimmed texts).
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    /// A text or identifier is longer than its limit (counted in characters).
    #[error("{field} must be at most {max} characters long (got {actual})")]
    TooLong {
        field: &'static str,
        max: usize,
        actual: usize,
    },
    /// An identifier uses characters outside its alphabet.
    #[error("{field} {value:?} is malformed: {rule}")]
    Malformed {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    /// A text contains a control character it does not allow.
    #[error("{field} must not contain control characters")]
    ControlCharacter { field: &'static str },
    /// An order id is not a UUID.
    #[error("order id {value:?} is not a valid UUID")]
    InvalidOrderId { value: String },
    /// A quantity is zero, negative or above [`Quantity::MAX`].
    #[error("quantity must be between 1 and {max} (got {value})", max = Quantity::MAX)]
    QuantityOutOfRange { value: i128 },
    /// A currency code is not three uppercase ASCII letters.
    #[error("currency {value:?} must be a three-letter uppercase ISO 4217 code")]
    MalformedCurrency { value: String },
    /// A well-formed currency code that is not an active ISO 4217 currency.
    #[error("currency {code:?} is not an active ISO 4217 currency")]
    UnknownCurrency { code: String },
    /// An amount (given, or the result of arithmetic) is outside `0..=MAX_AMOUNT_MINOR`.
    #[error(
        "amount must be between 0 and {max} minor units (got {amount_minor})",
        max = MAX_AMOUNT_MINOR
    )]
    AmountOutOfRange { amount_minor: i128 },
    /// Arithmetic between amounts in two different currencies.
    #[error("cannot combine an amount in {got} with an amount in {expected}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    /// A warehouse priority outside `0..=Priority::MAX`.
    #[error("priority must be between 0 and {max} (got {value})", max = Priority::MAX)]
    PriorityOutOfRange { value: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_errors_read_as_sentences() {
        assert_eq!(
            Quantity::new(0).unwrap_err().to_string(),
            "quantity must be between 1 and 1000000 (got 0)"
        );
        assert_eq!(
            Currency::parse("XXY").unwrap_err().to_string(),
            "currency \"XXY\" is not an active ISO 4217 currency"
        );
    }
}
