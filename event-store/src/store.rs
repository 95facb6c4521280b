//! Opening the event store (Postgres or embedded SQLite), migrations, and running commands
//! against aggregates with bounded retries on optimistic-lock conflicts.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use std::any::Any;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Notify;

use crate::decode::Upcasters;
use crate::feed::Feed;
use crate::metadata::EventMetadata;
use crate::repository::EventRepository;
use crate::StoreError;

/// How many times a command is tried when another writer wins the race for the same
/// aggregate. Each retry reloads the aggregate, so the rules run against fresh state.
const MAX_ATTEMPTS: u32 = 8;

/// The database behind the store.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    /// `"postgres"` or `"sqlite"`, for logs and health output.
    pub fn kind(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// `sql` written with Postgres placeholders (`$1`, `$2`, ...) in this backend's dialect:
    /// SQLite's numbered placeholders are `?1`, `?2`, ...
    pub fn sql<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            Db::Postgres(_) => std::borrow::Cow::Borrowed(sql),
            Db::Sqlite(_) => std::borrow::Cow::Owned(sql.replace('$', "?")),
        }
    }

    /// One round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        crate::on_db!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://...`; `None` means the embedded SQLite store.
    pub database_url: Option<String>,
    /// Where the embedded store keeps `emporium.db`.
    pub data_dir: std::path::PathBuf,
    /// Pool size (Postgres connections, SQLite connections).
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: "./data".into(),
            max_connections: 16,
        }
    }
}

/// Why a command did not produce events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate's rules refused it; nothing was written.
    #[error(transparent)]
    Rejected(E),
    /// Other writers kept winning the race for this aggregate; nothing was written.
    #[error("the aggregate kept changing concurrently; try again")]
    Conflict,
    /// The database could not be reached; nothing is known to be written.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (a stored event that no longer deserialises, say).
    #[error("event store error: {0}")]
    Internal(String),
}

/// Lock stripes for in-process serialisation of commands per aggregate.
const LOCK_STRIPES: usize = 1024;

/// The event store: repository, feed and command execution over one database.
#[derive(Clone)]
pub struct Store {
    db: Db,
    repo: EventRepository,
    feed: Feed,
    /// Commands to one aggregate from this process queue here instead of racing to the
    /// database and losing on the primary key: under a hot item, losers would otherwise
    /// burn round trips and could exhaust their retries. Optimistic locking still guards
    /// against other processes.
    locks: Arc<Vec<tokio::sync::Mutex<()>>>,
    upcasters: Upcasters,
    /// Aggregates with their version, so a command replays nothing.
    cache: Arc<AggregateCache>,
    /// Whether loads start from snapshots and long streams get them (off under custom
    /// upcasters: a snapshot holds state folded through the engine's own).
    snapshots: bool,
}

/// Aggregates kept in memory with their version: `(A, usize)` behind `Any`, by type and id.
type AggregateCache = quick_cache::sync::Cache<(&'static str, String), CacheEntry>;
type CacheEntry = Arc<dyn Any + Send + Sync>;

/// The state a command is decided on, and whether the cache must learn of it.
enum Base<A> {
    /// The cache's own copy (checked to be an `(A, usize)`); may be behind the database.
    Cached(CacheEntry),
    /// The cached copy plus events appended since by another process; maybe more came.
    Unconfirmed(A),
    /// Current as of a read of the database; `changed`: the cache does not hold it yet.
    Fresh { state: A, changed: bool },
}

impl<A: Aggregate + 'static> Base<A> {
    fn get(&self) -> &A {
        match self {
            Base::Cached(entry) => &entry_ref::<A>(entry).0,
            Base::Unconfirmed(a) | Base::Fresh { state: a, .. } => a,
        }
    }

    /// Whether a rejection or no-op decided on this state must be confirmed by a read.
    fn needs_confirming(&self) -> bool {
        !matches!(self, Base::Fresh { .. })
    }

    /// The state to put in the cache, if it is newer than what is there.
    fn into_changed(self) -> Option<A> {
        match self {
            Base::Unconfirmed(a)
            | Base::Fresh {
                state: a,
                changed: true,
            } => Some(a),
            Base::Cached(_) | Base::Fresh { changed: false, .. } => None,
        }
    }
}

