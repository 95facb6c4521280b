//! Value types shared by every aggregate: identifiers, quantities, money and bounded texts.
//!
//! Each type has private fields and is only built by a fallible constructor, so holding one
//! means its rules were checked. Deserialisation goes through the same constructor
//! (`serde(try_from = ..)`), which makes a malformed request body or a tampered stored event
//! fail loudly instead of slipping an invalid value into an aggregate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

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

// ---------------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------------

const IDENT_MAX: usize = 64;

fn check_ident(field: &'static str, value: &str) -> Result<(), ValueError> {
    const RULE: &str =
        "must start with a letter or digit and contain only letters, digits, '.', '_' or '-'";
    check_len(field, value, 1, IDENT_MAX)?;
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(ValueError::Malformed {
            field,
            value: value.to_owned(),
            rule: RULE,
        })
    }
}

fn check_region(field: &'static str, value: &str) -> Result<(), ValueError> {
    const RULE: &str =
        "must start with a lowercase letter or digit and contain only lowercase letters, digits or '-'";
    check_len(field, value, 1, IDENT_MAX)?;
    let mut chars = value.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(ValueError::Malformed {
            field,
            value: value.to_owned(),
            rule: RULE,
        })
    }
}

fn check_len(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ValueError> {
    let actual = value.chars().count();
    if actual < min {
        return Err(ValueError::Empty { field });
    }
    if actual > max {
        return Err(ValueError::TooLong { field, max, actual });
    }
    Ok(())
}

/// Declares a `String` newtype whose every construction path runs `$check`.
macro_rules! string_value {
    ($(#[$meta:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            ///
            /// # Errors
            /// Returns a [`ValueError`] naming the first rule `value` breaks.
            pub fn parse(value: &str) -> Result<Self, ValueError> {
                Self::try_from(value.to_owned())
            }

            /// The validated text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                let check: fn(&'static str, String) -> Result<String, ValueError> = $check;
                check($field, value).map(Self)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValueError;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn ident(field: &'static str, value: String) -> Result<String, ValueError> {
    check_ident(field, &value).map(|()| value)
}

fn region(field: &'static str, value: String) -> Result<String, ValueError> {
    check_region(field, &value).map(|()| value)
}

string_value!(
    /// Stock keeping unit: 1..=64 characters, `[A-Za-z0-9][A-Za-z0-9._-]*`. Case-sensitive.
    Sku,
    "sku",
    ident
);

string_value!(
    /// Warehouse identifier: 1..=64 characters, `[A-Za-z0-9][A-Za-z0-9._-]*`.
    WarehouseId,
    "warehouse id",
    ident
);

string_value!(
    /// Customer identifier: 1..=64 characters, `[A-Za-z0-9][A-Za-z0-9._-]*`.
    CustomerId,
    "customer id",
    ident
);

string_value!(
    /// Shipping region such as `eu-west`: 1..=64 characters, `[a-z0-9][a-z0-9-]*`.
    Region,
    "region",
    region
);

// ---------------------------------------------------------------------------------------------
// Bounded texts
// ---------------------------------------------------------------------------------------------

/// How a free text is checked: trimmed or kept verbatim, length bounds in characters, and
/// whether line breaks and tabs are allowed.
struct TextRule {
    min: usize,
    max: usize,
    trim: bool,
    multiline: bool,
}

fn check_text(field: &'static str, value: String, rule: &TextRule) -> Result<String, ValueError> {
    let value = if rule.trim {
        let trimmed = value.trim();
        if trimmed.len() == value.len() {
            value
        } else {
            trimmed.to_owned()
        }
    } else {
        value
    };
    check_len(field, &value, rule.min, rule.max)?;
    let allowed = |c: char| rule.multiline && matches!(c, '\n' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(ValueError::ControlCharacter { field });
    }
    Ok(value)
}

string_value!(
    /// Product title: trimmed, 1..=200 characters, single line.
    Title,
    "title",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 200, trim: true, multiline: false })
);

string_value!(
    /// Product description: kept verbatim (formatting matters), 0..=5000 characters; `\n` and
    /// `\t` are the only control characters allowed.
    Description,
    "description",
    |field, value| check_text(field, value, &TextRule { min: 0, max: 5000, trim: false, multiline: true })
);

string_value!(
    /// Product category: trimmed, 1..=100 characters, single line.
    Category,
    "category",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 100, trim: true, multiline: false })
);

