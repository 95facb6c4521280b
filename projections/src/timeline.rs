//! The order timeline index: which feed positions concern which order, across aggregates
//! (the order, its payment, stock reservations made for it, saga steps). The timeline itself
//! is read from the events table through this index, in global order.

use emporium_domain::Event;
use emporium_event_store::{on_db, Db, Envelope};

use crate::{table, Projection, Result, Tx};

pub struct Timeline;

pub const INDEX: &str = "order_timeline";

#[async_trait::async_trait]
impl Projection for Timeline {
    fn name(&self) -> &'static str {
        "timeline"
    }

    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        &[(INDEX, "order_id, position")]
    }

    fn create_tables(&self, _db: &Db, gen: i64) -> Vec<String> {
        let t = table(INDEX, gen);
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                order_id text NOT NULL,
                position bigint NOT NULL,
                PRIMARY KEY (order_id, position)
            )"
        )]
    }

    async fn apply(&self, tx: &mut Tx, gen: i64, event: &Envelope<Event>) -> Result<()> {
        self.apply_batch(tx, gen, std::slice::from_ref(event)).await
    }

    /// One insert for the whole batch (in chunks on SQLite, whose statements take a bounded
    /// number of parameters).
    async fn apply_batch(&self, tx: &mut Tx, gen: i64, events: &[Envelope<Event>]) -> Result<()> {
        let rows: Vec<(String, i64)> = events
            .iter()
            .filter_map(|e| Some((e.payload.order_id()?.to_string(), e.position)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let t = table(INDEX, gen);
        match tx {
            Tx::Pg(c) => {
                let (orders, positions): (Vec<String>, Vec<i64>) = rows.into_iter().unzip();
                sqlx::query(&format!(
                    "INSERT INTO {t} (order_id, position)
                     SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING"
                ))
                .bind(orders)
                .bind(positions)
                .execute(&mut **c)
                .await?;
            }
            Tx::Lite(c) => {
                for chunk in rows.chunks(400) {
                    let values = vec!["(?, ?)"; chunk.len()].join(", ");
                    let sql = format!(
                        "INSERT INTO {t} (order_id, position) VALUES {values} ON CONFLICT DO NOTHING"
                    );
                    let mut q = sqlx::query(&sql);
                    for (order, position) in chunk {
                        q = q.bind(order).bind(position);
                    }
                    q.execute(&mut **c).await?;
                }
            }
        }
        Ok(())
    }
}

/// The positions of every event concerning `order_id`, in global order.
pub async fn positions(db: &Db, gen: i64, order_id: &str) -> Result<Vec<i64>> {
    let sql = db
        .sql(&format!(
            "SELECT position FROM {} WHERE order_id = $1 ORDER BY position",
            table(INDEX, gen)
        ))
        .into_owned();
    let rows: Vec<i64> = on_db!(db, pool => {
        sqlx::query_scalar(&sql).bind(order_id).fetch_all(pool).await?
    });
    Ok(rows)
}

/// Indexes copies made by `emporium_event_store::seeding::copy_order_events` without
/// replaying them: copy `n` (1-based) of an order whose story is `per_copy` events has the
/// id `ids[n - 1]` and the positions `first + (n - 1) * per_copy` onward. Benchmarks only.
pub async fn index_copies(
    db: &Db,
    gen: i64,
    ids: &[String],
    first: i64,
    per_copy: i64,
) -> Result<()> {
    let Db::Postgres(pool) = db else {
        return Err(crate::ProjectionError::Unknown(
            "copies are indexed on Postgres only".into(),
        ));
    };
    sqlx::query(&format!(
        "INSERT INTO {} (order_id, position)
         SELECT c.id, $2 + (c.n - 1) * $3 + j
           FROM unnest($1::text[]) WITH ORDINALITY AS c(id, n), generate_series(0, $3 - 1) j",
        table(INDEX, gen)
    ))
    .bind(ids)
    .bind(first)
    .bind(per_copy)
    .execute(pool)
    .await?;
    Ok(())
}
