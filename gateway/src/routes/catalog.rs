//! `GET /v1/catalog/products`: catalog search over the catalog read model.

use axum::extract::State;
use axum::Json;
use emporium_projections::catalog::{self, Facets, Item, Search, Sort};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ReadProblems};
use crate::extract::ApiQuery;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// Text to find in title, description and category; tolerates typos.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub q: Option<String>,
    #[param(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub category: Option<String>,
    /// Lowest price, minor units.
    pub min_price: Option<i64>,
    /// Highest price, minor units.
    pub max_price: Option<i64>,
    /// Only products with stock available somewhere.
    pub in_stock: Option<bool>,
    /// `relevance` (default), `price_asc`, `price_desc` or `title`.
    #[param(pattern = "^(relevance|price_asc|price_desc|title)$")]
    pub sort: Option<String>,
    /// Page size, 1..=1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^o[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Item>,
    /// Matches over all pages.
    pub total: i64,
    /// Counts per category and per price band over all matches.
    #[schema(value_type = Object)]
    pub facets: Facets,
    pub next_cursor: Option<String>,
}

/// Search the catalog: text (with typo tolerance), filters, facets, sorting, pages.
#[utoipa::path(get, path = "/v1/catalog/products", tag = "catalog", params(CatalogQuery),
    responses((status = 200, description = "Matching products with availability and facets", body = CatalogPage), ReadProblems))]
pub async fn search(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CatalogQuery>,
) -> Result<Json<CatalogPage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("/limit", "must be between 1 and 1000"));
    }
    let offset = match &q.cursor {
        Some(c) => c
            .strip_prefix("o")
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::field("/cursor", "not a cursor from this API"))?,
        None => 0,
    };
    let sort = match q.sort.as_deref() {
        None | Some("relevance") => Sort::Relevance,
        Some("price_asc") => Sort::PriceAsc,
        Some("price_desc") => Sort::PriceDesc,
        Some("title") => Sort::Title,
        Some(_) => {
            return Err(ApiError::field(
                "/sort",
                "one of relevance, price_asc, price_desc, title",
            ))
        }
    };
    if q.q.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::field("/q", "at most 200 characters"));
    }
    // `min_price` above `max_price` is an empty range: no product matches, no error.
    let db = state.store.db();
    let (gen, _) = emporium_projections::runner::state(db, "catalog")
        .await
        .map_err(projection_error)?;
    let search = Search {
        q: q.q.unwrap_or_default(),
        category: q.category,
        min_price: q.min_price,
        max_price: q.max_price,
        in_stock: q.in_stock.unwrap_or(false),
        sort,
        offset,
        limit,
    };
    let results = catalog::search(db, gen, &search)
        .await
        .map_err(projection_error)?;
    let next = offset + results.items.len() as i64;
    Ok(Json(CatalogPage {
        next_cursor: (next < results.total).then(|| format!("o{next}")),
        items: results.items,
        total: results.total,
        facets: results.facets,
    }))
}

pub(crate) fn projection_error(e: emporium_projections::ProjectionError) -> ApiError {
    use emporium_event_store::StoreError;
    match e {
        // Right after a start the runner may not have created the read model's tables
        // yet: a retry soon will find them, so this is 503, not a defect.
        emporium_projections::ProjectionError::Store(StoreError::Database(
            sqlx::Error::Database(ref db),
        )) if db.code().as_deref() == Some("42P01") || db.message().contains("no such table") => {
            ApiError::Unavailable(format!("the read model is still being built: {e}"))
        }
        emporium_projections::ProjectionError::Store(s) => ApiError::from(s),
        other => ApiError::Internal(other.to_string()),
    }
}
