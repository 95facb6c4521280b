//! Why a payment command was refused: one variant per broken rule.

use thiserror::Error;

use crate::values::{Currency, Money};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PaymentError {
    #[error("payment is already authorized")]
    AlreadyAuthorized,
    #[error("payment has not been authorized")]
    NotAuthorized,
    #[error("payment is in {expected}, not {got}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("cannot capture {requested}: only {remaining} of the authorization remains")]
    CaptureExceedsAuthorized { requested: Money, remaining: Money },
    #[error("payment has been captured and can no longer be voided")]
    AlreadyCaptured,
    #[error("payment has been voided")]
    AlreadyVoided,
    #[error("cannot refund {requested}: only {remaining} of the captured amount remains")]
    RefundExceedsCaptured { requested: Money, remaining: Money },
    #[error("amount must be greater than zero")]
    ZeroAmount,
}
