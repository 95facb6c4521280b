//! Named reads of the events table for the other crates. The table belongs to this crate:
//! a question another crate asks of it (which checkouts are unfinished, which warehouses
//! exist) gets a method here instead of a query of its own, so a change of the table's
//! layout is made in one crate.

use cqrs_es::Aggregate;
use emporium_domain::{Checkout, EventSchema, Order};

use crate::decode::{self, Envelope};
use crate::store::{Db, Store};
use crate::StoreError;

/// The checkout events that end a checkout's run.
const CHECKOUT_ENDS: [&str; 3] = ["CheckoutCompleted", "CheckoutFailed", "CheckoutCompensated"];

impl Store {
    /// Ids of every aggregate of type `A`, sorted (small sets only: warehouses, say).
    pub async fn aggregate_ids<A: Aggregate>(&self) -> Result<Vec<String>, StoreError> {
        let sql = self.db().sql(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 \
             ORDER BY aggregate_id",
        );
        let ids = crate::on_db!(self.db(), pool => {
            sqlx::query_scalar(&sql).bind(A::TYPE).fetch_all(pool).await?
        });
        Ok(ids)
    }

    /// Number of stored events (tests and health output).
    pub async fn event_count(&self) -> Result<i64, StoreError> {
        let n = crate::on_db!(self.db(), pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await?
        });
        Ok(n)
    }

    /// Orders whose checkout started and has not ended (completed or failed).
    pub async fn unfinished_checkouts(&self) -> Result<Vec<String>, StoreError> {
        debug_assert!(CHECKOUT_ENDS
            .iter()
            .all(|t| <Checkout as Aggregate>::Event::current_version(t).is_some()));
        let sql = self.db().sql(
            "SELECT s.aggregate_id FROM events s
             WHERE s.aggregate_type = $1 AND s.sequence = 1
               AND NOT EXISTS (SELECT 1 FROM events t WHERE t.aggregate_type = $1
                   AND t.aggregate_id = s.aggregate_id AND t.event_type IN ($2, $3, $4))",
        );
        let ids = crate::on_db!(self.db(), pool => {
            sqlx::query_scalar(&sql)
                .bind(Checkout::TYPE)
                .bind(CHECKOUT_ENDS[0])
                .bind(CHECKOUT_ENDS[1])
                .bind(CHECKOUT_ENDS[2])
                .fetch_all(pool)
                .await?
        });
        Ok(ids)
    }

    /// Orders placed (and nothing since) whose checkout never started, placed at least
    /// `min_age` ago: their delivery died with a process, or was dead-lettered, before the
    /// saga recorded the start.
    pub async fn orders_without_checkout(
        &self,
        min_age: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        let cutoff = chrono::Utc::now()
            - chrono::TimeDelta::from_std(min_age).unwrap_or(chrono::TimeDelta::zero());
        let sql = self.db().sql(
            "SELECT o.aggregate_id FROM events o
             WHERE o.aggregate_type = $1 AND o.sequence = 1 AND o.recorded_at <= $3
               AND NOT EXISTS (SELECT 1 FROM events t WHERE t.aggregate_type = $1
                   AND t.aggregate_id = o.aggregate_id AND t.sequence = 2)
               AND NOT EXISTS (SELECT 1 FROM events c WHERE c.aggregate_type = $2
                   AND c.aggregate_id = o.aggregate_id)",
        );
        let ids = match self.db() {
            Db::Postgres(pool) => {
                sqlx::query_scalar(&sql)
                    .bind(Order::TYPE)
                    .bind(Checkout::TYPE)
                    .bind(cutoff)
                    .fetch_all(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar(&sql)
                    .bind(Order::TYPE)
                    .bind(Checkout::TYPE)
                    .bind(cutoff.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(ids)
    }

    /// Orders cancelled whose compensation (stock and payment given back) is not recorded.
    pub async fn cancelled_without_compensation(&self) -> Result<Vec<String>, StoreError> {
        let sql = self.db().sql(
            "SELECT DISTINCT o.aggregate_id FROM events o
             WHERE o.aggregate_type = $1 AND o.event_type = $2
               AND NOT EXISTS (SELECT 1 FROM events c WHERE c.aggregate_type = $3
                   AND c.aggregate_id = o.aggregate_id AND c.event_type = $4)",
        );
        let ids = crate::on_db!(self.db(), pool => {
            sqlx::query_scalar(&sql)
                .bind(Order::TYPE)
                .bind("OrderCancelled")
                .bind(Checkout::TYPE)
                .bind("CheckoutCompensated")
                .fetch_all(pool)
                .await?
        });
        Ok(ids)
    }

    /// The first event of aggregate `id` of type `A`, typed and upcast, with its metadata
    /// (an order's `OrderPlaced`: the flow's correlation id and the saga's first cause).
    /// Its `position` is 0 while the sequencer has not stamped it yet.
    pub async fn first_event<A>(&self, id: &str) -> Result<Option<Envelope<A::Event>>, StoreError>
    where
        A: Aggregate,
        A::Event: EventSchema,
    {
        const PG: &str = concat!(
            "SELECT ",
            crate::pg_event_columns!(),
            " FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1"
        );
        const LITE: &str = concat!(
            "SELECT ",
            crate::sqlite_event_columns!(),
            " FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND sequence = 1"
        );
        let stored: Option<crate::RawFeedEvent> = match self.db() {
            Db::Postgres(pool) => {
                let row = sqlx::query(PG)
                    .bind(A::TYPE)
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(decode::row).transpose()?
            }
            Db::Sqlite(pool) => {
                let row = sqlx::query(LITE)
                    .bind(A::TYPE)
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(decode::row).transpose()?
            }
        };
        stored
            .map(|e| {
                self.upcasters()
                    .decode::<A, _>(&e)
                    .map_err(StoreError::from)
            })
            .transpose()
    }
}
