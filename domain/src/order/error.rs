//! Why an order command was refused: one variant per broken rule.

use thiserror::Error;

use super::{OrderAction, OrderStatus, MAX_PAYMENT_TOKEN_LEN};
use crate::values::{Currency, Sku, WarehouseId, MAX_AMOUNT_MINOR};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderError {
    #[error("order has already been placed")]
    AlreadyPlaced,
    #[error("order has not been placed")]
    NotPlaced,
    #[error("an order needs at least one line")]
    EmptyOrder,
    #[error("an order may have at most {max} lines")]
    TooManyLines { max: usize },
    #[error("sku {sku} appears on more than one line")]
    DuplicateLine { sku: Sku },
    #[error("all lines must be priced in {expected}, but one is in {got}")]
    MixedCurrencies { expected: Currency, got: Currency },
    #[error("order total exceeds the maximum amount of {MAX_AMOUNT_MINOR} minor units")]
    AmountOverflow,
    #[error(
        "payment token must be 1 to {MAX_PAYMENT_TOKEN_LEN} characters without whitespace \
         or control characters"
    )]
    InvalidPaymentToken,
    #[error("cannot {action} an order that is {from}")]
    IllegalTransition {
        from: OrderStatus,
        action: OrderAction,
    },
    #[error("allocation for {sku} covers {allocated} units but {ordered} were ordered")]
    AllocationMismatch {
        sku: Sku,
        ordered: u64,
        allocated: u64,
    },
    #[error("allocation names {sku} from warehouse {warehouse_id} more than once")]
    DuplicateAllocation { sku: Sku, warehouse_id: WarehouseId },
    #[error("a shipment or return needs at least one line")]
    NoLines,
    #[error("{sku} appears on more than one line of this shipment or return")]
    RepeatedLine { sku: Sku },
    #[error("{sku} is not allocated to warehouse {warehouse_id} for this order")]
    NotAllocated { sku: Sku, warehouse_id: WarehouseId },
    #[error(
        "{sku}: {requested} units asked to ship from {warehouse_id} but only {remaining} of \
         its allocation remain unshipped"
    )]
    ExceedsAllocation {
        sku: Sku,
        warehouse_id: WarehouseId,
        requested: u32,
        remaining: u32,
    },
    #[error(
        "{sku}: {requested} units asked to return but only {remaining} shipped units have \
         not been returned"
    )]
    ExceedsShipped {
        sku: Sku,
        requested: u32,
        remaining: u32,
    },
    #[error("shipment {0} was already recorded")]
    DuplicateShipment(uuid::Uuid),
    #[error("return {0} was already recorded")]
    DuplicateReturn(uuid::Uuid),
    #[error("nothing of this order is left to cancel: every unit has shipped")]
    NothingToCancel,
    #[error("a shipment holds the lines of one merchant only (one fulfilment part)")]
    MixedParts,
    #[error("the promotions do not fit this order: {0}")]
    InvalidDiscount(String),
}