/// The `(A, usize)` inside a cache entry; entries are checked when taken from the cache.
fn entry_ref<A: 'static>(entry: &CacheEntry) -> &(A, usize) {
    entry
        .downcast_ref::<(A, usize)>()
        .expect("cache entries are checked when taken")
}

/// Aggregates cached per process. Bounded by entries: the hot ones (stock items under a
/// sale, open orders) stay, the cold ones are replayed when next needed.
const CACHED_AGGREGATES: usize = 100_000;

/// A snapshot of an aggregate is written when its stream has grown this many events past
/// the last one (by commands, or found by a replay or catch-up): a cold load then reads the
/// snapshot and fewer events than this, however long the history.
pub const SNAPSHOT_EVERY: usize = 500;

/// The snapshots' format. Bump it when an aggregate's state or its `apply` changes meaning:
/// older snapshots are then passed over and their streams replayed (and snapshotted anew).
const SNAPSHOT_FORMAT: i64 = 1;

impl Store {
    /// Opens (and migrates) the store described by `config`.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let db = match &config.database_url {
            Some(url) => Db::Postgres(connect_postgres(url, config.max_connections).await?),
            None => Db::Sqlite(open_sqlite(&config.data_dir, config.max_connections).await?),
        };
        let store = Self::from_db(db);
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an already open database (tests, benchmarks). Does not migrate.
    pub fn from_db(db: Db) -> Self {
        let appended = Arc::new(Notify::new());
        let repo = match &db {
            Db::Postgres(p) => EventRepository::postgres(p.clone(), appended.clone()),
            Db::Sqlite(p) => EventRepository::sqlite(p.clone(), appended.clone()),
        };
        let feed = Feed::new(db.clone(), appended);
        let locks = Arc::new(
            (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        );
        Self {
            db,
            repo,
            feed,
            locks,
            upcasters: Upcasters::engine(),
            cache: Arc::new(AggregateCache::new(CACHED_AGGREGATES)),
            snapshots: true,
        }
    }

    /// Reads stored events of older versions through `upcasters` (aggregate loads and
    /// every typed read of the feed).
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.feed.set_upcasters(upcasters.clone());
        self.upcasters = upcasters;
        // Cached aggregates were built with the old upcasters, and so were snapshots.
        self.cache = Arc::new(AggregateCache::new(CACHED_AGGREGATES));
        self.snapshots = false;
        self
    }

    /// The upcasters in use.
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// Applies pending migrations; safe to run from several processes at once.
    /// Only this crate's tables (events, snapshots, relay and consumer checkpoints, dead
    /// letters); the other crates migrate their own (`emporium migrate` runs them all).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        apply_migrations(
            &self.db,
            sqlx::migrate!("./migrations/postgres"),
            sqlx::migrate!("./migrations/sqlite"),
        )
        .await?;
        crate::audit::backfill(&self.db).await?;
        Ok(())
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    pub fn repository(&self) -> &EventRepository {
        &self.repo
    }

    /// Whether `actor` already applied a command with idempotency key `key` to this
    /// aggregate: some event of it carries both in its metadata. Asked only when a request
    /// takes over an abandoned idempotency claim, so the scan of one aggregate's events is
    /// rare.
    pub async fn applied_with_key<A: Aggregate>(
        &self,
        id: &str,
        actor: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        // `->>` reads a JSON field on both backends (SQLite since 3.38).
        let sql = self.db.sql(
            "SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND metadata->>'idempotency_key' = $3 AND metadata->>'actor' = $4 LIMIT 1",
        );
        let found: Option<i32> = crate::on_db!(&self.db, pool => {
            sqlx::query_scalar(&sql)
                .bind(A::TYPE)
                .bind(id)
                .bind(key)
                .bind(actor)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }

    /// Runs `command` against aggregate `id`, retrying on optimistic-lock conflicts.
    ///
    /// The aggregate comes from this process's cache when it is there (no replay, no read):
    /// an append decided on a stale copy fails the sequence check and is retried on a fresh
    /// one, and a rejection or no-op decided on a cached copy is confirmed against the
    /// events appended since (by another process) before it is returned.
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
    {
        let started = std::time::Instant::now();
        let _turn = self.locks[stripe(A::TYPE, id)].lock().await;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            // The cached copy is shared, not cloned, until something must change it: one
            // clone per command (the copy the command decides on).
            let (mut state, mut version) = match self.cached_entry::<A>(id) {
                Some(entry) => (Base::Cached(entry), 0),
                None => match self.replay::<A>(id).await {
                    Ok((a, v)) => (
                        Base::Fresh {
                            state: a,
                            changed: true,
                        },
                        v,
                    ),
                    Err(e) => break Err(e.into_command_error()),
                },
            };
            if let Base::Cached(entry) = &state {
                version = entry_ref::<A>(entry).1;
            }
            let (verdict, events, decided) = loop {
                let mut decided = state.get().clone();
                let sink = EventSink::default();
                let verdict = decided.handle(command.clone(), &(), &sink).await;
                let events = sink.collect().await;
                if (verdict.is_ok() && !events.is_empty()) || !state.needs_confirming() {
                    break (verdict, events, decided);
                }
                // A rejection or no-op on a cached copy: confirm it on the latest events.
                let changed = matches!(state, Base::Unconfirmed(_));
                let mut current = state.get().clone();
                match self.catch_up::<A>(id, &mut current, &mut version).await {
                    Ok(0) => {
                        state = Base::Fresh {
                            state: current,
                            changed,
                        };
                        break (verdict, events, decided);
                    }
                    Ok(_) => state = Base::Unconfirmed(current),
                    Err(e) => {
                        self.forget::<A>(id);
                        return self.finish::<A>(started, Err(e.into_command_error()));
                    }
                }
            };
            if let Err(e) = verdict {
                if let Some(changed) = state.into_changed() {
                    self.remember::<A>(id, changed, version);
                }
                break Err(CommandError::Rejected(e));
            }
            if events.is_empty() {
                if let Some(changed) = state.into_changed() {
                    self.remember::<A>(id, changed, version);
                }
                break Ok(());
            }
            let serialized = match serialize::<A>(id, version, &events, metadata) {
                Ok(s) => s,
                Err(e) => break Err(CommandError::Internal(e)),
            };
            match self.repo.persist::<A>(&serialized, None).await {
                Ok(()) => {
                    let now = version + events.len();
                    if now / SNAPSHOT_EVERY > version / SNAPSHOT_EVERY {
                        self.save_snapshot(id, &decided, now);
                    }
                    self.remember::<A>(id, decided, now);
                    break Ok(());
                }
                Err(PersistenceError::OptimisticLockError) if attempt < MAX_ATTEMPTS => {
                    // Another writer appended first: the copy is brought up to date with
                    // the events after its version, not replayed from the stream's start
                    // (which, for a hot item with a long history, is most of the cost).
                    let mut current = state.get().clone();
                    match self.catch_up::<A>(id, &mut current, &mut version).await {
                        Ok(_) => self.remember::<A>(id, current, version),
                        Err(_) => self.forget::<A>(id),
                    }
                    metrics::counter!("emporium_command_retries_total", "aggregate" => A::TYPE)
                        .increment(1);
                    // Jitter spreads retries of writers that collided at the same moment.
                    let jitter = u64::from(rand_jitter()) % (attempt as u64 * 2 + 1);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(PersistenceError::OptimisticLockError) => {
                    self.forget::<A>(id);
                    break Err(CommandError::Conflict);
                }
                // Whether the append happened is unknown: the next command reloads.
                Err(PersistenceError::ConnectionError(e)) => {
                    self.forget::<A>(id);
                    break Err(CommandError::Unavailable(e.to_string()));
                }
                Err(PersistenceError::UnknownError(e)) if crate::is_transient_dyn(e.as_ref()) => {
                    self.forget::<A>(id);
                    break Err(CommandError::Unavailable(e.to_string()));
                }
                Err(e) => {
                    self.forget::<A>(id);
                    break Err(CommandError::Internal(e.to_string()));
                }
            }
        };
        self.finish::<A>(started, result)
    }

    fn finish<A: Aggregate>(
        &self,
        started: std::time::Instant,
        result: Result<(), CommandError<A::Error>>,
    ) -> Result<(), CommandError<A::Error>> {
        let outcome = match &result {
            Ok(()) => "accepted",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict) => "conflict",
            Err(CommandError::Unavailable(_)) => "unavailable",
            Err(CommandError::Internal(_)) => "error",
        };
        metrics::counter!("emporium_commands_total", "aggregate" => A::TYPE, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("emporium_command_duration_seconds", "aggregate" => A::TYPE)
            .record(started.elapsed().as_secs_f64());
        result
    }

    fn cached_entry<A: Aggregate + 'static>(&self, id: &str) -> Option<CacheEntry> {
        self.cache
            .get(&(A::TYPE, id.to_string()))
            .filter(|e| e.downcast_ref::<(A, usize)>().is_some())
    }

    fn cached<A: Aggregate + Clone + 'static>(&self, id: &str) -> Option<(A, usize)> {
        self.cached_entry::<A>(id)
            .map(|entry| entry_ref::<A>(&entry).clone())
    }

    fn remember<A: Aggregate + Clone + 'static>(&self, id: &str, aggregate: A, version: usize) {
        self.cache
            .insert((A::TYPE, id.to_string()), Arc::new((aggregate, version)));
    }

    fn forget<A: Aggregate>(&self, id: &str) {
        self.cache.remove(&(A::TYPE, id.to_string()));
    }

    /// The aggregate replayed from its events (through the upcasters), read by one query
    /// and decoded straight from the stored text into the event type: a `serde_json::Value`
    /// tree is built only for an event an upcaster must rewrite.
    async fn replay<A: Aggregate>(&self, id: &str) -> Result<(A, usize), LoadFailure> {
        self.replay_until::<A>(id, None).await
    }

    /// The aggregate `id` as it was at `at`: its events up to that point folded through
    /// the same decoding (upcasters included) and `apply` as a live load. Not cached.
    pub async fn load_as_of<A>(&self, id: &str, at: AsOf) -> Result<(A, usize), StoreError>
    where
        A: Aggregate + Clone + 'static,
    {
        Ok(self.replay_until::<A>(id, Some(at)).await?)
    }

    async fn replay_until<A: Aggregate>(
        &self,
        id: &str,
        until: Option<AsOf>,
    ) -> Result<(A, usize), LoadFailure> {
        // A snapshot is a start only for a load of the present; a snapshot that no longer
        // decodes is passed over and the stream replayed from its start.
        let mut use_snapshot = self.snapshots && until.is_none();
        loop {
            match self.fold::<A>(id, until, use_snapshot).await? {
                Some(done) => return Ok(done),
                None => use_snapshot = false,
            }
        }
    }

    /// One read of the stream (from its latest snapshot when `use_snapshot`), folded; `None`
    /// when the snapshot did not decode.
    async fn fold<A: Aggregate>(
        &self,
        id: &str,
        until: Option<AsOf>,
        use_snapshot: bool,
    ) -> Result<Option<(A, usize)>, LoadFailure> {
        // On Postgres the seal comes along so that the next append to this stream need not
        // read it (the embedded store reads seals in its own append). The snapshot, if
        // any, is the row with an empty event type, sorted before the event it ends at
        // (read too, for its seal).
        type Row = (i64, String, String, String, Option<Vec<u8>>);
        let rows: Result<Vec<Row>, sqlx::Error> = match &self.db {
            db if use_snapshot => {
                // The backends differ in how the stored JSON becomes text, and the embedded
                // store reads seals in its own append (none are passed back).
                let (payload, seal, event_seal) = match db {
                    Db::Postgres(_) => ("payload::text", "NULL::bytea", "chain_hash"),
                    Db::Sqlite(_) => ("payload", "NULL", "NULL"),
                };
                let sql = db
                    .sql(&format!(
                        "WITH s AS (SELECT last_sequence, payload FROM snapshots \
                                 WHERE aggregate_type = $1 AND aggregate_id = $2 \
                                   AND current_snapshot = $3 \
                                 ORDER BY last_sequence DESC LIMIT 1) \
                     SELECT last_sequence AS sequence, '' AS event_type, '' AS event_version, \
                            {payload} AS payload, {seal} AS chain_hash FROM s \
                     UNION ALL \
                     SELECT sequence, event_type, event_version, {payload}, {event_seal} \
                       FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
                        AND sequence >= COALESCE((SELECT last_sequence FROM s), 0) \
                     ORDER BY sequence, event_type"
                    ))
                    .into_owned();
                crate::on_db!(db, pool => {
                    sqlx::query_as(&sql)
                        .bind(A::TYPE)
                        .bind(id)
                        .bind(SNAPSHOT_FORMAT)
                        .fetch_all(pool)
                        .await
                })
            }
            Db::Postgres(pool) => {
                let bound = match until {
                    None => "",
                    Some(AsOf::Time(_)) => " AND recorded_at <= $3",
                    // An event without a position is not in the feed yet.
                    Some(AsOf::Position(_)) => " AND feed_position <= $3",
                };
                let sql = format!(
                    "SELECT sequence, event_type, event_version, payload::text, chain_hash FROM events \
                     WHERE aggregate_type = $1 AND aggregate_id = $2{bound} ORDER BY sequence"
                );
                let q = sqlx::query_as(&sql).bind(A::TYPE).bind(id);
                let q = match until {
                    None => q,
                    Some(AsOf::Time(t)) => q.bind(t),
                    Some(AsOf::Position(p)) => q.bind(p),
                };
                q.fetch_all(pool).await
            }
            Db::Sqlite(pool) => {
                let bound = match until {
                    None => "",
                    Some(AsOf::Time(_)) => " AND recorded_at <= ?3",
                    Some(AsOf::Position(_)) => " AND feed_position <= ?3",
                };
                let sql = format!(
                    "SELECT sequence, event_type, event_version, payload, NULL FROM events \
                     WHERE aggregate_type = ?1 AND aggregate_id = ?2{bound} ORDER BY sequence"
                );
                let q = sqlx::query_as(&sql).bind(A::TYPE).bind(id);
                let q = match until {
                    None => q,
                    // Stored as `%Y-%m-%dT%H:%M:%fZ` text, which sorts as time does.
                    Some(AsOf::Time(t)) => q.bind(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
                    Some(AsOf::Position(p)) => q.bind(p),
                };
                q.fetch_all(pool).await
            }
        };
        let rows = rows.map_err(|e| {
            if crate::is_transient(&e) {
                LoadFailure::Unavailable(e.to_string())
            } else {
                LoadFailure::Broken(e.to_string())
            }
        })?;
        let upcasters = self.upcasters.for_aggregate::<A>();
        let broken = |seq: i64, e: &dyn std::fmt::Display| {
            LoadFailure::Broken(format!("{} {id} #{seq}: {e}", A::TYPE))
        };
        let mut aggregate = A::default();
        let mut version = 0;
        let mut snapshot_at = 0;
        let mut last_seal = None;
        for (sequence, event_type, event_version, payload, seal) in rows {
            if event_type.is_empty() {
                match serde_json::from_str::<A>(&payload) {
                    Ok(state) => aggregate = state,
                    Err(e) => {
                        tracing::warn!(aggregate = A::TYPE, id, error = %e,
                            "a snapshot does not decode; replaying the stream");
                        return Ok(None);
                    }
                }
                version = sequence as usize;
                snapshot_at = version;
                continue;
            }
            last_seal = seal;
            if snapshot_at > 0 && sequence as usize <= snapshot_at {
                // The event the snapshot ends at: read for its seal, already folded in.
                continue;
            }
            let event: A::Event = if upcasters
                .iter()
                .any(|u| u.can_upcast(&event_type, &event_version))
            {
                let value = serde_json::from_str(&payload).map_err(|e| broken(sequence, &e))?;
                let mut e = SerializedEvent::new(
                    id.to_string(),
                    sequence as usize,
                    A::TYPE.to_string(),
                    event_type,
                    event_version,
                    value,
                    Value::Null,
                );
                for u in &upcasters {
                    if u.can_upcast(&e.event_type, &e.event_version) {
                        e = u.upcast(e);
                    }
                }
                serde_json::from_value(e.payload).map_err(|e| broken(sequence, &e))?
            } else {
                serde_json::from_str(&payload).map_err(|e| broken(sequence, &e))?
            };
            aggregate.apply(event);
            version = sequence as usize;
        }
        if let (None, Some(seal)) = (until, last_seal) {
            self.repo.remember_seal(A::TYPE, id, version as i64, &seal);
        }
        // A replay passed over an undecodable snapshot writes a good one in its place.
        if until.is_none() && version - snapshot_at >= SNAPSHOT_EVERY {
            self.save_snapshot(id, &aggregate, version);
        }
        Ok(Some((aggregate, version)))
    }

    /// Writes a snapshot of `aggregate` at `version` in the background (the command or
    /// load that asked goes on) and drops the stream's older ones. A lost snapshot costs
    /// only a longer replay; one older than the latest is never written over it.
    fn save_snapshot<A: Aggregate>(&self, id: &str, aggregate: &A, version: usize) {
        if !self.snapshots {
            return;
        }
        let payload = match serde_json::to_value(aggregate) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(aggregate = A::TYPE, id, error = %e, "a snapshot does not encode");
                return;
            }
        };
        let (db, id, version) = (self.db.clone(), id.to_string(), version as i64);
        tokio::spawn(async move {
            let insert = db.sql(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, \
                 current_snapshot, payload) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            );
            let prune = db.sql(
                "DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2 \
                 AND last_sequence < $3",
            );
            let written: Result<(), sqlx::Error> = async {
                match &db {
                    Db::Postgres(pool) => {
                        sqlx::query(&insert)
                            .bind(A::TYPE)
                            .bind(&id)
                            .bind(version)
                            .bind(SNAPSHOT_FORMAT)
                            .bind(&payload)
                            .execute(pool)
                            .await?;
                        sqlx::query(&prune)
                            .bind(A::TYPE)
                            .bind(&id)
                            .bind(version)
                            .execute(pool)
                            .await?;
                    }
                    Db::Sqlite(pool) => {
                        sqlx::query(&insert)
                            .bind(A::TYPE)
                            .bind(&id)
                            .bind(version)
                            .bind(SNAPSHOT_FORMAT)
                            .bind(payload.to_string())
                            .execute(pool)
                            .await?;
                        sqlx::query(&prune)
                            .bind(A::TYPE)
                            .bind(&id)
                            .bind(version)
                            .execute(pool)
                            .await?;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = written {
                tracing::debug!(aggregate = A::TYPE, id, error = %e, "snapshot not written");
            }
        });
    }

    /// Applies the events appended after `version`; returns how many there were.
    async fn catch_up<A: Aggregate>(
        &self,
        id: &str,
        aggregate: &mut A,
        version: &mut usize,
    ) -> Result<usize, LoadFailure> {
        let newer = match self.repo.get_last_events::<A>(id, *version).await {
            Ok(n) => n,
            Err(PersistenceError::ConnectionError(e)) => {
                return Err(LoadFailure::Unavailable(e.to_string()))
            }
            Err(PersistenceError::UnknownError(e)) if crate::is_transient_dyn(e.as_ref()) => {
                return Err(LoadFailure::Unavailable(e.to_string()))
            }
            Err(e) => return Err(LoadFailure::Broken(e.to_string())),
        };
        let upcasters = self.upcasters.for_aggregate::<A>();
        let n = newer.len();
        for mut e in newer {
            for u in &upcasters {
                if u.can_upcast(&e.event_type, &e.event_version) {
                    e = u.upcast(e);
                }
            }
            let event: A::Event = serde_json::from_value(e.payload)
                .map_err(|x| LoadFailure::Broken(format!("{} {id}: {x}", A::TYPE)))?;
            aggregate.apply(event);
            *version = e.sequence.max(*version);
        }
        if n > 0 {
            self.remember_stored_seal::<A>(id, *version).await;
        }
        if n >= SNAPSHOT_EVERY {
            self.save_snapshot(id, aggregate, *version);
        }
        Ok(n)
    }

    /// After catching up with events another process appended, reads the seal of the
    /// stream's last event (one primary-key lookup) so that this process's next append to
    /// it can pass it. Without it, every later append here would read the seal itself and,
    /// not learning it, go on doing so. Best effort: a failure only costs that lookup later.
    async fn remember_stored_seal<A: Aggregate>(&self, id: &str, version: usize) {
        let Db::Postgres(pool) = &self.db else {
            return;
        };
        let seal: Result<Option<Option<Vec<u8>>>, sqlx::Error> = sqlx::query_scalar(
            "SELECT chain_hash FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(version as i64)
        .fetch_optional(pool)
        .await;
        if let Ok(Some(Some(seal))) = seal {
            self.repo.remember_seal(A::TYPE, id, version as i64, &seal);
        }
    }

    /// This process's copy of aggregate `id` without asking the database whether another
    /// process appended since: for decisions that a later command re-checks anyway (where
    /// stock might be, which warehouses exist). A replay when nothing is cached.
    pub async fn load_cached<A>(&self, id: &str) -> Result<(A, usize), StoreError>
    where
        A: Aggregate + Clone + 'static,
    {
        if let Some(hit) = self.cached::<A>(id) {
            return Ok(hit);
        }
        self.load::<A>(id).await
    }

    /// The current state of aggregate `id` and how many events it has (0 = never created):
    /// the cached copy brought up to date with one read, or a replay.
    pub async fn load<A>(&self, id: &str) -> Result<(A, usize), StoreError>
    where
        A: Aggregate + Clone + 'static,
    {
        let _turn = self.locks[stripe(A::TYPE, id)].lock().await;
        let (mut aggregate, mut version) = match self.cached::<A>(id) {
            Some(hit) => hit,
            None => {
                let fresh = self.replay::<A>(id).await.map_err(StoreError::from)?;
                self.remember::<A>(id, fresh.0.clone(), fresh.1);
                return Ok(fresh);
            }
        };
        if self
            .catch_up::<A>(id, &mut aggregate, &mut version)
            .await
            .map_err(StoreError::from)?
            > 0
        {
            self.remember::<A>(id, aggregate.clone(), version);
        }
        Ok((aggregate, version))
    }
}

/// Runs one crate's migrations (a set per backend) on `db`. Every crate owns the migrations
/// of its own tables; they share sqlx's one history table, so each set leaves alone the
/// versions the other crates applied. Safe to run from several processes at once.
pub async fn apply_migrations(
    db: &Db,
    mut postgres: sqlx::migrate::Migrator,
    mut sqlite: sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    match db {
        Db::Postgres(p) => postgres.set_ignore_missing(true).run(p).await?,
        Db::Sqlite(p) => sqlite.set_ignore_missing(true).run(p).await?,
    }
    Ok(())
}

/// Why an aggregate could not be loaded.
enum LoadFailure {
    /// The database could not be reached.
    Unavailable(String),
    /// A stored event does not fit the aggregate (or the upcasters failed).
    Broken(String),
}

impl LoadFailure {
    fn into_command_error<E: std::error::Error>(self) -> CommandError<E> {
        match self {
            LoadFailure::Unavailable(e) => CommandError::Unavailable(e),
            LoadFailure::Broken(e) => CommandError::Internal(e),
        }
    }
}

/// A past moment to see an aggregate at: a time (events recorded at or before it) or a
/// feed position (events at or below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Time(chrono::DateTime<chrono::Utc>),
    Position(i64),
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// A feed position (digits) or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(AsOf::Position).map_err(|e| format!("{e}"));
        }
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| AsOf::Time(t.with_timezone(&chrono::Utc)))
            .map_err(|_| "an RFC 3339 time (2026-11-29T12:00:00Z) or a feed position".to_string())
    }
}

