//! Catalog and stock for operators: the API's catalog search (the same index, the same
//! validation) with category facets, and every product's stock per warehouse.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::session::Session;
use super::views::{layout, money};
use super::{require, ConsoleError, Page};
use crate::extract::ApiQuery;
use crate::routes::catalog::{search, CatalogQuery};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct CatalogForm {
    q: Option<String>,
    category: Option<String>,
    in_stock: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<CatalogForm>,
) -> Result<Response, ConsoleError> {
    require(&session, Page::Catalog)?;
    let in_stock = f.in_stock.as_deref() == Some("on");
    let query = CatalogQuery {
        q: given(&f.q),
        category: given(&f.category),
        min_price: None,
        max_price: None,
        in_stock: in_stock.then_some(true),
        warehouse: None,
        sort: given(&f.sort),
        limit: Some(25),
        cursor: given(&f.cursor),
    };
    let results = search(State(state), ApiQuery(query)).await?.0;
    let next = results.next_cursor.as_ref().map(|c| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("q", &f.q), ("category", &f.category), ("sort", &f.sort)] {
            if let Some(v) = given(v) {
                s.append_pair(k, &v);
            }
        }
        if in_stock {
            s.append_pair("in_stock", "on");
        }
        s.append_pair("cursor", c);
        format!("/console/catalog?{}", s.finish())
    });
    let sorts = [
        ("relevance", "relevance"),
        ("price_asc", "price, low first"),
        ("price_desc", "price, high first"),
        ("newest", "newest"),
        ("title", "title"),
    ];
    let body = html! {
        h1 { "Catalog & stock" }
        form.filters method="get" action="/console/catalog"
            hx-get="/console/catalog" hx-target="#results" hx-select="#results" hx-swap="outerHTML" hx-push-url="true" {
            label { "Search " input type="search" name="q" value=[given(&f.q)] maxlength="200" placeholder="title, words or SKU"; }
            label { "Category " input type="text" name="category" value=[given(&f.category)] maxlength="100"; }
            label { input type="checkbox" name="in_stock" checked[in_stock]; " in stock" }
            label { "Sort "
                select name="sort" { @for (v, t) in sorts { option value=(v) selected[given(&f.sort).as_deref() == Some(v)] { (t) } } }
            }
            button type="submit" { "Search" }
        }
        div #results {
            p.muted { (results.total) " products match" }
            div.facets {
                @for (c, n) in &results.facets.category {
                    a.facet href={"/console/catalog?category=" (form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>())} { (c) " (" (n) ")" }
                }
            }
            table.list #products {
                thead { tr { th { "SKU" } th { "Title" } th { "Category" } th { "Price" } th { "Available" } th { "Stock per warehouse (on hand / reserved / available)" } } }
                tbody {
                    @for i in &results.items {
                        tr {
                            td { code { (i.sku) } }
                            td { (i.title) @if i.discontinued { " " span.status.cancelled { "discontinued" } } }
                            td { (i.category) }
                            td.num { (money(i.price_minor, &i.currency)) }
                            td.num { (i.available) }
                            td {
                                @for w in &i.warehouses {
                                    span.stock { (w.warehouse_id) ": " (w.on_hand) " / " (w.reserved) " / " (w.available) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(n) = &next { p { a.next href=(n) { "More →" } } }
        }
    };
    Ok(layout(Some(&session), "Catalog & stock", Some(Page::Catalog), body).into_response())
}
