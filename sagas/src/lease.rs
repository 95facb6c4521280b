//! One run per checkout at a time, across engine processes. Before it touches a checkout
//! (start, resume, sweep, cancel compensation) an engine takes the order's lease: a row in
//! `checkout_leases` naming this engine as holder until `expires_at`. A lease held by another
//! engine and not yet expired is refused, so resumes and sweeps skip checkouts that a live
//! engine is running. Each engine renews all of its leases every [`Leases::ttl`] / 3 from one
//! task; a killed engine stops renewing and its leases lapse within the TTL.
//!
//! Taking and giving back leases is batched: at checkout rates every checkout would
//! otherwise cost two statements of its own. Requests that arrive while a statement is in
//! flight wait and go together in the next one (the pattern of the event store's group
//! commit: a caller waits for its answer or the batch slot, whichever comes first).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use emporium_event_store::{on_db, Db, StoreError};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Order ids waiting for the next statement of one kind, and who wants the answer.
type Waiting = Vec<(String, oneshot::Sender<Result<bool, String>>)>;

/// Requests of one kind (take or give back) that share statements.
#[derive(Default)]
struct Batch {
    waiting: Mutex<Waiting>,
    slot: tokio::sync::Mutex<()>,
}

impl Batch {
    /// Queues `order_id` and answers once a statement that included it has run. `run` gets
    /// the queued ids and says for each whether it took effect.
    async fn submit<F, Fut>(&self, order_id: &str, run: F) -> Result<bool, StoreError>
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<bool>, StoreError>>,
    {
        let (tx, mut rx) = oneshot::channel();
        self.waiting
            .lock()
            .map_err(|_| StoreError::Config("lease queue poisoned".into()))?
            .push((order_id.to_string(), tx));
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => {
                    return answer
                        .map_err(|_| StoreError::Config("lease batch abandoned".into()))?
                        .map_err(StoreError::Config);
                }
                _slot = self.slot.lock() => {
                    let batch: Waiting = match self.waiting.lock() {
                        Ok(mut w) => std::mem::take(&mut *w),
                        Err(_) => return Err(StoreError::Config("lease queue poisoned".into())),
                    };
                    if batch.is_empty() {
                        // Ours went out with another holder's statement; its answer comes.
                        continue;
                    }
                    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
                    match run(ids).await {
                        Ok(done) => {
                            for ((_, tx), d) in batch.into_iter().zip(done) {
                                let _ = tx.send(Ok(d));
                            }
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            for (_, tx) in batch {
                                let _ = tx.send(Err(msg.clone()));
                            }
                        }
                    }
                }
            }
        }
    }
}
/// The leases of this engine process.
pub struct Leases {
    db: Db,
    holder: String,
    ttl: Duration,
    takes: Batch,
    gives: Batch,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Leases {
    /// Leases held as a fresh holder id (one per engine process).
    pub fn new(db: Db, ttl: Duration) -> Self {
        Self {
            db,
            holder: Uuid::now_v7().to_string(),
            ttl,
            takes: Batch::default(),
            gives: Batch::default(),
        }
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }

    /// Takes (or renews) the lease of `order_id`. `false` when another engine holds it and
    /// it has not expired.
    pub async fn acquire(&self, order_id: &str) -> Result<bool, StoreError> {
        self.takes
            .submit(order_id, |ids| self.acquire_all(ids))
            .await
    }

    /// One statement for every queued take; says which were granted.
    async fn acquire_all(&self, ids: Vec<String>) -> Result<Vec<bool>, StoreError> {
        let now = now_ms();
        let granted: Vec<String> = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(
                    "INSERT INTO checkout_leases (order_id, holder, expires_at)
                     SELECT DISTINCT unnest($1::text[]), $2, $3
                     ON CONFLICT (order_id) DO UPDATE SET holder = excluded.holder,
                         expires_at = excluded.expires_at
                     WHERE checkout_leases.holder = excluded.holder
                        OR checkout_leases.expires_at < $4
                     RETURNING order_id",
                )
                .bind(&ids)
                .bind(&self.holder)
                .bind(now + self.ttl_ms())
                .bind(now)
                .fetch_all(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                // `WHERE true` lets SQLite parse the upsert after a SELECT.
                sqlx::query_scalar(
                    "INSERT INTO checkout_leases (order_id, holder, expires_at)
                     SELECT DISTINCT value, ?, ? FROM json_each(?) WHERE true
                     ON CONFLICT (order_id) DO UPDATE SET holder = excluded.holder,
                         expires_at = excluded.expires_at
                     WHERE checkout_leases.holder = excluded.holder
                        OR checkout_leases.expires_at < ?
                     RETURNING order_id",
                )
                .bind(&self.holder)
                .bind(now + self.ttl_ms())
                .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
                .bind(now)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(ids.iter().map(|id| granted.contains(id)).collect())
    }

    /// Gives the lease of `order_id` back (a no-op if another engine took it over).
    pub async fn release(&self, order_id: &str) -> Result<(), StoreError> {
        self.gives
            .submit(order_id, |ids| self.release_all(ids))
            .await
            .map(|_| ())
    }

    /// One statement for every queued give-back.
    async fn release_all(&self, ids: Vec<String>) -> Result<Vec<bool>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query("DELETE FROM checkout_leases WHERE order_id = ANY($1) AND holder = $2")
                    .bind(&ids)
                    .bind(&self.holder)
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite(pool) => {
                sqlx::query(
                    "DELETE FROM checkout_leases
                      WHERE order_id IN (SELECT value FROM json_each(?)) AND holder = ?",
                )
                .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
                .bind(&self.holder)
                .execute(pool)
                .await?;
            }
        }
        Ok(vec![true; ids.len()])
    }

    /// Orders leased by any engine right now (expired leases excluded).
    pub async fn live(&self) -> Result<Vec<String>, StoreError> {
        let sql = self
            .db
            .sql("SELECT order_id FROM checkout_leases WHERE expires_at >= $1");
        Ok(on_db!(&self.db, pool => {
            sqlx::query_scalar(&sql).bind(now_ms()).fetch_all(pool).await?
        }))
    }

    /// Extends every lease this engine holds by the TTL. Returns how many.
    pub async fn renew_all(&self) -> Result<u64, StoreError> {
        let sql = self
            .db
            .sql("UPDATE checkout_leases SET expires_at = $1 WHERE holder = $2");
        let n = on_db!(&self.db, pool => {
            sqlx::query(&sql)
                .bind(now_ms() + self.ttl_ms())
                .bind(&self.holder)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n)
    }
}
