//! Every crate's migrations, in order: what `emporium migrate` and the engine's start run.
//! Each crate owns the migrations of its own tables (event-store: events and checkpoints;
//! gateway: API keys and idempotency; projections: the registry; sagas: the sandbox
//! provider's log); this only runs them, on either backend.

use emporium_event_store::{Db, Store, StoreError};

/// The gateway's own tables (API keys, idempotency records).
pub async fn gateway(db: &Db) -> Result<(), StoreError> {
    emporium_event_store::store::apply_migrations(
        db,
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
    .await
}

/// Every crate's tables, in dependency order.
pub async fn all(store: &Store) -> Result<(), StoreError> {
    store.migrate().await?;
    gateway(store.db()).await?;
    emporium_projections::migrate(store.db()).await?;
    emporium_sagas::migrate(store.db()).await?;
    Ok(())
}
