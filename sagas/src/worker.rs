//! The checkout saga: for each placed order, allocate across warehouses, reserve, authorize
//! the payment, confirm, or compensate (release reservations, void the payment) and reject
//! with a reason. Every step is idempotent and guarded by the order's state machine, so a
//! redelivered or resumed checkout repeats nothing that happened.
//!
//! Hand-off: the worker acks the `OrderPlaced` delivery and processes the checkout in a
//! task, under the checkout's lease (one engine at a time per checkout, see
//! [`crate::lease`]); the task records `CheckoutStarted` (with the payment deadline) first.
//! A crash after the ack, a delivery that was dead-lettered, or an engine that died
//! mid-checkout is covered by the sweep (at start and every `sweep_interval`): unfinished
//! checkouts, placed orders without one, and cancels without a compensation, that no live
//! engine holds. The deadline lives in the
//! checkout's events, so it also holds across restarts.
//!
//! Cancels: the HTTP request only records `OrderCancelled`; the saga gives back stock and
//! payment from that event (or the sweep, after a crash) and records `CheckoutCompensated`.
//! A confirmed order is never compensated by a checkout run, only by a cancel.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::fraud::{FraudRules, FraudScreen, RulesScreen, ScreenFacts};
use crate::lease::Leases;
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
    /// How long a checkout's lease lasts without renewal: how soon another engine takes
    /// over the checkouts of one that died.
    pub lease_ttl: Duration,
    /// How often the sweeper looks for work nobody is doing (checkouts idle past their
    /// deadline, placed orders without a checkout, cancels not yet compensated).
    pub sweep_interval: Duration,
    /// Fraud review before payment.
    pub fraud: FraudConfig,
}

/// When the checkout holds an order for a person's review.
#[derive(Debug, Clone)]
pub struct FraudConfig {
    /// Orders scored at or above this wait `under_review`; `None` screens nothing.
    pub threshold: Option<u8>,
    /// A review not decided within this rejects the order.
    pub review_timeout: Duration,
    /// The built-in screen's rules (used unless another screen is plugged in).
    pub rules: FraudRules,
}

