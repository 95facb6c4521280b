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
use emporium_domain::order::{
    Allocation, Order, OrderCommand, OrderError, OrderEvent, OrderStatus,
};
use emporium_domain::payment::{Payment, PaymentCommand, PaymentError};
use emporium_domain::values::{OrderId, Quantity, Reason, Sku, WarehouseId};
use emporium_domain::warehouse::Warehouse;
use emporium_domain::{Checkout, CheckoutCommand};
use emporium_event_store::bus::Subscriber;
use emporium_event_store::{CommandError, Envelope, EventMetadata, Store, StoreError};
use tokio::sync::Semaphore;

use crate::allocation::{allocate, Candidate};
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

    /// The metadata of every command the saga sends for an order: the flow's correlation id
    /// (the client's `X-Correlation-Id`, else the placing request's id) and, as the cause,
    /// the `OrderPlaced` event the saga reacts to.
    fn flow_metadata(placed: &Envelope<OrderEvent>) -> EventMetadata {
        EventMetadata::system("checkout")
            .correlated_with(placed.metadata.correlation_id.clone())
            .caused_by(placed.event_id.to_string())
    }

    async fn exec<A>(
        &self,
        id: &str,
        command: A::Command,
        meta: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>>
    where
        A: Aggregate<Services = ()>,
        A::Command: Clone,
    {
        self.store.execute::<A>(id, command, meta).await
    }

    /// Records the start of a checkout (idempotent). Called before a delivery is acked.
    pub async fn start(&self, order_id: OrderId, meta: &EventMetadata) -> Result<(), SagaError> {
        let deadline_ms = now_ms() + self.config.payment_timeout.as_millis() as i64;
        self.exec::<Checkout>(
            &order_id.to_string(),
            CheckoutCommand::Start {
                order_id,
                deadline_ms,
            },
            meta,
        )
        .await
        .map_err(command_error)
    }

    /// Runs (or resumes) the checkout of one order to its end.
    pub async fn process(&self, order_id: &OrderId) -> Result<Outcome, SagaError> {
        let oid = order_id.to_string();
        let Some(placed) = self.store.first_event::<Order>(&oid).await? else {
            return Ok(Outcome::Nothing);
        };
        let meta = &Self::flow_metadata(&placed);
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
                self.exec::<Checkout>(&oid, CheckoutCommand::Complete, meta)
                    .await
                    .map_err(command_error)?;
                return Ok(Outcome::Nothing);
            }
            _ => {
                // Cancelled (or rejected elsewhere) while we were away: give everything back.
                self.compensate(&order, &oid, meta).await?;
                self.exec::<Checkout>(
                    &oid,
                    CheckoutCommand::Fail {
                        reason: "order no longer pending".into(),
                    },
                    meta,
                )
                .await
                .map_err(command_error)?;
                return Ok(Outcome::Nothing);
            }
        }
        self.start(*order_id, meta).await?;
        let (checkout, _) = self.store.load::<Checkout>(&oid).await?;

        let allocation = match checkout.allocation() {
            Some(a) => a.to_vec(),
            None => match self.reserve(&order, meta).await? {
                Ok(a) => {
                    self.exec::<Checkout>(
                        &oid,
                        CheckoutCommand::RecordReservation {
                            allocation: a.clone(),
                        },
                        meta,
                    )
                    .await
                    .map_err(command_error)?;
                    a
                }
                Err(reason) => return self.reject(&oid, reason, meta).await,
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
                            meta,
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
                        meta,
                    )
                    .await
                    .map_err(command_error)?;
                }
                Paid::Declined(r) => {
                    return self
                        .reject(&oid, format!("payment declined: {r}"), meta)
                        .await
                }
                Paid::TimedOut => {
                    return self
                        .reject(&oid, "payment timed out".to_string(), meta)
                        .await
                }
            }
        }

        match self
            .exec::<Order>(&oid, OrderCommand::ConfirmOrder { allocation }, meta)
            .await
        {
            Ok(()) => {
                self.exec::<Checkout>(&oid, CheckoutCommand::Complete, meta)
                    .await
                    .map_err(command_error)?;
                metrics::counter!("emporium_checkouts_total", "outcome" => "confirmed")
                    .increment(1);
                Ok(Outcome::Confirmed)
            }
            Err(CommandError::Rejected(OrderError::IllegalTransition { from, .. })) => {
                // Cancelled while we paid: undo what we hold.
                let (order, _) = self.store.load::<Order>(&oid).await?;
                self.compensate(&order, &oid, meta).await?;
                self.exec::<Checkout>(
                    &oid,
                    CheckoutCommand::Fail {
                        reason: format!("order {from} during checkout"),
                    },
                    meta,
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
        for wid in self.store.aggregate_ids::<Warehouse>().await? {
            let (w, _) = self.store.load::<Warehouse>(&wid).await?;
            let (Some(id), Some(region), Some(priority)) = (w.id(), w.region(), w.priority())
            else {
                continue;
            };
            if !w.is_open() {
                continue;
            }
            let mut candidate = Candidate {
                warehouse_id: id.clone(),
                region: region.clone(),
                priority: priority.get(),
                available: BTreeMap::new(),
            };
            for line in order.lines() {
                let (item, _) = self
                    .store
                    .load::<StockItem>(&stock_item_id(id, &line.sku))
                    .await?;
                let own = u64::from(item.reservation_for(order_id).unwrap_or(0));
                holds_any |= own > 0;
                candidate.add(&line.sku, item.levels(), own);
            }
            out.push(candidate);
        }
        Ok((out, holds_any))
    }

    /// Allocates and reserves every part. `Ok(Err(reason))` when stock is short.
    async fn reserve(
        &self,
        order: &Order,
        meta: &EventMetadata,
    ) -> Result<Result<Vec<Allocation>, String>, SagaError> {
        let (Some(order_id), Some(region)) = (order.order_id(), order.shipping_region()) else {
            return Ok(Err("order without id or shipping region".into()));
        };
        let lines: Vec<(Sku, Quantity)> = order
            .lines()
            .iter()
            .map(|l| (l.sku.clone(), l.qty))
            .collect();
        for attempt in 0..100u64 {
            let (candidates, holds_any) = self.candidates(order, &order_id).await?;
            let parts = match allocate(&lines, &candidates, region) {
                Ok(p) => p,
                Err(short) => {
                    if holds_any {
                        self.release_all(order, meta).await?;
                    }
                    return Ok(Err(short.to_string()));
                }
            };
            // A clean slate: reservations are idempotent per order, so an old one with another
            // quantity would otherwise stay as it was.
            if holds_any {
                self.release_all(order, meta).await?;
            }
            let mut lost_race = false;
            for p in &parts {
                match self
                    .exec::<StockItem>(
                        &stock_item_id(&p.warehouse_id, &p.sku),
                        StockItemCommand::ReserveStock {
                            warehouse_id: p.warehouse_id.clone(),
                            sku: p.sku.clone(),
                            order_id,
                            qty: p.qty,
                        },
                        meta,
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
                return Ok(Ok(parts));
            }
            // Someone else got there first: give back what we took and look again.
            self.release_all(order, meta).await?;
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
    async fn release_all(&self, order: &Order, meta: &EventMetadata) -> Result<(), SagaError> {
        let Some(order_id) = order.order_id() else {
            return Ok(());
        };
        for wid in self.store.aggregate_ids::<Warehouse>().await? {
            let Ok(w) = WarehouseId::parse(&wid) else {
                continue;
            };
            for line in order.lines() {
                let id = stock_item_id(&w, &line.sku);
                let (item, version) = self.store.load::<StockItem>(&id).await?;
                if version == 0 || item.reservation_for(&order_id).is_none() {
                    continue;
                }
                self.exec::<StockItem>(
                    &id,
                    StockItemCommand::ReleaseReservation { order_id },
                    meta,
                )
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
    async fn reject(
        &self,
        oid: &str,
        reason: String,
        meta: &EventMetadata,
    ) -> Result<Outcome, SagaError> {
        let text = Reason::parse(&reason.chars().take(500).collect::<String>())
            .unwrap_or_else(|_| Reason::parse("checkout failed").expect("a valid reason"));
        match self
            .exec::<Order>(oid, OrderCommand::RejectOrder { reason: text }, meta)
            .await
        {
            Ok(()) => {}
            Err(CommandError::Rejected(OrderError::IllegalTransition {
                from: OrderStatus::Confirmed,
                ..
            })) => {
                // Another run confirmed it: nothing to undo.
                self.exec::<Checkout>(oid, CheckoutCommand::Complete, meta)
                    .await
                    .map_err(command_error)?;
                return Ok(Outcome::Nothing);
            }
            Err(CommandError::Rejected(OrderError::IllegalTransition { .. })) => {}
            Err(e) => return Err(command_error(e)),
        }
        let (order, _) = self.store.load::<Order>(oid).await?;
        self.compensate(&order, oid, meta).await?;
        self.exec::<Checkout>(
            oid,
            CheckoutCommand::Fail {
                reason: reason.clone(),
            },
            meta,
        )
        .await
        .map_err(command_error)?;
        metrics::counter!("emporium_checkouts_total", "outcome" => "rejected").increment(1);
        Ok(Outcome::Rejected(reason))
    }

    /// Gives back what an order holds: its reservations and its payment authorization.
    /// `meta` is the metadata of the flow doing it (the saga's, or a cancel request's).
    pub async fn compensate(
        &self,
        order: &Order,
        oid: &str,
        meta: &EventMetadata,
    ) -> Result<(), SagaError> {
        self.release_all(order, meta).await?;
        let (payment, version) = self.store.load::<Payment>(oid).await?;
        if version > 0 && payment.authorized().is_some() {
            match self
                .exec::<Payment>(oid, PaymentCommand::VoidPayment, meta)
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
        let cutoff = idle_ms.map_or(i64::MAX, |i| now_ms() - i);
        let mut rows = self.store.unfinished_checkouts().await?;
        if idle_ms.is_none() {
            rows.extend(self.store.orders_without_checkout().await?);
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
                    let placed = match self.store.upcasters().decode::<Order, _>(&delivery.event) {
                        Ok(e) => e,
                        Err(e) => {
                            // Not a shape we can read: redeliver, and past `max_deliver` the
                            // bus dead-letters it; never treat it as something else.
                            tracing::error!(error = %e, "checkout: undecodable order event");
                            let _ = subscriber.nak(delivery, Some(Duration::from_secs(1))).await;
                            continue;
                        }
                    };
                    let OrderEvent::OrderPlaced { order_id, .. } = &placed.payload else {
                        let _ = subscriber.ack(delivery).await;
                        continue;
                    };
                    let (order_id, oid) = (*order_id, placed.aggregate_id.clone());
                    // Durable before the ack: from here on the resumer can find it.
                    match self.start(order_id, &Self::flow_metadata(&placed)).await {
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
