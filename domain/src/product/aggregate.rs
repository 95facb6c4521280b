//! The product aggregate: decides product commands and folds product events into state.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{ProductCommand, ProductError, ProductEvent};
use crate::values::{Category, Description, MerchantId, Money, Sku, Title};

/// A catalogue entry. `Default` is the not-yet-created product that every stream starts from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    sku: Option<Sku>,
    title: Option<Title>,
    description: Option<Description>,
    category: Option<Category>,
    price: Option<Money>,
    discontinued: bool,
    #[serde(default)]
    merchant_id: Option<MerchantId>,
}

impl Product {
    /// The seller; `None` for the built-in house merchant.
    #[must_use]
    pub fn merchant_id(&self) -> Option<&MerchantId> {
        self.merchant_id.as_ref()
    }

    #[must_use]
    pub fn is_created(&self) -> bool {
        self.sku.is_some()
    }

    #[must_use]
    pub fn sku(&self) -> Option<&Sku> {
        self.sku.as_ref()
    }

    #[must_use]
    pub fn title(&self) -> Option<&Title> {
        self.title.as_ref()
    }

    #[must_use]
    pub fn description(&self) -> Option<&Description> {
        self.description.as_ref()
    }

    #[must_use]
    pub fn category(&self) -> Option<&Category> {
        self.category.as_ref()
    }

    #[must_use]
    pub fn price(&self) -> Option<&Money> {
        self.price.as_ref()
    }

    #[must_use]
    pub fn is_discontinued(&self) -> bool {
        self.discontinued
    }

    /// The product as it stands, if commands other than create may touch it.
    fn editable(&self) -> Result<(&Sku, Money), ProductError> {
        let (Some(sku), Some(price)) = (&self.sku, self.price) else {
            return Err(ProductError::NotFound);
        };
        if self.discontinued {
            return Err(ProductError::Discontinued { sku: sku.clone() });
        }
        Ok((sku, price))
    }

    /// The rules, kept synchronous and free of side effects. `None` means the command is
    /// already satisfied and nothing needs recording.
    fn decide(&self, command: ProductCommand) -> Result<Option<ProductEvent>, ProductError> {
        match command {
            ProductCommand::CreateProduct {
                sku,
                title,
                description,
                category,
                price,
                merchant_id,
            } => {
                if let Some(existing) = &self.sku {
                    return Err(ProductError::AlreadyExists {
                        sku: existing.clone(),
                    });
                }
                Ok(Some(ProductEvent::ProductCreated {
                    sku,
                    title,
                    description,
                    category,
                    price,
                    merchant_id,
                }))
            }
            ProductCommand::ChangeProductDetails {
                title,
                description,
                category,
            } => {
                self.editable()?;
                // Re-sending the same details (a client retry) records nothing, so the
                // product history only shows real edits.
                let unchanged = self.title.as_ref() == Some(&title)
                    && self.description.as_ref() == Some(&description)
                    && self.category.as_ref() == Some(&category);
                Ok((!unchanged).then_some(ProductEvent::ProductDetailsChanged {
                    title,
                    description,
                    category,
                }))
            }
            ProductCommand::ChangePrice { price } => {
                let (sku, current) = self.editable()?;
                // Same price is a no-op rather than an error: a retried request must succeed,
                // and a price event that changes nothing would only clutter price history.
                Ok(
                    (price != current).then(|| ProductEvent::ProductPriceChanged {
                        sku: sku.clone(),
                        old_price: current,
                        new_price: price,
                    }),
                )
            }
            ProductCommand::Discontinue => {
                let (sku, _) = self.editable()?;
                Ok(Some(ProductEvent::ProductDiscontinued { sku: sku.clone() }))
            }
        }
    }
}

