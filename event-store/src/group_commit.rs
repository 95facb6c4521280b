//! Group commit: appends that arrive together are written in one statement (Postgres) or one
//! transaction (SQLite), and each caller is answered only after that write committed.
//!
//! Why: on a busy engine most of the database's work per command is per statement and per
//! commit (parse, plan, WAL flush, a network round trip each way), not per row. Writing
//! sixteen commands' events in one multi-row insert costs little more than writing one.
//!
//! How: a caller queues its events and then takes one of a few writer slots. Whoever holds a
//! slot drains the whole queue (its own request and any that queued behind it) and writes
//! it as one batch; a caller whose request another slot holder already took just waits for
//! its answer. With no load a batch is one command and costs what a lone append does; under
//! load the slots are busy and batches grow by themselves. The write runs in its own task,
//! so a caller that is cancelled (a client hanging up) never cuts a batch short for others.
//!
//! Per-aggregate optimistic checks are kept: the primary key (type, id, sequence) still
//! refuses a stale append. A batch is one atomic statement on Postgres, so when it hits a
//! key violation nothing of it was written and each command is then appended on its own,
//! which gives exactly the failing ones their conflict and the others their success. On
//! SQLite each command is its own statement inside the batch's transaction: a failing
//! statement undoes only itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use tokio::sync::{oneshot, Semaphore};

use crate::repository::{
    classify, pg_append, sqlite_append, sqlite_insert, LastSeals, PG_UNIQUE_VIOLATION,
    SQLITE_PK_VIOLATION,
};
use crate::Db;

/// Most events written in one batch: bounds statement size and how long the first caller
/// of a batch waits for the last.
const MAX_BATCH_EVENTS: usize = 1024;

/// One caller's command waiting to be written.
struct Pending {
    events: Vec<SerializedEvent>,
    done: oneshot::Sender<Result<(), PersistenceError>>,
}

/// The queue and the writer slots of one database.
pub(crate) struct GroupCommit {
    db: Db,
    queue: Mutex<Vec<Pending>>,
    slots: Arc<Semaphore>,
    batches: AtomicU64,
    commands: AtomicU64,
    mixed: AtomicU64,
    /// Whether appends are sealed (always, except in the benchmark measuring sealing).
    sealed: std::sync::atomic::AtomicBool,
    /// The last seal written per stream (Postgres).
    seals: LastSeals,
    /// Connections the writers keep between batches (at most one per slot). sqlx pings
    /// every connection given back to its pool, a round trip per batch; kept here, a
    /// healthy connection goes straight to the next batch.
    spare: Mutex<Vec<sqlx::pool::PoolConnection<sqlx::Postgres>>>,
    /// Dropped with this: ends the task that gives the spare connections back when the
    /// pool is closed, so that they are closed with it (a closed pool closes what comes
    /// back) and nothing writes through a closed pool.
    _closing: Option<oneshot::Sender<()>>,
}

/// What group commit has done since the store was opened (benchmarks, tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Writes (statements on Postgres, transactions on SQLite) that appended commands.
    pub batches: u64,
    /// Commands appended or refused through them.
    pub commands: u64,
    /// Batches in which some commands were refused (a stale sequence) and the others written.
    pub mixed: u64,
    /// Sealed appends (Postgres) that had to read a predecessor's seal because this process
    /// did not know it: once per stream after a restart or another process's append; an
    /// engine that keeps taking this path pays a lookup and a one-by-one chain per append.
    pub seal_lookups: u64,
}

/// Writer slots: batches in flight at once. SQLite has one writer, so more than one slot
/// would only queue in its lock. On Postgres two slots keep the server busy while the next
/// batch gathers; measured with `bench commands` on the 2-core box (c=16 / c=64, commands/s
/// against one-row INSERT transactions): 1 slot 0.92× / 1.33×, 2 slots 1.15× / 1.49×,
/// 3 slots 1.10× / 1.58×, 4 slots 1.02× / 1.48×.
pub const POSTGRES_WRITERS: usize = 2;

