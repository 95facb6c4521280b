//! Products: create, read, change details or price, discontinue.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use emporium_domain::product::{Product, ProductCommand, ProductError};
use emporium_domain::values::{Category, Description, Sku, Title};
use serde::{Deserialize, Serialize};

use super::{execute, Fields, MoneyBody};
use crate::error::{ApiError, CommandProblems, ReadProblems};
use crate::extract::{ApiJson, ApiPath, RequestContext};
use crate::state::AppState;

impl From<ProductError> for ApiError {
    fn from(e: ProductError) -> Self {
        match e {
            ProductError::NotFound => ApiError::NotFound("no such product".into()),
            ProductError::AlreadyExists { .. } => ApiError::conflict("product_exists", e),
            ProductError::Discontinued { .. } => ApiError::conflict("product_discontinued", e),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductBody {
    #[schema(schema_with = crate::schema::sku)]
    pub sku: String,
    #[schema(schema_with = crate::schema::title)]
    pub title: String,
    #[serde(default)]
    #[schema(schema_with = crate::schema::description)]
    pub description: String,
    #[schema(schema_with = crate::schema::category)]
    pub category: String,
    pub price: MoneyBody,
    /// The seller (default: the built-in `house` merchant); must be registered.
    #[schema(schema_with = crate::schema::optional_merchant_id)]
    pub merchant_id: Option<String>,
}

impl TryFrom<CreateProductBody> for ProductCommand {
    type Error = ApiError;

    fn try_from(b: CreateProductBody) -> Result<Self, ApiError> {
        let mut f = Fields::default();
        let sku = f.check("/sku", Sku::parse(&b.sku));
        let title = f.check("/title", Title::parse(&b.title));
        let description = f.check("/description", Description::parse(&b.description));
        let category = f.check("/category", Category::parse(&b.category));
        let price = b.price.parse("/price", &mut f);
        let merchant_id = match &b.merchant_id {
            // The house merchant is the default, named or not.
            Some(m) if m == emporium_domain::merchant::HOUSE => Some(None),
            Some(m) => f
                .check(
                    "/merchant_id",
                    emporium_domain::values::MerchantId::parse(m),
                )
                .map(Some),
            None => Some(None),
        };
        match (sku, title, description, category, price, merchant_id) {
            (
                Some(sku),
                Some(title),
                Some(description),
                Some(category),
                Some(price),
                Some(merchant_id),
            ) => Ok(ProductCommand::CreateProduct {
                sku,
                title,
                description,
                category,
                price,
                merchant_id,
            }),
            _ => Err(f.into_error()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeDetailsBody {
    #[schema(schema_with = crate::schema::title)]
    pub title: String,
    #[serde(default)]
    #[schema(schema_with = crate::schema::description)]
    pub description: String,
    #[schema(schema_with = crate::schema::category)]
    pub category: String,
}

impl TryFrom<ChangeDetailsBody> for ProductCommand {
    type Error = ApiError;

    fn try_from(b: ChangeDetailsBody) -> Result<Self, ApiError> {
        let mut f = Fields::default();
        let title = f.check("/title", Title::parse(&b.title));
        let description = f.check("/description", Description::parse(&b.description));
        let category = f.check("/category", Category::parse(&b.category));
        match (title, description, category) {
            (Some(title), Some(description), Some(category)) => {
                Ok(ProductCommand::ChangeProductDetails {
                    title,
                    description,
                    category,
                })
            }
            _ => Err(f.into_error()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePriceBody {
    pub price: MoneyBody,
}

impl TryFrom<ChangePriceBody> for ProductCommand {
    type Error = ApiError;

    fn try_from(b: ChangePriceBody) -> Result<Self, ApiError> {
        let mut f = Fields::default();
        match b.price.parse("/price", &mut f) {
            Some(price) => Ok(ProductCommand::ChangePrice { price }),
            None => Err(f.into_error()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductView {
    pub sku: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub price: MoneyBody,
    pub discontinued: bool,
    /// The seller (`house` for the built-in merchant).
    pub merchant_id: String,
}

pub(crate) fn parse_sku(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|e| ApiError::field("/sku", e))
}

pub(crate) async fn load_product(state: &AppState, sku: &Sku) -> Result<Product, ApiError> {
    let (product, _) = state.store.load::<Product>(sku.as_str()).await?;
    if product.is_created() {
        Ok(product)
    } else {
        Err(ApiError::NotFound(format!("no product {sku}")))
    }
}

/// The product if the caller may see it: a merchant key sees only its own products
/// (another merchant's is reported missing, so keys cannot probe each other's catalog).
pub(crate) fn visible_product(
    actor: &crate::keys::Actor,
    sku: &Sku,
    p: Product,
) -> Result<Product, ApiError> {
    if actor.role == crate::keys::Role::Merchant && p.merchant_id() != actor.merchant_id.as_ref() {
        return Err(ApiError::NotFound(format!("no product {sku}")));
    }
    Ok(p)
}

/// [`load_product`] as `actor` may see it.
pub(crate) async fn load_product_as(
    state: &AppState,
    actor: &crate::keys::Actor,
    sku: &Sku,
) -> Result<Product, ApiError> {
    visible_product(actor, sku, load_product(state, sku).await?)
}

fn view(p: &Product) -> Result<ProductView, ApiError> {
    match (p.sku(), p.title(), p.description(), p.category(), p.price()) {
        (Some(sku), Some(title), Some(description), Some(category), Some(price)) => {
            Ok(ProductView {
                sku: sku.to_string(),
                title: title.to_string(),
                description: description.to_string(),
                category: category.to_string(),
                price: MoneyBody::from_money(price),
                discontinued: p.is_discontinued(),
                merchant_id: p.merchant_id().map_or(
                    emporium_domain::merchant::HOUSE.to_string(),
                    ToString::to_string,
                ),
            })
        }
        _ => Err(ApiError::Internal("created product without details".into())),
    }
}

async fn current_view(state: &AppState, sku: &Sku) -> Result<ProductView, ApiError> {
    view(&load_product(state, sku).await?)
}

/// Create a product.
#[utoipa::path(post, path = "/v1/products", tag = "catalog", request_body = CreateProductBody,
    responses((status = 201, description = "Created", body = ProductView), CommandProblems))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiJson(body): ApiJson<CreateProductBody>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let mut command = ProductCommand::try_from(body)?;
    let ProductCommand::CreateProduct {
        sku, merchant_id, ..
    } = &mut command
    else {
        return Err(ApiError::Internal("unexpected command".into()));
    };
    if ctx.actor.role == crate::keys::Role::Merchant {
        // A merchant creates its own products only.
        match (merchant_id.as_ref(), ctx.actor.merchant_id.as_ref()) {
            (None, Some(own)) => *merchant_id = Some(own.clone()),
            (Some(asked), Some(own)) if asked == own => {}
            _ => {
                return Err(ApiError::Forbidden(
                    "a merchant key may only create its own products".into(),
                ))
            }
        }
    }
    if let Some(m) = merchant_id {
        super::merchants::load_merchant(&state, m).await?;
    }
    let sku = sku.clone();
    execute::<Product>(&state, &ctx, sku.as_str(), command).await?;
    Ok((StatusCode::CREATED, Json(current_view(&state, &sku).await?)))
}

/// Read a product; with `as_of`, as it was then.
#[utoipa::path(get, path = "/v1/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "Product SKU", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), super::AsOfQuery),
    responses((status = 200, description = "The product", body = ProductView), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(sku): ApiPath<String>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<super::AsOfQuery>,
) -> Result<Json<ProductView>, ApiError> {
    let sku = parse_sku(&sku)?;
    match q.point()? {
        None => Ok(Json(view(
            &load_product_as(&state, &ctx.actor, &sku).await?,
        )?)),
        Some(at) => {
            let (p, _) = super::load_at::<Product>(&state, sku.as_str(), Some(at)).await?;
            if !p.is_created() {
                return Err(ApiError::NotFound(format!(
                    "no product {sku} at that point"
                )));
            }
            Ok(Json(view(&visible_product(&ctx.actor, &sku, p)?)?))
        }
    }
}

/// Change a product's title, description and category.
#[utoipa::path(put, path = "/v1/products/{sku}", tag = "catalog", request_body = ChangeDetailsBody,
    params(("sku" = String, Path, description = "Product SKU", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Changed", body = ProductView), CommandProblems))]
pub async fn change_details(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<ChangeDetailsBody>,
) -> Result<Json<ProductView>, ApiError> {
    let sku = parse_sku(&sku)?;
    let command = ProductCommand::try_from(body)?;
    load_product_as(&state, &ctx.actor, &sku).await?;
    execute::<Product>(&state, &ctx, sku.as_str(), command).await?;
    Ok(Json(current_view(&state, &sku).await?))
}

/// Change a product's price (placed orders keep the price they captured).
#[utoipa::path(put, path = "/v1/products/{sku}/price", tag = "catalog", request_body = ChangePriceBody,
    params(("sku" = String, Path, description = "Product SKU", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Changed", body = ProductView), CommandProblems))]
pub async fn change_price(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<ChangePriceBody>,
) -> Result<Json<ProductView>, ApiError> {
    let sku = parse_sku(&sku)?;
    let command = ProductCommand::try_from(body)?;
    load_product_as(&state, &ctx.actor, &sku).await?;
    execute::<Product>(&state, &ctx, sku.as_str(), command).await?;
    Ok(Json(current_view(&state, &sku).await?))
}

/// Discontinue a product: it can no longer be ordered.
#[utoipa::path(post, path = "/v1/products/{sku}/discontinue", tag = "catalog",
    params(("sku" = String, Path, description = "Product SKU", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
    responses((status = 200, description = "Discontinued", body = ProductView), CommandProblems))]
pub async fn discontinue(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiPath(sku): ApiPath<String>,
) -> Result<Json<ProductView>, ApiError> {
    let sku = parse_sku(&sku)?;
    load_product_as(&state, &ctx.actor, &sku).await?;
    execute::<Product>(&state, &ctx, sku.as_str(), ProductCommand::Discontinue).await?;
    Ok(Json(current_view(&state, &sku).await?))
}
