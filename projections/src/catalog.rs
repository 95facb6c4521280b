//! The catalog read model: each product with its current price, discontinued flag and
//! availability per warehouse and in total; and catalog search (text with typo tolerance,
//! filters, facets, sorting, paging).
//!
//! Postgres searches with full-text (`simple` configuration) plus `pg_trgm` similarity on
//! title and category, both index-backed. The embedded store filters in SQL and scores text
//! in Rust with the same trigram measure, which is fine at embedded catalogue sizes.

use std::collections::{BTreeMap, HashSet};

use emporium_domain::{Event, ProductEvent};
use emporium_event_store::{on_db, Db, Envelope};
use serde::Serialize;

use crate::rows::{self, V};
use crate::{table, Projection, Result, Tx};

pub struct Catalog;

pub const PRODUCTS: &str = "catalog_products";
pub const STOCK: &str = "catalog_stock";

/// Price bands of the `price` facet, in minor units: [lower, upper).
pub const PRICE_BANDS: [(i64, Option<i64>); 5] = [
    (0, Some(1_000)),
    (1_000, Some(5_000)),
    (5_000, Some(10_000)),
    (10_000, Some(50_000)),
    (50_000, None),
];

#[async_trait::async_trait]
impl Projection for Catalog {
    fn name(&self) -> &'static str {
        "catalog"
    }

    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        &[(PRODUCTS, "sku"), (STOCK, "sku, warehouse_id")]
    }

    fn create_tables(&self, db: &Db, gen: i64) -> Vec<String> {
        let p = table(PRODUCTS, gen);
        let st = table(STOCK, gen);
        let mut v = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {p} (
                    sku text PRIMARY KEY,
                    title text NOT NULL,
                    description text NOT NULL,
                    category text NOT NULL,
                    price_minor bigint NOT NULL,
                    currency text NOT NULL,
                    discontinued bigint NOT NULL DEFAULT 0,
                    price_changes bigint NOT NULL DEFAULT 0,
                    on_hand bigint NOT NULL DEFAULT 0,
                    reserved bigint NOT NULL DEFAULT 0,
                    available bigint NOT NULL DEFAULT 0,
                    search text NOT NULL,
                    document text NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {st} (
                    sku text NOT NULL,
                    warehouse_id text NOT NULL,
                    on_hand bigint NOT NULL,
                    reserved bigint NOT NULL,
                    available bigint NOT NULL,
                    PRIMARY KEY (sku, warehouse_id)
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS {p}_category ON {p} (category, price_minor)"),
            format!("CREATE INDEX IF NOT EXISTS {p}_price ON {p} (price_minor)"),
        ];
        if matches!(db, Db::Postgres(_)) {
            v.push(format!(
                "CREATE INDEX IF NOT EXISTS {p}_trgm ON {p} USING gin (search gin_trgm_ops)"
            ));
            v.push(format!(
                "CREATE INDEX IF NOT EXISTS {p}_fts ON {p} USING gin (to_tsvector('simple', document))"
            ));
        }
        v
    }

    async fn apply(&self, tx: &mut Tx, gen: i64, event: &Envelope<Event>) -> Result<()> {
        self.apply_batch(tx, gen, std::slice::from_ref(event)).await
    }

    /// Per event as `apply` would, except that stock rows are written once per batch with
    /// their last levels, in one statement, and a product's stock totals are refreshed once
    /// per batch for each SKU whose stock changed, not once per stock event.
    async fn apply_batch(&self, tx: &mut Tx, gen: i64, events: &[Envelope<Event>]) -> Result<()> {
        let mut touched = std::collections::BTreeSet::new();
        let mut stock = BTreeMap::new();
        for event in events {
            apply_one(tx, gen, event, &mut touched, &mut stock).await?;
        }
        let rows: Vec<V> = stock
            .iter()
            .flat_map(|((sku, w), (on_hand, reserved, available))| {
                [
                    V::S(sku),
                    V::S(w),
                    V::I(*on_hand),
                    V::I(*reserved),
                    V::I(*available),
                ]
            })
            .collect();
        let st = table(STOCK, gen);
        rows::insert(
            tx,
            &format!("INSERT INTO {st} (sku, warehouse_id, on_hand, reserved, available)"),
            "ON CONFLICT (sku, warehouse_id) DO UPDATE SET on_hand = excluded.on_hand, \
             reserved = excluded.reserved, available = excluded.available",
            5,
            &rows,
        )
        .await?;
        let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
        refresh_totals(tx, gen, &touched).await
    }
}