impl From<LoadFailure> for StoreError {
    fn from(e: LoadFailure) -> Self {
        match e {
            LoadFailure::Unavailable(e) => StoreError::Unavailable(e),
            LoadFailure::Broken(e) => StoreError::Load(e),
        }
    }
}

/// A command's events as the repository stores them: sequences after `version`, with the
/// command's metadata.
fn serialize<A: Aggregate>(
    id: &str,
    version: usize,
    events: &[A::Event],
    metadata: &EventMetadata,
) -> Result<Vec<SerializedEvent>, String> {
    let metadata = serde_json::to_value(metadata.to_map()).map_err(|e| e.to_string())?;
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(SerializedEvent::new(
                id.to_string(),
                version + i + 1,
                A::TYPE.to_string(),
                e.event_type(),
                e.event_version(),
                serde_json::to_value(e).map_err(|x| x.to_string())?,
                metadata.clone(),
            ))
        })
        .collect()
}

fn stripe(aggregate_type: &str, id: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    aggregate_type.hash(&mut h);
    id.hash(&mut h);
    (h.finish() % LOCK_STRIPES as u64) as usize
}

fn rand_jitter() -> u32 {
    // Sub-second clock noise is jitter enough and avoids a dependency for it.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// A Postgres pool tuned for the command path. `test_before_acquire` is off: it costs a
/// round trip per checkout (~20% of command throughput); a dead connection surfaces as an
/// error on use instead and the pool replaces it.
///
/// Transactions are opened with [`begin_postgres`], never with `Pool::begin` directly: sqlx
/// 0.8 queues no rollback for a `BEGIN` whose caller was cancelled before the answer came,
/// and would hand that connection, inside the transaction, back to the pool, where later
/// autocommit writes would never commit. Opening the transaction on its own task closes that
/// hole without a statement per release (the `ROLLBACK` guard that did it before cost 11 %
/// of the engine's samples under checkout load; docs/performance.md). Every other drop is
/// covered by sqlx: a dropped `Transaction` queues its rollback and the pool's release
/// ping sends it. `client_min_messages = error` keeps the server from warning about
/// rollbacks outside a transaction.
///
/// A server on this machine (loopback or a Unix socket) is reached without TLS unless the
/// URL or `PGSSLMODE` asks for an `sslmode` other than `prefer`: libpq's default (`prefer`)
/// would encrypt every round trip to a server on the same host, which measured as the
/// engine's largest single cost under checkout load (docs/performance.md) and protects
/// nothing.
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let mut options = sqlx::postgres::PgConnectOptions::from_str(url)?
        .options([("client_min_messages", "error")]);
    if plaintext_is_safe(
        url,
        options.get_host(),
        std::env::var("PGSSLMODE").ok().as_deref(),
    ) {
        options = options.ssl_mode(sqlx::postgres::PgSslMode::Disable);
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Opens a transaction on `pool` that no cancelled caller can leave half-open: `BEGIN`
/// runs on its own task and always completes; a transaction nobody received is dropped,
/// which queues its rollback (see [`connect_postgres`]).
pub async fn begin_postgres(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
}

/// Whether `url` (and `PGSSLMODE`) leave TLS to us and name a server on this host.
///
/// `prefer` (libpq's default, and what sqlx writes into URLs it renders) accepts plaintext
/// by definition, so it counts as no choice.
fn plaintext_is_safe(url: &str, host: &str, pgsslmode: Option<&str>) -> bool {
    let url = url.to_ascii_lowercase();
    let chosen = |mode: &str| !mode.eq_ignore_ascii_case("prefer");
    let in_url = url
        .split(['?', '&'])
        .filter_map(|kv| kv.strip_prefix("sslmode="))
        .any(chosen);
    let chosen = in_url || pgsslmode.is_some_and(chosen);
    let local = host.starts_with('/')
        || host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !chosen && local
}

/// The embedded store's pool. WAL lets readers run beside the one writer; `synchronous =
/// FULL` so an accepted command survives a power cut, not only a process crash.
pub async fn open_sqlite(data_dir: &Path, max_connections: u32) -> Result<SqlitePool, StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join("emporium.db");
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::plaintext_is_safe;

    #[test]
    fn only_a_server_on_this_host_without_a_chosen_sslmode_goes_without_tls() {
        let url = "postgres://u@h/db";
        assert!(plaintext_is_safe(url, "127.0.0.1", None));
        assert!(plaintext_is_safe(url, "localhost", None));
        assert!(plaintext_is_safe(url, "[::1]", None));
        assert!(plaintext_is_safe(url, "/var/run/postgresql", None));
        assert!(!plaintext_is_safe(url, "db.example.com", None));
        assert!(!plaintext_is_safe(url, "10.0.0.5", None));
        let required = "postgres://u@127.0.0.1/db?application_name=x&sslmode=require";
        assert!(!plaintext_is_safe(required, "127.0.0.1", None));
        let preferred = "postgres://u@127.0.0.1/db?sslmode=prefer";
        assert!(plaintext_is_safe(preferred, "127.0.0.1", None));
        assert!(!plaintext_is_safe(url, "127.0.0.1", Some("verify-full")));
        assert!(plaintext_is_safe(url, "127.0.0.1", Some("prefer")));
    }
}