impl GroupCommit {
    pub(crate) fn new(db: Db, writers: usize) -> Arc<Self> {
        let writers = match db {
            Db::Sqlite(_) => 1,
            Db::Postgres(_) => writers.max(1),
        };
        let (closing, dropped) = oneshot::channel::<()>();
        let close = match &db {
            Db::Postgres(pool) => Some(pool.close_event()),
            Db::Sqlite(_) => None,
        };
        let this = Arc::new(Self {
            db,
            queue: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(writers)),
            batches: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            mixed: AtomicU64::new(0),
            sealed: std::sync::atomic::AtomicBool::new(true),
            seals: LastSeals::new(),
            spare: Mutex::new(Vec::new()),
            _closing: Some(closing),
        });
        if let (Some(close), Ok(runtime)) = (close, tokio::runtime::Handle::try_current()) {
            let weak = Arc::downgrade(&this);
            runtime.spawn(async move {
                tokio::select! {
                    () = close => {
                        if let Some(this) = weak.upgrade() {
                            this.give_back_spares();
                        }
                    }
                    _ = dropped => {}
                }
            });
        }
        this
    }

    fn give_back_spares(&self) {
        if let Ok(mut spare) = self.spare.lock() {
            spare.clear();
        }
    }

    pub(crate) fn set_sealing(&self, on: bool) {
        self.sealed.store(on, Ordering::Relaxed);
    }

    pub(crate) fn remember_seal(
        &self,
        aggregate_type: &str,
        id: &str,
        sequence: i64,
        seal: [u8; 32],
    ) {
        if matches!(self.db, Db::Postgres(_)) {
            self.seals.remember(aggregate_type, id, sequence, seal);
        }
    }

    pub(crate) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            batches: self.batches.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            mixed: self.mixed.load(Ordering::Relaxed),
            seal_lookups: self.seals.lookups(),
        }
    }

    /// Appends one command's events, together with whatever other commands are waiting.
    pub(crate) async fn append(
        self: &Arc<Self>,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let (done, mut answer) = oneshot::channel();
        self.queue
            .lock()
            .map_err(|_| unknown("group commit queue poisoned"))?
            .push(Pending {
                events: events.to_vec(),
                done,
            });
        // Wait for a slot or for the answer, whichever comes first: once another holder
        // has taken our request, queueing on for a slot would only hand it to us later to
        // write whatever trickled in meanwhile, which breaks batches up.
        let slot = {
            let acquire = self.slots.clone().acquire_owned();
            tokio::pin!(acquire);
            tokio::select! {
                biased;
                result = &mut answer => {
                    return result.unwrap_or_else(|_| Err(connection("the batch writer stopped before answering")));
                }
                slot = &mut acquire => slot.map_err(|_| unknown("group commit closed"))?,
            }
        };
        let batch = self.take_batch();
        if batch.is_empty() {
            // Another slot holder took ours; its answer is on the way.
            drop(slot);
        } else {
            let this = self.clone();
            tokio::spawn(async move {
                this.write(batch).await;
                drop(slot);
            });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(connection("the batch writer stopped before answering")))
    }

    /// Everything queued, up to [`MAX_BATCH_EVENTS`] (at least one command).
    fn take_batch(&self) -> Vec<Pending> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let mut events = 0;
        let mut n = 0;
        for p in queue.iter() {
            if n > 0 && events + p.events.len() > MAX_BATCH_EVENTS {
                break;
            }
            events += p.events.len();
            n += 1;
        }
        queue.drain(..n).collect()
    }

    async fn write(&self, batch: Vec<Pending>) {
        metrics::histogram!("emporium_group_commit_batch_commands").record(batch.len() as f64);
        let results = match &self.db {
            Db::Postgres(pool) => {
                let seals = self.sealed.load(Ordering::Relaxed).then_some(&self.seals);
                let spare = self.spare.lock().ok().and_then(|mut s| s.pop());
                let conn = match spare {
                    Some(conn) => Ok(conn),
                    None => pool.acquire().await,
                };
                match conn {
                    Ok(mut conn) => {
                        let results = pg_batch(&mut conn, &batch, seals).await;
                        // A connection that only answered or refused is kept; one that
                        // failed otherwise goes back to the pool, which tests it.
                        let healthy = results.iter().all(|r| {
                            matches!(r, Ok(()) | Err(PersistenceError::OptimisticLockError))
                        });
                        if healthy {
                            if let Ok(mut spare) = self.spare.lock() {
                                spare.push(conn);
                            }
                            // Closed meanwhile: this one goes back (and is closed) too.
                            if pool.is_closed() {
                                self.give_back_spares();
                            }
                        }
                        results
                    }
                    Err(e) => {
                        let e = classify(e, PG_UNIQUE_VIOLATION);
                        batch.iter().map(|_| Err(same(&e))).collect()
                    }
                }
            }
            Db::Sqlite(pool) => sqlite_batch(pool, &batch).await,
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(PersistenceError::OptimisticLockError)))
            .count();
        if refused > 0 && refused < results.len() {
            self.mixed.fetch_add(1, Ordering::Relaxed);
        }
        for (p, r) in batch.into_iter().zip(results) {
            let _ = p.done.send(r);
        }
    }
}

