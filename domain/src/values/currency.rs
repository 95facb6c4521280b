//! ISO 4217 currencies and the table of accepted codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ident::IDENT_MAX;
use super::ValueError;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

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
}
