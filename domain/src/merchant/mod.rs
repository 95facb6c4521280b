//! Marketplace merchants, one aggregate per [`MerchantId`] ([`Merchant`], type
//! `"Merchant"`): who sells, at what commission, and where their order notifications go.
//! Products name their merchant; those created without one belong to the built-in
//! [`HOUSE`] merchant, which needs no registration.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::values::{MerchantId, Title};

/// The built-in merchant of products created without one.
pub const HOUSE: &str = "house";

/// Longest webhook URL, in characters.
pub const MAX_WEBHOOK_URL: usize = 2048;

/// Most a commission may be, in basis points (100 %).
pub const MAX_COMMISSION_BPS: u16 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantCommand {
    Register {
        merchant_id: MerchantId,
        name: Title,
        commission_bps: u16,
        /// An `http(s)://` URL receiving the merchant's order notifications (its signing
        /// secret is kept outside the log).
        webhook_url: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MerchantEvent {
    MerchantRegistered {
        merchant_id: MerchantId,
        name: Title,
        commission_bps: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook_url: Option<String>,
    },
}

impl DomainEvent for MerchantEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MerchantRegistered { .. } => "MerchantRegistered",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::schema::version_of::<Self>(&self.event_type())
    }
}

impl crate::schema::EventSchema for MerchantEvent {
    const EVENTS: &'static [(&'static str, &'static str)] = &[("MerchantRegistered", "1.0")];
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerchantError {
    #[error("merchant {0} is already registered")]
    AlreadyRegistered(MerchantId),
    #[error("the house merchant is built in and cannot be registered")]
    House,
    #[error("commission_bps must be between 0 and {MAX_COMMISSION_BPS}")]
    BadCommission,
    #[error(
        "webhook_url must be an http:// or https:// URL of at most {MAX_WEBHOOK_URL} characters"
    )]
    BadWebhookUrl,
}

/// Whether `url` is acceptable as a webhook target: `http(s)://host…`, no whitespace or
/// control characters, bounded.
#[must_use]
pub fn valid_webhook_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    url.chars().count() <= MAX_WEBHOOK_URL
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    merchant_id: Option<MerchantId>,
    name: Option<Title>,
    commission_bps: u16,
    webhook_url: Option<String>,
}

impl Merchant {
    #[must_use]
    pub fn merchant_id(&self) -> Option<&MerchantId> {
        self.merchant_id.as_ref()
    }
    #[must_use]
    pub fn name(&self) -> Option<&Title> {
        self.name.as_ref()
    }
    #[must_use]
    pub fn commission_bps(&self) -> u16 {
        self.commission_bps
    }
    #[must_use]
    pub fn webhook_url(&self) -> Option<&str> {
        self.webhook_url.as_deref()
    }
}

impl Aggregate for Merchant {
    const TYPE: &'static str = "Merchant";
    type Command = MerchantCommand;
    type Event = MerchantEvent;
    type Error = MerchantError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let MerchantCommand::Register {
            merchant_id,
            name,
            commission_bps,
            webhook_url,
        } = command;
        if let Some(id) = &self.merchant_id {
            return Err(MerchantError::AlreadyRegistered(id.clone()));
        }
        if merchant_id.as_str() == HOUSE {
            return Err(MerchantError::House);
        }
        if commission_bps > MAX_COMMISSION_BPS {
            return Err(MerchantError::BadCommission);
        }
        if webhook_url
            .as_deref()
            .is_some_and(|u| !valid_webhook_url(u))
        {
            return Err(MerchantError::BadWebhookUrl);
        }
        sink.write(
            MerchantEvent::MerchantRegistered {
                merchant_id,
                name,
                commission_bps,
                webhook_url,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let MerchantEvent::MerchantRegistered {
            merchant_id,
            name,
            commission_bps,
            webhook_url,
        } = event;
        self.merchant_id = Some(merchant_id);
        self.name = Some(name);
        self.commission_bps = commission_bps;
        self.webhook_url = webhook_url;
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::fixtures::title;

    fn register(id: &str, bps: u16, url: Option<&str>) -> MerchantCommand {
        MerchantCommand::Register {
            merchant_id: MerchantId::parse(id).unwrap(),
            name: title("Acme"),
            commission_bps: bps,
            webhook_url: url.map(str::to_string),
        }
    }

    #[test]
    fn a_merchant_registers_once_with_sane_terms() {
        TestFramework::<Merchant>::with(())
            .given_no_previous_events()
            .when(register("acme", 1_500, Some("https://acme.example/hooks")))
            .then_expect_events(vec![MerchantEvent::MerchantRegistered {
                merchant_id: MerchantId::parse("acme").unwrap(),
                name: title("Acme"),
                commission_bps: 1_500,
                webhook_url: Some("https://acme.example/hooks".into()),
            }]);
        for (cmd, err) in [
            (register("house", 0, None), MerchantError::House),
            (register("acme", 10_001, None), MerchantError::BadCommission),
            (
                register("acme", 0, Some("ftp://x")),
                MerchantError::BadWebhookUrl,
            ),
            (
                register("acme", 0, Some("https://")),
                MerchantError::BadWebhookUrl,
            ),
            (
                register("acme", 0, Some("https://a b")),
                MerchantError::BadWebhookUrl,
            ),
        ] {
            TestFramework::<Merchant>::with(())
                .given_no_previous_events()
                .when(cmd)
                .then_expect_error(err);
        }
    }
}