/// One event's rows; the SKUs whose totals must be refreshed go into `touched`, stock
/// levels into `stock` (the last per SKU and warehouse), written by the caller.
async fn apply_one<'a>(
    tx: &mut Tx,
    gen: i64,
    event: &'a Envelope<Event>,
    touched: &mut std::collections::BTreeSet<String>,
    stock: &mut BTreeMap<(&'a str, &'a str), (i64, i64, i64)>,
) -> Result<()> {
    let p = table(PRODUCTS, gen);
    match &event.payload {
        Event::Product(ProductEvent::ProductCreated {
            sku,
            title,
            description,
            category,
            price,
            ..
        }) => {
            let (title, desc, cat) = (title.as_str(), description.as_str(), category.as_str());
            let sql = tx.sql(&format!(
                    "INSERT INTO {p} (sku, title, description, category, price_minor, currency, search, document)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (sku) DO UPDATE SET title = excluded.title,
                       description = excluded.description, category = excluded.category,
                       price_minor = excluded.price_minor, currency = excluded.currency,
                       search = excluded.search, document = excluded.document"
                ));
            crate::on_tx!(tx, c => {
                sqlx::query(&sql).bind(sku.as_str()).bind(title).bind(desc).bind(cat)
                    .bind(price.amount_minor()).bind(price.currency().as_str()).bind(search_text(title, cat))
                    .bind(format!("{title} {desc} {cat}")).execute(&mut **c).await?.rows_affected()
            });
            touched.insert(sku.to_string());
        }
        Event::Product(ProductEvent::ProductDetailsChanged {
            title,
            description,
            category,
        }) => {
            let (title, desc, cat) = (title.as_str(), description.as_str(), category.as_str());
            let sql = tx.sql(&format!(
                "UPDATE {p} SET title = $1, description = $2, category = $3, search = $4,
                     document = $5 WHERE sku = $6"
            ));
            crate::on_tx!(tx, c => {
                sqlx::query(&sql).bind(title).bind(desc).bind(cat).bind(search_text(title, cat))
                    .bind(format!("{title} {desc} {cat}")).bind(&event.aggregate_id)
                    .execute(&mut **c).await?.rows_affected()
            });
        }
        Event::Product(ProductEvent::ProductPriceChanged { sku, new_price, .. }) => {
            let sql = tx.sql(&format!(
                "UPDATE {p} SET price_minor = $1, currency = $2, price_changes = price_changes + 1
                     WHERE sku = $3"
            ));
            crate::on_tx!(tx, c => {
                sqlx::query(&sql).bind(new_price.amount_minor()).bind(new_price.currency().as_str())
                    .bind(sku.as_str()).execute(&mut **c).await?.rows_affected()
            });
        }
        Event::Product(ProductEvent::ProductDiscontinued { sku }) => {
            let sql = tx.sql(&format!("UPDATE {p} SET discontinued = 1 WHERE sku = $1"));
            crate::on_tx!(tx, c => {
                sqlx::query(&sql).bind(sku.as_str()).execute(&mut **c).await?.rows_affected()
            });
        }
        Event::StockItem(e) => {
            let (warehouse_id, sku, levels) = e.levels();
            stock.insert(
                (sku.as_str(), warehouse_id.as_str()),
                (
                    levels.on_hand as i64,
                    levels.reserved as i64,
                    levels.available as i64,
                ),
            );
            touched.insert(sku.to_string());
        }
        Event::Warehouse(_)
        | Event::Order(_)
        | Event::Payment(_)
        | Event::Checkout(_)
        | Event::Promotion(_)
        | Event::Merchant(_) => {}
    }
    Ok(())
}

