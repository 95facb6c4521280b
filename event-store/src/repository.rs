//! Event repositories: postgres-es and sqlite-es behind one `PersistedEventRepository`.
//!
//! Reads (load an aggregate, stream its events) go straight to the wrapped crates. Appends
//! are our own: they give each event an `event_id`, and they write a command's events as
//! one autocommit statement, saving the BEGIN/COMMIT round trips of the wrapped `persist`
//! (see docs/adr/0003-append-path.md), together with the commands that arrive at the same
//! time ([`crate::group_commit`], docs/adr/0010-group-commit.md). The primary key still turns a concurrent append to
//! the same aggregate and sequence into an optimistic-lock conflict.

use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::{PgPool, Row, SqlitePool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::audit;
use crate::group_commit::{GroupCommit, GroupCommitStats, POSTGRES_WRITERS};
use crate::Db;

/// PostgreSQL unique violation; on the events table, the (type, id, sequence) primary key.
pub(crate) const PG_UNIQUE_VIOLATION: &str = "23505";
/// SQLITE_CONSTRAINT_PRIMARYKEY.
pub(crate) const SQLITE_PK_VIOLATION: &str = "1555";

/// The repository every aggregate's `PersistedEventStore` uses, on either backend.
#[derive(Clone)]
pub struct EventRepository {
    backend: Arc<Backend>,
    /// Every append goes through it: commands that arrive together share one write.
    group: Arc<GroupCommit>,
    /// Woken after every successful append so in-process feed readers need not poll.
    appended: Arc<Notify>,
}

enum Backend {
    Postgres { inner: PostgresEventRepository },
    Sqlite { inner: SqliteEventRepository },
}

impl EventRepository {
    pub(crate) fn postgres(pool: PgPool, appended: Arc<Notify>) -> Self {
        let inner = PostgresEventRepository::new(pool.clone());
        Self {
            group: GroupCommit::new(Db::Postgres(pool), POSTGRES_WRITERS),
            backend: Arc::new(Backend::Postgres { inner }),
            appended,
        }
    }

    pub(crate) fn sqlite(pool: SqlitePool, appended: Arc<Notify>) -> Self {
        let inner = SqliteEventRepository::new(pool.clone());
        Self {
            group: GroupCommit::new(Db::Sqlite(pool), 1),
            backend: Arc::new(Backend::Sqlite { inner }),
            appended,
        }
    }

    async fn append(&self, events: &[SerializedEvent]) -> Result<(), PersistenceError> {
        self.group.append(events).await
    }

    /// What group commit has done so far.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.group.stats()
    }

    /// Appends without seals, as before tamper evidence: only for `emporium-bench commands`,
    /// which measures what sealing costs. `verify` reports every event appended so.
    pub fn set_sealing(&self, on: bool) {
        self.group.set_sealing(on);
    }

    /// Remembers the stored seal of a stream's last event, read with its events.
    pub(crate) fn remember_seal(&self, aggregate_type: &str, id: &str, sequence: i64, seal: &[u8]) {
        if let Ok(seal) = <[u8; 32]>::try_from(seal) {
            self.group.remember_seal(aggregate_type, id, sequence, seal);
        }
    }
}

/// The seal this process last wrote or read for each stream (Postgres), by (type, id): the
/// next append to a hot stream passes its predecessor's seal instead of having the append
/// read it back. Bounded like the aggregate cache; a stream not here is read as before.
pub(crate) struct LastSeals {
    seals: quick_cache::sync::Cache<(String, String), (i64, [u8; 32])>,
    /// Appends that had to read some predecessor's seal (the general `emporium_append`).
    lookups: std::sync::atomic::AtomicU64,
}

/// Streams whose last seal is remembered.
const REMEMBERED_SEALS: usize = 100_000;

