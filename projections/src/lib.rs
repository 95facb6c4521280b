//! Read models built from the global feed, exactly once: a projection's rows and its
//! checkpoint commit in one transaction, in the same database as the events.
//!
//! # Layout
//! - [`runner`]: the registry (live generation and position per projection), the runner
//!   that follows the feed (one active per projection), and blue/green rebuilds.
//! - [`catalog`]: products with price and availability, and catalog search.
//! - [`analytics`]: orders, revenue, top products, warehouses, funnel.
//! - [`timeline`]: which feed positions concern which order (auditors' timelines).
//! - [`search`]: the catalog's full-text index (tantivy), kept by each process from the feed.
//! - [`fulfilment`]: shipments, returns, net revenue, return rates, time to ship.
//! - [`notifications`]: the outbox of order notifications (NATS and merchant webhooks).
//!
//! Architecture invariant: projections match on the domain's event enums (decoded once, in
//! the event store) and only record facts carried by events (levels, totals and prices are
//! in the events); they never read a payload by key and never re-run business rules.

pub mod analytics;
pub mod catalog;
pub mod fulfilment;
pub mod notifications;
mod rows;
pub mod runner;
pub mod search;
pub mod timeline;

use std::sync::Arc;

use emporium_domain::Event;
use emporium_event_store::{Db, Envelope, StoreError};

pub use runner::{rebuild, Runner, RunnerStatus};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown projection {0}")]
    Unknown(String),
    #[error("search index: {0}")]
    Search(String),
}

impl From<sqlx::Error> for ProjectionError {
    fn from(e: sqlx::Error) -> Self {
        ProjectionError::Store(StoreError::Database(e))
    }
}

pub type Result<T> = std::result::Result<T, ProjectionError>;

/// A transaction on either backend.
pub enum Tx {
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    Lite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// Runs the same code on the transaction's connection: `on_tx!(tx, c => query.execute(&mut **c).await)`.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::Tx::Pg($c) => $body,
            $crate::Tx::Lite($c) => $body,
        }
    };
}

impl Tx {
    pub async fn begin(db: &Db) -> Result<Self> {
        Ok(match db {
            Db::Postgres(p) => Tx::Pg(emporium_event_store::store::begin_postgres(p).await?),
            Db::Sqlite(p) => Tx::Lite(p.begin().await?),
        })
    }

    pub async fn commit(self) -> Result<()> {
        on_tx!(self, c => c.commit().await?);
        Ok(())
    }

    /// `sql` with `$n` placeholders in this backend's dialect.
    pub fn sql(&self, sql: &str) -> String {
        match self {
            Tx::Pg(_) => sql.to_string(),
            Tx::Lite(_) => sql.replace('$', "?"),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Pg(_))
    }
}

/// A read model: its tables (one set per generation) and how an event changes them.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Registry name, also the CLI's name for it.
    fn name(&self) -> &'static str;
    /// Base table names with the columns that order a full dump (for comparisons).
    fn tables(&self) -> &'static [(&'static str, &'static str)];
    /// Statements creating the tables of generation `gen` on `db`'s backend.
    fn create_tables(&self, db: &Db, gen: i64) -> Vec<String>;
    /// Applies one domain event (decoded and upcast by the event store) inside the
    /// runner's transaction.
    async fn apply(&self, tx: &mut Tx, gen: i64, event: &Envelope<Event>) -> Result<()>;
    /// Applies a batch of consecutive events in the runner's transaction. The same end
    /// state as applying them one by one; a projection overrides it when it can write a
    /// batch with fewer statements (one insert for many rows, a total refreshed once).
    async fn apply_batch(&self, tx: &mut Tx, gen: i64, events: &[Envelope<Event>]) -> Result<()> {
        for event in events {
            self.apply(tx, gen, event).await?;
        }
        Ok(())
    }
}

/// `catalog_products` of generation 3 is `catalog_products_g3`.
pub fn table(base: &str, gen: i64) -> String {
    format!("{base}_g{gen}")
}

/// The projections the engine runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(catalog::Catalog),
        Arc::new(analytics::Analytics),
        Arc::new(timeline::Timeline),
        Arc::new(fulfilment::Fulfilment),
        Arc::new(notifications::Notifications),
    ]
}

pub fn by_name(name: &str) -> Result<Arc<dyn Projection>> {
    all()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| ProjectionError::Unknown(name.to_string()))
}

/// Every row of every table of a projection generation, as text lines in a fixed order:
/// what the crash and rebuild tests compare.
pub async fn dump(db: &Db, projection: &dyn Projection, gen: i64) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (base, order) in projection.tables() {
        let t = table(base, gen);
        let cols: Vec<String> = emporium_event_store::on_db!(db, pool => {
            let sql = match db {
                Db::Postgres(_) => format!(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_name = '{t}' ORDER BY ordinal_position"
                ),
                Db::Sqlite(_) => format!("SELECT name FROM pragma_table_info('{t}') ORDER BY cid"),
            };
            sqlx::query_scalar(&sql).fetch_all(pool).await?
        });
        if cols.is_empty() {
            // Not created yet (an engine starting its runners right now): no rows.
            continue;
        }
        let expr = cols
            .iter()
            .map(|c| format!("COALESCE(CAST({c} AS TEXT), '-')"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let sql = format!("SELECT '{base}|' || {expr} FROM {t} ORDER BY {order}");
        let rows: Vec<String> = emporium_event_store::on_db!(db, pool => {
            sqlx::query_scalar(&sql).fetch_all(pool).await?
        });
        lines.extend(rows);
    }
    Ok(lines)
}

/// Creates this crate's tables (the projection registry) on `db`.
pub async fn migrate(
    db: &emporium_event_store::Db,
) -> std::result::Result<(), emporium_event_store::StoreError> {
    emporium_event_store::store::apply_migrations(
        db,
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
    .await
}