/// Sets each of `skus`' stock totals to the sum over its warehouses, in one statement (per
/// bind-limit chunk on SQLite). Only SKUs with stock rows change; the others keep 0.
async fn refresh_totals(tx: &mut Tx, gen: i64, skus: &[&str]) -> Result<()> {
    let p = table(PRODUCTS, gen);
    let st = table(STOCK, gen);
    // The key list is repeated for the products: the planner would otherwise join the
    // sums to the whole table by scanning it.
    let statement = |keys: &str| {
        format!(
            "UPDATE {p} SET on_hand = t.on_hand, reserved = t.reserved, available = t.available
             FROM (SELECT sku, SUM(on_hand) AS on_hand, SUM(reserved) AS reserved,
                          SUM(available) AS available
                   FROM {st} WHERE sku {keys} GROUP BY sku) AS t
             WHERE {p}.sku = t.sku AND {p}.sku {keys}"
        )
    };
    if skus.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Pg(c) => {
            sqlx::query(&statement("= ANY($1::text[])"))
                .bind(skus)
                .execute(&mut **c)
                .await?;
        }
        Tx::Lite(c) => {
            for chunk in skus.chunks(10_000) {
                let params: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
                let sql = statement(&format!("IN ({})", params.join(", ")));
                let mut q = sqlx::query(&sql);
                for sku in chunk {
                    q = q.bind(*sku);
                }
                q.execute(&mut **c).await?;
            }
        }
    }
    Ok(())
}

/// What trigram similarity compares: short, so a typo weighs as much as in the title.
fn search_text(title: &str, category: &str) -> String {
    format!("{title} {category}").to_lowercase()
}

/// Sort orders of a catalog search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    Title,
}

