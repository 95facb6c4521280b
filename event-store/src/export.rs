//! Streaming export of the global feed, for analysts: a whole range of positions (optionally
//! filtered by aggregate type, event type and recording time) read in pages of [`PAGE`]
//! positions (fixed ranges `(lo, hi]` of the dense feed, never OFFSET; the next ones read
//! ahead while one is sent), with no `serde_json::Value`
//! tree per row (the payload stays the stored JSON text, the metadata fields are picked out
//! by the database). A connection is held only while a page is read: a client that reads
//! slowly holds one page in memory and nothing in the database, so slow readers cannot
//! starve commands of connections (issue 11).
//!
//! [`open`] streams owned events (NDJSON, CSV, the JSON page); [`open_pages`] streams the
//! same pages for a consumer that reads each row in place ([`ExportPage::view`]): the
//! Parquet encoder, which copies every field into its columns anyway and was held back by an
//! owned copy of each field and a second parse of each payload (docs/performance.md).
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

use uuid::Uuid;

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
    let pages = open_pages(store, filter).await?;
    let events = pages
        .pages
        .map_ok(|page| stream::iter(page.into_events()))
        .try_flatten()
        .boxed();
    Ok(Export {
        through: pages.through,
        events: fuse_on_error(events),
    })
}

/// An export in progress a page at a time: what [`open`] streams event by event, for a
/// consumer that reads each row in place ([`ExportPage::view`]) instead of taking an owned
/// event per row (the Parquet encoder: it copies every field into its columns anyway).
pub struct PagedExport {
    /// As [`Export::through`].
    pub through: i64,
    /// The pages, in feed order, `limit` already applied. An `Err` item ends the stream.
    pub pages: BoxStream<'static, Result<ExportPage, StoreError>>,
}

/// Stamps the feed, fixes the range and starts streaming it in pages (see the module docs).
pub async fn open_pages(store: &Store, filter: &EventFilter) -> Result<PagedExport, StoreError> {
    let feed = store.feed();
    // A step also returns 0 when another process holds the sequencer lock: that one is
    // stamping, and what it stamps before our statement starts is exported too.
    while feed.stamp().await? >= STAMP_BATCH {}
    let head = feed.head().await?;
    let through = filter.upto.map_or(head, |u| u.min(head));
    if filter.after >= through || filter.limit.is_some_and(|l| l <= 0) {
        return Ok(PagedExport {
            through,
            pages: stream::empty().boxed(),
        });
    }
    let upcasters = store.feed().upcasters().clone();
    // Positions are dense and fixed up to `through`, so the pages are fixed position ranges
    // known in advance: the next ones are read while this one is encoded and sent (at most
    // PREFETCH pages ahead, each holding a connection only while it is read).
    let after = filter.after;
    let count = (through - after + PAGE - 1) / PAGE;
    let paging = Paging {
        db: store.db().clone(),
        filter: filter.clone(),
        upcasters,
    };
    let pages = stream::iter(0..count)
        .map(move |k| {
            let lo = after + k * PAGE;
            let hi = (lo + PAGE).min(through);
            let paging = paging.clone();
            async move { paging.page(lo, hi).await }
        })
        .buffered(PREFETCH)
        .flat_map(|page| {
            stream::iter(match page {
                Ok(p) => p.split_failure(),
                Err(e) => vec![Err(e)],
            })
        });
    let pages = match filter.limit {
        Some(limit) => limit_pages(pages.boxed(), usize::try_from(limit).unwrap_or(0)),
        None => pages.boxed(),
    };
    Ok(PagedExport {
        through,
        pages: fuse_on_error(pages),
    })
}

/// `pages` cut after `limit` events in all.
fn limit_pages(
    pages: BoxStream<'static, Result<ExportPage, StoreError>>,
    limit: usize,
) -> BoxStream<'static, Result<ExportPage, StoreError>> {
    pages
        .scan(limit, |left, page| {
            if *left == 0 {
                return futures::future::ready(None);
            }
            let page = page.map(|mut p| {
                p.truncate(*left);
                *left -= p.len();
                p
            });
            futures::future::ready(Some(page))
        })
        .boxed()
}

/// One event of an [`ExportPage`], borrowed from the row it was read in: the same fields
/// as a [`RawFeedEvent`], the payload its stored JSON text.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    pub position: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a str,
    pub actor: &'a str,
    pub request_id: &'a str,
    pub correlation_id: &'a str,
    pub causation_id: &'a str,
}

