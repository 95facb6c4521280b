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
        let Some(order_id) = event.payload.order_id() else {
            return Ok(());
        };
        let sql = tx.sql(&format!(
            "INSERT INTO {} (order_id, position) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            table(INDEX, gen)
        ));
        crate::on_tx!(tx, c => {
            sqlx::query(&sql).bind(order_id.to_string()).bind(event.position).execute(&mut **c).await?.rows_affected()
        });
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
