//! The global feed: every event of every aggregate in one stable, gap-free order.
//!
//! A feed position is stamped in commit order (see docs/adr/0002-global-feed.md and
//! docs/adr/0011-feed-position-at-insert.md). On Postgres, the engine's appends stamp at
//! insert under the sequencer's advisory lock; rows written another way (COPY seeding,
//! older engine versions) arrive unstamped, and readers stamp those on demand: each read
//! first runs the horizon step under the same lock, so no background task is needed for
//! correctness and several engine processes can share one database. On SQLite the insert
//! trigger stamps under the single-writer lock. Either way a position, once visible, never changes and nothing can
//! appear below it later, so "read after cursor" never skips and never repeats.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emporium_domain::Event;
use tokio::sync::Notify;

use crate::decode::{self, Envelope, FeedEvent, RawFeedEvent, StoredPayload, Upcasters};
use crate::store::Db;
use crate::StoreError;

/// Serialises sequencer steps and stamping appends across every process sharing the
/// database. `emporium_append` (a migration) spells the same key out in decimal.
pub(crate) const SEQUENCER_LOCK: i64 = 0x454D_504F_5249_5531;
/// Rows stamped per step: bounded so one step's transaction stays short.
const STAMP_BATCH: i64 = 10_000;

/// Decoded events kept per process at most (about 10 MB at checkout's event sizes).
const RECENT_MAX: usize = 10_000;

/// Reads the global feed. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    db: Db,
    appended: Arc<Notify>,
    poll_interval: Duration,
    upcasters: Upcasters,
    recent: Arc<Mutex<Recent>>,
}

/// The latest events this process read as domain events, decoded, at consecutive
/// positions. Every projection of an engine follows the same positions a moment apart; each
/// used to read and decode every event itself. A position's event never changes once it is
/// visible, so a copy is as good as a read.
#[derive(Default)]
struct Recent {
    events: VecDeque<Arc<Envelope<Event>>>,
}