impl LastSeals {
    pub(crate) fn new() -> Self {
        Self {
            seals: quick_cache::sync::Cache::new(REMEMBERED_SEALS),
            lookups: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The seal of `event`'s predecessor, when known: zeros for a stream's first event, the
    /// remembered seal when it is of sequence - 1.
    fn previous(&self, event: &SerializedEvent) -> Option<[u8; 32]> {
        if event.sequence <= 1 {
            return Some([0; 32]);
        }
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        self.seals
            .get(&key)
            .filter(|(sequence, _)| *sequence == event.sequence as i64 - 1)
            .map(|(_, seal)| seal)
    }

    /// Appends so far that had to read a predecessor's seal.
    pub(crate) fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Remembers a stream's seal at `sequence` (written by this process, or read from the
    /// log with the stream's events).
    pub(crate) fn remember(&self, aggregate_type: &str, id: &str, sequence: i64, seal: [u8; 32]) {
        self.seals.insert(
            (aggregate_type.to_string(), id.to_string()),
            (sequence, seal),
        );
    }

    /// After a batch committed at positions `before + 1 ..`: works out the seals the append
    /// made (the same [`audit::chain`]) wherever the predecessor's seal is known (passed,
    /// or the stream's previous event in this batch) and remembers each stream's last one;
    /// a stream whose seal the append read itself is forgotten.
    fn learn(
        &self,
        events: &[SerializedEvent],
        before: i64,
        contents: &[[u8; 32]],
        prevs: &[Option<[u8; 32]>],
    ) {
        // A stream's events in a batch are one command's: consecutive and in order.
        let mut last: Option<(&str, &str, i64, Option<[u8; 32]>)> = None;
        for (n, e) in events.iter().enumerate() {
            let sequence = e.sequence as i64;
            let prev = match (last, prevs[n]) {
                (_, Some(p)) => Some(p),
                (Some((t, i, s, p)), None)
                    if t == e.aggregate_type && i == e.aggregate_id && s + 1 == sequence =>
                {
                    p
                }
                _ => None,
            };
            let seal = prev.map(|p| audit::chain(&p, before + n as i64 + 1, &contents[n]));
            match seal {
                Some(seal) => self.remember(&e.aggregate_type, &e.aggregate_id, sequence, seal),
                None => {
                    self.seals
                        .remove(&(e.aggregate_type.clone(), e.aggregate_id.clone()));
                }
            }
            last = Some((&e.aggregate_type, &e.aggregate_id, sequence, seal));
        }
    }
}

/// One command's events (or a batch's) as one autocommit statement, which also stamps
/// their feed positions (docs/adr/0011-feed-position-at-insert.md) and seals them; the seals
/// are remembered in `seals` (`None`: appended unsealed, only for the benchmark).
pub(crate) async fn pg_append(
    conn: &mut sqlx::PgConnection,
    events: &[SerializedEvent],
    seals: Option<&LastSeals>,
) -> Result<(), PersistenceError> {
    let n = events.len();
    let mut types = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut etypes = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut payloads: Vec<&Value> = Vec::with_capacity(n);
    let mut metas: Vec<&Value> = Vec::with_capacity(n);
    let mut event_ids = Vec::with_capacity(n);
    let mut contents: Vec<[u8; 32]> = Vec::with_capacity(n);
    let mut prevs: Vec<Option<[u8; 32]>> = Vec::with_capacity(n);
    // Microseconds: what timestamptz keeps, so the sealed time is the stored one.
    let now = chrono::Utc::now();
    let micros = now.timestamp_micros();
    let recorded_at = chrono::DateTime::from_timestamp_micros(micros).unwrap_or(now);
    for e in events {
        types.push(e.aggregate_type.as_str());
        ids.push(e.aggregate_id.as_str());
        seqs.push(e.sequence as i64);
        etypes.push(e.event_type.as_str());
        versions.push(e.event_version.as_str());
        payloads.push(&e.payload);
        metas.push(&e.metadata);
        let event_id = Uuid::now_v7();
        event_ids.push(event_id);
        if let Some(seals) = seals {
            let canonical = audit::canonical(
                &e.aggregate_type,
                &e.aggregate_id,
                e.sequence as i64,
                &e.event_type,
                &e.event_version,
                &event_id.to_string(),
                micros,
                &audit::canonical_json(&e.payload),
                &audit::canonical_json(&e.metadata),
            );
            contents.push(audit::content_hash(canonical.as_bytes()));
            prevs.push(seals.previous(e));
        }
    }
    let sql = match seals {
        None => include_str!("../sql/pg_insert_events_unsealed.sql"),
        Some(_) if prevs.iter().all(Option::is_some) => {
            include_str!("../sql/pg_insert_events_known.sql")
        }
        Some(seals) => {
            seals
                .lookups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("emporium_seal_lookups_total").increment(1);
            include_str!("../sql/pg_insert_events.sql")
        }
    };
    let query = sqlx::query(sql)
        .bind(types)
        .bind(ids)
        .bind(seqs)
        .bind(etypes)
        .bind(versions)
        .bind(payloads)
        .bind(metas)
        .bind(event_ids);
    let Some(seals) = seals else {
        return query
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| classify(e, PG_UNIQUE_VIOLATION));
    };
    let before: i64 = query
        .bind(contents.iter().map(|c| c.as_slice()).collect::<Vec<_>>())
        .bind(recorded_at)
        .bind(
            prevs
                .iter()
                .map(|p| p.as_ref().map(|p| p.as_slice()))
                .collect::<Vec<_>>(),
        )
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| classify(e, PG_UNIQUE_VIOLATION))?;
    seals.learn(events, before, &contents, &prevs);
    Ok(())
}

/// One command's events in one write transaction.
pub(crate) async fn sqlite_append(
    pool: &SqlitePool,
    events: &[SerializedEvent],
) -> Result<(), PersistenceError> {
    let write = async {
        // IMMEDIATE: the seal needs the last position and the stream's last seal read under
        // the write lock; a deferred transaction could read, then lose the lock to a writer.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlite_insert(&mut tx, events).await?;
        tx.commit().await
    };
    write.await.map_err(|e| classify(e, SQLITE_PK_VIOLATION))
}

