//! Where a payment stands. Captured and refunded amounts are tracked separately: a payment
//! stays `Authorized` while it is captured and refunded.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    /// Nothing has happened yet.
    #[default]
    New,
    /// Funds are held; captures and refunds may follow.
    Authorized,
    /// The hold was released before any capture. Terminal.
    Voided,
}

impl PaymentStatus {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Authorized => "authorized",
            Self::Voided => "voided",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
