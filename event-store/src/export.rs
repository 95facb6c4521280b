//! Streaming export of the global feed, for analysts: a whole range of positions (optionally
//! filtered by aggregate type, event type and recording time) read in pages of [`PAGE`]
//! positions (fixed ranges `(lo, hi]` of the dense feed, never OFFSET; the next ones read
//! ahead while one is sent), with no `serde_json::Value`
//! tree per row (the payload stays the stored JSON text, the metadata fields are picked out
//! by the database). A connection is held only while a page is read: a client that reads
//! slowly holds one page in memory and nothing in the database, so slow readers cannot
//! starve commands of connections (issue 11).
//!
//! # Which events an export sees
//! [`open`] first stamps feed positions (on Postgres, sequencer steps until one stamps less
//! than a full batch), then takes the head, and the statement reads `(after, min(upto,
//! head)]`. Positions, once visible, never change and nothing appears below them later, so
//! the export is exactly that closed range, however long it streams: events committed
//! meanwhile are beyond it, and [`Export::through`] is where the next export resumes
//! (`after = through`) when the stream ran to its end.
//!
//! # Errors
//! Failing to stamp or to start is an `Err` from [`open`]; a failure while rows stream (a
//! lost connection, an undecodable row) is an `Err` item of the stream, after which the
//! stream ends. It is never swallowed into a silently short export. So is an event that
//! cannot be brought to today's shape (see [`crate::decode`]): payloads stored at an older
//! version are exported upcast, with today's `event_version`.
//!
//! Pages are consistent with one another because the range is fixed when the export opens
//! and positions below the head never change.

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::decode::{self, RawFeedEvent};
use crate::store::{Db, Store};
use crate::StoreError;

/// Rows one sequencer step stamps at most (`feed::STAMP_BATCH`): a step that stamps fewer
/// has caught up with everything committed when it ran.
const STAMP_BATCH: u64 = 10_000;

/// Positions read per page (fewer rows when filters apply).
pub const PAGE: i64 = 2_000;
/// Pages read ahead of the one being sent.
const PREFETCH: usize = 2;

/// The Postgres export statement (`$1` after, `$2` through, `$3` aggregate type, `$4` event
/// type, `$5` from, `$6` to, `$7` limit; NULL = no filter), for benchmarks and EXPLAIN.
pub const POSTGRES_SQL: &str = include_str!("../sql/pg_export.sql");

/// Which events to export. The default is the whole feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Exclusive lower bound: only positions after this one (0 = from the start).
    pub after: i64,
    /// Inclusive upper bound on positions (`None` = up to the head when the export opens).
    pub upto: Option<i64>,
    /// Only events of this aggregate type (`Order`, `StockItem`, ...).
    pub aggregate_type: Option<String>,
    /// Only events of this event type (`OrderPlaced`, ...).
    pub event_type: Option<String>,
    /// Only events recorded at or after this instant (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this instant (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// At most this many events (`None` = the whole range).
    pub limit: Option<i64>,
}

impl EventFilter {
    /// The whole feed after `after`.
    pub fn after(after: i64) -> Self {
        Self {
            after,
            ..Self::default()
        }
    }

    /// Whether `event` passes this filter (positions, types and time; not `limit`). The same
    /// rule the database applies, for callers and tests that filter in memory.
    pub fn matches(
        &self,
        position: i64,
        aggregate_type: &str,
        event_type: &str,
        recorded_at: DateTime<Utc>,
    ) -> bool {
        position > self.after
            && self.upto.is_none_or(|u| position <= u)
            && self
                .aggregate_type
                .as_deref()
                .is_none_or(|t| t == aggregate_type)
            && self.event_type.as_deref().is_none_or(|t| t == event_type)
            && self.from.is_none_or(|f| recorded_at >= f)
            && self.to.is_none_or(|t| recorded_at < t)
    }
}

/// An export in progress: the events in feed order, and the range they come from.
pub struct Export {
    /// The last position of the range read (the head when the export opened, or `upto`).
    /// Unless `limit` cut the stream short, every matching event at or below it has been
    /// delivered once the stream ends, so the next export starts with `after = through`.
    pub through: i64,
    /// The matching events, in feed order. An `Err` item ends the stream.
    pub events: BoxStream<'static, Result<RawFeedEvent, StoreError>>,
}

