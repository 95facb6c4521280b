//! The checkout saga: for each placed order, allocate across warehouses, reserve, authorize
//! the payment, confirm, or compensate (release reservations, void the payment) and reject
//! with a reason. Every step is idempotent and guarded by the order's state machine, so a
//! redelivered or resumed checkout repeats nothing that happened.
//!
//! Hand-off: the worker records `CheckoutStarted` (with the payment deadline) before it acks
//! the `OrderPlaced` delivery, then processes in a task. A crash after the ack is covered by
//! the resumer, which finds checkouts that never finished: all of them when the process
//! starts, and later those idle past their deadline. The deadline lives in the checkout's
//! events, so it also holds across restarts.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_es::Aggregate;
use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand, StockItemError};
use emporium_domain::order::{Allocation, Order, OrderCommand, OrderError, OrderStatus};
use emporium_domain::payment::{Payment, PaymentCommand, PaymentError};
use emporium_domain::values::{OrderId, Quantity, Reason, Sku, WarehouseId};
use emporium_domain::warehouse::Warehouse;
use emporium_event_store::bus::Subscriber;
use emporium_event_store::{on_db, CommandError, EventMetadata, Store, StoreError};
use tokio::sync::Semaphore;

use crate::allocation::{allocate, Candidate};
use crate::checkout::{Checkout, CheckoutCommand, Shipment};
use crate::payment::{Authorization, PaymentProvider};

/// Saga settings.
#[derive(Debug, Clone)]
pub struct CheckoutConfig {
    /// From the start of a checkout until the payment must be authorized.
    pub payment_timeout: Duration,
    /// One call to the provider.
    pub attempt_timeout: Duration,
    /// Checkouts processed at once by this worker.
    pub concurrency: usize,
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        Self {
            payment_timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(2),
            concurrency: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("command failed: {0}")]
    Command(String),
}

fn command_error<E: std::error::Error>(e: CommandError<E>) -> SagaError {
    SagaError::Command(e.to_string())
}

/// How a checkout ended (or that it had already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    Rejected(String),
    /// Nothing to do: finished before, not an order, or not pending.
    Nothing,
}

enum Paid {
    Yes,
    Declined(String),
    TimedOut,
}

