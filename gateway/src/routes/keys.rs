//! API key administration (admin only): create (the secret is shown once), list, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use emporium_domain::values::CustomerId;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::schema::IntoRef as _;

use crate::error::{ApiError, CommandProblems, ReadProblems};
use crate::extract::{ApiJson, ApiPath};
use crate::idempotency::Withheld;
use crate::keys::{CreatedKey, KeyError, KeyInfo, Role};
use crate::state::AppState;

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::ClientWithoutCustomer => ApiError::field("/customer_id", e),
            KeyError::CustomerOnNonClient => ApiError::field("/customer_id", e),
            KeyError::MerchantWithoutId | KeyError::MerchantOnNonMerchant => {
                ApiError::field("/merchant_id", e)
            }
            KeyError::BadLabel => ApiError::field("/label", e),
            KeyError::Store(s) => ApiError::from(s),
        }
    }
}

/// `customer_id` is required for (and only for) `client` keys, `merchant_id` for (and only
/// for) `merchant` keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    pub role: Role,
    pub customer_id: Option<String>,
    pub merchant_id: Option<String>,
    #[serde(default)]
    pub label: String,
}

impl utoipa::PartialSchema for CreateKeyBody {
    /// One shape per kind of key, so that the document says which roles take a customer.
    fn schema() -> RefOr<Schema> {
        let shape =
            |roles: Vec<&str>, customer: Object, merchant: Object, required: Option<&str>| {
                let mut o = ObjectBuilder::new()
                    .property(
                        "role",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(roles)),
                    )
                    .required("role")
                    .property("customer_id", customer)
                    .property("merchant_id", merchant)
                    .property("label", crate::schema::label())
                    .additional_properties(Some(AdditionalProperties::FreeForm(false)));
                if let Some(field) = required {
                    o = o.required(field);
                }
                o.build()
            };
        let others: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| !matches!(**r, Role::Client | Role::Merchant))
            .map(|r| r.as_str())
            .collect();
        let none = |what: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Null)
                .description(Some(what))
                .build()
        };
        OneOfBuilder::new()
            .item(shape(
                vec![Role::Client.as_str()],
                crate::schema::customer_id(),
                none("Only merchant keys are bound to a merchant"),
                Some("customer_id"),
            ))
            .item(shape(
                vec![Role::Merchant.as_str()],
                none("Only client keys are bound to a customer"),
                crate::schema::merchant_id(),
                Some("merchant_id"),
            ))
            .item(shape(
                others,
                none("Only client keys are bound to a customer"),
                none("Only merchant keys are bound to a merchant"),
                None,
            ))
            .description(Some(
                "`customer_id` is required for (and only for) `client` keys, `merchant_id` \
                 for (and only for) `merchant` keys (a registered merchant)",
            ))
            .build()
            .into_ref()
    }
}

impl utoipa::ToSchema for CreateKeyBody {}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyInfo>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub key_id: String,
    pub revoked: bool,
}

/// Create an API key. The response carries the key itself, which is never shown again and
/// never stored: a retry with the same `Idempotency-Key` answers 409
/// `idempotent_response_withheld` naming the key id, not the secret.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKeyBody,
    responses((status = 201, description = "Created; store `key` now", body = CreatedKey), CommandProblems))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Extension<Withheld>, Json<CreatedKey>), ApiError> {
    let customer = match &body.customer_id {
        Some(c) => Some(CustomerId::parse(c).map_err(|e| ApiError::field("/customer_id", e))?),
        None => None,
    };
    let merchant = match &body.merchant_id {
        Some(m) => {
            let m = emporium_domain::values::MerchantId::parse(m)
                .map_err(|e| ApiError::field("/merchant_id", e))?;
            super::merchants::load_merchant(&state, &m).await?;
            Some(m)
        }
        None => None,
    };
    let created = state
        .keys
        .create_bound(body.role, customer, merchant, &body.label)
        .await?;
    let withheld = Withheld(format!(
        "the request with this Idempotency-Key created key {}; its secret is shown only \
         once and is not kept. If you did not receive it, revoke that key and create another",
        created.info.key_id
    ));
    Ok((StatusCode::CREATED, Extension(withheld), Json(created)))
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "All keys", body = KeyList), ReadProblems))]
pub async fn list(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList {
        items: state.keys.list().await?,
        next_cursor: None,
    }))
}

/// Revoke an API key; it stops working at once on this node, within 5 s on others.
#[utoipa::path(post, path = "/v1/keys/{key_id}/revoke", tag = "keys",
    params(("key_id" = String, Path, description = "Key id", pattern = "^[0-9a-f]{16}$")),
    responses((status = 200, description = "Revoked", body = Revoked), CommandProblems))]
pub async fn revoke(
    State(state): State<AppState>,
    ApiPath(key_id): ApiPath<String>,
) -> Result<Json<Revoked>, ApiError> {
    if state.keys.revoke(&key_id).await? {
        Ok(Json(Revoked {
            key_id,
            revoked: true,
        }))
    } else {
        Err(ApiError::NotFound(format!("no active key {key_id}")))
    }
}
