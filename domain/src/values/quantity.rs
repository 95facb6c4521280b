//! Unit counts ([`Quantity`]) and warehouse allocation preference ([`Priority`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValueError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
