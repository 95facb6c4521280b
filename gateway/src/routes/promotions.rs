//! Promotion codes: create one (operator) and read its terms and uses. Orders redeem codes
//! through `POST /v1/orders` (`promo_codes`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use emporium_domain::merchant::HOUSE;
use emporium_domain::promotion::{
    Benefit, Promotion, PromotionCommand, PromotionError, PromotionTerms, Scope, MAX_SCOPE_ENTRIES,
};
use emporium_domain::values::{Category, MerchantId, PromoCode, Sku};
use serde::{Deserialize, Serialize};

use super::{execute, Fields, MoneyBody};
use crate::error::{ApiError, CommandProblems, ReadProblems};
use crate::extract::{ApiPath, RequestContext};
use crate::state::AppState;

/// Largest `max_uses` and `max_uses_per_customer`.
pub const MAX_USES: i64 = 100_000_000;

impl From<PromotionError> for ApiError {
    fn from(e: PromotionError) -> Self {
        match &e {
            PromotionError::NotFound => ApiError::NotFound("no such promotion code".into()),
            PromotionError::AlreadyExists => ApiError::conflict("promotion_exists", e),
            // Rules over several fields the schema cannot express: the terms conflict.
            PromotionError::BadPercentage
            | PromotionError::ZeroAmount
            | PromotionError::EmptyWindow
            | PromotionError::ZeroLimit
            | PromotionError::ScopeTooLarge { .. }
            | PromotionError::MixedCurrencies
            | PromotionError::AmountOverflow => ApiError::conflict("promotion_terms", e),
            PromotionError::NotActive => ApiError::conflict("promotion_not_active", e),
            PromotionError::WrongCurrency { .. } => {
                ApiError::conflict("promotion_wrong_currency", e)
            }
            PromotionError::BelowMinimum { .. } => ApiError::conflict("promotion_minimum", e),
            PromotionError::NotApplicable => ApiError::conflict("promotion_not_applicable", e),
            PromotionError::Exhausted => ApiError::conflict("promotion_exhausted", e),
            PromotionError::CustomerLimitReached => {
                ApiError::conflict("promotion_customer_limit", e)
            }
        }
    }
}

/// Where a code applies: lines whose SKU or category is listed (both empty or absent: every
/// line), and, when `merchants` lists any, only lines those merchants sell (`house` for the
/// house's own products).
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    #[serde(default)]
    #[schema(max_items = 100, schema_with = skus)]
    pub skus: Vec<String>,
    #[serde(default)]
    #[schema(max_items = 100, schema_with = categories)]
    pub categories: Vec<String>,
    /// Registered merchants; narrows the lines above to theirs.
    #[serde(default)]
    #[schema(max_items = 100, schema_with = merchants)]
    pub merchants: Vec<String>,
}

fn skus() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(crate::schema::sku())
        .max_items(Some(MAX_SCOPE_ENTRIES))
        .build()
}

fn merchants() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(crate::schema::merchant_id())
        .max_items(Some(MAX_SCOPE_ENTRIES))
        .build()
}

fn categories() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(crate::schema::category())
        .max_items(Some(MAX_SCOPE_ENTRIES))
        .build()
}

/// A code that takes a percentage off.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PercentOffBody {
    #[schema(schema_with = crate::schema::promo_code)]
    pub code: String,
    /// 1 to 100 percent of the eligible lines, rounded down to the minor unit.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub percent_off: i64,
    /// The order's sum before discounts must reach this (same currency as `amount_off`).
    pub min_order: Option<MoneyBody>,
    pub scope: Option<ScopeBody>,
    /// Valid from (default: now).
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// Valid until, exclusive (default: no end); after `starts_at`.
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// Uses in all (released uses of rejected or cancelled orders given back); default
    /// unlimited.
    #[schema(minimum = 1, maximum = 100_000_000)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub max_uses: Option<i64>,
    /// Uses per customer; default unlimited.
    #[schema(minimum = 1, maximum = 100_000_000)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub max_uses_per_customer: Option<i64>,
}

/// A code that takes a fixed amount off (at most the eligible lines' sum). Its other fields
/// repeat `PercentOffBody`'s: serde cannot flatten shared fields into a body that refuses
/// unknown ones, and the document must list each body's fields exactly.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountOffBody {
    #[schema(schema_with = crate::schema::promo_code)]
    pub code: String,
    /// More than zero; only orders in its currency can use the code.
    pub amount_off: MoneyBody,
    /// The order's sum before discounts must reach this (same currency as `amount_off`).
    pub min_order: Option<MoneyBody>,
    pub scope: Option<ScopeBody>,
    /// Valid from (default: now).
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// Valid until, exclusive (default: no end); after `starts_at`.
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// Uses in all (released uses of rejected or cancelled orders given back); default
    /// unlimited.
    #[schema(minimum = 1, maximum = 100_000_000)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub max_uses: Option<i64>,
    /// Uses per customer; default unlimited.
    #[schema(minimum = 1, maximum = 100_000_000)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub max_uses_per_customer: Option<i64>,
}