impl Aggregate for Product {
    const TYPE: &'static str = "Product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProductEvent::ProductCreated {
                sku,
                title,
                description,
                category,
                price,
                merchant_id,
            } => {
                self.merchant_id = merchant_id;
                self.sku = Some(sku);
                self.title = Some(title);
                self.description = Some(description);
                self.category = Some(category);
                self.price = Some(price);
            }
            ProductEvent::ProductDetailsChanged {
                title,
                description,
                category,
            } => {
                self.title = Some(title);
                self.description = Some(description);
                self.category = Some(category);
            }
            ProductEvent::ProductPriceChanged { new_price, .. } => {
                self.price = Some(new_price);
            }
            ProductEvent::ProductDiscontinued { .. } => {
                self.discontinued = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    use super::*;
    use crate::fixtures::{category, description, eur, sku, title};

    type ProductTest = TestFramework<Product>;

    fn created() -> ProductEvent {
        ProductEvent::ProductCreated {
            sku: sku("LAMP-1"),
            title: title("Desk lamp"),
            description: description("A lamp."),
            category: category("lighting"),
            price: eur(1999),
            merchant_id: None,
        }
    }

    fn discontinued() -> ProductEvent {
        ProductEvent::ProductDiscontinued { sku: sku("LAMP-1") }
    }

    fn change_details() -> ProductCommand {
        ProductCommand::ChangeProductDetails {
            title: title("Desk lamp XL"),
            description: description("A bigger lamp.\nWith a plug."),
            category: category("lighting"),
        }
    }

    #[test]
    fn creating_a_new_product_records_it() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::CreateProduct {
                sku: sku("LAMP-1"),
                title: title("Desk lamp"),
                description: description("A lamp."),
                category: category("lighting"),
                price: eur(1999),
                merchant_id: None,
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_a_product_that_exists_is_rejected() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::CreateProduct {
                sku: sku("LAMP-1"),
                title: title("Other"),
                description: description(""),
                category: category("other"),
                price: eur(1),
                merchant_id: None,
            })
            .then_expect_error(ProductError::AlreadyExists { sku: sku("LAMP-1") });
    }

    #[test]
    fn changing_details_of_a_missing_product_is_rejected() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(change_details())
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn changing_the_price_of_a_missing_product_is_rejected() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::ChangePrice { price: eur(5) })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn discontinuing_a_missing_product_is_rejected() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Discontinue)
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn changing_details_records_the_new_details() {
        ProductTest::with(())
            .given(vec![created()])
            .when(change_details())
            .then_expect_events(vec![ProductEvent::ProductDetailsChanged {
                title: title("Desk lamp XL"),
                description: description("A bigger lamp.\nWith a plug."),
                category: category("lighting"),
            }]);
    }

    #[test]
    fn changing_details_to_the_current_details_records_nothing() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangeProductDetails {
                title: title("Desk lamp"),
                description: description("A lamp."),
                category: category("lighting"),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn changing_details_of_a_discontinued_product_is_rejected() {
        ProductTest::with(())
            .given(vec![created(), discontinued()])
            .when(change_details())
            .then_expect_error(ProductError::Discontinued { sku: sku("LAMP-1") });
    }

    #[test]
    fn changing_the_price_records_the_old_and_new_price() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice { price: eur(2499) })
            .then_expect_events(vec![ProductEvent::ProductPriceChanged {
                sku: sku("LAMP-1"),
                old_price: eur(1999),
                new_price: eur(2499),
            }]);
    }

    #[test]
    fn changing_the_price_to_the_current_price_records_nothing() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice { price: eur(1999) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn changing_the_price_of_a_discontinued_product_is_rejected() {
        ProductTest::with(())
            .given(vec![created(), discontinued()])
            .when(ProductCommand::ChangePrice { price: eur(2499) })
            .then_expect_error(ProductError::Discontinued { sku: sku("LAMP-1") });
    }

    #[test]
    fn discontinuing_a_product_records_it() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Discontinue)
            .then_expect_events(vec![discontinued()]);
    }

    #[test]
    fn discontinuing_a_product_twice_is_rejected() {
        ProductTest::with(())
            .given(vec![created(), discontinued()])
            .when(ProductCommand::Discontinue)
            .then_expect_error(ProductError::Discontinued { sku: sku("LAMP-1") });
    }

    #[test]
    fn applying_product_events_updates_the_getters() {
        let mut product = Product::default();
        assert!(!product.is_created());
        assert_eq!(product.price(), None);

        product.apply(created());
        product.apply(ProductEvent::ProductPriceChanged {
            sku: sku("LAMP-1"),
            old_price: eur(1999),
            new_price: eur(2499),
        });
        assert!(product.is_created());
        assert_eq!(product.sku(), Some(&sku("LAMP-1")));
        assert_eq!(product.title(), Some(&title("Desk lamp")));
        assert_eq!(product.price(), Some(&eur(2499)));
        assert!(!product.is_discontinued());

        product.apply(discontinued());
        assert!(product.is_discontinued());
    }

    #[test]
    fn product_events_are_named_after_their_variant_at_version_1_0() {
        let event = created();
        assert_eq!(event.event_type(), "ProductCreated");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(discontinued().event_type(), "ProductDiscontinued");
    }

    #[test]
    fn product_events_survive_a_serde_round_trip() {
        let event = created();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["ProductCreated"]["price"],
            serde_json::json!({"amount_minor": 1999, "currency": "EUR"})
        );
        assert_eq!(serde_json::from_value::<ProductEvent>(json).unwrap(), event);
    }
}