string_value!(
    /// Warehouse display name: trimmed, 1..=200 characters, single line.
    WarehouseName,
    "warehouse name",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 200, trim: true, multiline: false })
);

string_value!(
    /// Why something happened (rejection, cancellation, stock adjustment): trimmed,
    /// 1..=500 characters; `\n` and `\t` allowed so operators can write notes.
    Reason,
    "reason",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 500, trim: true, multiline: true })
);

impl Description {
    /// The empty description, valid by definition.
    #[must_use]
    pub fn empty() -> Self {
        Self(String::new())
    }
}

// ---------------------------------------------------------------------------------------------
// OrderId
// ---------------------------------------------------------------------------------------------

/// Order identifier, also the aggregate id of the order and of its payment.
///
/// Displayed and serialised as a lowercase hyphenated UUID, whatever form it was parsed from,
/// so one order never ends up with two aggregate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(Uuid);

impl OrderId {
    /// A fresh id. A version 7 UUID is time-ordered, which keeps database indexes on order ids compact.
    #[must_use]
    #[allow(
        clippy::new_without_default,
        reason = "a Default that invents a random id would be surprising"
    )]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses any textual UUID form.
    ///
    /// # Errors
    /// [`ValueError::InvalidOrderId`] when `value` is not a UUID.
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| ValueError::InvalidOrderId {
                value: value.chars().take(IDENT_MAX).collect(),
            })
    }

    #[must_use]
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    #[must_use]
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl TryFrom<String> for OrderId {
    type Error = ValueError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl FromStr for OrderId {
    type Err = ValueError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl From<OrderId> for String {
    fn from(value: OrderId) -> Self {
        value.to_string()
    }
}

impl From<Uuid> for OrderId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

// ---------------------------------------------------------------------------------------------
// Quantity and Priority
// ---------------------------------------------------------------------------------------------

/// A positive count of units: 1..=1,000,000. Zero is never a valid quantity; "nothing" is the
/// absence of a line or reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1_000_000;

    /// # Errors
    /// [`ValueError::QuantityOutOfRange`] for 0, negatives and values above [`Quantity::MAX`].
    pub fn new(value: i64) -> Result<Self, ValueError> {
        match u32::try_from(value) {
            Ok(v @ 1..=Self::MAX) => Ok(Self(v)),
            _ => Err(ValueError::QuantityOutOfRange {
                value: i128::from(value),
            }),
        }
    }

    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = ValueError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<u64> for Quantity {
    type Error = ValueError;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        i64::try_from(value)
            .map_err(|_| ValueError::QuantityOutOfRange {
                value: i128::from(value),
            })
            .and_then(Self::new)
    }
}

impl TryFrom<u32> for Quantity {
    type Error = ValueError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(i64::from(value))
    }
}

