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

use std::collections::{BTreeMap, BTreeSet};

use crate::rows::{self, V};
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

    async fn apply(&self, tx: &mut Tx, gen: i64, event: &Envelope<Event>) -> Result<()> {
        self.apply_batch(tx, gen, std::slice::from_ref(event)).await
    }

    /// What applying the events one by one writes, with each run of order events between
    /// merchant and product changes written together: one lookup of the merchants of the
    /// orders placed in it, one of those placed before, one insert of outbox rows.
    async fn apply_batch(&self, tx: &mut Tx, _gen: i64, events: &[Envelope<Event>]) -> Result<()> {
        let mut run: Vec<(&Envelope<Event>, &OrderEvent)> = Vec::new();
        for event in events {
            match &event.payload {
                Event::Order(e) => run.push((event, e)),
                Event::Merchant(MerchantEvent::MerchantRegistered {
                    merchant_id,
                    webhook_url: Some(url),
                    ..
                }) => {
                    write_orders(tx, &run).await?;
                    run.clear();
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
                    write_orders(tx, &run).await?;
                    run.clear();
                    let sql = tx.sql(&format!(
                        "INSERT INTO {PRODUCTS} (sku, merchant_id) VALUES ($1, $2) \
                         ON CONFLICT (sku) DO NOTHING"
                    ));
                    crate::on_tx!(tx, c => sqlx::query(&sql).bind(sku.as_str()).bind(m.as_str())
                        .execute(&mut **c).await?.rows_affected());
                }
                _ => {}
            }
        }
        write_orders(tx, &run).await
    }
}

/// The outbox rows of a run of order events: the order's merchants with webhooks are
/// fixed when it is placed (from its lines' products) and read back for its later events.
async fn write_orders(tx: &mut Tx, run: &[(&Envelope<Event>, &OrderEvent)]) -> Result<()> {
    if run.is_empty() {
        return Ok(());
    }
    let skus: BTreeSet<&str> = run
        .iter()
        .filter_map(|(_, e)| match e {
            OrderEvent::OrderPlaced { lines, .. } => Some(lines.iter().map(|l| l.sku.as_str())),
            _ => None,
        })
        .flatten()
        .collect();
    let mut sellers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let skus: Vec<&str> = skus.into_iter().collect();
    let found: Vec<(String, String)> = rows::select_in(
        tx,
        &format!(
            "SELECT p.sku, w.merchant_id FROM {PRODUCTS} p JOIN {WEBHOOKS} w \
             ON w.merchant_id = p.merchant_id"
        ),
        "p.sku",
        &skus,
    )
    .await?;
    for (sku, merchant) in found {
        sellers.entry(sku).or_default().push(merchant);
    }
    // Each order's merchants with webhooks, in merchant order.
    let mut merchants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut placed_rows: Vec<String> = Vec::new();
    for (_, e) in run {
        if let OrderEvent::OrderPlaced { lines, .. } = e {
            let found: BTreeSet<&String> = lines
                .iter()
                .filter_map(|l| sellers.get(l.sku.as_str()))
                .flatten()
                .collect();
            let found: Vec<String> = found.into_iter().cloned().collect();
            // Orders without a merchant webhook, most of them, leave no row: a missing row
            // reads as "no merchants" below.
            if !found.is_empty() {
                placed_rows.push(e.order_id().to_string());
                placed_rows.push(found.join(" "));
            }
            merchants.insert(e.order_id().to_string(), found);
        }
    }
    let placed: Vec<V> = placed_rows.iter().map(|s| V::S(s)).collect();
    rows::insert(
        tx,
        &format!("INSERT INTO {ORDERS} (order_id, merchants)"),
        "ON CONFLICT (order_id) DO NOTHING",
        2,
        &placed,
    )
    .await?;
    let earlier: BTreeSet<String> = run
        .iter()
        .map(|(_, e)| e.order_id().to_string())
        .filter(|id| !merchants.contains_key(id))
        .collect();
    let earlier: Vec<&str> = earlier.iter().map(String::as_str).collect();
    let found: Vec<(String, String)> = rows::select_in(
        tx,
        &format!("SELECT order_id, merchants FROM {ORDERS}"),
        "order_id",
        &earlier,
    )
    .await?;
    for (id, m) in found {
        merchants.insert(id, m.split_whitespace().map(str::to_string).collect());
    }
    // One row per (event, target): NATS, and each of the order's merchants.
    // (id, target, subject, body), position, due.
    let mut rows_out: Vec<([String; 4], i64, i64)> = Vec::new();
    for (event, e) in run {
        let status = status_after(e);
        let order_id = e.order_id().to_string();
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
        let id = event.event_id.to_string();
        let targets = std::iter::once("nats".to_string()).chain(
            merchants
                .get(&order_id)
                .into_iter()
                .flatten()
                .map(|m| format!("webhook:{m}")),
        );
        for target in targets {
            rows_out.push((
                [id.clone(), target, subject.clone(), body.clone()],
                event.position,
                due,
            ));
        }
    }
    let outbox: Vec<V> = rows_out
        .iter()
        .flat_map(|([id, target, subject, body], position, due)| {
            [
                V::S(id),
                V::S(target),
                V::S(subject),
                V::S(body),
                V::I(*position),
                V::I(*due),
            ]
        })
        .collect();
    rows::insert(
        tx,
        &format!("INSERT INTO {OUTBOX} (id, target, subject, body, position, next_attempt_at)"),
        "ON CONFLICT (id, target) DO NOTHING",
        6,
        &outbox,
    )
    .await
}
