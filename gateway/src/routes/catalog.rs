//! `GET /v1/catalog/products`: catalog search over this process's search index
//! (`emporium_projections::search`).

use axum::extract::State;
use axum::Json;
use emporium_projections::catalog::{Facets, Item};
use emporium_projections::search::{Cursor, SearchQuery, SortBy};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ReadProblems};
use crate::extract::ApiQuery;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// Text to find in title, description and category: stems (`earbud` finds "Earbuds"),
    /// typos (one edit from 4 letters, two from 8), the last word as a prefix; an exact SKU
    /// ranks first.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub q: Option<String>,
    #[param(max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub category: Option<String>,
    /// Lowest price, minor units.
    pub min_price: Option<i64>,
    /// Highest price, minor units.
    pub max_price: Option<i64>,
    /// Only products with stock available somewhere.
    pub in_stock: Option<bool>,
    /// Only products with stock available in this warehouse.
    #[param(max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub warehouse: Option<String>,
    /// `relevance` (default), `price_asc`, `price_desc`, `newest` or `title`.
    #[param(pattern = "^(relevance|price_asc|price_desc|newest|title)$")]
    pub sort: Option<String>,
    /// Page size, 1..=1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor` (same query). The cursor carries its order:
    /// with a cursor, `sort` is ignored.
    #[param(
        max_length = 1700,
        pattern = "^k([radn][0-9]{1,20}\\.-?[0-9]{1,20}|t[0-9]{1,20}\\.([0-9a-f]{2}){0,800})$"
    )]
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
    /// The feed position this answer reflects (every event up to it, none after).
    pub position: i64,
}

/// Longest category or warehouse filter accepted.
const MAX_FILTER_CHARS: usize = 100;

/// Search the catalog: text (stems, typos, prefixes), filters, facets, sorting, pages.
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
    let mut sort = match q.sort.as_deref() {
        None | Some("relevance") => SortBy::Relevance,
        Some("price_asc") => SortBy::PriceAsc,
        Some("price_desc") => SortBy::PriceDesc,
        Some("newest") => SortBy::Newest,
        Some("title") => SortBy::Title,
        Some(_) => {
            return Err(ApiError::field(
                "/sort",
                "one of relevance, price_asc, price_desc, newest, title",
            ))
        }
    };
    let after = match &q.cursor {
        Some(c) => {
            let cursor = Cursor::decode(c)
                .ok_or_else(|| ApiError::field("/cursor", "not a cursor from this API"))?;
            sort = cursor.sort();
            Some(cursor)
        }
        None => None,
    };
    if q.q.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::field("/q", "at most 200 characters"));
    }
    for (field, value) in [("/category", &q.category), ("/warehouse", &q.warehouse)] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_FILTER_CHARS)
        {
            return Err(ApiError::field(field, "at most 100 characters"));
        }
    }
    let Some(index) = state.search.clone() else {
        return Err(ApiError::Unavailable(
            "catalog search does not run in this process".into(),
        ));
    };
    if !index.is_ready() {
        return Err(ApiError::Unavailable(
            "the catalog search index is still being built".into(),
        ));
    }
    // `min_price` above `max_price` is an empty range: no product matches, no error.
    let query = SearchQuery {
        q: q.q.unwrap_or_default(),
        category: q.category,
        min_price: q.min_price,
        max_price: q.max_price,
        in_stock: q.in_stock.unwrap_or(false),
        warehouse: q.warehouse,
        sort,
        after,
        limit: limit as usize,
    };
    let results = tokio::task::spawn_blocking(move || index.search(&query))
        .await
        .map_err(|e| ApiError::Internal(format!("search task: {e}")))?
        .map_err(projection_error)?;
    Ok(Json(CatalogPage {
        next_cursor: results.next.map(|c| c.encode()),
        items: results.items,
        total: results.total,
        facets: results.facets,
        position: results.position,
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
