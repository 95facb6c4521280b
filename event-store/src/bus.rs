//! Subscribers for workers (the checkout saga, later others): one trait, two transports.
//!
//! - [`NatsSubscriber`]: a durable JetStream pull consumer on the events stream. Several
//!   workers (tasks or processes) sharing a consumer name compete for messages; a message not
//!   acked within `ack_wait` is redelivered; after `max_deliver` deliveries a failing message
//!   is published to the dead-letter stream and terminated.
//! - [`LocalSubscriber`]: the in-process bus of the embedded mode, reading the same global
//!   feed with a durable cursor in the database; same ack / nak / dead-letter contract, one
//!   delivery in flight per consumer.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;

use crate::decode::FeedEvent;
use crate::feed::Subscription;
use crate::nats::NatsNames;
use crate::{on_db, Store, StoreError};

/// What a subscriber wants.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Durable name: workers with the same name share the work.
    pub name: String,
    /// Only events of this aggregate type (`Order`), or all.
    pub aggregate_type: Option<String>,
    /// Deliveries before a message is dead-lettered.
    pub max_deliver: i64,
    /// How long a delivery may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// Wait for the server to confirm each ack (NATS "double ack"). Off for consumers whose
    /// handling is idempotent anyway: a lost ack only brings the message back, and not
    /// waiting saves a round trip per message in the delivery loop.
    pub confirm_acks: bool,
    /// The events stream's duplicate window, used only when this subscriber is the first
    /// to create the stream (an existing stream keeps its settings).
    pub duplicate_window: Duration,
}

impl SubscriberConfig {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            aggregate_type: None,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            confirm_acks: true,
            duplicate_window: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(String),
    #[error("undecodable message: {0}")]
    Decode(String),
}

impl From<sqlx::Error> for BusError {
    fn from(e: sqlx::Error) -> Self {
        BusError::Store(StoreError::Database(e))
    }
}

fn nats_err(e: impl std::fmt::Display) -> BusError {
    BusError::Nats(e.to_string())
}

/// One delivered event; settle it with [`Delivery::ack`] or [`Delivery::nak`].
pub struct Delivery {
    pub event: FeedEvent,
    /// 1 on first delivery.
    pub attempt: u64,
    settle: Settle,
}

enum Settle {
    Nats(Box<NatsSettle>),
    Local,
}

struct NatsSettle {
    message: jetstream::Message,
    max_deliver: i64,
    confirm_ack: bool,
    js: jetstream::Context,
    dlq_subject: String,
}

/// How a local delivery was settled, reported back to its subscriber.
enum LocalOutcome {
    Ack,
    Nak(Option<Duration>),
}

/// A source of deliveries.
#[async_trait::async_trait]
pub trait Subscriber: Send {
    /// The next event to handle, waiting for one if needed.
    async fn next(&mut self) -> Result<Delivery, BusError>;
    /// Settles a delivery this subscriber handed out.
    async fn ack(&mut self, delivery: Delivery) -> Result<(), BusError>;
    /// Asks for redelivery (after `delay`); past `max_deliver` the event is dead-lettered.
    async fn nak(&mut self, delivery: Delivery, delay: Option<Duration>) -> Result<(), BusError>;
}

/// A durable JetStream pull consumer.
pub struct NatsSubscriber {
    js: jetstream::Context,
    names: NatsNames,
    config: SubscriberConfig,
    messages: pull::Stream,
}

