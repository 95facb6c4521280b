//! Promotion codes, one aggregate per code ([`Promotion`], type `"Promotion"`, id = the code
//! upper case): what a code takes off (a percentage or a fixed amount), where it applies
//! (SKUs, categories), when, for orders of at least how much, and how often (in total and per
//! customer). Redeeming a code for an order decides its discount, line by line, in
//! [`Promotion`]'s `handle`; the order records the result in `OrderPlaced`. Usage limits hold
//! under concurrency because every redemption is an event on the code's one stream.
//!
//! Rounding: a percentage is taken of the eligible lines' sum and rounded down to the minor
//! unit (a shopper is never promised more than the code gives, the merchant never gives more
//! than the percentage); a fixed amount is capped at the eligible sum. The discount is then
//! split over the eligible lines in proportion to their amounts by the largest-remainder
//! method (ties to the earlier line), so the line discounts add up to the order's discount
//! exactly and no line is discounted below zero.

mod aggregate;
mod command;
mod error;
mod event;

pub use aggregate::{split_discount, Promotion, MAX_CODES_PER_ORDER, MAX_SCOPE_ENTRIES};
pub use command::{Benefit, PricedLine, PromotionCommand, PromotionTerms, Scope};
pub use error::PromotionError;
pub use event::{LineDiscount, PromotionEvent, Redemption};