impl Recent {
    /// The cached events after `after`, at most `limit`; `None` unless the cache holds the
    /// event right after `after`.
    fn after(&self, after: i64, limit: usize) -> Option<Vec<Arc<Envelope<Event>>>> {
        let lo = self.events.front()?.position;
        let hi = self.events.back()?.position;
        if after < lo - 1 || after >= hi {
            return None;
        }
        let start = usize::try_from(after + 1 - lo).ok()?;
        Some(
            self.events
                .iter()
                .skip(start)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Keeps what a read after `after` returned when it continues the cache, or starts the
    /// cache over when the read is ahead of it (a read behind it, a rebuild's, is left out).
    fn keep(&mut self, after: i64, read: &[Envelope<Event>]) {
        let hi = self.events.back().map(|e| e.position);
        match hi {
            Some(hi) if after < hi => return,
            Some(hi) if after > hi => self.events.clear(),
            _ => {}
        }
        for (expected, e) in (after + 1..).zip(read) {
            if e.position != expected {
                // Not consecutive (cannot happen on a gap-free feed): trust none of it.
                self.events.clear();
                return;
            }
            self.events.push_back(Arc::new(e.clone()));
        }
        while self.events.len() > RECENT_MAX {
            self.events.pop_front();
        }
    }
}

impl Feed {
    pub(crate) fn new(db: Db, appended: Arc<Notify>) -> Self {
        Self {
            db,
            appended,
            poll_interval: Duration::from_millis(50),
            upcasters: Upcasters::engine(),
            recent: Arc::default(),
        }
    }

    pub(crate) fn set_upcasters(&mut self, upcasters: Upcasters) {
        self.upcasters = upcasters;
        // Events decoded by other upcasters are not this feed's.
        self.recent = Arc::default();
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A panic while holding it leaves at worst a shorter cache.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upcasters typed reads go through.
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
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
        // Engines stamp their appends at insert, so there is usually nothing to do: one
        // look at the (then empty) work list instead of a locking transaction per read.
        // A row committed just after the look waits for the next read, as it would have
        // waited for the next step had it been committed just after the step's snapshot.
        let waiting: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE feed_position IS NULL)")
                .fetch_one(pool)
                .await?;
        if !waiting {
            return Ok(0);
        }
        // The step runs as its own task: a caller dropped mid-way (a client that hung up, a
        // `select!`) must never cancel it inside `BEGIN` (see `store::begin_postgres`), and
        // once it holds the sequencer lock it should finish its batch.
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

    /// Up to `limit` events after position `after` (0 = from the start), in feed order,
    /// as stored (payload parsed into JSON, not upcast).
    pub async fn read_after(&self, after: i64, limit: i64) -> Result<Vec<FeedEvent>, StoreError> {
        self.read::<serde_json::Value>(after, limit).await
    }

    /// Like [`Feed::read_after`], with payloads in today's shape (upcast when stored at an
    /// older version): what readers that pass events on to clients serve.
    pub async fn read_current(&self, after: i64, limit: i64) -> Result<Vec<FeedEvent>, StoreError> {
        self.read_after(after, limit)
            .await?
            .into_iter()
            .map(|e| self.upcasters.upgrade_value(e).map_err(StoreError::from))
            .collect()
    }

    /// Like [`Feed::read_after`], with payloads left as the stored JSON text (the relay).
    pub async fn read_after_raw(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RawFeedEvent>, StoreError> {
        self.read(after, limit).await
    }

    /// Up to `limit` events after `after` as domain events, upcast to today's shapes. An
    /// event that cannot be decoded is an error naming it.
    pub async fn read_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Envelope<Event>>, StoreError> {
        let cached = self.recent().after(after, limit.max(1) as usize);
        if let Some(cached) = cached {
            return Ok(cached.iter().map(|e| (**e).clone()).collect());
        }
        let events = self.read_events_stored(after, limit).await?;
        self.recent().keep(after, &events);
        Ok(events)
    }

    /// Like [`Feed::read_events`], always from the store and decoded now, never from what
    /// this process decoded before: what a rebuild from the log reads.
    pub async fn read_events_stored(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Envelope<Event>>, StoreError> {
        let raw = self.read_after_raw(after, limit).await?;
        raw.iter()
            .map(|e| self.upcasters.decode_any(e).map_err(StoreError::from))
            .collect()
    }

    /// At most `limit` events of the given aggregate types among the next `window` positions
    /// after `after` (up to the head), as domain events upcast to today's shapes, and the
    /// last position this read covers (the last event's when `limit` cut it short): a
    /// follower that wants a few types moves past the others without reading them.
    pub async fn read_events_of(
        &self,
        after: i64,
        window: i64,
        limit: i64,
        types: &[&str],
    ) -> Result<(Vec<Envelope<Event>>, i64), StoreError> {
        let cached = self.recent().after(after, window.max(1) as usize);
        if let Some(cached) = cached {
            let limit = limit.max(1) as usize;
            let mut covered = cached.last().map_or(after, |e| e.position);
            let mut events = Vec::new();
            for e in &cached {
                if types.contains(&e.aggregate_type.as_str()) {
                    events.push((**e).clone());
                    if events.len() >= limit {
                        covered = e.position;
                        break;
                    }
                }
            }
            return Ok((events, covered));
        }
        let (raw, covered) = self
            .read_of::<Box<serde_json::value::RawValue>>(after, window, limit, types)
            .await?;
        let events = raw
            .iter()
            .map(|e| self.upcasters.decode_any(e).map_err(StoreError::from))
            .collect::<Result<_, _>>()?;
        Ok((events, covered))
    }

    /// Like [`Feed::read_after`], only events of the given aggregate types among the next
    /// `window` positions after `after` (up to the head), and the last position the read
    /// covers (the last event's when `limit` cut it short): a consumer that wants one type
    /// moves past a long run of others without reading or parsing them.
    pub async fn read_after_of(
        &self,
        after: i64,
        window: i64,
        limit: i64,
        types: &[&str],
    ) -> Result<(Vec<FeedEvent>, i64), StoreError> {
        self.read_of(after, window, limit, types).await
    }

    async fn read_of<P: StoredPayload>(
        &self,
        after: i64,
        window: i64,
        limit: i64,
        types: &[&str],
    ) -> Result<(Vec<Envelope<P>>, i64), StoreError> {
        // Positions are dense and committed in order, so every one up to the head is visible.
        let to = self.head().await?.min(after.saturating_add(window.max(1)));
        if to <= after {
            return Ok((Vec::new(), after));
        }
        let types: Vec<String> = types.iter().map(|t| (*t).to_string()).collect();
        let raw: Vec<Envelope<P>> = match &self.db {
            Db::Postgres(pool) => {
                // The window is read first (MATERIALIZED), by position, and the types picked
                // from it: a prepared statement's generic plan could otherwise walk the
                // primary key for every event of the type (a million stock events behind a
                // window of twenty positions took 300 ms a read).
                const PG: &str = concat!(
                    "WITH w AS MATERIALIZED (SELECT * FROM events",
                    " WHERE feed_position > $1 AND feed_position <= $2) SELECT ",
                    crate::pg_event_columns!(),
                    " FROM w WHERE aggregate_type = ANY($3) ORDER BY feed_position LIMIT $4"
                );
                let rows = sqlx::query(PG)
                    .bind(after)
                    .bind(to)
                    .bind(&types)
                    .bind(limit.max(1))
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode::row).collect::<Result<_, _>>()?
            }
            Db::Sqlite(pool) => {
                const LITE: &str = concat!(
                    "WITH w AS MATERIALIZED (SELECT * FROM events",
                    " WHERE feed_position > ?1 AND feed_position <= ?2) SELECT ",
                    crate::sqlite_event_columns!(),
                    " FROM w WHERE aggregate_type IN (SELECT value FROM json_each(?3))",
                    " ORDER BY feed_position LIMIT ?4"
                );
                let rows = sqlx::query(LITE)
                    .bind(after)
                    .bind(to)
                    .bind(serde_json::Value::from(types.clone()).to_string())
                    .bind(limit.max(1))
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode::row).collect::<Result<_, _>>()?
            }
        };
        let covered = match raw.last() {
            Some(last) if raw.len() as i64 >= limit.max(1) => last.position,
            _ => to,
        };
        Ok((raw, covered))
    }

    async fn read<P: StoredPayload>(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Envelope<P>>, StoreError> {
        const PG: &str = concat!(
            "SELECT ",
            crate::pg_event_columns!(),
            " FROM events WHERE feed_position > $1 ORDER BY feed_position LIMIT $2"
        );
        const LITE: &str = concat!(
            "SELECT ",
            crate::sqlite_event_columns!(),
            " FROM events WHERE feed_position > ?1 ORDER BY feed_position LIMIT ?2"
        );
        match &self.db {
            Db::Postgres(pool) => {
                self.stamp().await?;
                let rows = sqlx::query(PG)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode::row).collect()
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(LITE)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode::row).collect()
            }
        }
    }

    /// The events at the given positions, in position order, payloads in today's shape
    /// (timelines).
    pub async fn read_positions(&self, positions: &[i64]) -> Result<Vec<FeedEvent>, StoreError> {
        let mut out = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let columns = match &self.db {
                Db::Postgres(_) => crate::pg_event_columns!(),
                Db::Sqlite(_) => crate::sqlite_event_columns!(),
            };
            let sql = format!(
                "SELECT {columns} FROM events WHERE feed_position IN ({list}) ORDER BY feed_position"
            );
            let events: Vec<FeedEvent> = crate::on_db!(&self.db, pool => {
                let rows = sqlx::query(&sql).fetch_all(pool).await?;
                rows.iter().map(decode::row).collect::<Result<_, _>>()?
            });
            for e in events {
                out.push(self.upcasters.upgrade_value(e)?);
            }
        }
        Ok(out)
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

    /// Resolves at the next append through this process after this call: registered at
    /// once, so an append while the caller reads the feed is not missed.
    pub fn watch_appends(&self) -> std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>> {
        let mut next = Box::pin(self.appended.clone().notified_owned());
        next.as_mut().enable();
        next
    }

    /// A follower that catches up from `after` and then waits for new events.
    pub fn subscribe(&self, after: i64) -> Subscription {
        Subscription {
            feed: self.clone(),
            cursor: after,
            batch: 1000,
            types: None,
        }
    }
}

/// Catches up, then follows the feed live. Holds its own cursor.
pub struct Subscription {
    feed: Feed,
    cursor: i64,
    batch: i64,
    /// Only these aggregate types, when set (see [`Subscription::of_types`]).
    types: Option<Vec<String>>,
}

/// Positions a filtered subscription scans per read: a long run of other types is passed
/// in steps of this many, each step reported to the caller as an empty batch.
const FILTERED_WINDOW: i64 = 5_000;

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

