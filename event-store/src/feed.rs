//! The global feed: every event of every aggregate in one stable, gap-free order.
//!
//! A feed position is stamped in commit order (see docs/adr/0002-global-feed.md). On
//! Postgres, readers stamp on demand: each read first runs the sequencer step under an
//! advisory lock, so no background task is needed for correctness and several engine
//! processes can share one database. On SQLite the insert trigger stamps under the
//! single-writer lock. Either way a position, once visible, never changes and nothing can
//! appear below it later, so "read after cursor" never skips and never repeats.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::metadata::EventMetadata;
use crate::store::Db;
use crate::StoreError;

/// Serialises sequencer steps across every process sharing the database.
const SEQUENCER_LOCK: i64 = 0x454D_504F_5249_5531;
/// Rows stamped per step: bounded so one step's transaction stays short.
const STAMP_BATCH: i64 = 10_000;

/// One event as the feed delivers it. Also the JSON body of every NATS message (see
/// docs/events.md): a contract, so fields are only ever added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Gap-free position in commit order; the cursor clients pass back as `after`.
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

/// A feed event whose payload stays the stored JSON text: the relay forwards it without
/// parsing it into a tree and printing it again. Serialises to exactly the JSON shape of
/// [`FeedEvent`].
#[derive(Debug, Clone, Serialize)]
pub struct RawFeedEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Box<serde_json::value::RawValue>,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

/// Reads the global feed. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    db: Db,
    appended: Arc<Notify>,
    poll_interval: Duration,
}

impl Feed {
    pub(crate) fn new(db: Db, appended: Arc<Notify>) -> Self {
        Self {
            db,
            appended,
            poll_interval: Duration::from_millis(50),
        }
    }