/// One command's events as one statement inside the caller's write transaction, each with
/// its feed position and its seal (crate::audit), which the embedded store computes here
/// because SQLite has no SHA-256.
pub(crate) async fn sqlite_insert(
    conn: &mut sqlx::SqliteConnection,
    events: &[SerializedEvent],
) -> Result<(), sqlx::Error> {
    let last_position: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(feed_position), 0) FROM events")
            .fetch_one(&mut *conn)
            .await?;
    let (recorded_at, micros) = audit::sqlite_now();
    let mut rows = Vec::with_capacity(events.len());
    let mut prev: Option<(&str, &str, i64, [u8; 32])> = None;
    for (i, e) in events.iter().enumerate() {
        let sequence = e.sequence as i64;
        let previous = match prev {
            Some((t, id, s, h))
                if t == e.aggregate_type && id == e.aggregate_id && s + 1 == sequence =>
            {
                h
            }
            _ if sequence <= 1 => audit::GENESIS,
            _ => {
                audit::sqlite_stored_seal(conn, &e.aggregate_type, &e.aggregate_id, sequence - 1)
                    .await?
            }
        };
        let position = last_position + i as i64 + 1;
        let event_id = Uuid::now_v7().to_string();
        let payload = e.payload.to_string();
        let metadata = e.metadata.to_string();
        let canonical = audit::canonical(
            &e.aggregate_type,
            &e.aggregate_id,
            sequence,
            &e.event_type,
            &e.event_version,
            &event_id,
            micros,
            &audit::canonical_json(&e.payload),
            &audit::canonical_json(&e.metadata),
        );
        let hash = audit::seal(&previous, position, canonical.as_bytes());
        prev = Some((&e.aggregate_type, &e.aggregate_id, sequence, hash));
        rows.push((position, event_id, payload, metadata, hash));
    }
    // One multi-row INSERT: atomic on its own.
    let mut sql = String::from(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata, event_id, recorded_at, feed_position, chain_hash) VALUES ",
    );
    for i in 0..events.len() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?)");
    }
    let mut query = sqlx::query(&sql);
    for (e, (position, event_id, payload, metadata, hash)) in events.iter().zip(rows) {
        query = query
            .bind(&e.aggregate_type)
            .bind(&e.aggregate_id)
            .bind(e.sequence as i64)
            .bind(&e.event_type)
            .bind(&e.event_version)
            .bind(payload)
            .bind(metadata)
            .bind(event_id)
            .bind(recorded_at.clone())
            .bind(position)
            .bind(hash.to_vec());
    }
    query.execute(&mut *conn).await.map(|_| ())
}

/// Maps a database error to what cqrs-es understands: a key violation is a lost race on
/// the aggregate's next sequence; I/O trouble is a connection error; the rest is unknown.
pub(crate) fn classify(err: sqlx::Error, conflict_code: &str) -> PersistenceError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(conflict_code) => {
            PersistenceError::OptimisticLockError
        }
        _ if crate::is_transient(&err) => PersistenceError::ConnectionError(Box::new(err)),
        _ => PersistenceError::UnknownError(Box::new(err)),
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &*self.backend {
            Backend::Postgres { inner, .. } => inner.get_events::<A>(aggregate_id).await,
            Backend::Sqlite { inner, .. } => inner.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &*self.backend {
            Backend::Postgres { inner, .. } => {
                inner
                    .get_last_events::<A>(aggregate_id, last_sequence)
                    .await
            }
            Backend::Sqlite { inner, .. } => {
                inner
                    .get_last_events::<A>(aggregate_id, last_sequence)
                    .await
            }
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match &*self.backend {
            Backend::Postgres { inner, .. } => inner.get_snapshot::<A>(aggregate_id).await,
            Backend::Sqlite { inner, .. } => inner.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if events.is_empty() && snapshot_update.is_none() {
            // A command that decided nothing needs to change (an idempotent repeat).
            return Ok(());
        }
        let result = match snapshot_update {
            None => self.append(events).await,
            // Snapshots need events and snapshot in one transaction: the wrapped crates do that.
            Some(update) => match &*self.backend {
                Backend::Postgres { inner, .. } => inner.persist::<A>(events, Some(update)).await,
                Backend::Sqlite { inner, .. } => inner.persist::<A>(events, Some(update)).await,
            },
        };
        if result.is_ok() {
            self.appended.notify_waiters();
        }
        result
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match &*self.backend {
            Backend::Postgres { inner, .. } => inner.stream_events::<A>(aggregate_id).await,
            Backend::Sqlite { inner, .. } => inner.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match &*self.backend {
            Backend::Postgres { inner, .. } => inner.stream_all_events::<A>().await,
            Backend::Sqlite { inner, .. } => inner.stream_all_events::<A>().await,
        }
    }
}