/// Stamps the feed, fixes the range and starts streaming it (see the module docs).
pub async fn open(store: &Store, filter: &EventFilter) -> Result<Export, StoreError> {
    let feed = store.feed();
    // A step also returns 0 when another process holds the sequencer lock: that one is
    // stamping, and what it stamps before our statement starts is exported too.
    while feed.stamp().await? >= STAMP_BATCH {}
    let head = feed.head().await?;
    let through = filter.upto.map_or(head, |u| u.min(head));
    if filter.after >= through || filter.limit.is_some_and(|l| l <= 0) {
        return Ok(Export {
            through,
            events: stream::empty().boxed(),
        });
    }
    let upcasters = store.feed().upcasters().clone();
    // Positions are dense and fixed up to `through`, so the pages are fixed position ranges
    // known in advance: the next ones are read while this one is encoded and sent (at most
    // PREFETCH pages ahead, each holding a connection only while it is read).
    let after = filter.after;
    let pages = (through - after + PAGE - 1) / PAGE;
    let paging = Paging {
        db: store.db().clone(),
        filter: filter.clone(),
        upcasters,
    };
    let events = stream::iter(0..pages)
        .map(move |k| {
            let lo = after + k * PAGE;
            let hi = (lo + PAGE).min(through);
            let paging = paging.clone();
            async move { paging.page(lo, hi).await }
        })
        .buffered(PREFETCH)
        .map_ok(stream::iter)
        .try_flatten();
    let events = match filter.limit {
        Some(limit) => events.take(usize::try_from(limit).unwrap_or(0)).boxed(),
        None => events.boxed(),
    };
    Ok(Export {
        through,
        events: fuse_on_error(events),
    })
}

/// What every page of an export reads with.
#[derive(Clone)]
struct Paging {
    db: Db,
    filter: EventFilter,
    upcasters: crate::decode::Upcasters,
}

impl Paging {
    /// The matching events at positions `(lo, hi]`, upcast; a row that cannot be decoded is
    /// an `Err` in its place (the stream ends there).
    async fn page(
        &self,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<Result<RawFeedEvent, StoreError>>, StoreError> {
        let f = &self.filter;
        let limit: Option<i64> = None;
        let rows = match &self.db {
            Db::Postgres(pool) => sqlx::query(POSTGRES_SQL)
                .bind(lo)
                .bind(hi)
                .bind(f.aggregate_type.clone())
                .bind(f.event_type.clone())
                // timestamptz holds microseconds; round bounds up so that `>=` and `<` on
                // the stored value mean the same as on the exact bound.
                .bind(f.from.map(|t| ceil_to(t, 1_000)))
                .bind(f.to.map(|t| ceil_to(t, 1_000)))
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok(self.upcasters.upgrade(decode::row(row)?)?))
                .collect(),
            Db::Sqlite(pool) => sqlx::query(include_str!("../sql/sqlite_export.sql"))
                .bind(lo)
                .bind(hi)
                .bind(f.aggregate_type.clone())
                .bind(f.event_type.clone())
                .bind(f.from.map(sqlite_time))
                .bind(f.to.map(sqlite_time))
                .bind(-1_i64)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok(self.upcasters.upgrade(decode::row(row)?)?))
                .collect(),
        };
        Ok(rows)
    }
}

/// Ends the stream after its first `Err` item, so a consumer that keeps polling never reads
/// past a failure (a later row would otherwise look like the export went on normally).
fn fuse_on_error(
    events: BoxStream<'static, Result<RawFeedEvent, StoreError>>,
) -> BoxStream<'static, Result<RawFeedEvent, StoreError>> {
    events
        .scan(false, |failed, item| {
            if *failed {
                return futures::future::ready(None);
            }
            *failed = item.is_err();
            futures::future::ready(Some(item))
        })
        .boxed()
}

/// `t` rounded up to a multiple of `unit_nanos`.
fn ceil_to(t: DateTime<Utc>, unit_nanos: u32) -> DateTime<Utc> {
    let rem = t.timestamp_subsec_nanos() % unit_nanos;
    if rem == 0 {
        return t;
    }
    t.checked_add_signed(chrono::TimeDelta::nanoseconds(i64::from(unit_nanos - rem)))
        .unwrap_or(t)
}

/// A bound in the embedded store's `recorded_at` format (milliseconds, rounded up like
/// [`ceil_to`]), so text comparison is time comparison.
fn sqlite_time(t: DateTime<Utc>) -> String {
    ceil_to(t, 1_000_000)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_round_up_to_the_stored_precision() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            ceil_to(t, 1_000).to_rfc3339(),
            "2026-01-02T03:04:05.123457+00:00"
        );
        assert_eq!(sqlite_time(t), "2026-01-02T03:04:05.124Z");
        let exact = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sqlite_time(exact), "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn the_in_memory_rule_matches_the_documented_bounds() {
        let t = Utc::now();
        let f = EventFilter {
            after: 10,
            upto: Some(20),
            aggregate_type: Some("Order".into()),
            event_type: None,
            from: Some(t),
            to: Some(t + chrono::TimeDelta::seconds(1)),
            limit: None,
        };
        assert!(f.matches(11, "Order", "X", t));
        assert!(f.matches(20, "Order", "X", t));
        assert!(!f.matches(10, "Order", "X", t));
        assert!(!f.matches(21, "Order", "X", t));
        assert!(!f.matches(15, "Payment", "X", t));
        assert!(!f.matches(15, "Order", "X", t + chrono::TimeDelta::seconds(1)));
    }
}
