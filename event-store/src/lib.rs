//! Emporium's event store: where events are appended, loaded and read back in one order.
//!
//! # Layout
//! - [`store`]: open Postgres or the embedded SQLite store, migrate, execute commands with
//!   bounded conflict retries, load aggregates.
//! - [`repository`]: postgres-es / sqlite-es behind one `PersistedEventRepository`, with our
//!   own single-statement append that stamps an `event_id` on every event.
//! - [`group_commit`]: appends that arrive together written in one statement/transaction.
//! - [`decode`]: the one row decoder, the typed [`Envelope`], and the upcasters that turn
//!   stored events of older versions into today's domain events.
//! - [`queries`]: named reads of the events table for the other crates (the saga's
//!   unfinished checkouts, aggregate id listings, ...): no other crate writes SQL on it.
//! - [`feed`]: the global feed, a gap-free commit-order sequence over all events, read by
//!   cursor or followed live.
//! - [`export`]: streams a filtered range of the feed in one query, for analysts' exports.
//! - [`relay`]: publishes the feed to NATS JetStream (one active relay per database).
//! - [`bus`]: subscribers for workers: a durable JetStream pull consumer, or the in-process
//!   bus over the feed in embedded mode, behind one trait.
//! - [`nats`]: subject, stream and consumer names derived from one prefix.
//! - [`metadata`]: actor, request, correlation and causation ids carried by every event.
//! - [`seeding`]: bulk writes that fill the events table for benchmarks.
//! - [`testing`]: throwaway Postgres databases and SQLite files for tests.
//!
//! Architecture invariant: the store is generic over `cqrs_es::Aggregate` and runs no
//! business rule; it knows the domain's event *schemas* (names, versions, upcasters) so that
//! every consumer gets typed events, and the feed contract is the same on both backends.

pub mod bus;
pub mod decode;
pub mod export;
pub mod feed;
pub mod group_commit;
pub mod metadata;
pub mod nats;
pub mod queries;
pub mod relay;
pub mod repository;
pub mod seeding;
pub mod store;
pub mod testing;

pub use decode::{DecodeError, Envelope, FeedEvent, RawFeedEvent, Upcaster, Upcasters};
pub use feed::{Feed, Subscription};
pub use metadata::EventMetadata;
pub use repository::EventRepository;
pub use store::{CommandError, Db, Store, StoreConfig};

/// Runs the same code against whichever pool `db` holds: `on_db!(db, pool => query.fetch_all(pool).await)`.
/// Each arm is type-checked on its own, so binds and row decoding must work on both backends.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Postgres($pool) => $body,
            $crate::Db::Sqlite($pool) => $body,
        }
    };
}

/// Failures of the storage layer itself (not of a command's business rules).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("could not decode a stored event: {0}")]
    Decode(String),
    #[error("could not load an aggregate: {0}")]
    Load(String),
    #[error("configuration: {0}")]
    Config(String),
}
