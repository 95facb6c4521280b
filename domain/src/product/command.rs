//! What callers may ask of a product. Fields are already-validated value types, so a command
//! that exists is well-formed; the aggregate only checks rules that depend on its history.

use serde::{Deserialize, Serialize};

use crate::values::{Category, Description, MerchantId, Money, Sku, Title};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductCommand {
    CreateProduct {
        sku: Sku,
        title: Title,
        description: Description,
        category: Category,
        price: Money,
        /// The seller (absent: the built-in house merchant).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merchant_id: Option<MerchantId>,
    },
    ChangeProductDetails {
        title: Title,
        description: Description,
        category: Category,
    },
    ChangePrice {
        price: Money,
    },
    Discontinue,
}
