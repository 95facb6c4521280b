//! What happened to a product. These are stored forever and published to read models: add
//! fields only with an upcaster, and bump `event_version` when a shape changes.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{Category, Description, MerchantId, Money, Sku, Title};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductCreated {
        sku: Sku,
        title: Title,
        description: Description,
        category: Category,
        price: Money,
        /// The seller (absent: the built-in house merchant).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merchant_id: Option<MerchantId>,
    },
    ProductDetailsChanged {
        title: Title,
        description: Description,
        category: Category,
    },
    ProductPriceChanged {
        sku: Sku,
        old_price: Money,
        new_price: Money,
    },
    ProductDiscontinued {
        sku: Sku,
    },
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductDetailsChanged { .. } => "ProductDetailsChanged",
            Self::ProductPriceChanged { .. } => "ProductPriceChanged",
            Self::ProductDiscontinued { .. } => "ProductDiscontinued",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

impl crate::schema::EventSchema for ProductEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[
        ("ProductCreated", "1.0"),
        ("ProductDetailsChanged", "1.0"),
        ("ProductPriceChanged", "1.0"),
        ("ProductDiscontinued", "1.0"),
    ];
}
