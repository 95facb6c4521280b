//! Emporium's event store: where events are appended, loaded and read back in one order.
//!
//! # Layout
//! - [`audit`]: seals chained per stream, signed Merkle digests, verification and
//!   inclusion proofs (tamper evidence).
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
//! - [`personal`]: per-customer keys that seal personal data and erase it (crypto-shredding).
//! - [`nats`]: subject, stream and consumer names derived from one prefix.
//! - [`metadata`]: actor, request, correlation and causation ids carried by every event.
//! - [`seeding`]: bulk writes that fill the events table for benchmarks.
//! - [`testing`]: throwaway Postgres databases and SQLite files for tests.
//!
//! Architecture invariant: the store is generic over `cqrs_es::Aggregate` and runs no
//! business rule; it knows the domain's event *schemas* (names, versions, upcasters) so that
//! every consumer gets typed events, and the feed contract is the same on both backends.

pub mod audit;
pub mod bus;
pub mod decode;
pub mod export;
pub mod feed;
pub mod group_commit;
pub mod metadata;
pub mod nats;
pub mod personal;
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
pub use store::{AsOf, CommandError, Db, Store, StoreConfig};

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
    /// The database could not be reached (or refused for now); retry later.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("configuration: {0}")]
    Config(String),
    /// The log no longer matches what was signed: someone changed it (see `emporium verify`).
    #[error("the log was tampered with: {0}")]
    Tampered(String),
}

/// Whether a database error is the database being away or overloaded (retry later) rather
/// than a defect: lost or refused connections, an exhausted pool, a server shutting down,
/// starting up or out of connections. Commands that fail this way answer 503, not 500.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01-57P05: admin/crash shutdown, cannot connect
            // now, idle session timeout; 53: insufficient resources (too many connections).
            c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
        }),
        _ => false,
    }
}

/// [`is_transient`] for an error that may wrap a `sqlx::Error` anywhere in its source chain
/// (the wrapped cqrs-es repositories box theirs).
pub fn is_transient_dyn(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(s) = e.downcast_ref::<sqlx::Error>() {
            if is_transient(s) {
                return true;
            }
        }
        next = e.source();
    }
    false
}
