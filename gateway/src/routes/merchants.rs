//! Merchants: register one (admin) and read it. A merchant with a `webhook_url` gets a
//! signing secret, shown once in the registration's answer and kept outside the log; its
//! order notifications are POSTed there signed with it (`crate::notify`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use emporium_domain::merchant::{
    valid_webhook_url, Merchant, MerchantCommand, MerchantError, HOUSE, MAX_COMMISSION_BPS,
};
use emporium_domain::values::{MerchantId, Title};
use emporium_event_store::on_db;
use serde::{Deserialize, Serialize};

use super::{execute, Fields};
use crate::error::{ApiError, CommandProblems, ReadProblems};
use crate::extract::{ApiJson, ApiPath, RequestContext};
use crate::state::AppState;

impl From<MerchantError> for ApiError {
    fn from(e: MerchantError) -> Self {
        match &e {
            MerchantError::AlreadyRegistered(_) | MerchantError::House => {
                ApiError::conflict("merchant_exists", e)
            }
            MerchantError::BadCommission => ApiError::field("/commission_bps", e),
            MerchantError::BadWebhookUrl => ApiError::field("/webhook_url", e),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMerchantBody {
    #[schema(schema_with = crate::schema::merchant_id)]
    pub id: String,
    #[schema(schema_with = crate::schema::title)]
    pub name: String,
    /// The marketplace's commission on the merchant's sales, in basis points (1500 = 15 %).
    #[schema(minimum = 0, maximum = 10000)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub commission_bps: i64,
    /// Where the merchant's order notifications are POSTed.
    #[schema(schema_with = crate::schema::optional_webhook_url)]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub name: String,
    pub commission_bps: u16,
    pub webhook_url: Option<String>,
    /// Shown once, in the registration's answer: the key of the `Emporium-Signature`
    /// HMAC-SHA256 on every webhook delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

pub(crate) async fn load_merchant(state: &AppState, id: &MerchantId) -> Result<Merchant, ApiError> {
    let (m, version) = state.store.load_cached::<Merchant>(id.as_str()).await?;
    if version == 0 {
        // Read again: the cached copy may predate the registration.
        let (m, version) = state.store.load::<Merchant>(id.as_str()).await?;
        if version == 0 {
            return Err(ApiError::NotFound(format!("no merchant {id}")));
        }
        return Ok(m);
    }
    Ok(m)
}

fn view(m: &Merchant) -> MerchantView {
    MerchantView {
        id: m.merchant_id().map(ToString::to_string).unwrap_or_default(),
        name: m.name().map(ToString::to_string).unwrap_or_default(),
        commission_bps: m.commission_bps(),
        webhook_url: m.webhook_url().map(str::to_string),
        webhook_secret: None,
    }
}

/// The signing secret of `merchant`'s webhook, if it has one.
pub(crate) async fn webhook_secret(
    db: &emporium_event_store::Db,
    merchant: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = db.sql("SELECT secret FROM merchant_webhook_secrets WHERE merchant_id = $1");
    Ok(on_db!(db, pool => {
        sqlx::query_scalar(&sql).bind(merchant).fetch_optional(pool).await?
    }))
}

/// Register a merchant (admin). With a `webhook_url`, the answer carries the webhook's
/// signing secret, once.
#[utoipa::path(post, path = "/v1/merchants", tag = "merchants", request_body = RegisterMerchantBody,
    responses((status = 201, description = "Registered", body = MerchantView), CommandProblems))]
pub async fn register(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiJson(body): ApiJson<RegisterMerchantBody>,
) -> Result<(StatusCode, Json<MerchantView>), ApiError> {
    let mut f = Fields::default();
    let id = f.check("/id", MerchantId::parse(&body.id));
    let name = f.check("/name", Title::parse(&body.name));
    let bps = u16::try_from(body.commission_bps)
        .ok()
        .filter(|b| *b <= MAX_COMMISSION_BPS);
    if bps.is_none() {
        f.push(
            "/commission_bps",
            format!("must be between 0 and {MAX_COMMISSION_BPS}"),
        );
    }
    if body
        .webhook_url
        .as_deref()
        .is_some_and(|u| !valid_webhook_url(u))
    {
        f.push(
            "/webhook_url",
            "must be an http:// or https:// URL without spaces, at most 2048 characters",
        );
    }
    let (Some(id), Some(name), Some(commission_bps)) = (id, name, bps) else {
        return Err(f.into_error());
    };
    if !f.is_empty() {
        return Err(f.into_error());
    }
    if id.as_str() == HOUSE {
        return Err(ApiError::conflict(
            "merchant_exists",
            "the house merchant is built in",
        ));
    }
    // The secret goes in first: a registration that fails leaves an unused row, never a
    // webhook without its secret.
    let secret = match &body.webhook_url {
        Some(_) => {
            let secret = format!(
                "whsec_{}",
                crate::auth::generate_key().trim_start_matches("emp_")
            );
            let db = state.store.db();
            let sql = db.sql(
                "INSERT INTO merchant_webhook_secrets (merchant_id, secret, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (merchant_id) DO NOTHING",
            );
            let now = chrono::Utc::now().timestamp_millis();
            on_db!(db, pool => {
                sqlx::query(&sql).bind(id.as_str()).bind(&secret).bind(now).execute(pool).await
                    .map_err(|e| ApiError::Internal(e.to_string()))?.rows_affected()
            });
            webhook_secret(db, id.as_str())
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
        }
        None => None,
    };
    execute::<Merchant>(
        &state,
        &ctx,
        id.as_str(),
        MerchantCommand::Register {
            merchant_id: id.clone(),
            name,
            commission_bps,
            webhook_url: body.webhook_url,
        },
    )
    .await?;
    let m = load_merchant(&state, &id).await?;
    let mut v = view(&m);
    v.webhook_secret = secret;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Read a merchant (its webhook secret is never shown again); a merchant key reads only its
/// own.
#[utoipa::path(get, path = "/v1/merchants/{id}", tag = "merchants",
    params(("id" = String, Path, description = "Merchant id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "The merchant", body = MerchantView), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MerchantView>, ApiError> {
    let id = MerchantId::parse(&id).map_err(|e| ApiError::field("/id", e))?;
    if ctx.actor.role == crate::keys::Role::Merchant && ctx.actor.merchant_id.as_ref() != Some(&id)
    {
        return Err(ApiError::NotFound(format!("no merchant {id}")));
    }
    if id.as_str() == HOUSE {
        return Ok(Json(MerchantView {
            id: HOUSE.into(),
            name: "House".into(),
            commission_bps: 0,
            webhook_url: None,
            webhook_secret: None,
        }));
    }
    Ok(Json(view(&load_merchant(&state, &id).await?)))
}
