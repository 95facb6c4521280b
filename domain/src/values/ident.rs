//! Identifiers (SKU, warehouse, customer, region) and the `string_value!` newtype macro.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValueError;

pub(super) const IDENT_MAX: usize = 64;

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

pub(super) fn check_len(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ValueError> {
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

pub(super) use string_value;

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

string_value!(
    /// A seller on the marketplace (`house` is the built-in one that owns every product
    /// created without a merchant).
    MerchantId,
    "merchant id",
    ident
);

/// Longest promotion code, in characters.
pub const PROMO_CODE_MAX: usize = 32;

fn promo_code(field: &'static str, value: String) -> Result<String, ValueError> {
    const RULE: &str =
        "must start with a letter or digit and contain only letters, digits, '_' or '-'";
    check_len(field, &value, 2, PROMO_CODE_MAX)?;
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if first_ok && rest_ok {
        // Shoppers type codes in any case: `summer10` and `SUMMER10` are one code.
        Ok(value.to_ascii_uppercase())
    } else {
        Err(ValueError::Malformed {
            field,
            value,
            rule: RULE,
        })
    }
}

string_value!(
    /// A promotion code as shoppers type it, kept upper case (2 to 32 letters, digits, `_`, `-`).
    PromoCode,
    "promotion code",
    promo_code
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_code_is_kept_upper_case_and_bounded() {
        assert_eq!(PromoCode::parse("summer-10").unwrap().as_str(), "SUMMER-10");
        assert!(PromoCode::parse("A").is_err());
        assert!(PromoCode::parse(&"A".repeat(33)).is_err());
        assert!(PromoCode::parse("ten off").is_err());
        assert!(PromoCode::parse("-X").is_err());
    }

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
}
