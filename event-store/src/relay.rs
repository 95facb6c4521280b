//! The relay: publishes every event of the global feed to NATS JetStream, in feed order,
//! exactly once in effect.
//!
//! The store is the outbox: commands never wait for NATS. The relay reads the feed after its
//! checkpoint, publishes with `Nats-Msg-Id` = event id (so the server drops a re-publish
//! inside the stream's duplicate window), keeps up to `max_inflight` acks outstanding, and
//! moves the checkpoint only past events whose acks arrived, all of them, in order. After any
//! failure it starts again from the checkpoint. One relay is active per database and stream:
//! on Postgres the leader holds a session advisory lock on its own connection, which the
//! server releases the moment that process dies (see docs/adr/0005-relay.md).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use sqlx::Connection;

use crate::decode::RawFeedEvent;
use crate::nats::NatsNames;
use crate::store::Db;
use crate::{on_db, Store, StoreError};

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub names: NatsNames,
    /// The stream's duplicate window: must exceed the longest gap between a message's first
    /// publish and a re-publish (see the ADR).
    pub duplicate_window: Duration,
    /// Events read from the feed per step.
    pub batch: i64,
    /// Publishes awaiting their ack at once.
    pub max_inflight: usize,
    /// How long to wait for one ack before treating the batch as failed.
    pub ack_timeout: Duration,
}

impl RelayConfig {
    pub fn new(prefix: &str) -> Self {
        Self {
            names: NatsNames::new(prefix),
            duplicate_window: Duration::from_secs(600),
            batch: 2000,
            max_inflight: 4096,
            ack_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(String),
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        RelayError::Store(StoreError::Database(e))
    }
}

/// What the relay is doing, for health and metrics.
#[derive(Debug, Default)]
pub struct RelayStatus {
    pub leader: AtomicBool,
    pub nats_ok: AtomicBool,
    /// Last feed position known to be in the stream.
    pub position: AtomicI64,
    /// Last feed position seen.
    pub head: AtomicI64,
    pub published: AtomicU64,
}

impl RelayStatus {
    pub fn lag(&self) -> i64 {
        (self.head.load(Ordering::Relaxed) - self.position.load(Ordering::Relaxed)).max(0)
    }
}

/// The end of the events stream a publish expects (see `Relay::chain`).
#[derive(Debug, Clone)]
enum Chain {
    Empty,
    After(String),
}

/// A batch being read on another task.
type Prefetch = tokio::task::JoinHandle<Result<Vec<RawFeedEvent>, StoreError>>;

/// The result of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Moved the checkpoint past this many events (0 when a batch was sent but its acks are
    /// still in flight).
    Published(usize),
    /// Nothing new in the feed.
    Idle,
}

/// Publishes the feed to JetStream.
pub struct Relay {
    store: Store,
    js: jetstream::Context,
    /// For the server's `max_payload`: a larger message is parked, never retried.
    client: async_nats::Client,
    config: RelayConfig,
    status: Arc<RelayStatus>,
    checkpoint: Option<i64>,
    /// Publishes awaiting their ack, oldest first. Kept across steps, so the server keeps
    /// working through them while the next batch is read from the database.
    inflight: VecDeque<(i64, async_nats::jetstream::context::PublishAckFuture)>,
    /// The last position handed to NATS (acked or not).
    sent_to: Option<i64>,
    /// What the stream must end with before the next publish: the message id of the last
    /// event handed to NATS, or an empty stream. Every publish states it
    /// (`Nats-Expected-Last-Msg-Id`), so the server stores events only in feed order: a
    /// publish the client buffered during an outage and flushed after the relay had
    /// already started over from its checkpoint is refused, not stored out of order.
    /// `None`: unknown (at start, after an error); read from the stream before sending.
    chain: Option<Chain>,
    /// The next batch, read on another task while this one is being sent.
    prefetch: Option<(i64, Prefetch)>,
}

