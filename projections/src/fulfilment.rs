//! The fulfilment read model: shipments, returns and confirmations, and the figures built
//! on them.
//!
//! Definitions: revenue is money actually taken. Gross revenue of a day (UTC) is the sum of
//! the amounts captured by shipments recorded that day; refunds are the amounts of returns
//! recorded that day; net = gross − refunds, per currency, never converted. The return rate
//! of a product is units returned over units shipped in the range. Time to ship is, per
//! warehouse, from the order's confirmation to its first shipment from that warehouse, for
//! first shipments in the range.

use emporium_domain::{Event, OrderEvent};
use emporium_event_store::{on_db, Db, Envelope};
use serde::Serialize;

use crate::analytics::Range;
use crate::{table, Projection, Result, Tx};

pub struct Fulfilment;

pub const SHIPMENTS: &str = "fulfilment_shipments";
pub const SHIPPED_LINES: &str = "fulfilment_shipped_lines";
pub const RETURNED_LINES: &str = "fulfilment_returned_lines";
pub const CONFIRMED: &str = "fulfilment_confirmed";

const DAY_MS: i64 = 86_400_000;

#[async_trait::async_trait]
impl Projection for Fulfilment {
    fn name(&self) -> &'static str {
        "fulfilment"
    }

    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (SHIPMENTS, "shipment_id"),
            (SHIPPED_LINES, "shipment_id, sku"),
            (RETURNED_LINES, "return_id, sku"),
            (CONFIRMED, "order_id"),
        ]
    }

    fn create_tables(&self, _db: &Db, gen: i64) -> Vec<String> {
        let (s, sl, rl, c) = (
            table(SHIPMENTS, gen),
            table(SHIPPED_LINES, gen),
            table(RETURNED_LINES, gen),
            table(CONFIRMED, gen),
        );
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (
                    shipment_id text PRIMARY KEY, order_id text NOT NULL,
                    warehouse_id text NOT NULL, amount_minor bigint NOT NULL,
                    currency text NOT NULL, shipped_at bigint NOT NULL
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS {s}_at ON {s} (shipped_at)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {sl} (
                    shipment_id text NOT NULL, sku text NOT NULL, qty bigint NOT NULL,
                    shipped_at bigint NOT NULL, PRIMARY KEY (shipment_id, sku)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {rl} (
                    return_id text NOT NULL, sku text NOT NULL, order_id text NOT NULL,
                    qty bigint NOT NULL, amount_minor bigint NOT NULL, currency text NOT NULL,
                    returned_at bigint NOT NULL, PRIMARY KEY (return_id, sku)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {c} (
                    order_id text PRIMARY KEY, confirmed_at bigint NOT NULL
                )"
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, gen: i64, event: &Envelope<Event>) -> Result<()> {
        let at = event.recorded_at.timestamp_millis();
        let id = event.aggregate_id.as_str();
        match &event.payload {
            Event::Order(OrderEvent::OrderConfirmed { .. }) => {
                let sql = tx.sql(&format!(
                    "INSERT INTO {} (order_id, confirmed_at) VALUES ($1, $2)
                     ON CONFLICT (order_id) DO NOTHING",
                    table(CONFIRMED, gen)
                ));
                crate::on_tx!(tx, c => {
                    sqlx::query(&sql).bind(id).bind(at).execute(&mut **c).await?.rows_affected()
                });
            }
            Event::Order(OrderEvent::OrderShipped {
                shipment_id,
                warehouse_id,
                lines,
                amount,
                ..
            }) => {
                let sql = tx.sql(&format!(
                    "INSERT INTO {} (shipment_id, order_id, warehouse_id, amount_minor, currency,
                       shipped_at) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (shipment_id) DO NOTHING",
                    table(SHIPMENTS, gen)
                ));
                let sid = shipment_id.to_string();
                crate::on_tx!(tx, c => {
                    sqlx::query(&sql).bind(&sid).bind(id).bind(warehouse_id.as_str())
                        .bind(amount.amount_minor()).bind(amount.currency().as_str()).bind(at)
                        .execute(&mut **c).await?.rows_affected()
                });
                let sql = tx.sql(&format!(
                    "INSERT INTO {} (shipment_id, sku, qty, shipped_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (shipment_id, sku) DO NOTHING",
                    table(SHIPPED_LINES, gen)
                ));
                for l in lines {
                    crate::on_tx!(tx, c => {
                        sqlx::query(&sql).bind(&sid).bind(l.sku.as_str())
                            .bind(i64::from(l.qty.get())).bind(at)
                            .execute(&mut **c).await?.rows_affected()
                    });
                }
            }
            Event::Order(OrderEvent::ItemsReturned {
                return_id, lines, ..
            }) => {
                let sql = tx.sql(&format!(
                    "INSERT INTO {} (return_id, sku, order_id, qty, amount_minor, currency,
                       returned_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (return_id, sku) DO NOTHING",
                    table(RETURNED_LINES, gen)
                ));
                let rid = return_id.to_string();
                for l in lines {
                    crate::on_tx!(tx, c => {
                        sqlx::query(&sql).bind(&rid).bind(l.sku.as_str()).bind(id)
                            .bind(i64::from(l.qty.get())).bind(l.amount.amount_minor())
                            .bind(l.amount.currency().as_str()).bind(at)
                            .execute(&mut **c).await?.rows_affected()
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Money taken on one UTC day, in one currency.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DayRevenue {
    /// The day's first millisecond (UTC), as RFC 3339.
    pub day: chrono::DateTime<chrono::Utc>,
    pub currency: String,
    pub gross_minor: i64,
    pub refunded_minor: i64,
    pub net_minor: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReturnRate {
    pub sku: String,
    pub shipped: i64,
    pub returned: i64,
    /// `returned / shipped` (0 when nothing shipped).
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TimeToShip {
    pub warehouse_id: String,
    /// (order, warehouse) pairs whose first shipment falls in the range.
    pub shipments: i64,
    /// Mean milliseconds from confirmation to first shipment, rounded down.
    pub average_ms: i64,
    pub max_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub revenue_by_day: Vec<DayRevenue>,
    pub return_rates: Vec<ReturnRate>,
    pub time_to_ship: Vec<TimeToShip>,
}

type MoneyRow = (i64, String, i64);
type CountRow = (String, i64);
type ShipRow = (String, i64, i64, i64);
type ReportRows = (
    Vec<MoneyRow>,
    Vec<MoneyRow>,
    Vec<CountRow>,
    Vec<CountRow>,
    Vec<ShipRow>,
);

/// Net revenue per day and currency, return rate per product and time to first shipment
/// per warehouse, over `[from, to)`.
pub async fn report(db: &Db, gen: i64, r: Range) -> Result<Report> {
    let (s, sl, rl, c) = (
        table(SHIPMENTS, gen),
        table(SHIPPED_LINES, gen),
        table(RETURNED_LINES, gen),
        table(CONFIRMED, gen),
    );
    let gross_sql = db
        .sql(&format!(
            "SELECT (shipped_at / {DAY_MS}) * {DAY_MS}, currency, CAST(SUM(amount_minor) AS BIGINT)
             FROM {s} WHERE shipped_at >= $1 AND shipped_at < $2 GROUP BY 1, 2"
        ))
        .into_owned();
    let refund_sql = db
        .sql(&format!(
            "SELECT (returned_at / {DAY_MS}) * {DAY_MS}, currency, CAST(SUM(amount_minor) AS BIGINT)
             FROM {rl} WHERE returned_at >= $1 AND returned_at < $2 GROUP BY 1, 2"
        ))
        .into_owned();
    let shipped_sql = db
        .sql(&format!(
            "SELECT sku, CAST(SUM(qty) AS BIGINT) FROM {sl}
             WHERE shipped_at >= $1 AND shipped_at < $2 GROUP BY sku"
        ))
        .into_owned();
    let returned_sql = db
        .sql(&format!(
            "SELECT sku, CAST(SUM(qty) AS BIGINT) FROM {rl}
             WHERE returned_at >= $1 AND returned_at < $2 GROUP BY sku"
        ))
        .into_owned();
    // Integer division keeps both backends' averages identical (round down).
    let ship_sql = db
        .sql(&format!(
            "SELECT f.warehouse_id, COUNT(*), CAST(SUM(f.first_at - c.confirmed_at) AS BIGINT),
                    CAST(MAX(f.first_at - c.confirmed_at) AS BIGINT)
             FROM (SELECT order_id, warehouse_id, MIN(shipped_at) AS first_at FROM {s}
                   GROUP BY order_id, warehouse_id) f
             JOIN {c} c ON c.order_id = f.order_id
             WHERE f.first_at >= $1 AND f.first_at < $2
             GROUP BY f.warehouse_id ORDER BY f.warehouse_id"
        ))
        .into_owned();
    let (gross, refunds, shipped, returned, ships): ReportRows = on_db!(db, pool => {
        (
            sqlx::query_as(&gross_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
            sqlx::query_as(&refund_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
            sqlx::query_as(&shipped_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
            sqlx::query_as(&returned_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
            sqlx::query_as(&ship_sql).bind(r.from).bind(r.to).fetch_all(pool).await?,
        )
    });
    let mut days: std::collections::BTreeMap<(i64, String), (i64, i64)> = Default::default();
    for (day, currency, sum) in gross {
        days.entry((day, currency)).or_default().0 += sum;
    }
    for (day, currency, sum) in refunds {
        days.entry((day, currency)).or_default().1 += sum;
    }
    let returned: std::collections::BTreeMap<String, i64> = returned.into_iter().collect();
    let mut shipped: std::collections::BTreeMap<String, i64> = shipped.into_iter().collect();
    for sku in returned.keys() {
        shipped.entry(sku.clone()).or_insert(0);
    }
    Ok(Report {
        revenue_by_day: days
            .into_iter()
            .map(|((day, currency), (gross, refunded))| DayRevenue {
                day: chrono::DateTime::from_timestamp_millis(day).unwrap_or_default(),
                currency,
                gross_minor: gross,
                refunded_minor: refunded,
                net_minor: gross - refunded,
            })
            .collect(),
        return_rates: shipped
            .into_iter()
            .map(|(sku, shipped)| {
                let returned = returned.get(&sku).copied().unwrap_or(0);
                ReturnRate {
                    rate: if shipped > 0 {
                        returned as f64 / shipped as f64
                    } else {
                        0.0
                    },
                    sku,
                    shipped,
                    returned,
                }
            })
            .collect(),
        time_to_ship: ships
            .into_iter()
            .map(|(warehouse_id, n, sum, max)| TimeToShip {
                warehouse_id,
                shipments: n,
                average_ms: sum.div_euclid(n.max(1)),
                max_ms: max,
            })
            .collect(),
    })
}