/// The batch as one statement; on a key violation (nothing written) each command alone.
async fn pg_batch(
    conn: &mut sqlx::PgConnection,
    batch: &[Pending],
    seals: Option<&LastSeals>,
) -> Vec<Result<(), PersistenceError>> {
    if let [one] = batch {
        return vec![pg_append(conn, &one.events, seals).await];
    }
    let all: Vec<SerializedEvent> = batch
        .iter()
        .flat_map(|p| p.events.iter().cloned())
        .collect();
    match pg_append(conn, &all, seals).await {
        Ok(()) => batch.iter().map(|_| Ok(())).collect(),
        Err(PersistenceError::OptimisticLockError) => {
            metrics::counter!("emporium_group_commit_split_total").increment(1);
            let mut results = Vec::with_capacity(batch.len());
            for p in batch {
                results.push(pg_append(conn, &p.events, seals).await);
            }
            results
        }
        Err(e) => batch.iter().map(|_| Err(same(&e))).collect(),
    }
}

/// The batch's commands in one transaction, one statement each: a key violation undoes
/// only its own statement and answers that command with a conflict. Any other failure
/// fails the whole batch, and nothing of it is committed.
async fn sqlite_batch(
    pool: &sqlx::SqlitePool,
    batch: &[Pending],
) -> Vec<Result<(), PersistenceError>> {
    if let [one] = batch {
        return vec![sqlite_append(pool, &one.events).await];
    }
    let attempt = async {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut results = Vec::with_capacity(batch.len());
        for p in batch {
            match sqlite_insert(&mut tx, &p.events).await {
                Ok(()) => results.push(Ok(())),
                Err(e) if is_key_violation(&e) => {
                    results.push(Err(PersistenceError::OptimisticLockError))
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(results)
    };
    match attempt.await {
        Ok(results) => results,
        Err(e) => {
            let e = classify(e, SQLITE_PK_VIOLATION);
            batch.iter().map(|_| Err(same(&e))).collect()
        }
    }
}

fn is_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(SQLITE_PK_VIOLATION))
}

/// `PersistenceError` is not `Clone`: every caller of a failed batch gets its own error of
/// the same kind and message.
fn same(e: &PersistenceError) -> PersistenceError {
    match e {
        PersistenceError::OptimisticLockError => PersistenceError::OptimisticLockError,
        PersistenceError::ConnectionError(e) => connection(&e.to_string()),
        PersistenceError::DeserializationError(e) => {
            PersistenceError::DeserializationError(e.to_string().into())
        }
        PersistenceError::UnknownError(e) => unknown(&e.to_string()),
    }
}

fn connection(msg: &str) -> PersistenceError {
    PersistenceError::ConnectionError(msg.to_string().into())
}

fn unknown(msg: &str) -> PersistenceError {
    PersistenceError::UnknownError(msg.to_string().into())
}