/// A catalog search.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub q: String,
    pub category: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub sort: Sort,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StockLevel {
    pub warehouse_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    pub sku: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub price_minor: i64,
    pub currency: String,
    pub discontinued: bool,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub warehouses: Vec<StockLevel>,
    /// How well the item matches `q`: higher is better (BM25 plus typo and prefix matches in
    /// the search index; 0 without a query).
    pub score: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PriceBand {
    pub min_minor: i64,
    pub max_minor: Option<i64>,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Facets {
    pub category: BTreeMap<String, i64>,
    pub price: Vec<PriceBand>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub items: Vec<Item>,
    pub total: i64,
    pub facets: Facets,
}

type Row = (
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    f64,
);

/// Minimum trigram similarity for a typo match.
const SIMILARITY: f64 = 0.3;

/// Runs a search on the live generation.
pub async fn search(db: &Db, gen: i64, q: &Search) -> Result<Results> {
    let p = table(PRODUCTS, gen);
    let needle = q.q.trim().to_lowercase();
    let (rows, total, facets) = match db {
        Db::Postgres(pool) => {
            // The WHERE clause holds only the filters given, so Postgres plans each search
            // with the matching indexes (trigram GIN, full-text GIN, category/price btree)
            // instead of a generic plan full of `$n IS NULL OR ...`.
            let push_where = |qb: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>| {
                qb.push(" WHERE TRUE");
                if let Some(c) = &q.category {
                    qb.push(" AND category = ").push_bind(c.clone());
                }
                if let Some(m) = q.min_price {
                    qb.push(" AND price_minor >= ").push_bind(m);
                }
                if let Some(m) = q.max_price {
                    qb.push(" AND price_minor <= ").push_bind(m);
                }
                if q.in_stock {
                    qb.push(" AND available > 0");
                }
                if !needle.is_empty() {
                    qb.push(" AND (search % ").push_bind(needle.clone());
                    qb.push(" OR ").push_bind(needle.clone()).push(" <% search");
                    qb.push(" OR to_tsvector('simple', document) @@ plainto_tsquery('simple', ")
                        .push_bind(needle.clone())
                        .push("))");
                }
            };
            let order = match q.sort {
                Sort::Relevance => "score DESC, sku",
                Sort::PriceAsc => "price_minor, sku",
                Sort::PriceDesc => "price_minor DESC, sku",
                Sort::Title => "title, sku",
            };
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT sku, title, description, category, price_minor, currency, discontinued,
                        on_hand, reserved, available, ",
            );
            if needle.is_empty() {
                qb.push("1.0::float8");
            } else {
                qb.push("GREATEST(similarity(")
                    .push_bind(needle.clone())
                    .push(", search), word_similarity(")
                    .push_bind(needle.clone())
                    .push(", search))::float8");
            }
            qb.push(format!(" AS score FROM {p}"));
            push_where(&mut qb);
            qb.push(format!(" ORDER BY {order} LIMIT "))
                .push_bind(q.limit)
                .push(" OFFSET ")
                .push_bind(q.offset);
            let mut conn = pool.acquire().await?;
            // Per-connection thresholds of the `%` and `<%` operators.
            sqlx::query(&format!(
                "SELECT set_limit({SIMILARITY}), set_config('pg_trgm.word_similarity_threshold', '0.5', false)"
            ))
            .execute(&mut *conn)
            .await?;
            let rows: Vec<Row> = qb.build_query_as().fetch_all(&mut *conn).await?;
            let bands = PRICE_BANDS
                .iter()
                .enumerate()
                .map(|(n, (lo, hi))| match hi {
                    Some(hi) => format!("WHEN price_minor >= {lo} AND price_minor < {hi} THEN {n}"),
                    None => format!("WHEN price_minor >= {lo} THEN {n}"),
                })
                .collect::<Vec<_>>()
                .join(" ");
            let mut fb = sqlx::QueryBuilder::new(format!(
                "SELECT category, CASE {bands} END AS band, COUNT(*) FROM {p}"
            ));
            push_where(&mut fb);
            fb.push(" GROUP BY 1, 2");
            let groups: Vec<(String, i32, i64)> = fb.build_query_as().fetch_all(&mut *conn).await?;
            let mut facets = empty_facets();
            let mut total = 0;
            for (category, band, n) in groups {
                *facets.category.entry(category).or_default() += n;
                if let Some(b) = facets.price.get_mut(band as usize) {
                    b.count += n;
                }
                total += n;
            }
            (rows, total, facets)
        }
        Db::Sqlite(pool) => {
            let sql = format!(
                "SELECT sku, title, description, category, price_minor, currency, discontinued,
                        on_hand, reserved, available, 1.0 AS score
                 FROM {p}
                 WHERE (?1 IS NULL OR category = ?1) AND (?2 IS NULL OR price_minor >= ?2)
                   AND (?3 IS NULL OR price_minor <= ?3) AND (NOT ?4 OR available > 0)"
            );
            let candidates: Vec<Row> = sqlx::query_as(&sql)
                .bind(&q.category)
                .bind(q.min_price)
                .bind(q.max_price)
                .bind(q.in_stock)
                .fetch_all(pool)
                .await?;
            let mut matched: Vec<Row> = candidates
                .into_iter()
                .filter_map(|mut r| {
                    if needle.is_empty() {
                        return Some(r);
                    }
                    let score = text_score(
                        &needle,
                        &search_text(&r.1, &r.3),
                        &format!("{} {} {}", r.1, r.2, r.3),
                    );
                    (score > 0.0).then(|| {
                        r.10 = score;
                        r
                    })
                })
                .collect();
            let mut facets = empty_facets();
            for r in &matched {
                *facets.category.entry(r.3.clone()).or_default() += 1;
                if let Some(n) = PRICE_BANDS
                    .iter()
                    .position(|(lo, hi)| r.4 >= *lo && hi.is_none_or(|h| r.4 < h))
                {
                    facets.price[n].count += 1;
                }
            }
            match q.sort {
                Sort::Relevance => {
                    matched.sort_by(|a, b| b.10.total_cmp(&a.10).then(a.0.cmp(&b.0)))
                }
                Sort::PriceAsc => matched.sort_by(|a, b| a.4.cmp(&b.4).then(a.0.cmp(&b.0))),
                Sort::PriceDesc => matched.sort_by(|a, b| b.4.cmp(&a.4).then(a.0.cmp(&b.0))),
                Sort::Title => matched.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0))),
            }
            let total = matched.len() as i64;
            let rows = matched
                .into_iter()
                .skip(q.offset.max(0) as usize)
                .take(q.limit.max(0) as usize)
                .collect();
            (rows, total, facets)
        }
    };
    let mut items: Vec<Item> = rows
        .into_iter()
        .map(|r| Item {
            sku: r.0,
            title: r.1,
            description: r.2,
            category: r.3,
            price_minor: r.4,
            currency: r.5,
            discontinued: r.6 != 0,
            on_hand: r.7,
            reserved: r.8,
            available: r.9,
            warehouses: Vec::new(),
            score: r.10,
        })
        .collect();
    attach_stock(db, gen, &mut items).await?;
    Ok(Results {
        items,
        total,
        facets,
    })
}

