//! The notifications outbox: for every change of an order's status, one message to publish
//! on NATS (`<prefix>.notifications.order.<status>`) and one per merchant of the order with
//! a webhook. Rows are written exactly once with the runner's checkpoint; the engine's
//! delivery worker (`gateway::notify`) sends them at least once, with retries and backoff,
//! apart from the checkout saga, which never waits for a notification.
//!
//! The outbox keeps one table for all generations, unlike other read models: a rebuild
//! writes the same rows again (`ON CONFLICT DO NOTHING`) and must not send anything twice,
//! so what was delivered stays recorded. Which merchant sells which product, and which
//! merchants have webhooks, is kept here too, from the same feed.

use emporium_domain::merchant::MerchantEvent;
use emporium_domain::order::{OrderEvent, OrderStatus};
use emporium_domain::product::ProductEvent;
use emporium_domain::Event;
use emporium_event_store::{Db, Envelope};
use serde_json::json;

use crate::{Projection, Result, Tx};

pub struct Notifications;

/// Messages to deliver, one row per (event, target). `target` is `nats` or
/// `webhook:<merchant id>`.
pub const OUTBOX: &str = "notification_outbox";
/// Merchants with a webhook.
pub const WEBHOOKS: &str = "notification_webhooks";
/// The merchant of each product not sold by the house.
pub const PRODUCTS: &str = "notification_products";
/// The merchants with webhooks of each order (space-separated), fixed when it is placed.
pub const ORDERS: &str = "notification_orders";

/// The status an order event moves the order to (every order event changes it).
fn status_after(e: &OrderEvent) -> OrderStatus {
    match e {
        OrderEvent::OrderPlaced { .. } | OrderEvent::OrderReviewApproved { .. } => {
            OrderStatus::Pending
        }
        OrderEvent::OrderHeldForReview { .. } => OrderStatus::UnderReview,
        OrderEvent::OrderConfirmed { .. } => OrderStatus::Confirmed,
        OrderEvent::OrderRejected { .. } => OrderStatus::Rejected,
        OrderEvent::OrderCancelled { .. } => OrderStatus::Cancelled,
        OrderEvent::OrderShipped { status, .. } | OrderEvent::ItemsReturned { status, .. } => {
            *status
        }
    }
}

