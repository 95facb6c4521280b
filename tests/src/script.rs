//! Scripted domain events written straight into the events table (with chosen times), for
//! read-model tests that need volume or a controlled clock. The payloads have exactly the
//! shape the domain's events serialise to.

use chrono::{DateTime, Utc};
use emporium_event_store::{Db, EventMetadata};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// One event to append.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: Value,
    pub at: DateTime<Utc>,
}

/// Builds events and keeps per-aggregate sequences and stock levels consistent.
#[derive(Default)]
pub struct Script {
    pub events: Vec<Scripted>,
    seq: HashMap<(String, String), i64>,
    stock: HashMap<(String, String), (i64, i64)>,
}

fn money(amount: i64, currency: &str) -> Value {
    json!({"amount_minor": amount, "currency": currency})
}

impl Script {
    /// Units of `sku` in `warehouse` not yet reserved: the scripts keep the domain's rule
    /// that a reservation never exceeds it (stock levels are unsigned in the events).
    pub fn available(&self, warehouse: &str, sku: &str) -> i64 {
        let (on_hand, reserved) = self
            .stock
            .get(&(warehouse.to_string(), sku.to_string()))
            .copied()
            .unwrap_or((0, 0));
        on_hand - reserved
    }

    fn push(
        &mut self,
        aggregate_type: &'static str,
        id: &str,
        event_type: &str,
        body: Value,
        at: DateTime<Utc>,
    ) {
        self.events.push(Scripted {
            aggregate_type,
            aggregate_id: id.to_string(),
            event_type: event_type.to_string(),
            payload: json!({ event_type: body }),
            at,
        });
    }

    pub fn product(
        &mut self,
        sku: &str,
        title: &str,
        category: &str,
        price: i64,
        currency: &str,
        at: DateTime<Utc>,
    ) {
        self.push(
            "Product",
            sku,
            "ProductCreated",
            json!({"sku": sku, "title": title, "description": format!("{title}, described"),
                   "category": category, "price": money(price, currency)}),
            at,
        );
    }

    pub fn price(&mut self, sku: &str, old: i64, new: i64, currency: &str, at: DateTime<Utc>) {
        self.push("Product", sku, "ProductPriceChanged",
            json!({"sku": sku, "old_price": money(old, currency), "new_price": money(new, currency)}), at);
    }

    #[allow(clippy::too_many_arguments)]
    fn stock_event(
        &mut self,
        warehouse: &str,
        sku: &str,
        event_type: &str,
        d_on_hand: i64,
        d_reserved: i64,
        extra: Value,
        at: DateTime<Utc>,
    ) {
        let key = (warehouse.to_string(), sku.to_string());
        let (on_hand, reserved) = self.stock.get(&key).copied().unwrap_or((0, 0));
        let (on_hand, reserved) = (on_hand + d_on_hand, reserved + d_reserved);
        self.stock.insert(key, (on_hand, reserved));
        let mut body = json!({"warehouse_id": warehouse, "sku": sku, "on_hand": on_hand,
                              "reserved": reserved, "available": on_hand - reserved});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.push(
            "StockItem",
            &format!("{warehouse}:{sku}"),
            event_type,
            body,
            at,
        );
    }

    pub fn receive(&mut self, warehouse: &str, sku: &str, qty: i64, at: DateTime<Utc>) {
        self.stock_event(
            warehouse,
            sku,
            "StockReceived",
            qty,
            0,
            json!({"qty": qty}),
            at,
        );
    }

    pub fn reserve(
        &mut self,
        warehouse: &str,
        sku: &str,
        order: &str,
        qty: i64,
        at: DateTime<Utc>,
    ) {
        self.stock_event(
            warehouse,
            sku,
            "StockReserved",
            0,
            qty,
            json!({"qty": qty, "order_id": order}),
            at,
        );
    }

    /// Places an order; returns its id and total.
    pub fn order(
        &mut self,
        customer: &str,
        lines: &[(&str, i64, i64)],
        currency: &str,
        at: DateTime<Utc>,
    ) -> (String, i64) {
        let id = Uuid::new_v4().to_string();
        let total: i64 = lines.iter().map(|(_, q, p)| q * p).sum();
        let lines: Vec<Value> = lines
            .iter()
            .map(|(sku, qty, price)| {
                json!({"sku": sku, "qty": qty, "unit_price": money(*price, currency),
                                            "line_total": money(qty * price, currency)})
            })
            .collect();
        self.push("Order", &id.clone(), "OrderPlaced",
            json!({"order_id": id, "customer_id": customer, "lines": lines, "shipping_region": "eu-west",
                   "total": money(total, currency), "payment_token": "tok_ok"}), at);
        (id, total)
    }

    pub fn confirm(
        &mut self,
        order: &str,
        allocation: &[(&str, &str, i64)],
        total: i64,
        currency: &str,
        at: DateTime<Utc>,
    ) {
        let allocation: Vec<Value> = allocation
            .iter()
            .map(|(sku, w, q)| json!({"sku": sku, "warehouse_id": w, "qty": q}))
            .collect();
        self.push(
            "Order",
            order,
            "OrderConfirmed",
            json!({"order_id": order, "allocation": allocation, "total": money(total, currency)}),
            at,
        );
    }

    pub fn reject(&mut self, order: &str, at: DateTime<Utc>) {
        self.push(
            "Order",
            order,
            "OrderRejected",
            json!({"order_id": order, "reason": "no stock"}),
            at,
        );
    }

    pub fn cancel(&mut self, order: &str, previous: &str, at: DateTime<Utc>) {
        self.push(
            "Order",
            order,
            "OrderCancelled",
            json!({"order_id": order, "reason": null, "previous_status": previous}),
            at,
        );
    }

    /// Appends `events[from..to]` in one transaction.
    pub async fn append(&mut self, db: &Db, from: usize, to: usize) {
        let meta = serde_json::to_string(&EventMetadata::system("script").to_map()).unwrap();
        let mut rows = Vec::new();
        for e in &self.events[from..to] {
            let key = (e.aggregate_type.to_string(), e.aggregate_id.clone());
            let seq = self.seq.get(&key).copied().unwrap_or(0) + 1;
            self.seq.insert(key, seq);
            rows.push((e, seq));
        }
        match db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                for (e, seq) in rows {
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                           payload, metadata, event_id, recorded_at)
                         VALUES ($1, $2, $3, $4, '1.0', $5, $6::jsonb, $7, $8)",
                    )
                    .bind(e.aggregate_type).bind(&e.aggregate_id).bind(seq).bind(&e.event_type)
                    .bind(&e.payload).bind(&meta).bind(Uuid::now_v7()).bind(e.at)
                    .execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await.unwrap();
                for (e, seq) in rows {
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                           payload, metadata, event_id, recorded_at)
                         VALUES (?1, ?2, ?3, ?4, '1.0', ?5, ?6, ?7, ?8)",
                    )
                    .bind(e.aggregate_type).bind(&e.aggregate_id).bind(seq).bind(&e.event_type)
                    .bind(e.payload.to_string()).bind(&meta).bind(Uuid::now_v7().to_string())
                    .bind(e.at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
        }
    }

    pub async fn append_all(&mut self, db: &Db) {
        let n = self.events.len();
        let mut from = 0;
        while from < n {
            let to = (from + 200).min(n);
            self.append(db, from, to).await;
            from = to;
        }
    }
}
