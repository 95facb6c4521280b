//! One run per checkout at a time, across engine processes. Before it touches a checkout
//! (start, resume, sweep, cancel compensation) an engine takes the order's lease: a row in
//! `checkout_leases` naming this engine as holder until `expires_at`. A lease held by another
//! engine and not yet expired is refused, so resumes and sweeps skip checkouts that a live
//! engine is running. Each engine renews all of its leases every [`Leases::ttl`] / 3 from one
//! task; a killed engine stops renewing and its leases lapse within the TTL.

use std::time::Duration;

use emporium_event_store::{on_db, Db, StoreError};
use uuid::Uuid;

/// The leases of this engine process.
pub struct Leases {
    db: Db,
    holder: String,
    ttl: Duration,
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
        let now = now_ms();
        let sql = self.db.sql(
            "INSERT INTO checkout_leases (order_id, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (order_id) DO UPDATE SET holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE checkout_leases.holder = excluded.holder OR checkout_leases.expires_at < $4",
        );
        let n = on_db!(&self.db, pool => {
            sqlx::query(&sql)
                .bind(order_id)
                .bind(&self.holder)
                .bind(now + self.ttl_ms())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Gives the lease of `order_id` back (a no-op if another engine took it over).
    pub async fn release(&self, order_id: &str) -> Result<(), StoreError> {
        let sql = self
            .db
            .sql("DELETE FROM checkout_leases WHERE order_id = $1 AND holder = $2");
        on_db!(&self.db, pool => {
            sqlx::query(&sql).bind(order_id).bind(&self.holder).execute(pool).await?.rows_affected()
        });
        Ok(())
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