pub struct CheckoutSaga {
    store: Store,
    provider: Arc<dyn PaymentProvider>,
    config: CheckoutConfig,
    active: Mutex<HashSet<String>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CheckoutSaga {
    pub fn new(
        store: Store,
        provider: Arc<dyn PaymentProvider>,
        config: CheckoutConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            provider,
            config,
            active: Mutex::new(HashSet::new()),
        })
    }

    fn meta(order_id: &str) -> EventMetadata {
        EventMetadata::system("checkout").correlated_with(order_id.to_string())
    }

    async fn exec<A>(
        &self,
        id: &str,
        command: A::Command,
        order_id: &str,
    ) -> Result<(), CommandError<A::Error>>
    where
        A: Aggregate<Services = ()>,
        A::Command: Clone,
    {
        self.store
            .execute::<A>(id, command, &Self::meta(order_id))
            .await
    }

    /// Records the start of a checkout (idempotent). Called before a delivery is acked.
    pub async fn start(&self, order_id: &str) -> Result<(), SagaError> {
        let deadline_ms = now_ms() + self.config.payment_timeout.as_millis() as i64;
        self.exec::<Checkout>(
            order_id,
            CheckoutCommand::Start {
                order_id: order_id.to_string(),
                deadline_ms,
            },
            order_id,
        )
        .await
        .map_err(command_error)
    }

    /// Runs (or resumes) the checkout of one order to its end.
    pub async fn process(&self, order_id: &OrderId) -> Result<Outcome, SagaError> {
        let oid = order_id.to_string();
        let (order, version) = self.store.load::<Order>(&oid).await?;
        if version == 0 {
            return Ok(Outcome::Nothing);
        }
        let (checkout, _) = self.store.load::<Checkout>(&oid).await?;
        if checkout.finished().is_some() {
            return Ok(Outcome::Nothing);
        }
        match order.status() {
            Some(OrderStatus::Pending) => {}
            Some(OrderStatus::Confirmed) => {
                self.exec::<Checkout>(&oid, CheckoutCommand::Complete, &oid)
                    .await
                    .map_err(command_error)?;
                return Ok(Outcome::Nothing);
            }
            _ => {
                // Cancelled (or rejected elsewhere) while we were away: give everything back.
                self.compensate(&order, &oid).await?;
                self.exec::<Checkout>(
                    &oid,
                    CheckoutCommand::Fail {
                        reason: "order no longer pending".into(),
                    },
                    &oid,
                )
                .await
                .map_err(command_error)?;
                return Ok(Outcome::Nothing);
            }
        }
        self.start(&oid).await?;
        let (checkout, _) = self.store.load::<Checkout>(&oid).await?;

        let allocation = match checkout.allocation() {
            Some(a) => a.to_vec(),
            None => match self.reserve(&order, &oid).await? {
                Ok(a) => {
                    self.exec::<Checkout>(
                        &oid,
                        CheckoutCommand::RecordReservation {
                            allocation: a.clone(),
                        },
                        &oid,
                    )
                    .await
                    .map_err(command_error)?;
                    a
                }
                Err(reason) => return self.reject(&oid, reason).await,
            },
        };

        if !checkout.is_authorized() {
            match self.pay(&order, &oid, checkout.deadline_ms()).await {
                Paid::Yes => {
                    let Some(total) = order.total().copied() else {
                        return Err(SagaError::Command("placed order without a total".into()));
                    };
                    match self
                        .exec::<Payment>(
                            &oid,
                            PaymentCommand::AuthorizePayment {
                                order_id: *order_id,
                                amount: total,
                            },
                            &oid,
                        )
                        .await
                    {
                        Ok(()) | Err(CommandError::Rejected(PaymentError::AlreadyAuthorized)) => {}
                        Err(e) => return Err(command_error(e)),
                    }
                    self.exec::<Checkout>(
                        &oid,
                        CheckoutCommand::RecordAuthorization {
                            amount_minor: total.amount_minor(),
                            currency: total.currency().as_str().to_string(),
                        },
                        &oid,
                    )
                    .await
                    .map_err(command_error)?;
                }
                Paid::Declined(r) => {
                    return self.reject(&oid, format!("payment declined: {r}")).await
                }
                Paid::TimedOut => return self.reject(&oid, "payment timed out".to_string()).await,
            }
        }

        let parts: Vec<Allocation> = allocation
            .iter()
            .filter_map(|s| {
                Some(Allocation {
                    sku: Sku::parse(&s.sku).ok()?,
                    warehouse_id: WarehouseId::parse(&s.warehouse_id).ok()?,
                    qty: Quantity::new(s.qty as i64).ok()?,
                })
            })
            .collect();
        match self
            .exec::<Order>(&oid, OrderCommand::ConfirmOrder { allocation: parts }, &oid)
            .await
        {
            Ok(()) => {
                self.exec::<Checkout>(&oid, CheckoutCommand::Complete, &oid)
                    .await
                    .map_err(command_error)?;
                metrics::counter!("emporium_checkouts_total", "outcome" => "confirmed")
                    .increment(1);
                Ok(Outcome::Confirmed)
            }
            Err(CommandError::Rejected(OrderError::IllegalTransition { from, .. })) => {
                // Cancelled while we paid: undo what we hold.
                let (order, _) = self.store.load::<Order>(&oid).await?;
                self.compensate(&order, &oid).await?;
                self.exec::<Checkout>(
                    &oid,
                    CheckoutCommand::Fail {
                        reason: format!("order {from} during checkout"),
                    },
                    &oid,
                )
                .await
                .map_err(command_error)?;
                Ok(Outcome::Nothing)
            }
            Err(e) => Err(command_error(e)),
        }
    }

    /// Current stock of the order's SKUs in open warehouses, counting this order's own
    /// reservations as available (they are released before re-reserving).
    async fn candidates(
        &self,
        order: &Order,
        order_id: &OrderId,
    ) -> Result<(Vec<Candidate>, bool), SagaError> {
        let mut out = Vec::new();
        let mut holds_any = false;
        for wid in self.store.aggregate_ids("Warehouse").await? {
            let (w, _) = self.store.load::<Warehouse>(&wid).await?;
            let (Some(id), Some(region), Some(priority)) = (w.id(), w.region(), w.priority())
            else {
                continue;
            };
            if !w.is_open() {
                continue;
            }
            let mut available = BTreeMap::new();
            for line in order.lines() {
                let (item, _) = self
                    .store
                    .load::<StockItem>(&stock_item_id(id, &line.sku))
                    .await?;
                let own = u64::from(item.reservation_for(order_id).unwrap_or(0));
                holds_any |= own > 0;
                available.insert(line.sku.to_string(), item.available() + own);
            }
            out.push(Candidate {
                warehouse_id: id.to_string(),
                region: region.to_string(),
                priority: priority.get(),
                available,
            });
        }
        Ok((out, holds_any))
    }

    /// Allocates and reserves every part. `Ok(Err(reason))` when stock is short.
    async fn reserve(
        &self,
        order: &Order,
        oid: &str,
    ) -> Result<Result<Vec<Shipment>, String>, SagaError> {
        let Some(order_id) = order.order_id() else {
            return Ok(Err("order without id".into()));
        };
        let region = order
            .shipping_region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let lines: Vec<(String, u64)> = order
            .lines()
            .iter()
            .map(|l| (l.sku.to_string(), u64::from(l.qty.get())))
            .collect();
        for attempt in 0..100u64 {
            let (candidates, holds_any) = self.candidates(order, &order_id).await?;
            let parts = match allocate(&lines, &candidates, &region) {
                Ok(p) => p,
                Err(short) => {
                    if holds_any {
                        self.release_all(order, oid).await?;
                    }
                    return Ok(Err(short.to_string()));
                }
            };
            // A clean slate: reservations are idempotent per order, so an old one with another
            // quantity would otherwise stay as it was.
            if holds_any {
                self.release_all(order, oid).await?;
            }
            let mut lost_race = false;
            for p in &parts {
                let (Ok(w), Ok(s), Ok(q)) = (
                    WarehouseId::parse(&p.warehouse_id),
                    Sku::parse(&p.sku),
                    Quantity::new(p.qty as i64),
                ) else {
                    continue;
                };
                match self
                    .exec::<StockItem>(
                        &stock_item_id(&w, &s),
                        StockItemCommand::ReserveStock {
                            warehouse_id: w.clone(),
                            sku: s,
                            order_id,
                            qty: q,
                        },
                        oid,
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(CommandError::Rejected(StockItemError::InsufficientStock { .. })) => {
                        lost_race = true;
                        break;
                    }
                    Err(e) => return Err(command_error(e)),
                }
            }
            if !lost_race {
                return Ok(Ok(parts
                    .into_iter()
                    .map(|p| Shipment {
                        sku: p.sku,
                        warehouse_id: p.warehouse_id,
                        qty: p.qty,
                    })
                    .collect()));
            }
            // Someone else got there first: give back what we took and look again.
            self.release_all(order, oid).await?;
            metrics::counter!("emporium_checkout_reallocations_total").increment(1);
            tokio::time::sleep(Duration::from_millis(
                1 + (attempt * 7 + now_ms() as u64 % 11) % 25,
            ))
            .await;
        }
        Ok(Err("could not reserve stock under contention".into()))
    }

    /// Releases this order's reservations on every stock item it could hold (no-ops
    /// where it holds none).
    async fn release_all(&self, order: &Order, oid: &str) -> Result<(), SagaError> {
        let Some(order_id) = order.order_id() else {
            return Ok(());
        };
        for wid in self.store.aggregate_ids("Warehouse").await? {
            let Ok(w) = WarehouseId::parse(&wid) else {
                continue;
            };
            for line in order.lines() {
                let id = stock_item_id(&w, &line.sku);
                let (item, version) = self.store.load::<StockItem>(&id).await?;
                if version == 0 || item.reservation_for(&order_id).is_none() {
                    continue;
                }
                self.exec::<StockItem>(&id, StockItemCommand::ReleaseReservation { order_id }, oid)
                    .await
                    .map_err(command_error)?;
            }
        }
        Ok(())
    }

    async fn pay(&self, order: &Order, oid: &str, deadline_ms: i64) -> Paid {
        let (Some(total), Some(token)) = (order.total(), order.payment_token()) else {
            return Paid::Declined("no payment details".into());
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let left = deadline_ms - now_ms();
            if left <= 0 {
                return Paid::TimedOut;
            }
            let attempt = self
                .config
                .attempt_timeout
                .min(Duration::from_millis(left as u64));
            let call = self.provider.authorize(
                oid,
                token,
                total.amount_minor(),
                total.currency().as_str(),
            );
            match tokio::time::timeout(attempt, call).await {
                Ok(Ok(Authorization::Approved { .. })) => return Paid::Yes,
                Ok(Ok(Authorization::Declined { reason })) => return Paid::Declined(reason),
                Ok(Err(e)) => {
                    tracing::info!(order = oid, error = %e, "payment: transient error, retrying");
                    let left = (deadline_ms - now_ms()).max(0) as u64;
                    tokio::time::sleep(backoff.min(Duration::from_millis(left))).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(_) => tracing::info!(order = oid, "payment: no answer, retrying"),
            }
        }
    }

    /// Rejects the order, then (only if the rejection won) releases everything and voids the
    /// payment, and closes the checkout.
    async fn reject(&self, oid: &str, reason: String) -> Result<Outcome, SagaError> {
        let text = Reason::parse(&reason.chars().take(500).collect::<String>())
            .unwrap_or_else(|_| Reason::parse("checkout failed").expect("a valid reason"));
        match self
            .exec::<Order>(oid, OrderCommand::RejectOrder { reason: text }, oid)
            .await
        {
            Ok(()) => {}
            Err(CommandError::Rejected(OrderError::IllegalTransition {
                from: OrderStatus::Confirmed,
                ..
            })) => {
                // Another run confirmed it: nothing to undo.
                self.exec::<Checkout>(oid, CheckoutCommand::Complete, oid)
                    .await
                    .map_err(command_error)?;
                return Ok(Outcome::Nothing);
            }
            Err(CommandError::Rejected(OrderError::IllegalTransition { .. })) => {}
            Err(e) => return Err(command_error(e)),
        }
        let (order, _) = self.store.load::<Order>(oid).await?;
        self.compensate(&order, oid).await?;
        self.exec::<Checkout>(
            oid,
            CheckoutCommand::Fail {
                reason: reason.clone(),
            },
            oid,
        )
        .await
        .map_err(command_error)?;
        metrics::counter!("emporium_checkouts_total", "outcome" => "rejected").increment(1);
        Ok(Outcome::Rejected(reason))
    }

    /// Gives back what an order holds: its reservations and its payment authorization.
    pub async fn compensate(&self, order: &Order, oid: &str) -> Result<(), SagaError> {
        self.release_all(order, oid).await?;
        let (payment, version) = self.store.load::<Payment>(oid).await?;
        if version > 0 && payment.authorized().is_some() {
            match self
                .exec::<Payment>(oid, PaymentCommand::VoidPayment, oid)
                .await
            {
                Ok(()) | Err(CommandError::Rejected(PaymentError::AlreadyVoided)) => {}
                // Captured payments are refunded by a later flow; keep the reservation released.
                Err(CommandError::Rejected(_)) => {}
                Err(e) => return Err(command_error(e)),
            }
            self.provider
                .void(oid)
                .await
                .map_err(|e| SagaError::Command(e.to_string()))?;
        }
        Ok(())
    }

    fn claim(&self, oid: &str) -> bool {
        self.active
            .lock()
            .map(|mut a| a.insert(oid.to_string()))
            .unwrap_or(false)
    }

    fn unclaim(&self, oid: &str) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(oid);
        }
    }

    fn spawn_process(self: &Arc<Self>, oid: String, permits: Arc<Semaphore>) {
        if !self.claim(&oid) {
            return;
        }
        let saga = self.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            if let Ok(id) = OrderId::parse(&oid) {
                for attempt in 0..5u64 {
                    match saga.process(&id).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(order = %oid, error = %e, "checkout step failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                        }
                    }
                }
            }
            saga.unclaim(&oid);
        });
    }

    /// Checkouts started and not finished, plus (without `idle_ms`) placed orders whose
    /// checkout never started; with `idle_ms`, only checkouts past their deadline by that.
    pub async fn unfinished(&self, idle_ms: Option<i64>) -> Result<Vec<String>, SagaError> {
        let db = self.store.db();
        let cutoff = idle_ms.map_or(i64::MAX, |i| now_ms() - i);
        let sql = db.sql(
            "SELECT s.aggregate_id FROM events s
             WHERE s.aggregate_type = 'Checkout' AND s.sequence = 1
               AND NOT EXISTS (SELECT 1 FROM events t WHERE t.aggregate_type = 'Checkout'
                   AND t.aggregate_id = s.aggregate_id
                   AND t.event_type IN ('CheckoutCompleted', 'CheckoutFailed'))",
        );
        let mut rows: Vec<String> = on_db!(db, pool => {
            sqlx::query_scalar::<_, String>(&sql).fetch_all(pool).await.map_err(StoreError::from)?
        });
        if idle_ms.is_none() {
            // Orders placed whose checkout never started (the delivery died with a process).
            let pending = db.sql(
                "SELECT o.aggregate_id FROM events o
                 WHERE o.aggregate_type = 'Order' AND o.sequence = 1
                   AND NOT EXISTS (SELECT 1 FROM events t WHERE t.aggregate_type = 'Order'
                       AND t.aggregate_id = o.aggregate_id AND t.sequence = 2)
                   AND NOT EXISTS (SELECT 1 FROM events c WHERE c.aggregate_type = 'Checkout'
                       AND c.aggregate_id = o.aggregate_id)",
            );
            let more: Vec<String> = on_db!(db, pool => {
                sqlx::query_scalar::<_, String>(&pending).fetch_all(pool).await.map_err(StoreError::from)?
            });
            rows.extend(more);
            return Ok(rows);
        }
        let mut stale = Vec::new();
        for oid in rows {
            let (c, _) = self.store.load::<Checkout>(&oid).await?;
            if c.deadline_ms() < cutoff {
                stale.push(oid);
            }
        }
        Ok(stale)
    }

    /// Consumes `OrderPlaced` deliveries and resumes unfinished checkouts until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut subscriber: Box<dyn Subscriber>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // After a restart nothing of ours is in flight: resume every unfinished checkout.
        match self.unfinished(None).await {
            Ok(open) => {
                if !open.is_empty() {
                    tracing::info!(count = open.len(), "resuming unfinished checkouts");
                }
                for oid in open {
                    self.spawn_process(oid, permits.clone());
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list unfinished checkouts"),
        }
        // The sweeper runs on its own: a timer branch in the select below would cancel
        // `subscriber.next()` mid-read, and a read cancelled inside `BEGIN` leaks an open
        // transaction into the pool.
        let sweeper = {
            let (saga, permits) = (self.clone(), permits.clone());
            tokio::spawn(async move {
                let mut sweep = tokio::time::interval(Duration::from_secs(5));
                loop {
                    sweep.tick().await;
                    // Checkouts idle well past their deadline were orphaned by a crash elsewhere.
                    if let Ok(stale) = saga.unfinished(Some(10_000)).await {
                        for oid in stale {
                            saga.spawn_process(oid, permits.clone());
                        }
                    }
                }
            })
        };
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    sweeper.abort();
                    return;
                }
                delivery = subscriber.next() => {
                    let delivery = match delivery {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(error = %e, "checkout: subscriber failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    if delivery.event.event_type != "OrderPlaced" {
                        let _ = subscriber.ack(delivery).await;
                        continue;
                    }
                    let oid = delivery.event.aggregate_id.clone();
                    // Durable before the ack: from here on the resumer can find it.
                    match self.start(&oid).await {
                        Ok(()) => {
                            let _ = subscriber.ack(delivery).await;
                            self.spawn_process(oid, permits.clone());
                        }
                        Err(e) => {
                            tracing::warn!(order = %oid, error = %e, "checkout: cannot start");
                            let _ = subscriber.nak(delivery, Some(Duration::from_secs(1))).await;
                        }
                    }
                }
            }
        }
    }
}