    /// Hands out only events of these aggregate types, read filtered in the store: the
    /// others are neither read nor parsed. [`Subscription::next_batch`] may then return an
    /// empty batch after passing a run of other events, with [`Subscription::cursor`]
    /// moved past them, so that the caller can record how far it got.
    #[must_use]
    pub fn of_types(mut self, types: &[&str]) -> Self {
        self.types = Some(types.iter().map(|t| (*t).to_string()).collect());
        self
    }

    /// The next non-empty batch, waiting for one if the feed is drained (of a filtered
    /// subscription, possibly an empty one: see [`Subscription::of_types`]).
    pub async fn next_batch(&mut self) -> Result<Vec<FeedEvent>, StoreError> {
        loop {
            // Registered before reading, so an append between the read and the wait is not
            // missed.
            let notified = self.feed.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(types) = &self.types {
                let types: Vec<&str> = types.iter().map(String::as_str).collect();
                let (events, covered) = self
                    .feed
                    .read_after_of(self.cursor, FILTERED_WINDOW, self.batch, &types)
                    .await?;
                if covered > self.cursor {
                    self.cursor = covered;
                    return Ok(events);
                }
            } else {
                let events = self.feed.read_after(self.cursor, self.batch).await?;
                if let Some(last) = events.last() {
                    self.cursor = last.position;
                    return Ok(events);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(self.feed.poll_interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use emporium_domain::values::Sku;
    use emporium_domain::{Event, ProductEvent};

    use super::{Recent, RECENT_MAX};
    use crate::{Envelope, EventMetadata};

    fn at(position: i64) -> Envelope<Event> {
        Envelope {
            position,
            event_id: uuid::Uuid::new_v4(),
            aggregate_type: "Product".into(),
            aggregate_id: "SKU-1".into(),
            sequence: position,
            event_type: "ProductDiscontinued".into(),
            event_version: "1.0".into(),
            payload: Event::Product(ProductEvent::ProductDiscontinued {
                sku: Sku::parse("SKU-1").unwrap(),
            }),
            metadata: EventMetadata::system("test"),
            recorded_at: chrono::Utc::now(),
        }
    }

    fn positions(events: Option<Vec<std::sync::Arc<Envelope<Event>>>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.position).collect())
    }

    #[test]
    fn the_cache_serves_only_what_it_holds_without_a_gap() {
        let mut r = Recent::default();
        assert_eq!(positions(r.after(0, 10)), None);
        r.keep(10, &[at(11), at(12), at(13)]);
        assert_eq!(positions(r.after(10, 10)), Some(vec![11, 12, 13]));
        assert_eq!(positions(r.after(11, 1)), Some(vec![12]));
        // Nothing after its last, nothing before its first.
        assert_eq!(positions(r.after(13, 10)), None);
        assert_eq!(positions(r.after(9, 10)), None);
        // A read that continues it is kept; one behind it (a rebuild) is not.
        r.keep(13, &[at(14)]);
        r.keep(0, &[at(1), at(2)]);
        assert_eq!(positions(r.after(10, 10)), Some(vec![11, 12, 13, 14]));
        // A read ahead of it starts it over.
        r.keep(20, &[at(21), at(22)]);
        assert_eq!(positions(r.after(13, 10)), None);
        assert_eq!(positions(r.after(20, 10)), Some(vec![21, 22]));
        // A read with a hole is not trusted at all.
        r.keep(22, &[at(23), at(25)]);
        assert_eq!(positions(r.after(20, 10)), None);
        // Bounded.
        let many: Vec<_> = (1..=(RECENT_MAX as i64 + 5)).map(at).collect();
        r.keep(0, &many);
        assert_eq!(r.events.len(), RECENT_MAX);
        assert_eq!(positions(r.after(4, 1)), None);
        assert_eq!(positions(r.after(5, 1)), Some(vec![6]));
    }
}
