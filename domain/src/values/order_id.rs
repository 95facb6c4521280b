//! The order identifier, a UUID.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ident::IDENT_MAX;
use super::ValueError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
