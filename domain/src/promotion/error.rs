//! Why a promotion command was refused. Messages are shown to API users as they are.

use thiserror::Error;

use crate::values::{Currency, Money};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PromotionError {
    #[error("no such promotion code")]
    NotFound,
    #[error("a promotion with this code already exists")]
    AlreadyExists,
    #[error("percent_off must be between 1 and 100")]
    BadPercentage,
    #[error("amount_off must be more than zero")]
    ZeroAmount,
    #[error("the promotion must end after it starts")]
    EmptyWindow,
    #[error("max_uses and max_uses_per_customer must be at least 1")]
    ZeroLimit,
    #[error("a scope lists at most {max} SKUs, {max} categories and {max} merchants")]
    ScopeTooLarge { max: usize },
    #[error("amount_off and min_order must be in one currency")]
    MixedCurrencies,
    #[error("the promotion code is not valid at this time")]
    NotActive,
    #[error("the promotion is for orders in {expected}, this order is in {got}")]
    WrongCurrency { expected: Currency, got: Currency },
    #[error("the promotion needs an order of at least {min_minor} minor units (this one: {subtotal_minor})", min_minor = min.amount_minor(), subtotal_minor = subtotal.amount_minor())]
    BelowMinimum { min: Money, subtotal: Money },
    #[error("the promotion does not apply to any line of this order")]
    NotApplicable,
    #[error("the promotion code has been used up")]
    Exhausted,
    #[error("this customer has used the promotion code as often as it allows")]
    CustomerLimitReached,
    #[error("the discount is out of range")]
    AmountOverflow,
}
