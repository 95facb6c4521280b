//! The projection registry, the runner that keeps a projection live, and rebuilds.
//!
//! Every step locks the projection's registry row first (an UPDATE, which takes a row lock
//! on Postgres and the write lock on SQLite), reads generation and position under that lock,
//! applies the next events and moves the position, all in one transaction. So a crash
//! replays nothing twice and skips nothing, and a second runner or a rebuild's swap simply
//! waits its turn. One runner per projection is active per database (the relay's
//! advisory-lock leadership); others stand by.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use emporium_event_store::relay::Leadership;
use emporium_event_store::{on_db, Db, Store};

use crate::{table, Projection, Result, Tx};

/// How often a leading runner checks that it still holds its leadership.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(250);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Registers `projection` (generation 1) if it is new and makes sure the live generation's
/// tables exist. Safe to call from several processes.
pub async fn ensure(db: &Db, projection: &dyn Projection) -> Result<i64> {
    let sql = db.sql(
        "INSERT INTO projections (name, generation, position, next_generation, updated_at) \
         VALUES ($1, 1, 0, 2, $2) ON CONFLICT (name) DO NOTHING",
    );
    on_db!(db, pool => {
        sqlx::query(&sql).bind(projection.name()).bind(now_ms()).execute(pool).await?.rows_affected()
    });
    let (gen, _) = state(db, projection.name()).await?;
    create_tables(db, projection, gen).await?;
    Ok(gen)
}

async fn create_tables(db: &Db, projection: &dyn Projection, gen: i64) -> Result<()> {
    for stmt in projection.create_tables(db, gen) {
        on_db!(db, pool => {
            sqlx::query(&stmt).execute(pool).await?.rows_affected()
        });
    }
    Ok(())
}

/// The live generation and position of a projection.
pub async fn state(db: &Db, name: &str) -> Result<(i64, i64)> {
    let sql = db.sql("SELECT generation, position FROM projections WHERE name = $1");
    let row: Option<(i64, i64)> = on_db!(db, pool => {
        sqlx::query_as(&sql).bind(name).fetch_optional(pool).await?
    });
    Ok(row.unwrap_or((1, 0)))
}

/// The position of the projection furthest behind (`None` before any is registered).
pub async fn slowest_position(db: &Db) -> Result<Option<i64>> {
    let min: Option<i64> = on_db!(db, pool => {
        sqlx::query_scalar("SELECT MIN(position) FROM projections").fetch_one(pool).await?
    });
    Ok(min)
}

/// Locks the registry row inside `tx` and returns (generation, position).
async fn lock(tx: &mut Tx, name: &str) -> Result<(i64, i64)> {
    let touch = tx.sql(
        "UPDATE projections SET updated_at = $1 WHERE name = $2 RETURNING generation, position",
    );
    let row: (i64, i64) = crate::on_tx!(tx, c => {
        sqlx::query_as(&touch).bind(now_ms()).bind(name).fetch_one(&mut **c).await?
    });
    Ok(row)
}

async fn set(tx: &mut Tx, name: &str, generation: i64, position: i64) -> Result<()> {
    let sql = tx.sql("UPDATE projections SET generation = $1, position = $2 WHERE name = $3");
    crate::on_tx!(tx, c => {
        sqlx::query(&sql).bind(generation).bind(position).bind(name).execute(&mut **c).await?.rows_affected()
    });
    Ok(())
}

/// What a runner is doing, for `/v1/projections`, health and metrics.
#[derive(Debug, Default)]
pub struct RunnerStatus {
    pub active: AtomicBool,
    pub position: AtomicI64,
}

/// Keeps one projection up to date with the feed.
pub struct Runner {
    store: Store,
    projection: Arc<dyn Projection>,
    batch: i64,
    status: Arc<RunnerStatus>,
    /// The position this runner last committed or read (-1: not known yet). A step starts
    /// reading there instead of asking the registry first; the lock under which it applies
    /// still reads the registry, so a position moved by anyone else is never missed.
    known: Arc<AtomicI64>,
}

impl Runner {
    pub fn new(store: Store, projection: Arc<dyn Projection>) -> Self {
        Self {
            store,
            projection,
            batch: 1000,
            status: Arc::default(),
            known: Arc::new(AtomicI64::new(-1)),
        }
    }

