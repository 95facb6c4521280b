//! Why a warehouse command was refused: one variant per broken rule. The variants carry no
//! fields because the only useful fact, the warehouse id, is the id the caller addressed.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WarehouseError {
    #[error("warehouse is already registered")]
    AlreadyRegistered,
    #[error("warehouse is not registered")]
    NotRegistered,
    #[error("warehouse is closed")]
    Closed,
}
