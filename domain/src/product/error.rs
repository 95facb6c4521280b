//! Why a product command was refused: one variant per broken rule.

use thiserror::Error;

use crate::values::Sku;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProductError {
    #[error("product {sku} already exists")]
    AlreadyExists { sku: Sku },
    #[error("product does not exist")]
    NotFound,
    #[error("product {sku} is discontinued")]
    Discontinued { sku: Sku },
}
