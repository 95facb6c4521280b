//! Opening the event store (Postgres or embedded SQLite), migrations, and running commands
//! against aggregates with bounded retries on optimistic-lock conflicts.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore};
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
}

pub(crate) type Framework<A> = CqrsFramework<A, PersistedEventStore<EventRepository, A>>;

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
        }
    }

    /// Reads stored events of older versions through `upcasters` (aggregate loads and
    /// every typed read of the feed).
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.feed.set_upcasters(upcasters.clone());
        self.upcasters = upcasters;
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
        .await
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

    fn framework<A>(&self) -> Framework<A>
    where
        A: Aggregate<Services = ()>,
    {
        CqrsFramework::new(
            PersistedEventStore::new_event_store(self.repo.clone())
                .with_upcasters(self.upcasters.for_aggregate::<A>()),
            vec![],
            (),
        )
    }

    /// Runs `command` against aggregate `id`, retrying on optimistic-lock conflicts.
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>>
    where
        A: Aggregate<Services = ()>,
        A::Command: Clone,
    {
        let framework = self.framework::<A>();
        let started = std::time::Instant::now();
        let _turn = self.locks[stripe(A::TYPE, id)].lock().await;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match framework
                .execute_with_metadata(id, command.clone(), metadata.to_map())
                .await
            {
                Ok(()) => break Ok(()),
                Err(AggregateError::UserError(e)) => break Err(CommandError::Rejected(e)),
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    metrics::counter!("emporium_command_retries_total", "aggregate" => A::TYPE)
                        .increment(1);
                    // Jitter spreads retries of writers that collided at the same moment.
                    let jitter = u64::from(rand_jitter()) % (attempt as u64 * 2 + 1);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(AggregateError::AggregateConflict) => break Err(CommandError::Conflict),
                Err(AggregateError::DatabaseConnectionError(e)) => {
                    break Err(CommandError::Unavailable(e.to_string()))
                }
                Err(AggregateError::DeserializationError(e))
                | Err(AggregateError::UnexpectedError(e)) => {
                    break Err(CommandError::Internal(e.to_string()))
                }
            }
        };
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

    /// The current state of aggregate `id` and how many events it has (0 = never created).
    pub async fn load<A>(&self, id: &str) -> Result<(A, usize), StoreError>
    where
        A: Aggregate,
    {
        let store = PersistedEventStore::<EventRepository, A>::new_event_store(self.repo.clone())
            .with_upcasters(self.upcasters.for_aggregate::<A>());
        let ctx = store
            .load_aggregate(id)
            .await
            .map_err(|e| StoreError::Load(e.to_string()))?;
        Ok((ctx.aggregate, ctx.current_sequence))
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
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect(url)
        .await?;
    Ok(pool)
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