/// Terms every code has, from either body.
struct CommonTerms {
    min_order: Option<MoneyBody>,
    scope: Option<ScopeBody>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    max_uses: Option<i64>,
    max_uses_per_customer: Option<i64>,
}

macro_rules! common_terms {
    ($b:expr) => {
        CommonTerms {
            min_order: $b.min_order,
            scope: $b.scope,
            starts_at: $b.starts_at,
            ends_at: $b.ends_at,
            max_uses: $b.max_uses,
            max_uses_per_customer: $b.max_uses_per_customer,
        }
    };
}

fn optional_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::Deserialize as _;
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(v) => crate::extract::integer(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// `POST /v1/promotions`: exactly one of `percent_off` and `amount_off`. Only the schema
/// uses this union; the handler reads the body by the field it has, for clearer errors.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CreatePromotionBody {
    PercentOff(PercentOffBody),
    AmountOff(AmountOffBody),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PromotionView {
    pub code: String,
    pub percent_off: Option<u8>,
    pub amount_off: Option<MoneyBody>,
    pub min_order: Option<MoneyBody>,
    pub scope: ScopeBody,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub max_uses: Option<u32>,
    pub max_uses_per_customer: Option<u32>,
    /// Standing uses (released ones not counted).
    pub uses: u32,
}

fn time(pointer: &str, raw: &Option<String>, f: &mut Fields) -> Option<Option<i64>> {
    match raw {
        None => Some(None),
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(Some(t.timestamp_millis())),
            Err(e) => {
                f.push(pointer, format!("must be an RFC 3339 time: {e}"));
                None
            }
        },
    }
}

fn limit(pointer: &str, raw: Option<i64>, f: &mut Fields) -> Option<u32> {
    match raw {
        Some(n) if (1..=MAX_USES).contains(&n) => u32::try_from(n).ok(),
        Some(_) => {
            f.push(pointer, format!("must be between 1 and {MAX_USES}"));
            None
        }
        None => None,
    }
}

/// The command a create body asks for, every invalid field named at once.
fn command(
    code: &str,
    benefit: Result<Benefit, ()>,
    c: &CommonTerms,
    mut f: Fields,
) -> Result<PromotionCommand, ApiError> {
    let code = f.check("/code", PromoCode::parse(code));
    let min_order = c.min_order.as_ref().map(|m| m.parse("/min_order", &mut f));
    let scope = c.scope.as_ref();

    let mut skus = Vec::new();
    let mut cats = Vec::new();
    let mut merchants = Vec::new();
    if let Some(s) = scope {
        if s.skus.len() > MAX_SCOPE_ENTRIES
            || s.categories.len() > MAX_SCOPE_ENTRIES
            || s.merchants.len() > MAX_SCOPE_ENTRIES
        {
            f.push(
                "/scope",
                format!(
                    "at most {MAX_SCOPE_ENTRIES} SKUs, {MAX_SCOPE_ENTRIES} categories and \
                     {MAX_SCOPE_ENTRIES} merchants"
                ),
            );
        }
        for (i, raw) in s.merchants.iter().enumerate().take(MAX_SCOPE_ENTRIES) {
            merchants.extend(f.check(&format!("/scope/merchants/{i}"), MerchantId::parse(raw)));
        }
        for (i, raw) in s.skus.iter().enumerate().take(MAX_SCOPE_ENTRIES) {
            skus.extend(f.check(&format!("/scope/skus/{i}"), Sku::parse(raw)));
        }
        for (i, raw) in s.categories.iter().enumerate().take(MAX_SCOPE_ENTRIES) {
            cats.extend(f.check(&format!("/scope/categories/{i}"), Category::parse(raw)));
        }
    }
    let starts = time("/starts_at", &c.starts_at, &mut f);
    let ends = time("/ends_at", &c.ends_at, &mut f);
    let max_uses = limit("/max_uses", c.max_uses, &mut f);
    let per_customer = limit("/max_uses_per_customer", c.max_uses_per_customer, &mut f);
    match (code, benefit, starts, ends) {
        (Some(code), Ok(benefit), Some(starts), Some(ends_at_ms))
            if f.is_empty() && min_order.as_ref().is_none_or(Option::is_some) =>
        {
            Ok(PromotionCommand::Create {
                code,
                terms: PromotionTerms {
                    benefit,
                    min_order: min_order.flatten(),
                    scope: Scope {
                        skus,
                        categories: cats,
                        merchants,
                    },
                    starts_at_ms: starts.unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
                    ends_at_ms,
                    max_uses,
                    max_uses_per_customer: per_customer,
                },
            })
        }
        _ => Err(f.into_error()),
    }
}