#[async_trait::async_trait]
impl Projection for Notifications {
    fn name(&self) -> &'static str {
        "notifications"
    }

    // Nothing per generation: see the module docs.
    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    fn create_tables(&self, _db: &Db, _gen: i64) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {OUTBOX} (
                    id text NOT NULL,
                    target text NOT NULL,
                    subject text NOT NULL,
                    body text NOT NULL,
                    position bigint NOT NULL,
                    attempts integer NOT NULL DEFAULT 0,
                    next_attempt_at bigint NOT NULL,
                    delivered_at bigint,
                    last_error text,
                    PRIMARY KEY (id, target)
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {OUTBOX}_due ON {OUTBOX} (next_attempt_at) \
                 WHERE delivered_at IS NULL"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {WEBHOOKS} (merchant_id text PRIMARY KEY, url text NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {PRODUCTS} (sku text PRIMARY KEY, merchant_id text NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ORDERS} (order_id text PRIMARY KEY, merchants text NOT NULL)"
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, _gen: i64, event: &Envelope<Event>) -> Result<()> {
        match &event.payload {
            Event::Merchant(MerchantEvent::MerchantRegistered {
                merchant_id,
                webhook_url: Some(url),
                ..
            }) => {
                let sql = tx.sql(&format!(
                    "INSERT INTO {WEBHOOKS} (merchant_id, url) VALUES ($1, $2) \
                     ON CONFLICT (merchant_id) DO NOTHING"
                ));
                crate::on_tx!(tx, c => sqlx::query(&sql).bind(merchant_id.as_str()).bind(url)
                    .execute(&mut **c).await?.rows_affected());
            }
            Event::Product(ProductEvent::ProductCreated {
                sku,
                merchant_id: Some(m),
                ..
            }) => {
                let sql = tx.sql(&format!(
                    "INSERT INTO {PRODUCTS} (sku, merchant_id) VALUES ($1, $2) \
                     ON CONFLICT (sku) DO NOTHING"
                ));
                crate::on_tx!(tx, c => sqlx::query(&sql).bind(sku.as_str()).bind(m.as_str())
                    .execute(&mut **c).await?.rows_affected());
            }
            Event::Order(e) => {
                let status = status_after(e);
                let order_id = e.order_id().to_string();
                let merchants: Vec<String> = if let OrderEvent::OrderPlaced { lines, .. } = e {
                    // One lookup for all lines; orders are bounded (API.md), so is the list.
                    let params: Vec<String> = (1..=lines.len()).map(|i| format!("${i}")).collect();
                    let sql = tx.sql(&format!(
                        "SELECT DISTINCT w.merchant_id FROM {PRODUCTS} p JOIN {WEBHOOKS} w \
                         ON w.merchant_id = p.merchant_id WHERE p.sku IN ({}) \
                         ORDER BY w.merchant_id",
                        params.join(", ")
                    ));
                    let found: Vec<String> = if lines.is_empty() {
                        Vec::new()
                    } else {
                        crate::on_tx!(tx, c => {
                            let mut q = sqlx::query_scalar(&sql);
                            for line in lines {
                                q = q.bind(line.sku.as_str());
                            }
                            q.fetch_all(&mut **c).await?
                        })
                    };
                    // Orders without a merchant webhook, most of them, leave no row: a
                    // missing row reads as "no merchants" below.
                    if !found.is_empty() {
                        let sql = tx.sql(&format!(
                            "INSERT INTO {ORDERS} (order_id, merchants) VALUES ($1, $2) \
                             ON CONFLICT (order_id) DO NOTHING"
                        ));
                        crate::on_tx!(tx, c => sqlx::query(&sql).bind(&order_id).bind(found.join(" "))
                            .execute(&mut **c).await?.rows_affected());
                    }
                    found
                } else {
                    let sql = tx.sql(&format!(
                        "SELECT merchants FROM {ORDERS} WHERE order_id = $1"
                    ));
                    let m: Option<String> = crate::on_tx!(tx, c => sqlx::query_scalar(&sql)
                        .bind(&order_id).fetch_optional(&mut **c).await?);
                    m.unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect()
                };
                let body = json!({
                    "notification_id": event.event_id,
                    "type": format!("order.{status}"),
                    "order_id": order_id,
                    "status": status.as_str(),
                    "event_type": event.event_type,
                    "position": event.position,
                    "occurred_at": event.recorded_at,
                })
                .to_string();
                let subject = format!("order.{status}");
                let due = event.recorded_at.timestamp_millis();
                let targets: Vec<String> = std::iter::once("nats".to_string())
                    .chain(merchants.iter().map(|m| format!("webhook:{m}")))
                    .collect();
                // One statement for all of the event's rows.
                let rows: Vec<String> = (0..targets.len())
                    .map(|i| {
                        let k = 5 * i;
                        format!(
                            "(${}, ${}, ${}, ${}, ${}, ${})",
                            k + 1,
                            k + 2,
                            k + 3,
                            k + 4,
                            k + 5,
                            targets.len() * 5 + 1
                        )
                    })
                    .collect();
                let sql = tx.sql(&format!(
                    "INSERT INTO {OUTBOX} (id, target, subject, body, position, next_attempt_at) \
                     VALUES {} ON CONFLICT (id, target) DO NOTHING",
                    rows.join(", ")
                ));
                let id = event.event_id.to_string();
                crate::on_tx!(tx, c => {
                    let mut q = sqlx::query(&sql);
                    for target in &targets {
                        q = q.bind(&id).bind(target).bind(&subject).bind(&body).bind(event.position);
                    }
                    q.bind(due).execute(&mut **c).await?.rows_affected()
                });
            }
            _ => {}
        }
        Ok(())
    }
}
