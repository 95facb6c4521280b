//! The analytics read model: orders with status, totals and time stamps, their lines and
//! allocations, and stock per warehouse; and the figures analysts ask for over a time range.
//!
//! Definitions (a demanding analyst will ask): an order counts in a range if it was placed
//! in it; revenue is the total of orders whose status is `confirmed` (a later cancellation
//! removes it); the average order value is revenue over confirmed orders, per currency,
//! rounded half up to a minor unit; top products and warehouse shares count confirmed
//! orders only. Money is summed per currency, never converted.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use emporium_domain::{Event, OrderEvent};
use emporium_event_store::{on_db, Db, Envelope};
use serde::Serialize;

use crate::rows::{self, V};
use crate::{table, Projection, Result, Tx};

pub struct Analytics;

pub const ORDERS: &str = "analytics_orders";
pub const LINES: &str = "analytics_lines";
pub const ALLOCATIONS: &str = "analytics_allocations";
pub const STOCK: &str = "analytics_stock";
/// Each order's part per merchant: its lines less their discounts, and the commission on
/// them at the merchant's rate when the order was placed.
pub const PARTS: &str = "analytics_merchant_parts";
/// Each registered merchant's commission rate.
pub const MERCHANTS: &str = "analytics_merchants";

#[async_trait::async_trait]
impl Projection for Analytics {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (ORDERS, "order_id"),
            (LINES, "order_id, sku"),
            (ALLOCATIONS, "order_id, sku, warehouse_id"),
            (STOCK, "warehouse_id, sku"),
            (PARTS, "order_id, merchant_id"),
            (MERCHANTS, "merchant_id"),
        ]
    }

    fn create_tables(&self, _db: &Db, gen: i64) -> Vec<String> {
        let (o, l, a, st) = (
            table(ORDERS, gen),
            table(LINES, gen),
            table(ALLOCATIONS, gen),
            table(STOCK, gen),
        );
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {o} (
                    order_id text PRIMARY KEY,
                    customer_id text NOT NULL,
                    status text NOT NULL,
                    total_minor bigint NOT NULL,
                    currency text NOT NULL,
                    line_count bigint NOT NULL,
                    placed_at bigint NOT NULL,
                    confirmed_at bigint,
                    rejected_at bigint,
                    cancelled_at bigint
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS {o}_placed ON {o} (placed_at)"),
            // The console's order list: newest first, by customer or by status.
            format!("CREATE INDEX IF NOT EXISTS {o}_customer ON {o} (customer_id, placed_at)"),
            format!("CREATE INDEX IF NOT EXISTS {o}_status ON {o} (status, placed_at)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {l} (
                    order_id text NOT NULL, sku text NOT NULL, qty bigint NOT NULL,
                    line_total_minor bigint NOT NULL, currency text NOT NULL,
                    PRIMARY KEY (order_id, sku)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {a} (
                    order_id text NOT NULL, sku text NOT NULL, warehouse_id text NOT NULL,
                    qty bigint NOT NULL, PRIMARY KEY (order_id, sku, warehouse_id)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {st} (
                    warehouse_id text NOT NULL, sku text NOT NULL, on_hand bigint NOT NULL,
                    reserved bigint NOT NULL, available bigint NOT NULL,
                    PRIMARY KEY (warehouse_id, sku)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    order_id text NOT NULL, merchant_id text NOT NULL, gross_minor bigint NOT NULL,
                    commission_minor bigint NOT NULL, currency text NOT NULL,
                    PRIMARY KEY (order_id, merchant_id)
                )",
                table(PARTS, gen)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (merchant_id text PRIMARY KEY, commission_bps bigint NOT NULL)",
                table(MERCHANTS, gen)
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, gen: i64, event: &Envelope<Event>) -> Result<()> {
        self.apply_batch(tx, gen, std::slice::from_ref(event)).await
    }

    /// The rows applying the events one by one would leave, written table by table: one
    /// statement per table per batch, so a step costs a handful of statements however many
    /// checkouts it covers (one by one, a checkout was about fifteen).
    async fn apply_batch(&self, tx: &mut Tx, gen: i64, events: &[Envelope<Event>]) -> Result<()> {
        let mut batch = Batch::default();
        for event in events {
            batch.add(event);
        }
        batch.write(tx, gen).await
    }
}

/// An order's status changes in a batch, folded: the last status, and each time stamp as
/// its last event set it.
#[derive(Default)]
struct StatusChange {
    status: Option<&'static str>,
    confirmed_at: Option<i64>,
    rejected_at: Option<i64>,
    cancelled_at: Option<i64>,
}

/// A batch's rows per table, in the order the statements need them.
#[derive(Default)]
struct Batch<'a> {
    /// merchant id, commission rate (the first registration stands).
    merchants: Vec<V<'a>>,
    /// order id, customer, status, total, currency, line count, placed at.
    orders: Vec<V<'a>>,
    /// order id, merchant, gross, currency: the commission needs the rate, read once.
    parts: Vec<(&'a str, &'a str, i64, &'static str)>,
    /// order id, sku, qty, net, currency.
    lines: Vec<V<'a>>,
    status: BTreeMap<&'a str, StatusChange>,
    /// The last quantity per (order, sku, warehouse).
    allocations: BTreeMap<(&'a str, &'a str, &'a str), i64>,
    /// The last levels per (warehouse, sku).
    stock: BTreeMap<(&'a str, &'a str), (i64, i64, i64)>,
}

impl<'a> Batch<'a> {
    fn add(&mut self, event: &'a Envelope<Event>) {
        let at = event.recorded_at.timestamp_millis();
        let id = event.aggregate_id.as_str();
        match &event.payload {
            Event::Order(OrderEvent::OrderPlaced {
                customer_id,
                lines,
                total,
                ..
            }) => {
                self.orders.extend([
                    V::S(id),
                    V::S(customer_id.as_str()),
                    V::S("pending"),
                    V::I(total.amount_minor()),
                    V::S(total.currency().as_str()),
                    V::I(lines.len() as i64),
                    V::I(at),
                ]);
                // Each merchant's part: its lines net of discounts, and the commission at
                // its rate now (rounded down per part; the house pays none).
                let mut parts: BTreeMap<&str, i64> = BTreeMap::new();
                for line in lines {
                    let net = line.line_total.amount_minor()
                        - line.discount.map_or(0, |d| d.amount_minor());
                    let m = line
                        .merchant_id
                        .as_ref()
                        .map_or(emporium_domain::merchant::HOUSE, |m| m.as_str());
                    *parts.entry(m).or_default() += net;
                    // Revenue per product is what was charged for it: the line less its
                    // discount.
                    self.lines.extend([
                        V::S(id),
                        V::S(line.sku.as_str()),
                        V::I(i64::from(line.qty.get())),
                        V::I(net),
                        V::S(line.line_total.currency().as_str()),
                    ]);
                }
                let currency = total.currency().as_str();
                self.parts.extend(
                    parts
                        .into_iter()
                        .map(|(merchant, gross)| (id, merchant, gross, currency)),
                );
            }
            Event::Order(OrderEvent::OrderConfirmed { allocation, .. }) => {
                let s = self.status.entry(id).or_default();
                s.status = Some("confirmed");
                s.confirmed_at = Some(at);
                for part in allocation {
                    self.allocations.insert(
                        (id, part.sku.as_str(), part.warehouse_id.as_str()),
                        i64::from(part.qty.get()),
                    );
                }
            }
            Event::Order(OrderEvent::OrderRejected { .. }) => {
                let s = self.status.entry(id).or_default();
                s.status = Some("rejected");
                s.rejected_at = Some(at);
            }
            Event::Order(OrderEvent::OrderCancelled { .. }) => {
                let s = self.status.entry(id).or_default();
                s.status = Some("cancelled");
                s.cancelled_at = Some(at);
            }
            Event::Order(OrderEvent::OrderHeldForReview { .. }) => {
                self.status.entry(id).or_default().status = Some("under_review");
            }
            Event::Order(OrderEvent::OrderReviewApproved { .. }) => {
                self.status.entry(id).or_default().status = Some("pending");
            }
            Event::StockItem(e) => {
                let (warehouse_id, sku, levels) = e.levels();
                self.stock.insert(
                    (warehouse_id.as_str(), sku.as_str()),
                    (
                        levels.on_hand as i64,
                        levels.reserved as i64,
                        levels.available as i64,
                    ),
                );
            }
            // Shipping and returns leave an order `confirmed` here (checked out, not
            // cancelled); money actually taken is the fulfilment read model's.
            Event::Order(OrderEvent::OrderShipped { .. } | OrderEvent::ItemsReturned { .. })
            | Event::Product(_)
            | Event::Warehouse(_)
            | Event::Payment(_)
            | Event::Checkout(_) => {}
            Event::Merchant(emporium_domain::MerchantEvent::MerchantRegistered {
                merchant_id,
                commission_bps,
                ..
            }) => {
                self.merchants
                    .extend([V::S(merchant_id.as_str()), V::I(i64::from(*commission_bps))]);
            }
            Event::Promotion(_) => {}
        }
    }

    async fn write(self, tx: &mut Tx, gen: i64) -> Result<()> {
        let (o, l, a, st) = (
            table(ORDERS, gen),
            table(LINES, gen),
            table(ALLOCATIONS, gen),
            table(STOCK, gen),
        );
        let (pt, mt) = (table(PARTS, gen), table(MERCHANTS, gen));
        rows::insert(
            tx,
            &format!("INSERT INTO {mt} (merchant_id, commission_bps)"),
            "ON CONFLICT (merchant_id) DO NOTHING",
            2,
            &self.merchants,
        )
        .await?;
        rows::insert(
            tx,
            &format!(
                "INSERT INTO {o} (order_id, customer_id, status, total_minor, currency, \
                 line_count, placed_at)"
            ),
            "ON CONFLICT (order_id) DO NOTHING",
            7,
            &self.orders,
        )
        .await?;
        if !self.parts.is_empty() {
            let merchants: std::collections::BTreeSet<&str> =
                self.parts.iter().map(|(_, m, _, _)| *m).collect();
            let merchants: Vec<&str> = merchants.into_iter().collect();
            let rates: Vec<(String, i64)> = rows::select_in(
                tx,
                &format!("SELECT merchant_id, commission_bps FROM {mt}"),
                "merchant_id",
                &merchants,
            )
            .await?;
            let rates: BTreeMap<String, i64> = rates.into_iter().collect();
            let mut values = Vec::with_capacity(self.parts.len() * 5);
            for (order, merchant, gross, currency) in &self.parts {
                let bps = rates.get(*merchant).copied().unwrap_or(0);
                let commission = i64::try_from(i128::from(*gross) * i128::from(bps) / 10_000)
                    .unwrap_or(i64::MAX);
                values.extend([
                    V::S(order),
                    V::S(merchant),
                    V::I(*gross),
                    V::I(commission),
                    V::S(currency),
                ]);
            }
            rows::insert(
                tx,
                &format!(
                    "INSERT INTO {pt} (order_id, merchant_id, gross_minor, commission_minor, currency)"
                ),
                "ON CONFLICT (order_id, merchant_id) DO NOTHING",
                5,
                &values,
            )
            .await?;
        }
        rows::insert(
            tx,
            &format!("INSERT INTO {l} (order_id, sku, qty, line_total_minor, currency)"),
            "ON CONFLICT (order_id, sku) DO NOTHING",
            5,
            &self.lines,
        )
        .await?;
        let status: Vec<V> = self
            .status
            .iter()
            .flat_map(|(id, s)| {
                [
                    V::S(id),
                    V::S(s.status.unwrap_or("")),
                    V::O(s.confirmed_at),
                    V::O(s.rejected_at),
                    V::O(s.cancelled_at),
                ]
            })
            .collect();
        rows::update_from(
            tx,
            &format!(
                "UPDATE {o} SET status = v.column2, \
                 confirmed_at = COALESCE(v.column3, confirmed_at), \
                 rejected_at = COALESCE(v.column4, rejected_at), \
                 cancelled_at = COALESCE(v.column5, cancelled_at) FROM"
            ),
            &format!("{o}.order_id"),
            5,
            &status,
        )
        .await?;
        let allocations: Vec<V> = self
            .allocations
            .iter()
            .flat_map(|((id, sku, w), qty)| [V::S(id), V::S(sku), V::S(w), V::I(*qty)])
            .collect();
        rows::insert(
            tx,
            &format!("INSERT INTO {a} (order_id, sku, warehouse_id, qty)"),
            "ON CONFLICT (order_id, sku, warehouse_id) DO UPDATE SET qty = excluded.qty",
            4,
            &allocations,
        )
        .await?;
        let stock: Vec<V> = self
            .stock
            .iter()
            .flat_map(|((w, sku), (on_hand, reserved, available))| {
                [
                    V::S(w),
                    V::S(sku),
                    V::I(*on_hand),
                    V::I(*reserved),
                    V::I(*available),
                ]
            })
            .collect();
        rows::insert(
            tx,
            &format!("INSERT INTO {st} (warehouse_id, sku, on_hand, reserved, available)"),
            "ON CONFLICT (warehouse_id, sku) DO UPDATE SET on_hand = excluded.on_hand, \
             reserved = excluded.reserved, available = excluded.available",
            5,
            &stock,
        )
        .await
    }
}

type CurrencyRow = (String, i64, i64);
type BucketRow = (i64, String, i64, i64);
type StockRow = (String, i64, i64, i64);
type SummaryRows = (
    Vec<(String, i64)>,
    Vec<CurrencyRow>,
    Vec<BucketRow>,
    Vec<BucketRow>,
);

/// A time range `[from, to)` in epoch milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

impl Range {
    pub fn new(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Self {
        Self {
            from: from.map_or(i64::MIN, |t| t.timestamp_millis()),
            to: to.map_or(i64::MAX, |t| t.timestamp_millis()),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub currency: String,
    pub orders: i64,
    pub revenue_minor: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub orders: i64,
    pub orders_by_status: BTreeMap<String, i64>,
    pub revenue_by_currency: BTreeMap<String, i64>,
    pub average_order_value: BTreeMap<String, i64>,
    pub revenue_by_hour: Vec<Bucket>,
    pub revenue_by_day: Vec<Bucket>,
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub async fn summary(db: &Db, gen: i64, r: Range) -> Result<Summary> {
    let o = table(ORDERS, gen);
    let by_status_sql = db
        .sql(&format!(
        "SELECT status, COUNT(*) FROM {o} WHERE placed_at >= $1 AND placed_at < $2 GROUP BY status"
    ))
        .into_owned();
    let revenue_sql = db
        .sql(&format!(
            "SELECT currency, COUNT(*), CAST(SUM(total_minor) AS BIGINT) FROM {o}
         WHERE placed_at >= $1 AND placed_at < $2 AND status = 'confirmed' GROUP BY currency"
        ))
        .into_owned();
    let bucket_sql = |size: i64| {
        db.sql(&format!(
            "SELECT (placed_at / {size}) * {size} AS b, currency, COUNT(*), CAST(SUM(total_minor) AS BIGINT) FROM {o}
             WHERE placed_at >= $1 AND placed_at < $2 AND status = 'confirmed'
             GROUP BY 1, 2 ORDER BY 1, 2"
        ))
        .into_owned()
    };
    let (hour_sql, day_sql) = (bucket_sql(3_600_000), bucket_sql(86_400_000));
    let (statuses, revenue, hours, days): SummaryRows = on_db!(db, pool => {
        (
            sqlx::query_as(&by_status_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
            sqlx::query_as(&revenue_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
            sqlx::query_as(&hour_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
            sqlx::query_as(&day_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
        )
    });
    let bucket = |rows: Vec<(i64, String, i64, i64)>| {
        rows.into_iter()
            .map(|(b, currency, orders, revenue_minor)| Bucket {
                start: ms_to_time(b),
                currency,
                orders,
                revenue_minor,
            })
            .collect()
    };
    Ok(Summary {
        orders: statuses.iter().map(|(_, n)| n).sum(),
        orders_by_status: statuses.into_iter().collect(),
        average_order_value: revenue
            .iter()
            .map(|(c, n, sum)| (c.clone(), (2 * sum + n) / (2 * n).max(1)))
            .collect(),
        revenue_by_currency: revenue.into_iter().map(|(c, _, sum)| (c, sum)).collect(),
        revenue_by_hour: bucket(hours),
        revenue_by_day: bucket(days),
    })
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopProduct {
    pub sku: String,
    pub currency: String,
    pub units: i64,
    pub revenue_minor: i64,
}

impl From<(String, String, i64, i64)> for TopProduct {
    /// A row of `(sku, currency, units, revenue_minor)`.
    fn from((sku, currency, units, revenue_minor): (String, String, i64, i64)) -> Self {
        TopProduct {
            sku,
            currency,
            units,
            revenue_minor,
        }
    }
}

/// Best sellers among confirmed orders placed in the range, by units or by revenue.
pub async fn top_products(
    db: &Db,
    gen: i64,
    r: Range,
    by_revenue: bool,
    limit: i64,
) -> Result<Vec<TopProduct>> {
    let (o, l) = (table(ORDERS, gen), table(LINES, gen));
    let order = if by_revenue {
        "4 DESC, 3 DESC, 1"
    } else {
        "3 DESC, 4 DESC, 1"
    };
    let sql = db
        .sql(&format!(
            "SELECT l.sku, l.currency, CAST(SUM(l.qty) AS BIGINT), CAST(SUM(l.line_total_minor) AS BIGINT) FROM {l} l
         JOIN {o} o ON o.order_id = l.order_id
         WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status = 'confirmed'
         GROUP BY l.sku, l.currency ORDER BY {order} LIMIT $3"
        ))
        .into_owned();
    let rows: Vec<(String, String, i64, i64)> = on_db!(db, pool => {
        sqlx::query_as(&sql).bind(r.from).bind(r.to).bind(limit).fetch_all(pool).await?
    });
    Ok(rows.into_iter().map(TopProduct::from).collect())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WarehouseFigures {
    pub warehouse_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Allocation lines of confirmed orders placed in the range shipped from here.
    pub lines_shipped: i64,
    pub units_shipped: i64,
    /// `lines_shipped` over all warehouses' (0..1).
    pub share_of_lines: f64,
}

pub async fn warehouses(db: &Db, gen: i64, r: Range) -> Result<Vec<WarehouseFigures>> {
    let (o, a, st) = (
        table(ORDERS, gen),
        table(ALLOCATIONS, gen),
        table(STOCK, gen),
    );
    let stock_sql = format!(
        "SELECT warehouse_id, CAST(SUM(on_hand) AS BIGINT), CAST(SUM(reserved) AS BIGINT), CAST(SUM(available) AS BIGINT) FROM {st}
         GROUP BY warehouse_id ORDER BY warehouse_id"
    );
    let ship_sql = db.sql(&format!(
        "SELECT a.warehouse_id, COUNT(*), CAST(SUM(a.qty) AS BIGINT) FROM {a} a JOIN {o} o ON o.order_id = a.order_id
         WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status = 'confirmed'
         GROUP BY a.warehouse_id"
    )).into_owned();
    let (stock, shipped): (Vec<StockRow>, Vec<CurrencyRow>) = on_db!(db, pool => {
        (
            sqlx::query_as(&stock_sql).fetch_all(pool).await?,
            sqlx::query_as(&ship_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
        )
    });
    let total_lines: i64 = shipped.iter().map(|s| s.1).sum();
    let mut out: BTreeMap<String, WarehouseFigures> = BTreeMap::new();
    for (w, on_hand, reserved, available) in stock {
        out.insert(
            w.clone(),
            WarehouseFigures {
                warehouse_id: w,
                on_hand,
                reserved,
                available,
                lines_shipped: 0,
                units_shipped: 0,
                share_of_lines: 0.0,
            },
        );
    }
    for (w, lines, units) in shipped {
        let e = out.entry(w.clone()).or_insert(WarehouseFigures {
            warehouse_id: w,
            on_hand: 0,
            reserved: 0,
            available: 0,
            lines_shipped: 0,
            units_shipped: 0,
            share_of_lines: 0.0,
        });
        e.lines_shipped = lines;
        e.units_shipped = units;
        e.share_of_lines = if total_lines > 0 {
            lines as f64 / total_lines as f64
        } else {
            0.0
        };
    }
    Ok(out.into_values().collect())
}

/// One merchant's sales in one currency over a range (confirmed orders placed in it).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MerchantFigures {
    pub merchant_id: String,
    pub currency: String,
    pub orders: i64,
    /// Its lines of those orders, less their discounts.
    pub gross_sales_minor: i64,
    /// The marketplace's commission: per order, ⌊gross × rate / 10,000⌋ at the merchant's
    /// rate when the order was placed.
    pub commission_minor: i64,
    /// What the marketplace owes the merchant: gross − commission.
    pub net_payable_minor: i64,
}

pub async fn merchants(db: &Db, gen: i64, r: Range) -> Result<Vec<MerchantFigures>> {
    let (o, p) = (table(ORDERS, gen), table(PARTS, gen));
    let sql = db
        .sql(&format!(
            "SELECT p.merchant_id, p.currency, COUNT(*), CAST(SUM(p.gross_minor) AS BIGINT),
                CAST(SUM(p.commission_minor) AS BIGINT)
         FROM {p} p JOIN {o} o ON o.order_id = p.order_id
         WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status = 'confirmed'
         GROUP BY p.merchant_id, p.currency ORDER BY p.merchant_id, p.currency"
        ))
        .into_owned();
    let rows: Vec<(String, String, i64, i64, i64)> = on_db!(db, pool => {
        sqlx::query_as(&sql).bind(r.from).bind(r.to).fetch_all(pool).await?
    });
    Ok(rows
        .into_iter()
        .map(
            |(merchant_id, currency, orders, gross, commission)| MerchantFigures {
                merchant_id,
                currency,
                orders,
                gross_sales_minor: gross,
                commission_minor: commission,
                net_payable_minor: gross - commission,
            },
        )
        .collect())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Funnel {
    pub placed: i64,
    pub confirmed: i64,
    pub cancelled: i64,
    pub rejected: i64,
    pub pending: i64,
    /// Ever confirmed (including those cancelled afterwards) over placed.
    pub confirmation_rate: f64,
}

pub async fn funnel(db: &Db, gen: i64, r: Range) -> Result<Funnel> {
    let o = table(ORDERS, gen);
    let sql = db
        .sql(&format!(
            "SELECT COUNT(*),
                COALESCE(CAST(SUM(CASE WHEN status = 'confirmed' THEN 1 ELSE 0 END) AS BIGINT), 0),
                COALESCE(CAST(SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS BIGINT), 0),
                COALESCE(CAST(SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS BIGINT), 0),
                COALESCE(CAST(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS BIGINT), 0),
                COALESCE(CAST(SUM(CASE WHEN confirmed_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT), 0)
         FROM {o} WHERE placed_at >= $1 AND placed_at < $2"
        ))
        .into_owned();
    let (placed, confirmed, cancelled, rejected, pending, ever): (i64, i64, i64, i64, i64, i64) = on_db!(db, pool => {
        sqlx::query_as(&sql).bind(r.from).bind(r.to).fetch_one(pool).await?
    });
    Ok(Funnel {
        placed,
        confirmed,
        cancelled,
        rejected,
        pending,
        confirmation_rate: if placed > 0 {
            ever as f64 / placed as f64
        } else {
            0.0
        },
    })
}

/// What the console's overview shows at a glance, from one pass over the orders placed from
/// `since` (epoch ms) on: orders by status, revenue of confirmed orders per currency, and how
/// many were ever confirmed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Glance {
    pub orders: i64,
    pub by_status: BTreeMap<String, i64>,
    pub revenue_by_currency: BTreeMap<String, i64>,
    pub ever_confirmed: i64,
}

pub async fn glance(db: &Db, gen: i64, since: i64) -> Result<Glance> {
    let o = table(ORDERS, gen);
    let sql = db
        .sql(&format!(
            "SELECT status, currency, COUNT(*), CAST(SUM(total_minor) AS BIGINT),
                    COUNT(confirmed_at)
               FROM {o} WHERE placed_at >= $1 GROUP BY status, currency"
        ))
        .into_owned();
    let rows: Vec<(String, String, i64, i64, i64)> = on_db!(db, pool => {
        // Planned for this `since` each time: a cached generic plan guesses a third of the
        // table for `placed_at >= $1` and scans all of it for a day's orders.
        sqlx::query_as(&sql).bind(since).persistent(false).fetch_all(pool).await?
    });
    let mut g = Glance::default();
    for (status, currency, n, total, confirmed) in rows {
        g.orders += n;
        g.ever_confirmed += confirmed;
        *g.by_status.entry(status.clone()).or_default() += n;
        if status == "confirmed" {
            *g.revenue_by_currency.entry(currency).or_default() += total;
        }
    }
    Ok(g)
}

/// The best sellers (by units) among confirmed orders placed from `since` (epoch ms) on: what
/// [`top_products`] answers for that open range, planned for this `since` each time (a cached
/// generic plan guesses a third of the orders for `placed_at >= $1`). Its cost follows the
/// period's orders and their lines: about 30 ms for a day of 3,300 orders here.
pub async fn top_products_since(
    db: &Db,
    gen: i64,
    since: i64,
    limit: i64,
) -> Result<Vec<TopProduct>> {
    let (o, l) = (table(ORDERS, gen), table(LINES, gen));
    let lines = format!(
        "{o} r JOIN {l} x ON x.order_id = r.order_id
          WHERE r.placed_at >= $1 AND r.status = 'confirmed'"
    );
    let sql = db
        .sql(&format!(
            "SELECT x.sku, x.currency, CAST(SUM(x.qty) AS BIGINT),
                    CAST(SUM(x.line_total_minor) AS BIGINT)
               FROM {lines}
              GROUP BY x.sku, x.currency ORDER BY 3 DESC, 4 DESC, 1 LIMIT $2"
        ))
        .into_owned();
    let rows: Vec<(String, String, i64, i64)> = on_db!(db, pool => {
        sqlx::query_as(&sql).bind(since).bind(limit).persistent(false).fetch_all(pool).await?
    });
    Ok(rows.into_iter().map(TopProduct::from).collect())
}

/// Orders placed per minute from `since` (epoch ms) on, oldest first; minutes without
/// orders are left out.
pub async fn orders_per_minute(db: &Db, gen: i64, since: i64) -> Result<Vec<(i64, i64)>> {
    let o = table(ORDERS, gen);
    let sql = db
        .sql(&format!(
            "SELECT (placed_at / 60000) * 60000 AS m, COUNT(*) FROM {o}
              WHERE placed_at >= $1 GROUP BY 1 ORDER BY 1"
        ))
        .into_owned();
    Ok(on_db!(db, pool => {
        sqlx::query_as(&sql).bind(since).persistent(false).fetch_all(pool).await?
    }))
}

/// Stock on hand, reserved and available per warehouse (all SKUs summed).
pub async fn stock_by_warehouse(db: &Db, gen: i64) -> Result<Vec<(String, i64, i64, i64)>> {
    let st = table(STOCK, gen);
    let sql = format!(
        "SELECT warehouse_id, CAST(SUM(on_hand) AS BIGINT), CAST(SUM(reserved) AS BIGINT),
                CAST(SUM(available) AS BIGINT)
           FROM {st} GROUP BY warehouse_id ORDER BY warehouse_id"
    );
    Ok(on_db!(db, pool => {
        sqlx::query_as(&sql).fetch_all(pool).await?
    }))
}

/// One row of the console's order list.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct OrderRow {
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub total_minor: i64,
    pub currency: String,
    pub line_count: i64,
    pub placed_at: i64,
}

/// Which orders the console lists: all, one customer's, or one status; newest first, from
/// before a keyset cursor `(placed_at, order_id)`.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

pub async fn list_orders(db: &Db, gen: i64, f: &OrderFilter) -> Result<Vec<OrderRow>> {
    let o = table(ORDERS, gen);
    let mut sql = format!(
        "SELECT order_id, customer_id, status, total_minor, currency, line_count, placed_at
           FROM {o} WHERE 1 = 1"
    );
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if f.customer_id.is_some() {
        sql.push_str(&format!(" AND customer_id = ${}", next()));
    }
    if f.status.is_some() {
        sql.push_str(&format!(" AND status = ${}", next()));
    }
    if f.before.is_some() {
        let (a, b, c) = (next(), next(), next());
        sql.push_str(&format!(
            " AND (placed_at < ${a} OR (placed_at = ${b} AND order_id < ${c}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY placed_at DESC, order_id DESC LIMIT ${}",
        next()
    ));
    let sql = db.sql(&sql).into_owned();
    Ok(on_db!(db, pool => {
        let mut q = sqlx::query_as::<_, OrderRow>(&sql);
        if let Some(c) = &f.customer_id {
            q = q.bind(c);
        }
        if let Some(s) = &f.status {
            q = q.bind(s);
        }
        if let Some((at, id)) = &f.before {
            q = q.bind(*at).bind(*at).bind(id);
        }
        q.bind(f.limit).fetch_all(pool).await?
    }))
}

/// Gives copies made by `emporium_event_store::seeding::copy_order_events` their analytics
/// rows without replaying them: copy `n` (1-based) of `template` gets id `ids[n - 1]`, the
/// template's lines and allocations, customer `<template's customer>-<n mod 1000>` and
/// `placed_at = latest - n * step_ms`, so copies spread back in time. Benchmarks only.
pub async fn index_copies(
    db: &Db,
    gen: i64,
    template: &str,
    ids: &[String],
    latest: i64,
    step_ms: i64,
) -> Result<()> {
    let Db::Postgres(pool) = db else {
        return Err(crate::ProjectionError::Unknown(
            "copies are indexed on Postgres only".into(),
        ));
    };
    let (o, l, a) = (
        table(ORDERS, gen),
        table(LINES, gen),
        table(ALLOCATIONS, gen),
    );
    let copies = "unnest($1::text[]) WITH ORDINALITY AS c(id, n)";
    let mut tx = emporium_event_store::store::begin_postgres(pool).await?;
    sqlx::query(&format!(
        "INSERT INTO {o} (order_id, customer_id, status, total_minor, currency, line_count,
                          placed_at, confirmed_at, rejected_at, cancelled_at)
         SELECT c.id, t.customer_id || '-' || (c.n % 1000), t.status, t.total_minor, t.currency,
                t.line_count, $3 - c.n * $4, t.confirmed_at, t.rejected_at, t.cancelled_at
           FROM {copies} CROSS JOIN {o} t WHERE t.order_id = $2"
    ))
    .bind(ids)
    .bind(template)
    .bind(latest)
    .bind(step_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {l} (order_id, sku, qty, line_total_minor, currency)
         SELECT c.id, t.sku, t.qty, t.line_total_minor, t.currency
           FROM {copies} CROSS JOIN {l} t WHERE t.order_id = $2"
    ))
    .bind(ids)
    .bind(template)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {a} (order_id, sku, warehouse_id, qty)
         SELECT c.id, t.sku, t.warehouse_id, t.qty
           FROM {copies} CROSS JOIN {a} t WHERE t.order_id = $2"
    ))
    .bind(ids)
    .bind(template)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