impl From<Quantity> for u32 {
    fn from(value: Quantity) -> Self {
        value.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Warehouse preference when allocating stock: 0..=1000, lower is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i32")]
pub struct Priority(i32);

impl Priority {
    pub const MAX: i32 = 1000;

    /// # Errors
    /// [`ValueError::PriorityOutOfRange`] outside `0..=Priority::MAX`.
    pub fn new(value: i64) -> Result<Self, ValueError> {
        match i32::try_from(value) {
            Ok(v @ 0..=Self::MAX) => Ok(Self(v)),
            _ => Err(ValueError::PriorityOutOfRange { value }),
        }
    }

    #[must_use]
    pub const fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for Priority {
    type Error = ValueError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Priority> for i32 {
    fn from(value: Priority) -> Self {
        value.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

// ---------------------------------------------------------------------------------------------
// Currency
// ---------------------------------------------------------------------------------------------

/// Active ISO 4217 currencies (legal tender, mid-2025) with their minor-unit exponents,
/// sorted by code for binary search.
///
/// Fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW), precious metals, SDR and the
/// test/no-currency codes (XTS, XXX) are left out on purpose: nothing is priced in them.
///
/// Only ever add codes here. Stored events are validated when read back, so removing a code
/// that was once used would make those streams unreadable; retire a code with an upcaster.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// An active ISO 4217 currency, e.g. `EUR`. Only uppercase codes are accepted: a lowercase
/// code is refused rather than normalised, so the stored form is always the canonical one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

impl Currency {
    /// # Errors
    /// [`ValueError::MalformedCurrency`] unless `code` is three uppercase ASCII letters;
    /// [`ValueError::UnknownCurrency`] when it is not an active ISO 4217 code.
    pub fn parse(code: &str) -> Result<Self, ValueError> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ValueError::MalformedCurrency {
                value: code.chars().take(IDENT_MAX).collect(),
            });
        }
        CURRENCIES
            .binary_search_by(|(known, _)| (*known).cmp(code))
            .map(|i| Self::from_entry(CURRENCIES[i]))
            .map_err(|_| ValueError::UnknownCurrency {
                code: code.to_owned(),
            })
    }

    /// Every accepted currency, in code order.
    pub fn all() -> impl Iterator<Item = Self> {
        CURRENCIES.iter().copied().map(Self::from_entry)
    }

    const fn from_entry((code, minor_units): (&'static str, u8)) -> Self {
        Self { code, minor_units }
    }

    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        self.code
    }

    /// The ISO 4217 exponent: how many decimal digits the minor unit has (JPY 0, EUR 2, BHD 3).
    #[must_use]
    pub const fn minor_units(&self) -> u8 {
        self.minor_units
    }
}

impl TryFrom<String> for Currency {
    type Error = ValueError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl FromStr for Currency {
    type Err = ValueError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

// Written by hand: derived `Deserialize` would see the `&'static str` field and demand
// `'de: 'static`, even though the value is looked up in the table, not borrowed.
impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code.to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

// ---------------------------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------------------------

/// Largest amount [`Money`] holds, in minor units (ten billion euros). Keeping amounts far
/// below `i64::MAX` means `amount × Quantity::MAX` still fits in an `i64`.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// A non-negative amount in integer minor units of a currency (cents for EUR).
///
/// Serialised exactly as `{"amount_minor": 1999, "currency": "EUR"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

/// The wire shape of [`Money`]; exists so deserialisation runs [`Money::new`].
#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// # Errors
    /// [`ValueError::AmountOutOfRange`] unless `0 <= amount_minor <= MAX_AMOUNT_MINOR`.
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, ValueError> {
        Self::from_wide(i128::from(amount_minor), currency)
    }

    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self {
            amount_minor: 0,
            currency,
        }
    }

    /// Arithmetic is done in `i128` so that no intermediate result can wrap before the range
    /// check sees it.
    fn from_wide(amount_minor: i128, currency: Currency) -> Result<Self, ValueError> {
        if (0..=i128::from(MAX_AMOUNT_MINOR)).contains(&amount_minor) {
            let amount_minor = i64::try_from(amount_minor)
                .map_err(|_| ValueError::AmountOutOfRange { amount_minor })?;
            Ok(Self {
                amount_minor,
                currency,
            })
        } else {
            Err(ValueError::AmountOutOfRange { amount_minor })
        }
    }

    #[must_use]
    pub const fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    #[must_use]
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    #[must_use]
    pub const fn is_zero(&self) -> bool {
        self.amount_minor == 0
    }

    fn same_currency(&self, other: &Self) -> Result<(), ValueError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(ValueError::CurrencyMismatch {
                expected: self.currency,
                got: other.currency,
            })
        }
    }

    /// # Errors
    /// [`ValueError::CurrencyMismatch`] or, when the sum exceeds [`MAX_AMOUNT_MINOR`],
    /// [`ValueError::AmountOutOfRange`].
    pub fn checked_add(&self, other: &Self) -> Result<Self, ValueError> {
        self.same_currency(other)?;
        Self::from_wide(
            i128::from(self.amount_minor) + i128::from(other.amount_minor),
            self.currency,
        )
    }

    /// # Errors
    /// [`ValueError::CurrencyMismatch`] or, when the result would be negative,
    /// [`ValueError::AmountOutOfRange`].
    pub fn checked_sub(&self, other: &Self) -> Result<Self, ValueError> {
        self.same_currency(other)?;
        Self::from_wide(
            i128::from(self.amount_minor) - i128::from(other.amount_minor),
            self.currency,
        )
    }

    /// The price of `qty` units at this unit price.
    ///
    /// # Errors
    /// [`ValueError::AmountOutOfRange`] when the product exceeds [`MAX_AMOUNT_MINOR`].
    pub fn checked_mul_qty(&self, qty: Quantity) -> Result<Self, ValueError> {
        Self::from_wide(
            i128::from(self.amount_minor) * i128::from(qty.get()),
            self.currency,
        )
    }
}

impl TryFrom<MoneyRepr> for Money {
    type Error = ValueError;