    pub fn status(&self) -> Arc<RunnerStatus> {
        self.status.clone()
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// One step: apply the next batch of the feed (up to 1,000 events) and move the
    /// position, in one transaction. Returns how many events were applied.
    pub async fn try_step(&self) -> Result<usize> {
        // As its own task, so cancelling the caller never interrupts `BEGIN` (see
        // `Feed::stamp`); a crash still rolls the whole step back.
        let (store, projection, batch, status, known) = (
            self.store.clone(),
            self.projection.clone(),
            self.batch,
            self.status.clone(),
            self.known.clone(),
        );
        tokio::spawn(async move {
            let result = step(&store, projection.as_ref(), batch, &status, &known).await;
            if result.is_err() {
                known.store(-1, Ordering::Relaxed);
            }
            result
        })
        .await
        .map_err(|e| crate::ProjectionError::Unknown(format!("projection step task: {e}")))?
    }
}

async fn step(
    store: &Store,
    projection: &dyn Projection,
    batch: i64,
    status: &RunnerStatus,
    known: &AtomicI64,
) -> Result<usize> {
    {
        let db = store.db();
        // Look before locking: an idle step then costs one read (two the first time), no
        // transaction.
        let seen = match known.load(Ordering::Relaxed) {
            -1 => state(db, projection.name()).await?.1,
            p => p,
        };
        let mut events = store.feed().read_events(seen, batch).await?;
        if events.is_empty() {
            known.store(seen, Ordering::Relaxed);
            status.position.store(seen, Ordering::Relaxed);
            return Ok(0);
        }
        let mut tx = Tx::begin(db).await?;
        let (gen, position) = lock(&mut tx, projection.name()).await?;
        if position != seen {
            // Another runner (or a rebuild's swap) moved it meanwhile.
            events = store.feed().read_events(position, batch).await?;
        }
        let Some(last) = events.last().map(|e| e.position) else {
            drop(tx);
            known.store(position, Ordering::Relaxed);
            status.position.store(position, Ordering::Relaxed);
            return Ok(0);
        };
        projection.apply_batch(&mut tx, gen, &events).await?;
        set(&mut tx, projection.name(), gen, last).await?;
        tx.commit().await?;
        known.store(last, Ordering::Relaxed);
        status.position.store(last, Ordering::Relaxed);
        metrics::gauge!("emporium_projection_position", "projection" => projection.name())
            .set(last as f64);
        Ok(events.len())
    }
}

impl Runner {
    /// Follows the feed until `shutdown` resolves, while this process holds the
    /// projection's leadership.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let lease = format!("projection:{}", self.projection.name());
        if let Err(e) = ensure(self.store.db(), self.projection.as_ref()).await {
            tracing::error!(projection = self.name(), error = %e, "cannot prepare projection tables");
        }
        loop {
            let mut leadership = match Leadership::acquire(self.store.db(), &lease).await {
                Ok(Some(l)) => l,
                Ok(_) | Err(_) => {
                    self.status.active.store(false, Ordering::Relaxed);
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            self.status.active.store(true, Ordering::Relaxed);
            let mut checked = std::time::Instant::now();
            loop {
                let wait = match self.try_step().await {
                    Ok(n) if n > 0 => Duration::ZERO,
                    Ok(_) => Duration::from_millis(5),
                    Err(e) => {
                        tracing::warn!(projection = self.name(), error = %e, "projection step failed");
                        Duration::from_secs(1)
                    }
                };
                // A round trip, so not after every step under load: leadership only spares
                // the registry lock contention, the lock itself keeps steps exactly-once.
                if checked.elapsed() >= LEADERSHIP_CHECK {
                    if !leadership.still_held().await {
                        self.status.active.store(false, Ordering::Relaxed);
                        break;
                    }
                    checked = std::time::Instant::now();
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

/// Rebuilds `projection` from the whole log into a fresh generation of tables while the
/// live one keeps serving, then swaps it in (blue/green). `progress(done, head)` is called
/// after each batch. Returns the new generation.
///
/// The swap locks the registry row (so the live runner pauses for it), applies whatever the
/// feed gained since the last batch, and switches generation and position in one commit.
/// The previous generation's tables stay until the next rebuild, so reads that started on
/// them finish.
pub async fn rebuild(
    store: &Store,
    projection: &dyn Projection,
    mut progress: impl FnMut(i64, i64),
) -> Result<i64> {
    let db = store.db();
    ensure(db, projection).await?;
    // Take a generation number no one else will use.
    let mut tx = Tx::begin(db).await?;
    let (live_gen, _) = lock(&mut tx, projection.name()).await?;
    let claim =
        tx.sql("UPDATE projections SET next_generation = next_generation + 1 WHERE name = $1");
    let read = tx.sql("SELECT next_generation - 1 FROM projections WHERE name = $1");
    let new_gen: i64 = crate::on_tx!(&mut tx, c => {
        sqlx::query(&claim).bind(projection.name()).execute(&mut **c).await?;
        sqlx::query_scalar(&read).bind(projection.name()).fetch_one(&mut **c).await?
    });
    tx.commit().await?;
    // Generations before the live one are no longer read by anyone.
    for gen in 1..live_gen {
        drop_tables(db, projection, gen).await?;
    }
    drop_tables(db, projection, new_gen).await?;
    create_tables(db, projection, new_gen).await?;

    let mut position = 0;
    loop {
        let head = store.feed().head().await?;
        let events = store.feed().read_events_stored(position, 2000).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        let mut tx = Tx::begin(db).await?;
        projection.apply_batch(&mut tx, new_gen, &events).await?;
        tx.commit().await?;
        position = last;
        progress(position, head.max(position));
    }

    // Swap: under the registry lock nothing moves; catch up to the live position (or past
    // it) so the new generation misses nothing, then switch.
    let mut tx = Tx::begin(db).await?;
    let (_, live_position) = lock(&mut tx, projection.name()).await?;
    loop {
        let events = store.feed().read_events_stored(position, 2000).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        projection.apply_batch(&mut tx, new_gen, &events).await?;
        position = last;
        if position >= live_position {
            break;
        }
    }
    set(&mut tx, projection.name(), new_gen, position).await?;
    tx.commit().await?;
    progress(position, position);
    Ok(new_gen)
}

async fn drop_tables(db: &Db, projection: &dyn Projection, gen: i64) -> Result<()> {
    for (base, _) in projection.tables() {
        let sql = format!("DROP TABLE IF EXISTS {}", table(base, gen));
        on_db!(db, pool => {
            sqlx::query(&sql).execute(pool).await?.rows_affected()
        });
    }
    Ok(())
}

/// Marks every registered projection as having applied the feed up to `position`, for a
/// benchmark that wrote events around the engine and indexed what it reads itself (see
/// `timeline::index_copies`); the other read models then do not cover those events.
pub async fn assume_applied_until(db: &Db, position: i64) -> Result<()> {
    let sql = db.sql("UPDATE projections SET position = $1, updated_at = $2");
    on_db!(db, pool => {
        sqlx::query(&sql).bind(position).bind(now_ms()).execute(pool).await?.rows_affected()
    });
    Ok(())
}