impl<'a> EventView<'a> {
    fn of(e: &'a RawFeedEvent) -> Self {
        Self {
            position: e.position,
            event_id: e.event_id,
            recorded_at: e.recorded_at,
            aggregate_type: &e.aggregate_type,
            aggregate_id: &e.aggregate_id,
            sequence: e.sequence,
            event_type: &e.event_type,
            event_version: &e.event_version,
            payload: e.payload.get(),
            actor: &e.metadata.actor,
            request_id: &e.metadata.request_id,
            correlation_id: &e.metadata.correlation_id,
            causation_id: &e.metadata.causation_id,
        }
    }
}

/// One page of an export: on Postgres the rows as the database sent them (no owned copy of
/// each field, no second parse of the payload: it is `jsonb` output, valid JSON), except
/// events that had to change on the way out (upcast here, or replaced by the caller with
/// [`ExportPage::replace`], e.g. to hide erased personal data), which are held owned.
pub struct ExportPage {
    rows: Rows,
    /// Owned replacements, by index into `rows`, in index order.
    replaced: Vec<(usize, RawFeedEvent)>,
    /// Why the page ends early: the row after the last one could not be read. The stream
    /// yields the rows before it, then this error, then ends.
    failure: Option<StoreError>,
}

enum Rows {
    Postgres(Vec<sqlx::postgres::PgRow>),
    Events(Vec<RawFeedEvent>),
}

impl ExportPage {
    /// Events in this page.
    pub fn len(&self) -> usize {
        match &self.rows {
            Rows::Postgres(r) => r.len(),
            Rows::Events(e) => e.len(),
        }
    }

    /// Whether the page holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn truncate(&mut self, n: usize) {
        match &mut self.rows {
            Rows::Postgres(r) => r.truncate(n),
            Rows::Events(e) => e.truncate(n),
        }
        self.replaced.retain(|(i, _)| *i < n);
    }

    /// Event `i` (below [`ExportPage::len`]) as exported.
    pub fn view(&self, i: usize) -> Result<EventView<'_>, StoreError> {
        if let Ok(k) = self.replaced.binary_search_by_key(&i, |(j, _)| *j) {
            return Ok(EventView::of(&self.replaced[k].1));
        }
        match &self.rows {
            Rows::Postgres(rows) => {
                let row = rows
                    .get(i)
                    .ok_or_else(|| StoreError::Decode(format!("no row {i} in page")))?;
                pg_view(row)
            }
            Rows::Events(events) => events
                .get(i)
                .map(EventView::of)
                .ok_or_else(|| StoreError::Decode(format!("no event {i} in page"))),
        }
    }

    /// The event type of event `i`, read without the rest of its row (for a caller looking
    /// for the events it must change).
    pub fn event_type(&self, i: usize) -> Result<&str, StoreError> {
        match &self.rows {
            Rows::Postgres(rows)
                if self.replaced.binary_search_by_key(&i, |(j, _)| *j).is_err() =>
            {
                let row = rows
                    .get(i)
                    .ok_or_else(|| StoreError::Decode(format!("no row {i} in page")))?;
                pg_text(row, 5)
            }
            _ => self.view(i).map(|v| v.event_type),
        }
    }

    /// Event `i` as an owned event (for a caller that changes it, then [`replace`]s it).
    ///
    /// [`replace`]: ExportPage::replace
    pub fn event(&self, i: usize) -> Result<RawFeedEvent, StoreError> {
        if let Ok(k) = self.replaced.binary_search_by_key(&i, |(j, _)| *j) {
            return Ok(self.replaced[k].1.clone());
        }
        match &self.rows {
            Rows::Postgres(rows) => rows
                .get(i)
                .ok_or_else(|| StoreError::Decode(format!("no row {i} in page")))
                .and_then(decode::row),
            Rows::Events(events) => events
                .get(i)
                .cloned()
                .ok_or_else(|| StoreError::Decode(format!("no event {i} in page"))),
        }
    }

    /// Exports `event` in place of event `i`.
    pub fn replace(&mut self, i: usize, event: RawFeedEvent) {
        match self.replaced.binary_search_by_key(&i, |(j, _)| *j) {
            Ok(k) => self.replaced[k].1 = event,
            Err(k) => self.replaced.insert(k, (i, event)),
        }
    }

    /// The page as owned events, in order; the first that cannot be decoded is an `Err`.
    pub fn into_events(self) -> Vec<Result<RawFeedEvent, StoreError>> {
        let mut replaced = self.replaced.into_iter().peekable();
        let mut replacement = |i: usize| replaced.next_if(|(j, _)| *j == i).map(|(_, e)| e);
        match self.rows {
            Rows::Postgres(rows) => rows
                .iter()
                .enumerate()
                .map(|(i, row)| replacement(i).map_or_else(|| decode::row(row), Ok))
                .collect(),
            Rows::Events(events) => events
                .into_iter()
                .enumerate()
                .map(|(i, e)| Ok(replacement(i).unwrap_or(e)))
                .collect(),
        }
    }

    /// The page, then the error that cut it short, if any.
    fn split_failure(mut self) -> Vec<Result<ExportPage, StoreError>> {
        match self.failure.take() {
            Some(e) => vec![Ok(self), Err(e)],
            None => vec![Ok(self)],
        }
    }
}