impl NatsSubscriber {
    /// Creates (or joins) the durable consumer `config.name` on the events stream.
    pub async fn connect(
        client: async_nats::Client,
        names: NatsNames,
        config: SubscriberConfig,
    ) -> Result<Self, BusError> {
        let js = jetstream::new(client);
        // Create the stream only if it is missing: its settings (the duplicate window
        // above all) are the relay's to set, from the operator's configuration.
        js.get_or_create_stream(jetstream::stream::Config {
            name: names.stream(),
            subjects: vec![names.events_wildcard()],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(nats_err)?;
        js.create_or_update_stream(jetstream::stream::Config {
            name: names.dlq_stream(),
            subjects: vec![names.dlq_wildcard()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(nats_err)?;
        let stream = js.get_stream(names.stream()).await.map_err(nats_err)?;
        let durable = names.consumer(&config.name);
        let filter = match &config.aggregate_type {
            Some(t) => names.aggregate_type_wildcard(t),
            None => names.events_wildcard(),
        };
        let consumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: config.max_deliver,
                    // One filter subject: NATS 2.9 ignores the plural form.
                    filter_subject: filter,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats_err)?;
        let messages = consumer.messages().await.map_err(nats_err)?;
        Ok(Self {
            js,
            names,
            config,
            messages,
        })
    }
}

#[async_trait::async_trait]
impl Subscriber for NatsSubscriber {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            let message = match self.messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(nats_err(e)),
                None => return Err(BusError::Nats("consumer stream ended".into())),
            };
            let attempt = message.info().map(|i| i.delivered as u64).unwrap_or(1);
            match serde_json::from_slice::<FeedEvent>(&message.payload) {
                Ok(event) => {
                    return Ok(Delivery {
                        event,
                        attempt,
                        settle: Settle::Nats(Box::new(NatsSettle {
                            message,
                            max_deliver: self.config.max_deliver,
                            confirm_ack: self.config.confirm_acks,
                            js: self.js.clone(),
                            dlq_subject: self.names.dlq_subject(&self.config.name),
                        })),
                    })
                }
                Err(e) => {
                    // Not ours to handle; keep it for inspection and move on.
                    tracing::error!(error = %e, "undecodable message: dead-lettering");
                    let _ = self
                        .js
                        .publish(
                            self.names.dlq_subject(&self.config.name),
                            message.payload.clone(),
                        )
                        .await;
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
    }

    async fn ack(&mut self, delivery: Delivery) -> Result<(), BusError> {
        match delivery.settle {
            // Double ack: returns once the server has recorded it, so a crash right after
            // cannot bring the message back.
            Settle::Nats(s) if s.confirm_ack => s.message.double_ack().await.map_err(nats_err),
            Settle::Nats(s) => s.message.ack().await.map_err(nats_err),
            Settle::Local => Err(BusError::Nats(
                "a local delivery given to a NATS subscriber".into(),
            )),
        }
    }

    async fn nak(&mut self, delivery: Delivery, delay: Option<Duration>) -> Result<(), BusError> {
        let Settle::Nats(settle) = delivery.settle else {
            return Err(BusError::Nats(
                "a local delivery given to a NATS subscriber".into(),
            ));
        };
        let NatsSettle {
            message,
            max_deliver,
            js,
            dlq_subject,
            ..
        } = *settle;
        if delivery.attempt as i64 >= max_deliver {
            js.publish(dlq_subject, message.payload.clone())
                .await
                .map_err(nats_err)?
                .await
                .map_err(nats_err)?;
            return message.ack_with(AckKind::Term).await.map_err(nats_err);
        }
        message
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(nats_err)
    }
}

/// How far the in-process consumer `name` has recorded its progress through the feed
/// (`None` before its first record).
pub async fn checkpoint(store: &Store, name: &str) -> Result<Option<i64>, BusError> {
    let db = store.db();
    let sql = db.sql("SELECT position FROM consumer_checkpoints WHERE name = $1");
    Ok(on_db!(db, pool => {
        sqlx::query_scalar(&sql).bind(name).fetch_optional(pool).await?
    }))
}

/// The embedded mode's bus: the global feed with a durable per-consumer cursor.
pub struct LocalSubscriber {
    store: Store,
    config: SubscriberConfig,
    feed: Subscription,
    buffer: std::collections::VecDeque<FeedEvent>,
    /// The delivery handed out and not yet settled, with its attempt count.
    pending: Option<(FeedEvent, u64)>,
    retry_at: Option<tokio::time::Instant>,
    /// The position acked last, and the one last written to the database with when.
    acked: i64,
    saved: (i64, tokio::time::Instant),
}

/// Acks are written to the database at most this often (or every [`SAVE_EVERY`] events),
/// not one commit per event: a crash redelivers at most the acks of this window, which the
/// at-least-once contract allows.
const SAVE_INTERVAL: Duration = Duration::from_millis(200);
const SAVE_EVERY: i64 = 256;

impl LocalSubscriber {
    pub async fn open(store: Store, config: SubscriberConfig) -> Result<Self, BusError> {
        let cursor = checkpoint(&store, &config.name).await?;
        let mut feed = store
            .feed()
            .subscribe(cursor.unwrap_or(0))
            .with_batch_size(500);
        if let Some(t) = &config.aggregate_type {
            feed = feed.of_types(&[t.as_str()]);
        }
        let start = cursor.unwrap_or(0);
        Ok(Self {
            store,
            config,
            feed,
            buffer: Default::default(),
            pending: None,
            retry_at: None,
            acked: start,
            saved: (start, tokio::time::Instant::now()),
        })
    }

    /// Moves the cursor to `position`, writing it when the window is full or has aged.
    async fn advance(&mut self, position: i64) -> Result<(), BusError> {
        self.acked = self.acked.max(position);
        let (saved, at) = self.saved;
        if self.acked - saved >= SAVE_EVERY || at.elapsed() >= SAVE_INTERVAL {
            self.save().await?;
        }
        Ok(())
    }

    /// Writes the cursor now.
    async fn save(&mut self) -> Result<(), BusError> {
        let position = self.acked;
        let db = self.store.db();
        let sql = db.sql(
            "INSERT INTO consumer_checkpoints (name, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
        );
        let now = chrono::Utc::now().timestamp_millis();
        on_db!(db, pool => {
            sqlx::query(&sql).bind(&self.config.name).bind(position).bind(now)
                .execute(pool).await?.rows_affected()
        });
        self.saved = (position, tokio::time::Instant::now());
        Ok(())
    }

    async fn settle(&mut self, outcome: LocalOutcome) -> Result<(), BusError> {
        let Some((event, attempt)) = self.pending.take() else {
            return Ok(());
        };
        match outcome {
            LocalOutcome::Ack => self.advance(event.position).await,
            LocalOutcome::Nak(_) if attempt as i64 >= self.config.max_deliver => {
                let db = self.store.db();
                let sql = db.sql(
                    "INSERT INTO dead_letters (consumer, position, event_id, attempts, reason, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (consumer, position) DO NOTHING",
                );
                let now = chrono::Utc::now().timestamp_millis();
                on_db!(db, pool => {
                    sqlx::query(&sql).bind(&self.config.name).bind(event.position)
                        .bind(event.event_id.to_string()).bind(attempt as i64)
                        .bind("max deliveries reached").bind(now)
                        .execute(pool).await?.rows_affected()
                });
                self.acked = self.acked.max(event.position);
                self.save().await
            }
            LocalOutcome::Nak(delay) => {
                self.retry_at = delay.map(|d| tokio::time::Instant::now() + d);
                self.pending = Some((event, attempt));
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl Subscriber for LocalSubscriber {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        // A nak'd delivery comes back first (after its delay): order is kept.
        if let Some((event, attempt)) = self.pending.take() {
            if let Some(at) = self.retry_at.take() {
                tokio::time::sleep_until(at).await;
            }
            self.pending = Some((event.clone(), attempt + 1));
            return Ok(Delivery {
                event,
                attempt: attempt + 1,
                settle: Settle::Local,
            });
        }
        loop {
            if self.buffer.is_empty() {
                // Everything handed out is settled, so the cursor may pass what the feed
                // read covered, the other types' events included.
                self.acked = self.acked.max(self.feed.cursor());
                // About to wait for the feed: write what was acked first.
                if self.acked > self.saved.0 {
                    self.save().await?;
                }
                self.buffer.extend(self.feed.next_batch().await?);
            }
            let Some(event) = self.buffer.pop_front() else {
                continue;
            };
            let wanted = self
                .config
                .aggregate_type
                .as_ref()
                .is_none_or(|t| *t == event.aggregate_type);
            if !wanted {
                // Skipped events still move the cursor, in batches: cheap, and a restart
                // merely re-skips a few.
                if self.buffer.is_empty() {
                    self.advance(event.position).await?;
                }
                continue;
            }
            self.pending = Some((event.clone(), 1));
            return Ok(Delivery {
                event,
                attempt: 1,
                settle: Settle::Local,
            });
        }
    }

    async fn ack(&mut self, _delivery: Delivery) -> Result<(), BusError> {
        self.settle(LocalOutcome::Ack).await
    }

    async fn nak(&mut self, _delivery: Delivery, delay: Option<Duration>) -> Result<(), BusError> {
        self.settle(LocalOutcome::Nak(delay)).await
    }
}