/// Which kind of promotion a body asks for, read before the body itself.
#[derive(Deserialize)]
struct Which {
    percent_off: Option<serde::de::IgnoredAny>,
    amount_off: Option<serde::de::IgnoredAny>,
}

/// Create a promotion code: `percent_off` (1–100) or `amount_off`, with an optional minimum
/// order, scope (SKUs, categories, merchants), validity window and usage limits (in all, per customer).
#[utoipa::path(post, path = "/v1/promotions", tag = "promotions", request_body = CreatePromotionBody,
    responses((status = 201, description = "Created", body = PromotionView), CommandProblems))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    body: Bytes,
) -> Result<(StatusCode, Json<PromotionView>), ApiError> {
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::field("", format!("invalid JSON: {e}")))?;
    let which: Which = serde_json::from_value(value.clone())
        .map_err(|e| ApiError::field("", format!("invalid promotion: {e}")))?;
    let cmd = match (which.percent_off.is_some(), which.amount_off.is_some()) {
        (true, false) => {
            let b: PercentOffBody = serde_json::from_value(value)
                .map_err(|e| ApiError::field("", format!("invalid promotion: {e}")))?;
            let mut f = Fields::default();
            let benefit = match u8::try_from(b.percent_off) {
                Ok(p) if (1..=100).contains(&p) => Ok(Benefit::PercentOff(p)),
                _ => {
                    f.push("/percent_off", "must be between 1 and 100");
                    Err(())
                }
            };
            command(&b.code.clone(), benefit, &common_terms!(b), f)?
        }
        (false, true) => {
            let b: AmountOffBody = serde_json::from_value(value)
                .map_err(|e| ApiError::field("", format!("invalid promotion: {e}")))?;
            let mut f = Fields::default();
            // A zero amount is well-formed money: the promotion's rules refuse it (409).
            let benefit = match b.amount_off.parse("/amount_off", &mut f) {
                Some(m) => Ok(Benefit::AmountOff(m)),
                None => Err(()),
            };
            command(&b.code.clone(), benefit, &common_terms!(b), f)?
        }
        _ => {
            return Err(ApiError::field(
                "",
                "a promotion has exactly one of percent_off and amount_off",
            ))
        }
    };
    let PromotionCommand::Create { code, terms } = &cmd else {
        return Err(ApiError::Internal("not a create command".into()));
    };
    // A scope naming a merchant nobody registered would never apply: say so now (404).
    for m in &terms.scope.merchants {
        if m.as_str() != HOUSE {
            super::merchants::load_merchant(&state, m).await?;
        }
    }
    let code = code.clone();
    execute::<Promotion>(&state, &ctx, code.as_str(), cmd).await?;
    let (p, _) = state.store.load::<Promotion>(code.as_str()).await?;
    Ok((StatusCode::CREATED, Json(view(&p)?)))
}

/// A promotion code's terms and how often it is used.
#[utoipa::path(get, path = "/v1/promotions/{code}", tag = "promotions",
    params(("code" = String, Path, description = "The code (any case)", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{1,31}$")),
    responses((status = 200, description = "The promotion", body = PromotionView), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(code): ApiPath<String>,
) -> Result<Json<PromotionView>, ApiError> {
    let code = PromoCode::parse(&code).map_err(|e| ApiError::field("/code", e))?;
    let (p, version) = state.store.load::<Promotion>(code.as_str()).await?;
    if version == 0 {
        return Err(ApiError::NotFound(format!("no promotion {code}")));
    }
    Ok(Json(view(&p)?))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn view(p: &Promotion) -> Result<PromotionView, ApiError> {
    let (Some(code), Some(t)) = (p.code(), p.terms()) else {
        return Err(ApiError::NotFound("no such promotion".into()));
    };
    Ok(PromotionView {
        code: code.to_string(),
        percent_off: match t.benefit {
            Benefit::PercentOff(p) => Some(p),
            Benefit::AmountOff(_) => None,
        },
        amount_off: match &t.benefit {
            Benefit::AmountOff(m) => Some(MoneyBody::from_money(m)),
            Benefit::PercentOff(_) => None,
        },
        min_order: t.min_order.as_ref().map(MoneyBody::from_money),
        scope: ScopeBody {
            skus: t.scope.skus.iter().map(ToString::to_string).collect(),
            categories: t.scope.categories.iter().map(ToString::to_string).collect(),
            merchants: t.scope.merchants.iter().map(ToString::to_string).collect(),
        },
        starts_at: rfc3339(t.starts_at_ms),
        ends_at: t.ends_at_ms.map(rfc3339),
        max_uses: t.max_uses,
        max_uses_per_customer: t.max_uses_per_customer,
        uses: p.uses(),
    })
}