    /// How often a follower looks for events appended by other processes (events appended
    /// through this process wake it at once).
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Runs one sequencer step: stamps feed positions on events whose transactions have
    /// all ended. Returns how many were stamped (0 also when another process holds the
    /// sequencer lock right now). A no-op on SQLite, where the insert stamps.
    pub async fn stamp(&self) -> Result<u64, StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(0);
        };
        // The step runs as its own task: a caller dropped mid-way (a client that hung up, a
        // `select!`) must never cancel it inside `BEGIN`, which would hand a connection with
        // an open transaction back to the pool, where later autocommit writes would vanish.
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(SEQUENCER_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                tx.rollback().await?;
                return Ok(0);
            }
            let stamped = sqlx::query(include_str!("../sql/pg_stamp.sql"))
                .bind(STAMP_BATCH)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(stamped)
        })
        .await
        .map_err(|e| StoreError::Decode(format!("sequencer task: {e}")))?
    }

    /// Up to `limit` events after position `after` (0 = from the start), in feed order.
    pub async fn read_after(&self, after: i64, limit: i64) -> Result<Vec<FeedEvent>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                self.stamp().await?;
                let rows = sqlx::query(include_str!("../sql/pg_feed_after.sql"))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(pg_row).collect()
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(include_str!("../sql/sqlite_feed_after.sql"))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(sqlite_row).collect()
            }
        }
    }

    /// The events at the given positions, in position order (for timelines).
    pub async fn read_positions(&self, positions: &[i64]) -> Result<Vec<FeedEvent>, StoreError> {
        let mut out = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "SELECT feed_position, event_id, aggregate_type, aggregate_id, sequence, event_type,
                        event_version, payload, metadata, recorded_at
                   FROM events WHERE feed_position IN ({list}) ORDER BY feed_position"
            );
            match &self.db {
                Db::Postgres(pool) => {
                    let rows = sqlx::query(&sql).fetch_all(pool).await?;
                    for r in &rows {
                        out.push(pg_row(r)?);
                    }
                }
                Db::Sqlite(pool) => {
                    let rows = sqlx::query(&sql).fetch_all(pool).await?;
                    for r in &rows {
                        out.push(sqlite_row(r)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Like [`Feed::read_after`], with payloads left as JSON text.
    pub async fn read_after_raw(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RawFeedEvent>, StoreError> {
        let sql = match &self.db {
            Db::Postgres(_) => {
                self.stamp().await?;
                include_str!("../sql/pg_feed_after_raw.sql")
            }
            Db::Sqlite(_) => include_str!("../sql/sqlite_feed_after.sql"),
        };
        crate::on_db!(&self.db, pool => {
            let rows = sqlx::query(sql).bind(after).bind(limit).fetch_all(pool).await?;
            rows.iter().map(|row| {
                let decode = |what: &str, e: &dyn std::fmt::Display| {
                    StoreError::Decode(format!("{what}: {e}"))
                };
                let payload: String = row.try_get("payload")?;
                Ok(RawFeedEvent {
                    position: row.try_get("feed_position")?,
                    event_id: row_uuid(row)?,
                    aggregate_type: row.try_get("aggregate_type")?,
                    aggregate_id: row.try_get("aggregate_id")?,
                    sequence: row.try_get("sequence")?,
                    event_type: row.try_get("event_type")?,
                    event_version: row.try_get("event_version")?,
                    payload: serde_json::value::RawValue::from_string(payload)
                        .map_err(|e| decode("payload", &e))?,
                    metadata: row_metadata(row)?,
                    recorded_at: row_time(row)?,
                })
            }).collect()
        })
    }

    /// The last stamped position (0 when the log is empty).
    pub async fn head(&self) -> Result<i64, StoreError> {
        let head = match &self.db {
            Db::Postgres(pool) => {
                self.stamp().await?;
                sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(feed_position) FROM events")
                    .fetch_one(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(feed_position) FROM events")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(head.unwrap_or(0))
    }

    /// Resolves at the next append through this process.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// A follower that catches up from `after` and then waits for new events.
    pub fn subscribe(&self, after: i64) -> Subscription {
        Subscription {
            feed: self.clone(),
            cursor: after,
            batch: 1000,
        }
    }
}

/// Catches up, then follows the feed live. Holds its own cursor.
pub struct Subscription {
    feed: Feed,
    cursor: i64,
    batch: i64,
}

impl Subscription {
    /// The position of the last event handed out.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Reads at most `n` events per batch.
    #[must_use]
    pub fn with_batch_size(mut self, n: i64) -> Self {
        self.batch = n.max(1);
        self
    }

    /// The next non-empty batch, waiting for one if the feed is drained.
    pub async fn next_batch(&mut self) -> Result<Vec<FeedEvent>, StoreError> {
        loop {
            // Registered before reading, so an append between the read and the wait is not
            // missed.
            let notified = self.feed.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let events = self.feed.read_after(self.cursor, self.batch).await?;
            if let Some(last) = events.last() {
                self.cursor = last.position;
                return Ok(events);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(self.feed.poll_interval) => {}
            }
        }
    }
}

fn pg_row(row: &sqlx::postgres::PgRow) -> Result<FeedEvent, StoreError> {
    let metadata: Value = row.try_get("metadata")?;
    Ok(FeedEvent {
        position: row.try_get("feed_position")?,
        event_id: row.try_get("event_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: EventMetadata::from_json(&metadata),
        recorded_at: row.try_get("recorded_at")?,
    })
}

fn sqlite_row(row: &sqlx::sqlite::SqliteRow) -> Result<FeedEvent, StoreError> {
    let decode = |what: &str, e: &dyn std::fmt::Display| StoreError::Decode(format!("{what}: {e}"));
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    let event_id: String = row.try_get("event_id")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    let metadata: Value = serde_json::from_str(&metadata).map_err(|e| decode("metadata", &e))?;
    Ok(FeedEvent {
        position: row.try_get("feed_position")?,
        event_id: Uuid::parse_str(&event_id).map_err(|e| decode("event_id", &e))?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: serde_json::from_str(&payload).map_err(|e| decode("payload", &e))?,
        metadata: EventMetadata::from_json(&metadata),
        recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(|e| decode("recorded_at", &e))?
            .with_timezone(&Utc),
    })
}

/// Column decoders whose stored types differ per backend (uuid / text, jsonb / text,
/// timestamptz / text).
trait BackendRow {
    fn uuid(&self) -> Result<Uuid, StoreError>;
    fn metadata(&self) -> Result<EventMetadata, StoreError>;
    fn time(&self) -> Result<DateTime<Utc>, StoreError>;
}

impl BackendRow for sqlx::postgres::PgRow {
    fn uuid(&self) -> Result<Uuid, StoreError> {
        Ok(self.try_get("event_id")?)
    }
    fn metadata(&self) -> Result<EventMetadata, StoreError> {
        let v: Value = self.try_get("metadata")?;
        Ok(EventMetadata::from_json(&v))
    }
    fn time(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get("recorded_at")?)
    }
}

impl BackendRow for sqlx::sqlite::SqliteRow {
    fn uuid(&self) -> Result<Uuid, StoreError> {
        let s: String = self.try_get("event_id")?;
        Uuid::parse_str(&s).map_err(|e| StoreError::Decode(format!("event_id: {e}")))
    }
    fn metadata(&self) -> Result<EventMetadata, StoreError> {
        let s: String = self.try_get("metadata")?;
        let v: Value =
            serde_json::from_str(&s).map_err(|e| StoreError::Decode(format!("metadata: {e}")))?;
        Ok(EventMetadata::from_json(&v))
    }
    fn time(&self) -> Result<DateTime<Utc>, StoreError> {
        let s: String = self.try_get("recorded_at")?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Decode(format!("recorded_at: {e}")))
    }
}

fn row_uuid(row: &impl BackendRow) -> Result<Uuid, StoreError> {
    row.uuid()
}

fn row_metadata(row: &impl BackendRow) -> Result<EventMetadata, StoreError> {
    row.metadata()
}

fn row_time(row: &impl BackendRow) -> Result<DateTime<Utc>, StoreError> {
    row.time()
}