    fn try_from(repr: MoneyRepr) -> Result<Self, Self::Error> {
        Self::new(repr.amount_minor, repr.currency)
    }
}

impl From<Money> for MoneyRepr {
    fn from(money: Money) -> Self {
        Self {
            amount_minor: money.amount_minor,
            currency: money.currency,
        }
    }
}

/// `19.99 EUR`, `500 JPY`, `1.234 BHD`: decimal point placed by the currency's exponent,
/// using integer arithmetic only.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.minor_units());
        if exponent == 0 {
            return write!(f, "{} {}", self.amount_minor, self.currency);
        }
        let divisor = 10_i64.pow(exponent);
        write!(
            f,
            "{}.{:0width$} {}",
            self.amount_minor / divisor,
            self.amount_minor % divisor,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    // --- identifiers ---

    #[test]
    fn a_sku_with_letters_digits_dots_dashes_and_underscores_is_accepted() {
        let sku = Sku::parse("AB-12_x.9").unwrap();
        assert_eq!(sku.as_str(), "AB-12_x.9");
        assert_eq!(sku.to_string(), "AB-12_x.9");
    }

    #[test]
    fn an_empty_sku_is_rejected() {
        assert_eq!(Sku::parse(""), Err(ValueError::Empty { field: "sku" }));
    }

    #[test]
    fn a_sku_longer_than_64_characters_is_rejected() {
        assert!(Sku::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            Sku::parse(&"a".repeat(65)),
            Err(ValueError::TooLong {
                field: "sku",
                max: 64,
                actual: 65
            })
        );
    }

    #[test]
    fn a_sku_with_bad_characters_is_rejected() {
        for bad in ["a b", "ab/c", "é", "sku!", "a\n"] {
            assert!(
                matches!(
                    Sku::parse(bad),
                    Err(ValueError::Malformed { field: "sku", .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn a_sku_starting_with_punctuation_is_rejected() {
        for bad in ["-ab", ".ab", "_ab"] {
            assert!(matches!(Sku::parse(bad), Err(ValueError::Malformed { .. })));
        }
    }

    #[test]
    fn deserialising_an_invalid_sku_fails() {
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
        assert!(serde_json::from_str::<Sku>("\"\"").is_err());
        assert_eq!(
            serde_json::from_str::<Sku>("\"SKU-1\"").unwrap(),
            Sku::parse("SKU-1").unwrap()
        );
    }

    #[test]
    fn warehouse_and_customer_ids_follow_the_identifier_rule() {
        assert!(WarehouseId::parse("wh-1").is_ok());
        assert!(CustomerId::parse("cust.42").is_ok());
        assert!(matches!(
            WarehouseId::parse("wh 1"),
            Err(ValueError::Malformed {
                field: "warehouse id",
                ..
            })
        ));
        assert!(matches!(
            CustomerId::parse(&"c".repeat(65)),
            Err(ValueError::TooLong { .. })
        ));
        assert_eq!(
            CustomerId::parse(""),
            Err(ValueError::Empty {
                field: "customer id"
            })
        );
    }

    #[test]
    fn a_region_must_be_lowercase_letters_digits_and_dashes() {
        assert!(Region::parse("eu-west").is_ok());
        assert!(Region::parse("us-east-1").is_ok());
        for bad in ["EU-west", "-eu", "eu_west", "eu west"] {
            assert!(
                matches!(Region::parse(bad), Err(ValueError::Malformed { .. })),
                "{bad:?} should be rejected"
            );
        }
        assert!(matches!(
            Region::parse(&"a".repeat(65)),
            Err(ValueError::TooLong { .. })
        ));
        assert_eq!(
            Region::parse(""),
            Err(ValueError::Empty { field: "region" })
        );
    }

    #[test]
    fn an_order_id_round_trips_as_a_lowercase_hyphenated_uuid() {
        let id = OrderId::parse("67E55044-10B1-426F-9247-BB680E5FE0C8").unwrap();
        assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"67e55044-10b1-426f-9247-bb680e5fe0c8\"");
        assert_eq!(serde_json::from_str::<OrderId>(&json).unwrap(), id);
        assert_eq!(OrderId::from_uuid(*id.as_uuid()), id);
    }

    #[test]
    fn an_order_id_that_is_not_a_uuid_is_rejected() {
        assert_eq!(
            OrderId::parse("not-a-uuid"),
            Err(ValueError::InvalidOrderId {
                value: "not-a-uuid".into()
            })
        );
        assert!(serde_json::from_str::<OrderId>("\"nope\"").is_err());
    }

    #[test]
    fn new_order_ids_are_unique() {
        assert_ne!(OrderId::new(), OrderId::new());
    }

    // --- texts ---

    #[test]
    fn a_title_is_trimmed_and_must_not_be_blank() {
        assert_eq!(Title::parse("  Lamp  ").unwrap().as_str(), "Lamp");
        assert_eq!(
            Title::parse("   "),
            Err(ValueError::Empty { field: "title" })
        );
    }

    #[test]
    fn a_title_longer_than_200_characters_is_rejected() {
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert_eq!(
            Title::parse(&"é".repeat(201)),
            Err(ValueError::TooLong {
                field: "title",
                max: 200,
                actual: 201
            })
        );
    }

    #[test]
    fn a_title_with_a_line_break_is_rejected() {
        assert_eq!(
            Title::parse("two\nlines"),
            Err(ValueError::ControlCharacter { field: "title" })
        );
    }

    #[test]
    fn a_description_may_be_empty_and_multiline() {
        assert_eq!(Description::parse("").unwrap(), Description::empty());
        assert!(Description::parse("line one\n\tline two").is_ok());
    }

    #[test]
    fn a_description_with_other_control_characters_is_rejected() {
        for bad in ["bell\u{7}", "nul\0", "cr\r\n", "esc\u{1b}[0m", "c1\u{85}"] {
            assert_eq!(
                Description::parse(bad),
                Err(ValueError::ControlCharacter {
                    field: "description"
                }),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn a_description_longer_than_5000_characters_is_rejected() {
        assert!(Description::parse(&"x".repeat(5000)).is_ok());
        assert!(matches!(
            Description::parse(&"x".repeat(5001)),
            Err(ValueError::TooLong { max: 5000, .. })
        ));
    }

    #[test]
    fn a_category_is_trimmed_non_empty_and_at_most_100_characters() {
        assert_eq!(Category::parse(" lamps ").unwrap().as_str(), "lamps");
        assert_eq!(
            Category::parse(""),
            Err(ValueError::Empty { field: "category" })
        );
        assert!(matches!(
            Category::parse(&"c".repeat(101)),
            Err(ValueError::TooLong { max: 100, .. })
        ));
    }

    #[test]
    fn a_warehouse_name_is_trimmed_non_empty_and_at_most_200_characters() {
        assert_eq!(WarehouseName::parse(" Main ").unwrap().as_str(), "Main");
        assert!(matches!(
            WarehouseName::parse(" "),
            Err(ValueError::Empty { .. })
        ));
        assert!(matches!(
            WarehouseName::parse(&"w".repeat(201)),
            Err(ValueError::TooLong { max: 200, .. })
        ));
    }

    #[test]
    fn a_reason_is_non_empty_and_at_most_500_characters() {
        assert!(Reason::parse("damaged\nin transit").is_ok());
        assert!(matches!(Reason::parse(""), Err(ValueError::Empty { .. })));
        assert!(matches!(
            Reason::parse(&"r".repeat(501)),
            Err(ValueError::TooLong { max: 500, .. })
        ));
    }

    #[test]
    fn deserialising_a_text_validates_it() {
        assert!(serde_json::from_str::<Title>("\"   \"").is_err());
        assert_eq!(
            serde_json::from_str::<Title>("\" Lamp \"")
                .unwrap()
                .as_str(),
            "Lamp"
        );
    }

    // --- quantity and priority ---

    #[test]
    fn a_zero_quantity_is_rejected() {
        assert_eq!(
            Quantity::new(0),
            Err(ValueError::QuantityOutOfRange { value: 0 })
        );
    }

    #[test]
    fn a_negative_quantity_is_rejected() {
        assert_eq!(
            Quantity::new(-3),
            Err(ValueError::QuantityOutOfRange { value: -3 })
        );
    }

    #[test]
    fn a_quantity_above_one_million_is_rejected() {
        assert_eq!(Quantity::new(1_000_000).unwrap().get(), 1_000_000);
        assert!(Quantity::new(1_000_001).is_err());
        assert!(Quantity::try_from(u64::MAX).is_err());
        assert!(Quantity::new(i64::MAX).is_err());
    }

    #[test]
    fn deserialising_a_quantity_validates_it() {
        assert_eq!(
            serde_json::from_str::<Quantity>("3").unwrap(),
            Quantity::new(3).unwrap()
        );
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<Quantity>("-1").is_err());
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
        assert_eq!(
            serde_json::to_string(&Quantity::new(7).unwrap()).unwrap(),
            "7"
        );
    }

    #[test]
    fn a_priority_must_be_between_0_and_1000() {
        assert_eq!(Priority::new(0).unwrap().get(), 0);
        assert_eq!(Priority::new(1000).unwrap().get(), 1000);
        assert_eq!(
            Priority::new(-1),
            Err(ValueError::PriorityOutOfRange { value: -1 })
        );
        assert_eq!(
            Priority::new(1001),
            Err(ValueError::PriorityOutOfRange { value: 1001 })
        );
        assert!(serde_json::from_str::<Priority>("5000").is_err());
        assert!(Priority::new(1).unwrap() < Priority::new(2).unwrap());
    }

    // --- currency ---

    #[test]
    fn an_unknown_currency_is_rejected() {
        assert_eq!(
            Currency::parse("XXY"),
            Err(ValueError::UnknownCurrency { code: "XXY".into() })
        );
    }

    #[test]
    fn a_lowercase_currency_is_rejected() {
        assert_eq!(
            Currency::parse("eur"),
            Err(ValueError::MalformedCurrency {
                value: "eur".into()
            })
        );
    }

    #[test]
    fn a_currency_code_that_is_not_three_letters_is_rejected() {
        for bad in ["", "EU", "EURO", "E1R", "ÉUR"] {
            assert!(
                matches!(
                    Currency::parse(bad),
                    Err(ValueError::MalformedCurrency { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn currencies_know_their_minor_units() {
        let units = |code| Currency::parse(code).unwrap().minor_units();
        assert_eq!(units("EUR"), 2);
        assert_eq!(units("USD"), 2);
        assert_eq!(units("JPY"), 0);
        assert_eq!(units("KRW"), 0);
        assert_eq!(units("BHD"), 3);
        assert_eq!(units("KWD"), 3);
    }

    #[test]
    fn the_currency_table_is_sorted_unique_and_complete() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(CURRENCIES.len() >= 150, "got {}", CURRENCIES.len());
        for currency in Currency::all() {
            assert_eq!(Currency::parse(currency.as_str()), Ok(currency));
            assert!(currency.minor_units() <= 3);
        }
    }

    #[test]
    fn deserialising_a_currency_validates_it() {
        assert_eq!(serde_json::from_str::<Currency>("\"EUR\"").unwrap(), eur());
        assert!(serde_json::from_str::<Currency>("\"eur\"").is_err());
        assert!(serde_json::from_str::<Currency>("\"XXY\"").is_err());
    }

    // --- money ---

    #[test]
    fn money_accepts_zero_and_the_maximum_amount() {
        assert!(Money::new(0, eur()).unwrap().is_zero());
        assert_eq!(
            Money::new(MAX_AMOUNT_MINOR, eur()).unwrap().amount_minor(),
            MAX_AMOUNT_MINOR
        );
    }

    #[test]
    fn negative_money_is_rejected() {
        assert_eq!(
            Money::new(-1, eur()),
            Err(ValueError::AmountOutOfRange { amount_minor: -1 })
        );
    }

    #[test]
    fn money_above_the_maximum_amount_is_rejected() {
        assert!(matches!(
            Money::new(MAX_AMOUNT_MINOR + 1, eur()),
            Err(ValueError::AmountOutOfRange { .. })
        ));
    }

    #[test]
    fn money_serialises_to_the_exact_contract_shape() {
        let money = Money::new(1999, eur()).unwrap();
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, r#"{"amount_minor":1999,"currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
    }

    #[test]
    fn deserialising_invalid_money_fails() {
        for bad in [
            r#"{"amount_minor":-5,"currency":"EUR"}"#,
            r#"{"amount_minor":1000000000001,"currency":"EUR"}"#,
            r#"{"amount_minor":1999,"currency":"eur"}"#,
            r#"{"amount_minor":19.99,"currency":"EUR"}"#,
            r#"{"amount_minor":1999}"#,
        ] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn adding_money_sums_minor_units() {
        let a = Money::new(1999, eur()).unwrap();
        let b = Money::new(1, eur()).unwrap();
        assert_eq!(a.checked_add(&b).unwrap().amount_minor(), 2000);
    }

    #[test]
    fn adding_money_in_different_currencies_is_rejected() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(
            Money::zero(eur()).checked_add(&Money::zero(usd)),
            Err(ValueError::CurrencyMismatch {
                expected: eur(),
                got: usd
            })
        );
    }

    #[test]
    fn adding_money_past_the_maximum_is_rejected() {
        let max = Money::new(MAX_AMOUNT_MINOR, eur()).unwrap();
        let one = Money::new(1, eur()).unwrap();
        assert!(matches!(
            max.checked_add(&one),
            Err(ValueError::AmountOutOfRange { .. })
        ));
    }

    #[test]
    fn subtracting_money_below_zero_is_rejected() {
        let one = Money::new(1, eur()).unwrap();
        let two = Money::new(2, eur()).unwrap();
        assert_eq!(two.checked_sub(&one).unwrap().amount_minor(), 1);
        assert_eq!(
            one.checked_sub(&two),
            Err(ValueError::AmountOutOfRange { amount_minor: -1 })
        );
    }

    #[test]
    fn multiplying_money_by_a_quantity_checks_the_maximum() {
        let price = Money::new(250, eur()).unwrap();
        let three = Quantity::new(3).unwrap();
        assert_eq!(price.checked_mul_qty(three).unwrap().amount_minor(), 750);
        let max = Money::new(MAX_AMOUNT_MINOR, eur()).unwrap();
        assert!(matches!(
            max.checked_mul_qty(Quantity::new(1_000_000).unwrap()),
            Err(ValueError::AmountOutOfRange { .. })
        ));
    }

    #[test]
    fn money_displays_with_the_currency_exponent() {
        let show = |amount, code| {
            Money::new(amount, Currency::parse(code).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(show(1999, "EUR"), "19.99 EUR");
        assert_eq!(show(5, "EUR"), "0.05 EUR");
        assert_eq!(show(500, "JPY"), "500 JPY");
        assert_eq!(show(1234, "BHD"), "1.234 BHD");
    }

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