/// A row of the export statement (`sql/pg_export.sql`), borrowed. The statement fixes
/// every column's type, so the per-column type check is skipped: it cost more than reading
/// the value.
fn pg_view(row: &sqlx::postgres::PgRow) -> Result<EventView<'_>, StoreError> {
    use sqlx::Row;
    Ok(EventView {
        position: row.try_get_unchecked(0)?,
        event_id: row.try_get_unchecked(1)?,
        aggregate_type: row.try_get_unchecked(2)?,
        aggregate_id: row.try_get_unchecked(3)?,
        sequence: row.try_get_unchecked(4)?,
        event_type: row.try_get_unchecked(5)?,
        event_version: row.try_get_unchecked(6)?,
        payload: row.try_get_unchecked(7)?,
        actor: row.try_get_unchecked(8)?,
        request_id: row.try_get_unchecked(9)?,
        correlation_id: row.try_get_unchecked(10)?,
        causation_id: row.try_get_unchecked(11)?,
        recorded_at: row.try_get_unchecked(12)?,
    })
}

/// Text column `i` of an export row (see [`pg_view`]).
fn pg_text(row: &sqlx::postgres::PgRow, i: usize) -> Result<&str, StoreError> {
    use sqlx::Row;
    Ok(row.try_get_unchecked(i)?)
}

/// What every page of an export reads with.
#[derive(Clone)]
struct Paging {
    db: Db,
    filter: EventFilter,
    upcasters: crate::decode::Upcasters,
}

impl Paging {
    /// The matching events at positions `(lo, hi]`, upcast (an event stored at an older
    /// version is held decoded and upcast; one that cannot be is an `Err`).
    async fn page(&self, lo: i64, hi: i64) -> Result<ExportPage, StoreError> {
        let f = &self.filter;
        let limit: Option<i64> = None;
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(POSTGRES_SQL)
                    .bind(lo)
                    .bind(hi)
                    .bind(f.aggregate_type.clone())
                    .bind(f.event_type.clone())
                    // timestamptz holds microseconds; round bounds up so that `>=` and `<`
                    // on the stored value mean the same as on the exact bound.
                    .bind(f.from.map(|t| ceil_to(t, 1_000)))
                    .bind(f.to.map(|t| ceil_to(t, 1_000)))
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                let mut rows = rows;
                let mut replaced = Vec::new();
                let mut failure = None;
                for (i, row) in rows.iter().enumerate() {
                    let upcast = (|| {
                        let (t, e, v) = (pg_text(row, 2)?, pg_text(row, 5)?, pg_text(row, 6)?);
                        if decode::current_version(t, e) == Some(v) {
                            return Ok(None);
                        }
                        Ok(Some(self.upcasters.upgrade(decode::row(row)?)?))
                    })();
                    match upcast {
                        Ok(None) => {}
                        Ok(Some(e)) => replaced.push((i, e)),
                        Err(e) => {
                            failure = Some((i, e));
                            break;
                        }
                    }
                }
                if let Some((i, _)) = &failure {
                    rows.truncate(*i);
                }
                Ok(ExportPage {
                    rows: Rows::Postgres(rows),
                    replaced,
                    failure: failure.map(|(_, e)| e),
                })
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(include_str!("../sql/sqlite_export.sql"))
                    .bind(lo)
                    .bind(hi)
                    .bind(f.aggregate_type.clone())
                    .bind(f.event_type.clone())
                    .bind(f.from.map(sqlite_time))
                    .bind(f.to.map(sqlite_time))
                    .bind(-1_i64)
                    .fetch_all(pool)
                    .await?;
                let mut events = Vec::with_capacity(rows.len());
                let mut failure = None;
                for row in &rows {
                    match decode::row(row).and_then(|e| Ok(self.upcasters.upgrade(e)?)) {
                        Ok(e) => events.push(e),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                Ok(ExportPage {
                    rows: Rows::Events(events),
                    replaced: Vec::new(),
                    failure,
                })
            }
        }
    }
}

/// Ends the stream after its first `Err` item, so a consumer that keeps polling never reads
/// past a failure (a later row would otherwise look like the export went on normally).
fn fuse_on_error<T: Send + 'static>(
    items: BoxStream<'static, Result<T, StoreError>>,
) -> BoxStream<'static, Result<T, StoreError>> {
    items
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