impl Relay {
    pub fn new(store: Store, client: async_nats::Client, config: RelayConfig) -> Self {
        let js = jetstream::context::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(config.max_inflight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Self {
            store,
            js,
            client,
            config,
            status: Arc::default(),
            checkpoint: None,
            inflight: VecDeque::new(),
            sent_to: None,
            chain: None,
            prefetch: None,
        }
    }

    pub fn status(&self) -> Arc<RelayStatus> {
        self.status.clone()
    }

    pub fn names(&self) -> &NatsNames {
        &self.config.names
    }

    /// Creates the events stream, or updates it to this configuration (idempotent).
    pub async fn ensure_stream(&self) -> Result<(), RelayError> {
        ensure_events_stream(&self.js, &self.config.names, self.config.duplicate_window).await
    }

    fn checkpoint_name(&self) -> String {
        format!("relay:{}", self.config.names.stream())
    }

    async fn load_checkpoint(&mut self) -> Result<i64, RelayError> {
        if let Some(c) = self.checkpoint {
            return Ok(c);
        }
        let db = self.store.db();
        let sql = db.sql("SELECT position FROM relay_checkpoints WHERE name = $1");
        let name = self.checkpoint_name();
        let c: Option<i64> = on_db!(db, pool => {
            sqlx::query_scalar(&sql).bind(&name).fetch_optional(pool).await?
        });
        let c = c.unwrap_or(0);
        self.checkpoint = Some(c);
        self.status.position.store(c, Ordering::Relaxed);
        Ok(c)
    }

    async fn save_checkpoint(&mut self, position: i64) -> Result<(), RelayError> {
        let db = self.store.db();
        // Never backwards: a former leader finishing a step late must not undo a newer
        // leader's progress (that would re-publish, and the duplicate window may have passed).
        let sql = match db {
            Db::Postgres(_) => {
                "INSERT INTO relay_checkpoints (name, position, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET \
                 position = GREATEST(relay_checkpoints.position, excluded.position), \
                 updated_at = excluded.updated_at"
            }
            Db::Sqlite(_) => {
                "INSERT INTO relay_checkpoints (name, position, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET \
                 position = MAX(relay_checkpoints.position, excluded.position), \
                 updated_at = excluded.updated_at"
            }
        };
        let name = self.checkpoint_name();
        let now = chrono::Utc::now().timestamp_millis();
        on_db!(db, pool => {
            sqlx::query(sql).bind(&name).bind(position).bind(now).execute(pool).await?.rows_affected()
        });
        self.checkpoint = Some(position);
        self.status.position.store(position, Ordering::Relaxed);
        Ok(())
    }

    /// How the events stream ends now: empty, or with the message id of its last message.
    async fn stream_end(&self) -> Result<Chain, RelayError> {
        let nats = |e: &dyn std::fmt::Display| RelayError::Nats(e.to_string());
        let mut stream = self
            .js
            .get_stream(self.config.names.stream())
            .await
            .map_err(|e| nats(&e))?;
        let last = stream
            .info()
            .await
            .map_err(|e| nats(&e))?
            .state
            .last_sequence;
        if last == 0 {
            return Ok(Chain::Empty);
        }
        let message = stream.get_raw_message(last).await.map_err(|e| nats(&e))?;
        match message.headers.get("Nats-Msg-Id") {
            Some(id) => Ok(Chain::After(id.as_str().to_string())),
            None => Err(RelayError::Nats(format!(
                "the last message of {} has no Nats-Msg-Id: not written by a relay",
                self.config.names.stream()
            ))),
        }
    }

    /// Records an event the stream cannot take in `dead_letters` (consumer
    /// `relay:<stream>`), with a metric and an error log for the operator.
    async fn park(&self, event: &RawFeedEvent, reason: &str) -> Result<(), RelayError> {
        tracing::error!(
            position = event.position,
            event_id = %event.event_id,
            reason,
            "relay: event cannot be published; parked in dead_letters, relay goes on"
        );
        metrics::counter!("emporium_relay_parked_total").increment(1);
        let db = self.store.db();
        let sql = db.sql(
            "INSERT INTO dead_letters (consumer, position, event_id, attempts, reason, created_at) \
             VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (consumer, position) DO NOTHING",
        );
        let consumer = self.checkpoint_name();
        let now = chrono::Utc::now().timestamp_millis();
        on_db!(db, pool => {
            sqlx::query(&sql)
                .bind(&consumer)
                .bind(event.position)
                .bind(event.event_id.to_string())
                .bind(reason)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// One step: publish the next batch of the feed and move the checkpoint past every event
    /// whose ack (and all earlier acks) arrived. Up to `max_inflight` publishes stay
    /// outstanding between steps; when the feed is drained they are awaited. On error the
    /// in-flight publishes are forgotten and the next step re-publishes from the checkpoint
    /// (the server drops the duplicates).
    pub async fn try_step(&mut self) -> Result<Step, RelayError> {
        let checkpoint = self.load_checkpoint().await?;
        let result = self.step_from(checkpoint).await;
        let acked_to = match &result {
            Ok((acked, _)) => *acked,
            Err((acked, _)) => *acked,
        };
        if acked_to > checkpoint {
            self.save_checkpoint(acked_to).await?;
            let n = (acked_to - checkpoint) as u64;
            self.status.published.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("emporium_relay_published_total").increment(n);
        }
        metrics::gauge!("emporium_relay_position").set(acked_to as f64);
        metrics::gauge!("emporium_relay_lag").set(self.status.lag() as f64);
        match result {
            Ok((_, sent)) => {
                self.status.nats_ok.store(true, Ordering::Relaxed);
                if acked_to > checkpoint || sent > 0 {
                    Ok(Step::Published((acked_to - checkpoint) as usize))
                } else {
                    Ok(Step::Idle)
                }
            }
            Err((_, e)) => {
                self.inflight.clear();
                self.sent_to = None;
                self.chain = None;
                if let Some((_, h)) = self.prefetch.take() {
                    h.abort();
                }
                self.status.nats_ok.store(false, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Sends the next batch (or, with nothing new, awaits everything in flight). Returns the
    /// position acknowledged so far (also on failure) and how many events were sent.
    async fn step_from(&mut self, checkpoint: i64) -> Result<(i64, usize), (i64, RelayError)> {
        let mut acked_to = checkpoint;
        let send_from = self.sent_to.unwrap_or(checkpoint);
        let read = match self.prefetch.take() {
            Some((after, handle)) if after == send_from => match handle.await {
                Ok(r) => r,
                Err(e) => Err(StoreError::Decode(format!("prefetch task: {e}"))),
            },
            Some((_, handle)) => {
                handle.abort();
                self.store
                    .feed()
                    .read_after_raw(send_from, self.config.batch)
                    .await
            }
            None => {
                self.store
                    .feed()
                    .read_after_raw(send_from, self.config.batch)
                    .await
            }
        };
        let events = match read {
            Ok(e) => e,
            Err(e) => return Err((acked_to, e.into())),
        };
        // A full batch means more is probably waiting: read it on another task while this
        // one is sent.
        if let Some(last) = events
            .last()
            .filter(|_| events.len() as i64 == self.config.batch)
        {
            let (feed, after, batch) =
                (self.store.feed().clone(), last.position, self.config.batch);
            self.prefetch = Some((
                after,
                tokio::spawn(async move { feed.read_after_raw(after, batch).await }),
            ));
        }
        if events.is_empty() {
            while let Some((position, ack)) = self.inflight.pop_front() {
                match ack.await {
                    Ok(_) => acked_to = position,
                    Err(e) => return Err((acked_to, RelayError::Nats(e.to_string()))),
                }
            }
            return Ok((acked_to, 0));
        }
        if let Some(last) = events.last() {
            self.status.head.fetch_max(last.position, Ordering::Relaxed);
        }
        let max_payload = self.client.server_info().max_payload;
        let mut chain = match self.chain.take() {
            Some(c) => c,
            None => self.stream_end().await.map_err(|e| (acked_to, e))?,
        };
        for event in &events {
            let (msg, size) = sized_message(event).map_err(|e| (acked_to, e))?;
            // 0: no server info yet (never connected); let the publish decide.
            if max_payload > 0 && size > max_payload {
                // NATS refuses it, today and on every retry: park it and go on, so one event
                // never holds back everything after it.
                while let Some((position, ack)) = self.inflight.pop_front() {
                    match ack.await {
                        Ok(_) => acked_to = position,
                        Err(e) => return Err((acked_to, RelayError::Nats(e.to_string()))),
                    }
                }
                let reason = format!(
                    "message of {size} bytes exceeds the server's max_payload of {max_payload}"
                );
                self.park(event, &reason).await.map_err(|e| (acked_to, e))?;
                acked_to = event.position;
                self.sent_to = Some(event.position);
                self.chain = Some(chain.clone());
                continue;
            }
            let msg = match &chain {
                Chain::Empty => msg.expected_last_sequence(0),
                Chain::After(id) => msg.expected_last_message_id(id),
            };
            chain = Chain::After(event.event_id.to_string());
            let subject = self
                .config
                .names
                .subject(&event.aggregate_type, &event.aggregate_id);
            match self.js.send_publish(subject, msg).await {
                Ok(ack) => self.inflight.push_back((event.position, ack)),
                Err(e) => return Err((acked_to, RelayError::Nats(e.to_string()))),
            }
            self.sent_to = Some(event.position);
            self.chain = Some(chain.clone());
            if self.inflight.len() >= self.config.max_inflight {
                if let Some((position, ack)) = self.inflight.pop_front() {
                    match ack.await {
                        Ok(_) => acked_to = position,
                        Err(e) => return Err((acked_to, RelayError::Nats(e.to_string()))),
                    }
                }
            }
        }
        Ok((acked_to, events.len()))
    }

    /// Runs until `shutdown` resolves: wins (or waits for) leadership, then steps, backing
    /// off from 100 ms to 5 s while NATS or the database fails.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut stream_ready = false;
        loop {
            let mut leadership = match Leadership::acquire(self.store.db(), &self.checkpoint_name())
                .await
            {
                Ok(Some(l)) => l,
                Ok(None) => {
                    self.status.leader.store(false, Ordering::Relaxed);
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay: cannot reach the database for leadership");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            tracing::info!(stream = %self.config.names.stream(), "relay: leader");
            self.status.leader.store(true, Ordering::Relaxed);
            // Another process may have moved the checkpoint while we waited.
            self.checkpoint = None;
            self.inflight.clear();
            self.sent_to = None;
            if let Some((_, h)) = self.prefetch.take() {
                h.abort();
            }
            loop {
                if !stream_ready {
                    match self.ensure_stream().await {
                        Ok(()) => stream_ready = true,
                        Err(e) => {
                            self.status.nats_ok.store(false, Ordering::Relaxed);
                            tracing::warn!(error = %e, "relay: cannot create the stream yet");
                        }
                    }
                }
                let outcome = if stream_ready {
                    Some(self.try_step().await)
                } else {
                    None
                };
                let wait = match outcome {
                    Some(Ok(Step::Published(_))) => {
                        backoff = Duration::from_millis(100);
                        Duration::ZERO
                    }
                    Some(Ok(Step::Idle)) => {
                        backoff = Duration::from_millis(100);
                        Duration::from_millis(20)
                    }
                    Some(Err(e)) => {
                        // Keep the reported lag true while NATS is away.
                        if let Ok(head) = self.store.feed().head().await {
                            self.status.head.fetch_max(head, Ordering::Relaxed);
                            metrics::gauge!("emporium_relay_lag").set(self.status.lag() as f64);
                        }
                        tracing::warn!(error = %e, retry_in = ?backoff, "relay: publish failed");
                        let w = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        w
                    }
                    None => {
                        let w = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        w
                    }
                };
                if !leadership.still_held().await {
                    tracing::warn!("relay: lost leadership");
                    self.status.leader.store(false, Ordering::Relaxed);
                    break;
                }
                if wait.is_zero() {
                    continue;
                }
                let appended = self.store.feed().appended();
                tokio::select! {
                    () = &mut shutdown => return,
                    () = appended => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Creates or updates the events stream (file storage, the given duplicate window).
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    names: &NatsNames,
    duplicate_window: Duration,
) -> Result<(), RelayError> {
    js.create_or_update_stream(stream::Config {
        name: names.stream(),
        subjects: vec![names.events_wildcard()],
        storage: stream::StorageType::File,
        duplicate_window,
        ..Default::default()
    })
    .await
    .map_err(|e| RelayError::Nats(e.to_string()))?;
    Ok(())
}

/// The NATS message for an event: JSON body (the feed event) and headers (docs/events.md).
pub fn message(e: &RawFeedEvent) -> Result<Publish, RelayError> {
    sized_message(e).map(|(m, _)| m)
}

/// [`message`] and its size on the wire, as the server counts it against `max_payload`
/// (body plus headers).
fn sized_message(e: &RawFeedEvent) -> Result<(Publish, usize), RelayError> {
    let body = serde_json::to_vec(e)
        .map_err(|err| RelayError::Store(StoreError::Decode(err.to_string())))?;
    let mut headers = HeaderMap::new();
    headers.insert("Emporium-Event-Type", e.event_type.as_str());
    headers.insert("Emporium-Event-Version", e.event_version.as_str());
    headers.insert("Emporium-Position", e.position.to_string().as_str());
    headers.insert("Emporium-Aggregate-Type", e.aggregate_type.as_str());
    headers.insert("Emporium-Aggregate-Id", e.aggregate_id.as_str());
    headers.insert("Emporium-Sequence", e.sequence.to_string().as_str());
    headers.insert(
        "Emporium-Correlation-Id",
        e.metadata.correlation_id.as_str(),
    );
    headers.insert("Emporium-Causation-Id", e.metadata.causation_id.as_str());
    let header_values = e.event_type.len()
        + e.event_version.len()
        + e.aggregate_type.len()
        + e.aggregate_id.len()
        + e.metadata.correlation_id.len()
        + e.metadata.causation_id.len()
        + 40; // position, sequence
              // Header names, separators, "NATS/1.0", the message id header: under 400 bytes.
    let size = body.len() + header_values + 400;
    Ok((
        Publish::build()
            .payload(body.into())
            .headers(headers)
            .message_id(e.event_id.to_string()),
        size,
    ))
}

/// The relay's claim to be the one publisher for a stream.
pub enum Leadership {
    /// A session advisory lock held on this dedicated connection.
    Postgres(sqlx::PgConnection),
    /// The embedded store has one process.
    Embedded,
}

impl Leadership {
    pub async fn acquire(db: &Db, name: &str) -> Result<Option<Self>, StoreError> {
        match db {
            Db::Sqlite(_) => Ok(Some(Leadership::Embedded)),
            Db::Postgres(pool) => {
                let options = pool.connect_options().as_ref().clone();
                let mut conn = sqlx::PgConnection::connect_with(&options).await?;
                let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                    .bind(name)
                    .fetch_one(&mut conn)
                    .await?;
                if won {
                    Ok(Some(Leadership::Postgres(conn)))
                } else {
                    let _ = conn.close().await;
                    Ok(None)
                }
            }
        }
    }

    pub async fn still_held(&mut self) -> bool {
        match self {
            Leadership::Embedded => true,
            // If the connection is gone, so is the lock: another process may lead now.
            Leadership::Postgres(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
        }
    }
}
