//! Amounts of money in integer minor units, and their upper bound.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Currency, Quantity, ValueError};

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
}
