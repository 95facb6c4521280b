//! HTTP handlers, one module per resource, and what they share: field validation that
//! collects every error at once, the money body shape, and running a command.

pub mod analytics;
pub mod audit;
pub mod catalog;
pub mod customers;
pub mod events;
pub mod fulfilment;
pub mod health;
pub mod inventory;
pub mod keys;
pub mod merchants;
pub mod orders;
pub mod products;
pub mod projections;
pub mod promotions;
pub mod timeline;
pub mod warehouses;

use cqrs_es::Aggregate;
use emporium_domain::values::{Currency, Money, ValueError};
use emporium_event_store::CommandError;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, FieldError};
use crate::extract::RequestContext;
use crate::state::AppState;

/// `?as_of=` on the read routes of orders, payments, stock and products.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOfQuery {
    /// See it as it was at this feed position or RFC 3339 time (default: now).
    #[param(schema_with = crate::schema::as_of)]
    pub as_of: Option<String>,
}

impl AsOfQuery {
    pub(crate) fn point(&self) -> Result<Option<emporium_event_store::AsOf>, ApiError> {
        self.as_of
            .as_deref()
            .map(|s| s.parse().map_err(|e: String| ApiError::field("/as_of", e)))
            .transpose()
    }
}

/// Loads aggregate `id` now, or as it was at `at`.
pub(crate) async fn load_at<A>(
    state: &AppState,
    id: &str,
    at: Option<emporium_event_store::AsOf>,
) -> Result<(A, usize), ApiError>
where
    A: Aggregate + Clone + 'static,
{
    Ok(match at {
        None => state.store.load::<A>(id).await?,
        Some(at) => state.store.load_as_of::<A>(id, at).await?,
    })
}

/// Collects field errors so one response names every invalid field.
#[derive(Default)]
pub(crate) struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    pub(crate) fn check<T>(&mut self, pointer: &str, result: Result<T, ValueError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(FieldError::new(pointer, e.to_string()));
                None
            }
        }
    }

    pub(crate) fn push(&mut self, pointer: &str, detail: impl ToString) {
        self.errors
            .push(FieldError::new(pointer, detail.to_string()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn into_error(self) -> ApiError {
        if self.errors.is_empty() {
            // Reached only if a caller forgot to record why it failed.
            ApiError::field("", "invalid request")
        } else {
            ApiError::Validation(self.errors)
        }
    }
}

/// `{"amount_minor": 1999, "currency": "EUR"}` as it arrives, before validation.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 1999, "currency": "EUR"}))]
pub struct MoneyBody {
    /// Integer minor units (cents): 1999 is 19.99 EUR. No fractions, never negative.
    #[schema(schema_with = crate::schema::amount_minor)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub amount_minor: i64,
    /// ISO 4217 alphabetic code, upper case.
    #[schema(schema_with = crate::schema::currency)]
    pub currency: String,
}

impl MoneyBody {
    pub(crate) fn parse(&self, pointer: &str, fields: &mut Fields) -> Option<Money> {
        let currency = fields.check(
            &format!("{pointer}/currency"),
            Currency::parse(&self.currency),
        )?;
        fields.check(
            &format!("{pointer}/amount_minor"),
            Money::new(self.amount_minor, currency),
        )
    }

    pub fn from_money(m: &Money) -> Self {
        Self {
            amount_minor: m.amount_minor(),
            currency: m.currency().as_str().to_string(),
        }
    }
}

/// Runs a command with the request's metadata and maps failures to problems.
pub(crate) async fn execute<A>(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    command: A::Command,
) -> Result<(), ApiError>
where
    A: Aggregate<Services = ()> + Clone + 'static,
    A::Command: Clone,
    ApiError: From<A::Error>,
{
    if let Some(mark) = ctx.idempotency.as_ref().filter(|m| m.verify) {
        // A take-over: the first run may have applied this command before it died.
        if state
            .store
            .applied_with_key::<A>(id, &ctx.actor.key_id, &mark.key)
            .await?
        {
            return Ok(());
        }
    }
    state
        .store
        .execute::<A>(id, command, &ctx.metadata())
        .await
        .map_err(|e| match e {
            CommandError::Rejected(e) => ApiError::from(e),
            CommandError::Conflict => ApiError::Unavailable("aggregate contended".into()),
            CommandError::Unavailable(d) => ApiError::Unavailable(d),
            CommandError::Internal(d) => ApiError::Internal(d),
        })
}