impl Default for FraudConfig {
    fn default() -> Self {
        Self {
            // Only all of a high value, many recent orders and a new shipping region together
            // (40 + 30 + 25 points) hold an order by default.
            threshold: Some(80),
            review_timeout: Duration::from_secs(24 * 3600),
            rules: FraudRules::default(),
        }
    }
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        Self {
            payment_timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(2),
            concurrency: 64,
            lease_ttl: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(5),
            fraud: FraudConfig::default(),
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

/// Work found unattended by a sweep.
#[derive(Debug, Default)]
pub struct Orphans {
    /// Checkouts to run (or resume).
    pub checkouts: Vec<String>,
    /// Cancelled orders to compensate.
    pub cancels: Vec<String>,
}

/// How a checkout ended (or that it had already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    Rejected(String),
    /// Waiting for a fraud review (stock reserved, payment not yet asked for).
    Held,
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
    /// Checkouts this process is working on (one task each).
    active: Mutex<HashSet<String>>,
    /// Checkouts this process may work on: one engine at a time per checkout.
    leases: Leases,
    /// Checkouts this process started from a delivery, with the delivered `OrderPlaced`:
    /// their order and stock can be read from this process's cache (a resumed one is read
    /// fresh, as an earlier run elsewhere may have reserved for it), and the placing event
    /// need not be read again.
    delivered: Mutex<HashMap<String, Arc<Envelope<OrderEvent>>>>,
    /// Warehouse ids, read at most once per [`WAREHOUSE_LIST_TTL`]; a shortfall found with
    /// a cached list is confirmed with a fresh one.
    warehouses: Mutex<Option<(std::time::Instant, Arc<Vec<String>>)>>,
    /// Opens the sealed payment token of an order (docs/audit.md, erasure).
    keys: emporium_event_store::personal::KeyRing,
    /// Scores orders before payment (fraud review).
    screen: Arc<dyn FraudScreen>,
}

/// How long the list of warehouse ids is reused: a new warehouse is a candidate for
/// allocation at most this long after it was created (at once if stock is short elsewhere).
const WAREHOUSE_LIST_TTL: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CheckoutSaga {
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn provider(&self) -> &dyn PaymentProvider {
        self.provider.as_ref()
    }

    /// A saga with the built-in rules screen.
    pub fn new(
        store: Store,
        provider: Arc<dyn PaymentProvider>,
        config: CheckoutConfig,
    ) -> Arc<Self> {
        let screen = Arc::new(RulesScreen::new(
            store.db().clone(),
            config.fraud.rules.clone(),
        ));
        Self::with_screen(store, provider, config, screen)
    }

    /// A saga with another fraud screen plugged in.
    pub fn with_screen(
        store: Store,
        provider: Arc<dyn PaymentProvider>,
        config: CheckoutConfig,
        screen: Arc<dyn FraudScreen>,
    ) -> Arc<Self> {
        let leases = Leases::new(store.db().clone(), config.lease_ttl);
        Arc::new(Self {
            screen,
            provider,
            config,
            active: Mutex::new(HashSet::new()),
            leases,
            delivered: Mutex::new(HashMap::new()),
            warehouses: Mutex::new(None),
            keys: emporium_event_store::personal::KeyRing::new(store.db().clone()),
            store,
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
        A: Aggregate<Services = ()> + Clone + 'static,
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
        let delivered = self.delivered_placement(&oid);
        let placed = match &delivered {
            Some(p) => p.clone(),
            None => match self.store.first_event::<Order>(&oid).await? {
                Some(p) => Arc::new(p),
                None => return Ok(Outcome::Nothing),
            },
        };
        let meta = &Self::flow_metadata(&placed);
        // Just delivered to this process: its cached copy will do. Should another process
        // have changed the order since, the confirmation's sequence check finds out.
        let (order, version) = if delivered.is_some() {
            self.store.load_cached::<Order>(&oid).await?
        } else {
            self.store.load::<Order>(&oid).await?
        };
        if version == 0 {
            return Ok(Outcome::Nothing);
        }
        let (checkout, _) = self.store.load::<Checkout>(&oid).await?;
        if checkout.finished().is_some() {
            return Ok(Outcome::Nothing);
        }
        match order.status() {
            Some(OrderStatus::Pending) => {}
            Some(OrderStatus::UnderReview) => {
                let deadline = order.review().map_or(i64::MAX, |r| r.review_deadline_ms);
                if now_ms() <= deadline {
                    // A person decides; the approval's delivery (or the sweep) resumes it.
                    return Ok(Outcome::Nothing);
                }
                let timeout = EventMetadata::system("fraud-review")
                    .correlated_with(placed.metadata.correlation_id.clone())
                    .caused_by(placed.event_id.to_string());
                match self
                    .exec::<Order>(
                        &oid,
                        OrderCommand::ReviewOrder {
                            approve: false,
                            note: Reason::parse("the review was not decided in time").ok(),
                        },
                        &timeout,
                    )
                    .await
                {
                    // Decided meanwhile: the next run follows that decision.
                    Ok(()) | Err(CommandError::Rejected(OrderError::IllegalTransition { .. })) => {}
                    Err(e) => return Err(command_error(e)),
                }
                let (order, _) = self.store.load::<Order>(&oid).await?;
                if order.status() == Some(OrderStatus::Rejected) {
                    self.compensate(&order, &oid, meta).await?;
                    self.exec::<Checkout>(
                        &oid,
                        CheckoutCommand::Fail {
                            reason: "the fraud review was not decided in time".into(),
                        },
                        meta,
                    )
                    .await
                    .map_err(command_error)?;
                    metrics::counter!("emporium_checkouts_total", "outcome" => "rejected")
                        .increment(1);
                    return Ok(Outcome::Rejected("review timed out".into()));
                }
                return Ok(Outcome::Nothing);
            }
            Some(OrderStatus::Confirmed) => {
                self.exec::<Checkout>(&oid, CheckoutCommand::Complete, meta)
                    .await
                    .map_err(command_error)?;
                return Ok(Outcome::Nothing);
            }
            Some(OrderStatus::Cancelled) => {
                // Cancelled while we were away: give everything back.
                self.settle_cancelled(&order, &oid, meta).await?;
                return Ok(Outcome::Nothing);
            }
            _ => {
                // Rejected by an earlier run that stopped before closing the checkout.
                self.compensate(&order, &oid, meta).await?;
                if checkout.is_started() {
                    self.exec::<Checkout>(
                        &oid,
                        CheckoutCommand::Fail {
                            reason: "order no longer pending".into(),
                        },
                        meta,
                    )
                    .await
                    .map_err(command_error)?;
                }
                return Ok(Outcome::Nothing);
            }
        }
        let checkout = if checkout.is_started() {
            checkout
        } else {
            self.start(*order_id, meta).await?;
            // Just written by this process under the lease: the cached copy is current.
            self.store.load_cached::<Checkout>(&oid).await?.0
        };

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

        let mut deadline_ms = checkout.deadline_ms();
        if !checkout.is_authorized() {
            match order.review().map(|r| r.approved) {
                // Approved by a reviewer: the payment gets its full time from now.
                Some(Some(true)) if !checkout.is_resumed() => {
                    deadline_ms = now_ms() + self.config.payment_timeout.as_millis() as i64;
                    self.exec::<Checkout>(&oid, CheckoutCommand::Resume { deadline_ms }, meta)
                        .await
                        .map_err(command_error)?;
                }
                Some(_) => {}
                None => {
                    if self.hold_for_review(&order, &oid, meta).await? {
                        return Ok(Outcome::Held);
                    }
                }
            }
            match self.pay(&order, &oid, deadline_ms).await {
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
            Err(CommandError::Rejected(OrderError::IllegalTransition {
                from: OrderStatus::Confirmed,
                ..
            })) => {
                // Confirmed by an earlier run of this checkout: never undo a confirmed order.
                self.exec::<Checkout>(&oid, CheckoutCommand::Complete, meta)
                    .await
                    .map_err(command_error)?;
                Ok(Outcome::Nothing)
            }
            Err(CommandError::Rejected(OrderError::IllegalTransition { .. })) => {
                // Cancelled (or rejected) while we paid: undo what we hold.
                let (order, _) = self.store.load::<Order>(&oid).await?;
                if order.status() == Some(OrderStatus::Cancelled) {
                    self.settle_cancelled(&order, &oid, meta).await?;
                } else {
                    self.compensate(&order, &oid, meta).await?;
                    self.exec::<Checkout>(
                        &oid,
                        CheckoutCommand::Fail {
                            reason: "order rejected during checkout".into(),
                        },
                        meta,
                    )
                    .await
                    .map_err(command_error)?;
                }
                Ok(Outcome::Nothing)
            }
            Err(e) => Err(command_error(e)),
        }
    }

    /// Asks the fraud screen about the order; at or above the threshold the order waits
    /// `under_review` (its stock stays reserved). `Ok(true)` when held.
    async fn hold_for_review(
        &self,
        order: &Order,
        oid: &str,
        meta: &EventMetadata,
    ) -> Result<bool, SagaError> {
        let Some(threshold) = self.config.fraud.threshold else {
            return Ok(false);
        };
        let (Some(order_id), Some(customer_id), Some(total), Some(region)) = (
            order.order_id(),
            order.customer_id(),
            order.total(),
            order.shipping_region(),
        ) else {
            return Ok(false);
        };
        let screening = self
            .screen
            .screen(&ScreenFacts {
                order_id,
                customer_id: customer_id.clone(),
                total: *total,
                shipping_region: region.clone(),
            })
            .await
            .map_err(|e| SagaError::Command(e.to_string()))?;
        if screening.score < threshold {
            return Ok(false);
        }
        let reasons = screening
            .reasons
            .iter()
            .filter_map(|r| Reason::parse(&r.chars().take(500).collect::<String>()).ok())
            .collect();
        let review_deadline_ms = now_ms() + self.config.fraud.review_timeout.as_millis() as i64;
        match self
            .exec::<Order>(
                oid,
                OrderCommand::HoldForReview {
                    score: screening.score,
                    reasons,
                    review_deadline_ms,
                },
                meta,
            )
            .await
        {
            Ok(()) => {
                metrics::counter!("emporium_checkouts_total", "outcome" => "held").increment(1);
                Ok(true)
            }
            // Cancelled meanwhile: the confirmation finds out and gives everything back.
            Err(CommandError::Rejected(OrderError::IllegalTransition { .. })) => Ok(false),
            Err(e) => Err(command_error(e)),
        }
    }

    /// Current stock of the order's SKUs in open warehouses, counting this order's own
    /// reservations as available (they are released before re-reserving).
    async fn candidates(
        &self,
        order: &Order,
        order_id: &OrderId,
        fresh: bool,
        fresh_warehouses: bool,
    ) -> Result<(Vec<Candidate>, bool), SagaError> {
        let mut out = Vec::new();
        let mut holds_any = false;
        // Possibly stale copies are fine here (unless `fresh`): a reservation is checked
        // against the stock item's latest events when it is appended. What the order itself
        // holds must be read fresh when an earlier run may have reserved for it.
        for wid in self.warehouse_ids(fresh_warehouses).await?.iter() {
            let (w, _) = self.store.load_cached::<Warehouse>(wid).await?;
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
                let item_id = stock_item_id(id, &line.sku);
                let (item, _) = if fresh {
                    self.store.load::<StockItem>(&item_id).await?
                } else {
                    self.store.load_cached::<StockItem>(&item_id).await?
                };
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
            let fresh = attempt > 0 || self.delivered_placement(&order_id.to_string()).is_none();
            let (mut candidates, mut holds_any) =
                self.candidates(order, &order_id, fresh, false).await?;
            let mut allocated = allocate(&lines, &candidates, region);
            if allocated.is_err() {
                // Short on possibly stale copies: look again at the latest stock everywhere.
                (candidates, holds_any) = self.candidates(order, &order_id, true, true).await?;
                allocated = allocate(&lines, &candidates, region);
            }
            let parts = match allocated {
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
            // All parts at once: they share a group commit instead of a write each.
            let reservations = parts.iter().map(|p| async move {
                self.exec::<StockItem>(
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
            });
            let mut lost_race = false;
            for result in futures::future::join_all(reservations).await {
                match result {
                    Ok(()) => {}
                    Err(CommandError::Rejected(StockItemError::InsufficientStock { .. })) => {
                        lost_race = true;
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
        for wid in self.warehouse_ids(true).await?.iter() {
            let Ok(w) = WarehouseId::parse(wid) else {
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
        let Ok(token) = self.payment_token(order, deadline_ms).await else {
            return Paid::TimedOut;
        };
        if token.is_none() && order.personal().is_some() {
            return Paid::Declined("the payment details were erased".into());
        }
        let (Some(total), Some(token)) = (order.total(), token) else {
            return Paid::Declined("no payment details".into());
        };
        let token = token.as_str();
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
                // An approval that arrives after the deadline is not used: the order is
                // rejected, and the rejection voids the authorization at the provider.
                Ok(Ok(Authorization::Approved { .. })) if now_ms() > deadline_ms => {
                    return Paid::TimedOut
                }
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

    /// The token to authorize with: sealed with the customer's key (`None` once their
    /// personal data was erased), or as placed by an older client of the domain.
    /// `Err` when the deadline passed before the key store answered.
    async fn payment_token(&self, order: &Order, deadline_ms: i64) -> Result<Option<String>, ()> {
        let Some(sealed) = order.personal() else {
            return Ok(order.payment_token().map(str::to_string));
        };
        let Some(customer) = order.customer_id().map(ToString::to_string) else {
            return Ok(None);
        };
        // The sealed data is read until it opens or is known to be gone: a database hiccup
        // here must not decline a payment.
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.keys.open(&customer, sealed).await {
                Ok(data) => return Ok(data.and_then(|d| d.payment_token)),
                Err(_) if now_ms() > deadline_ms => return Err(()),
                Err(e) => {
                    tracing::info!(error = %e, "reading the payment token failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
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
        // Shipped units keep their reservation until their shipment is settled: settle what
        // was shipped first, so the release below gives back only what never left.
        self.settle_fulfilment(order, meta).await?;
        self.release_all(order, meta).await?;
        let (payment, version) = self.store.load::<Payment>(oid).await?;
        if version > 0 && payment.authorized().is_some() {
            match self
                .exec::<Payment>(oid, PaymentCommand::VoidPayment, meta)
                .await
            {
                Ok(()) | Err(CommandError::Rejected(PaymentError::AlreadyVoided)) => {}
                // Fully captured (everything shipped): nothing left to void.
                Err(CommandError::Rejected(_)) => {}
                Err(e) => return Err(command_error(e)),
            }
        }
        // Always at the provider too: an authorization may exist there that the Payment
        // aggregate never recorded (granted after the deadline, or just before a crash). The
        // port promises a no-op for unknown keys.
        self.provider
            .void(oid)
            .await
            .map_err(|e| SagaError::Command(e.to_string()))?;
        // Codes of an order that never shipped anything are given back (idempotent).
        if order.shipments().is_empty() {
            if let Some(order_id) = order.order_id() {
                for p in order.promotions() {
                    match self
                        .exec::<emporium_domain::Promotion>(
                            p.code.as_str(),
                            emporium_domain::PromotionCommand::Release { order_id },
                            meta,
                        )
                        .await
                    {
                        Ok(()) | Err(CommandError::Rejected(_)) => {}
                        Err(e) => return Err(command_error(e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// A cancelled order: give back what it holds and record that it was given back.
    async fn settle_cancelled(
        &self,
        order: &Order,
        oid: &str,
        meta: &EventMetadata,
    ) -> Result<(), SagaError> {
        let Some(order_id) = order.order_id() else {
            return Ok(());
        };
        self.compensate(order, oid, meta).await?;
        self.exec::<Checkout>(oid, CheckoutCommand::Compensate { order_id }, meta)
            .await
            .map_err(command_error)?;
        metrics::counter!("emporium_checkouts_total", "outcome" => "cancelled").increment(1);
        Ok(())
    }

    /// Gives back what a cancelled order holds, under its lease. `Ok(false)` when another
    /// run holds the checkout now (the sweeper tries again).
    pub async fn compensate_cancelled(&self, oid: &str) -> Result<bool, SagaError> {
        if !self.claim(oid) {
            return Ok(false);
        }
        let result = self.compensate_cancelled_claimed(oid).await;
        self.unclaim(oid);
        result
    }

    async fn compensate_cancelled_claimed(&self, oid: &str) -> Result<bool, SagaError> {
        if !self.leases.acquire(oid).await? {
            return Ok(false);
        }
        let result = async {
            let Some(placed) = self.store.first_event::<Order>(oid).await? else {
                return Ok(true);
            };
            let (order, _) = self.store.load::<Order>(oid).await?;
            if order.status() != Some(OrderStatus::Cancelled) {
                return Ok(true);
            }
            let (checkout, _) = self.store.load::<Checkout>(oid).await?;
            if checkout.is_compensated() {
                return Ok(true);
            }
            self.settle_cancelled(&order, oid, &Self::flow_metadata(&placed))
                .await?;
            Ok(true)
        }
        .await;
        self.leases.release(oid).await?;
        result
    }

    /// The `OrderPlaced` this process received for `oid`, while its checkout runs here.
    fn delivered_placement(&self, oid: &str) -> Option<Arc<Envelope<OrderEvent>>> {
        self.delivered.lock().ok()?.get(oid).cloned()
    }

    /// Warehouse ids: the list read within [`WAREHOUSE_LIST_TTL`], or (`fresh`) read now.
    async fn warehouse_ids(&self, fresh: bool) -> Result<Arc<Vec<String>>, SagaError> {
        if !fresh {
            if let Ok(guard) = self.warehouses.lock() {
                if let Some((at, ids)) = guard.as_ref() {
                    if at.elapsed() < WAREHOUSE_LIST_TTL {
                        return Ok(ids.clone());
                    }
                }
            }
        }
        let ids = Arc::new(self.store.aggregate_ids::<Warehouse>().await?);
        if let Ok(mut guard) = self.warehouses.lock() {
            *guard = Some((std::time::Instant::now(), ids.clone()));
        }
        Ok(ids)
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

    /// Runs the checkout of `oid` in a task, under its lease. `delivered`: the `OrderPlaced`
    /// this process just received for it.
    fn spawn_process(
        self: &Arc<Self>,
        oid: String,
        permits: Arc<Semaphore>,
        delivered: Option<Envelope<OrderEvent>>,
    ) {
        if !self.claim(&oid) {
            return;
        }
        if let Some(placed) = delivered {
            if let Ok(mut d) = self.delivered.lock() {
                d.insert(oid.clone(), Arc::new(placed));
            }
        }
        let saga = self.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            // Another engine running this checkout keeps it; if that engine dies, its lease
            // lapses and a sweep here or elsewhere takes the checkout over.
            match saga.leases.acquire(&oid).await {
                Ok(true) => {
                    if let Ok(id) = OrderId::parse(&oid) {
                        for attempt in 0..5u64 {
                            match saga.process(&id).await {
                                Ok(_) => break,
                                Err(e) => {
                                    tracing::warn!(order = %oid, error = %e, "checkout step failed; retrying");
                                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1)))
                                        .await;
                                }
                            }
                        }
                    }
                    if let Err(e) = saga.leases.release(&oid).await {
                        tracing::warn!(order = %oid, error = %e, "cannot release a checkout lease");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(order = %oid, error = %e, "cannot take a checkout lease"),
            }
            if let Ok(mut d) = saga.delivered.lock() {
                d.remove(&oid);
            }
            saga.unclaim(&oid);
        });
    }

    /// Work no live engine is doing: checkouts started and not finished, plus placed orders
    /// without a checkout (placed at least `min_age` ago), and cancelled orders whose
    /// compensation is not recorded; minus those leased by a live engine (this one included).
    pub async fn orphans(&self, min_age: Duration) -> Result<Orphans, SagaError> {
        let leased: HashSet<String> = self.leases.live().await?.into_iter().collect();
        let mut checkouts = self.store.unfinished_checkouts().await?;
        checkouts.extend(self.store.orders_without_checkout(min_age).await?);
        checkouts.retain(|id| !leased.contains(id));
        let mut cancels = self.store.cancelled_without_compensation().await?;
        cancels.retain(|id| !leased.contains(id));
        Ok(Orphans { checkouts, cancels })
    }

    /// Starts whatever [`CheckoutSaga::orphans`] finds.
    async fn sweep(self: &Arc<Self>, min_age: Duration, permits: &Arc<Semaphore>) {
        match self.orphans(min_age).await {
            Ok(o) => {
                if !o.checkouts.is_empty() || !o.cancels.is_empty() {
                    tracing::info!(
                        checkouts = o.checkouts.len(),
                        cancels = o.cancels.len(),
                        "sweep: taking over unattended work"
                    );
                }
                for oid in o.checkouts {
                    self.spawn_process(oid, permits.clone(), None);
                }
                for oid in o.cancels {
                    self.spawn_cancel(oid);
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep: cannot list unattended work"),
        }
    }

    fn spawn_cancel(self: &Arc<Self>, oid: String) {
        let saga = self.clone();
        tokio::spawn(async move {
            if let Err(e) = saga.compensate_cancelled(&oid).await {
                tracing::warn!(order = %oid, error = %e, "cancel compensation failed; the sweep retries");
            }
        });
    }

    /// Consumes `OrderPlaced` deliveries and resumes unfinished checkouts until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut subscriber: Box<dyn Subscriber>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // After a restart nothing of ours is in flight: resume every unattended checkout
        // now (those of a dead engine as soon as its leases lapse, at a later sweep).
        self.sweep(Duration::ZERO, &permits).await;
        // The sweeper and the lease heartbeat run on their own: a timer branch in the select
        // below would cancel `subscriber.next()` mid-read, and a read cancelled inside
        // `BEGIN` leaks an open transaction into the pool.
        let sweeper = {
            let (saga, permits) = (self.clone(), permits.clone());
            let every = self.config.sweep_interval;
            tokio::spawn(async move {
                let mut sweep = tokio::time::interval(every);
                sweep.tick().await;
                loop {
                    sweep.tick().await;
                    // Placed orders get a grace period: their delivery is normally on its way.
                    saga.sweep(every, &permits).await;
                }
            })
        };
        let heartbeat = {
            let saga = self.clone();
            tokio::spawn(async move {
                let mut beat = tokio::time::interval(saga.leases.ttl() / 3);
                loop {
                    beat.tick().await;
                    if let Err(e) = saga.leases.renew_all().await {
                        tracing::warn!(error = %e, "cannot renew checkout leases");
                    }
                }
            })
        };
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    sweeper.abort();
                    heartbeat.abort();
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
                    match &placed.payload {
                        OrderEvent::OrderPlaced { .. } => {}
                        OrderEvent::OrderReviewApproved { .. } | OrderEvent::OrderRejected { .. } => {
                            // A reviewer's decision: go on with the checkout, or give back
                            // what it holds. A rejection by the saga itself finds its
                            // checkout finished and does nothing.
                            let _ = subscriber.ack(delivery).await;
                            self.spawn_process(placed.aggregate_id.clone(), permits.clone(), None);
                            continue;
                        }
                        OrderEvent::OrderCancelled { .. } => {
                            // The cancel is durable in the log: compensate now, and should
                            // that fail (or another engine hold the checkout), the sweep
                            // finds the cancel without a compensation and retries.
                            let _ = subscriber.ack(delivery).await;
                            self.spawn_cancel(placed.aggregate_id.clone());
                            continue;
                        }
                        OrderEvent::OrderShipped { order_id, shipment_id: step, .. }
                        | OrderEvent::ItemsReturned { order_id, return_id: step, .. } => {
                            // Normally settled already by the request that recorded it; this
                            // finishes what a crash or a failure there left undone. Acked
                            // only once settled, so a failure here is redelivered.
                            let meta = EventMetadata::system("fulfilment")
                                .correlated_with(placed.metadata.correlation_id.clone())
                                .caused_by(placed.event_id.to_string());
                            let settled = match &placed.payload {
                                OrderEvent::OrderShipped { .. } => {
                                    self.settle_shipment(order_id, *step, &meta).await
                                }
                                _ => self.settle_return(order_id, *step, &meta).await,
                            };
                            match settled {
                                Ok(()) => {
                                    let _ = subscriber.ack(delivery).await;
                                }
                                Err(e) => {
                                    tracing::warn!(order = %order_id, error = %e, "settling a shipment or return failed; redelivering");
                                    let _ = subscriber.nak(delivery, Some(Duration::from_secs(1))).await;
                                }
                            }
                            continue;
                        }
                        _ => {
                            let _ = subscriber.ack(delivery).await;
                            continue;
                        }
                    };
                    // Acked at once: should this process die before the checkout starts,
                    // the sweep finds the placed order without a checkout and runs it.
                    let oid = placed.aggregate_id.clone();
                    let _ = subscriber.ack(delivery).await;
                    self.spawn_process(oid, permits.clone(), Some(placed));
                }
            }
        }
    }
}