/// Facets with no matches: every price band at zero.
pub(crate) fn empty_facets() -> Facets {
    Facets {
        category: BTreeMap::new(),
        price: PRICE_BANDS
            .iter()
            .map(|(lo, hi)| PriceBand {
                min_minor: *lo,
                max_minor: *hi,
                count: 0,
            })
            .collect(),
    }
}

async fn attach_stock(db: &Db, gen: i64, items: &mut [Item]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let st = table(STOCK, gen);
    let placeholders: Vec<String> = (1..=items.len()).map(|n| format!("${n}")).collect();
    let sql = db
        .sql(&format!(
            "SELECT sku, warehouse_id, on_hand, reserved, available FROM {st}
         WHERE sku IN ({}) ORDER BY sku, warehouse_id",
            placeholders.join(", ")
        ))
        .into_owned();
    let rows: Vec<(String, String, i64, i64, i64)> = on_db!(db, pool => {
        let mut query = sqlx::query_as(&sql);
        for item in items.iter() {
            query = query.bind(item.sku.clone());
        }
        query.fetch_all(pool).await?
    });
    for (sku, warehouse_id, on_hand, reserved, available) in rows {
        if let Some(item) = items.iter_mut().find(|i| i.sku == sku) {
            item.warehouses.push(StockLevel {
                warehouse_id,
                on_hand,
                reserved,
                available,
            });
        }
    }
    Ok(())
}

/// Trigrams of a string the way pg_trgm makes them: per word, padded with two spaces
/// before and one after.
fn trigrams(s: &str) -> HashSet<[char; 3]> {
    let mut set = HashSet::new();
    for word in s
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let padded: Vec<char> = "  "
            .chars()
            .chain(word.chars())
            .chain(" ".chars())
            .collect();
        for w in padded.windows(3) {
            set.insert([w[0], w[1], w[2]]);
        }
    }
    set
}

/// pg_trgm's `similarity`: shared trigrams over all distinct trigrams of both.
pub fn similarity(a: &str, b: &str) -> f64 {
    let (ta, tb) = (trigrams(a), trigrams(b));
    if ta.is_empty() || tb.is_empty() {
        return 0.0;
    }
    ta.intersection(&tb).count() as f64 / ta.union(&tb).count() as f64
}

/// Text relevance for the embedded store: trigram similarity on title and category (typos),
/// or every query word found in the full text.
fn text_score(needle: &str, short: &str, full: &str) -> f64 {
    let sim = similarity(needle, short);
    let full = full.to_lowercase();
    let all_words = needle
        .split_whitespace()
        .all(|w| full.split(|c: char| !c.is_alphanumeric()).any(|t| t == w));
    if sim >= SIMILARITY {
        sim
    } else if all_words {
        SIMILARITY.max(sim)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_matches_pg_trgm_on_simple_cases() {
        assert!((similarity("word", "word") - 1.0).abs() < 1e-9);
        assert_eq!(similarity("abc", "xyz"), 0.0);
        // pg_trgm: similarity('wireles hedphones', 'wireless headphones audio') is ~0.5.
        assert!(similarity("wireles hedphones", "wireless headphones audio") > SIMILARITY);
        assert!(similarity("wireles hedphones", "cast iron skillet kitchen") < SIMILARITY);
    }
}
