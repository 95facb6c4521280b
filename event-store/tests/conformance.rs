//! One conformance suite for both event-store backends: every test runs against a fresh
//! Postgres database and a fresh embedded SQLite store, and must pass on both.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use emporium_event_store::testing::{TestDataDir, TestDatabase};
use emporium_event_store::{CommandError, Db, EventMetadata, FeedEvent, Store};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// A minimal aggregate: the suite tests storage, not business rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counter {
    total: u64,
}

#[derive(Debug, Clone)]
enum CounterCommand {
    Increment(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Incremented { by: u64, total: u64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Incremented".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum CounterError {
    #[error("increments must be between 1 and 100")]
    OutOfRange,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CounterCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        let CounterCommand::Increment(by) = command;
        if by == 0 || by > 100 {
            return Err(CounterError::OutOfRange);
        }
        // Two events per command when asked for more than 50, to exercise multi-row appends.
        if by > 50 {
            let half = by / 2;
            sink.write(
                CounterEvent::Incremented {
                    by: half,
                    total: self.total + half,
                },
                self,
            )
            .await;
            let rest = by - half;
            sink.write(
                CounterEvent::Incremented {
                    by: rest,
                    total: self.total + rest,
                },
                self,
            )
            .await;
        } else {
            sink.write(
                CounterEvent::Incremented {
                    by,
                    total: self.total + by,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CounterEvent) {
        let CounterEvent::Incremented { total, .. } = event;
        self.total = total;
    }
}

/// Owns the throwaway database so it lives as long as the test.
#[allow(dead_code)]
enum Backend {
    Postgres(TestDatabase),
    Sqlite(TestDataDir),
}

async fn backend(kind: &str) -> (Backend, Store) {
    match kind {
        "postgres" => {
            let db = TestDatabase::create().await;
            let store = db.store(12).await;
            (Backend::Postgres(db), store)
        }
        _ => {
            let dir = TestDataDir::create();
            let store = dir.store(12).await;
            (Backend::Sqlite(dir), store)
        }
    }
}

macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name("postgres").await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name("sqlite").await;
            }
        }
    };
}

/// Waits until the feed shows `expected` events: on Postgres an unrelated write
/// transaction anywhere on the server may briefly hold the commit horizon back.
async fn feed_with(store: &Store, expected: i64) -> Vec<FeedEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = store.feed().read_after(0, 10_000).await.unwrap();
        if events.len() as i64 >= expected || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn meta(actor: &str) -> EventMetadata {
    EventMetadata::for_request(actor, Uuid::new_v4().to_string())
}

on_both_backends!(appended_events_load_back_with_ids_and_metadata);
async fn appended_events_load_back_with_ids_and_metadata(kind: &str) {
    let (_b, store) = backend(kind).await;
    let m = meta("key_test")
        .caused_by("cause-1")
        .correlated_with("flow-1");
    store
        .execute::<Counter>("c-1", CounterCommand::Increment(5), &m)
        .await
        .unwrap();
    store
        .execute::<Counter>("c-1", CounterCommand::Increment(80), &m)
        .await
        .unwrap();
    let (counter, version) = store.load::<Counter>("c-1").await.unwrap();
    assert_eq!(counter.total, 85);
    assert_eq!(version, 3, "one event, then two in one command");

    let events = feed_with(&store, 3).await;
    assert_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 3, "every event has its own id");
    for e in &events {
        assert_eq!(e.metadata, m);
        assert_eq!(e.aggregate_type, "Counter");
        assert_eq!(e.event_type, "Incremented");
        assert_eq!(e.event_version, "1.0");
        assert!((chrono::Utc::now() - e.recorded_at).num_seconds().abs() < 60);
    }
    assert_eq!(events[2].payload["Incremented"]["total"], 85);
}

on_both_backends!(a_rejected_command_writes_nothing);
async fn a_rejected_command_writes_nothing(kind: &str) {
    let (_b, store) = backend(kind).await;
    let err = store
        .execute::<Counter>("c-1", CounterCommand::Increment(0), &meta("k"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CommandError::Rejected(CounterError::OutOfRange)
    ));
    assert_eq!(store.event_count().await.unwrap(), 0);
    assert_eq!(store.feed().head().await.unwrap(), 0);
}

on_both_backends!(concurrent_writers_on_one_aggregate_all_land_through_retries);
async fn concurrent_writers_on_one_aggregate_all_land_through_retries(kind: &str) {
    let (_b, store) = backend(kind).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .execute::<Counter>("hot", CounterCommand::Increment(1), &meta("k"))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            // Bounded retries may give up under extreme contention; that must be a clean
            // Conflict, never a database error, and must not have written anything.
            Err(CommandError::Conflict) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let (counter, version) = store.load::<Counter>("hot").await.unwrap();
    assert_eq!(counter.total, ok);
    assert_eq!(version as u64, ok);
    assert!(
        ok >= 12,
        "retries should let most writers through, got {ok}"
    );
}

on_both_backends!(reading_after_a_cursor_pages_through_the_log);
async fn reading_after_a_cursor_pages_through_the_log(kind: &str) {
    let (_b, store) = backend(kind).await;
    for i in 0..25 {
        store
            .execute::<Counter>(
                &format!("c-{}", i % 5),
                CounterCommand::Increment(1),
                &meta("k"),
            )
            .await
            .unwrap();
    }
    assert_eq!(feed_with(&store, 25).await.len(), 25);
    assert_eq!(store.feed().head().await.unwrap(), 25);
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.feed().read_after(cursor, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().unwrap().position;
        seen.extend(page);
    }
    assert_eq!(
        seen.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<_>>()
    );
}

on_both_backends!(a_subscription_catches_up_then_follows_live_appends);
async fn a_subscription_catches_up_then_follows_live_appends(kind: &str) {
    let (_b, store) = backend(kind).await;
    for _ in 0..3 {
        store
            .execute::<Counter>("c", CounterCommand::Increment(1), &meta("k"))
            .await
            .unwrap();
    }
    let mut sub = store.feed().subscribe(0);
    // A batch may stop short while another transaction on the server holds the horizon;
    // the rest follows in later batches.
    let mut first = Vec::new();
    while first.len() < 3 {
        first.extend(sub.next_batch().await.unwrap());
    }
    assert_eq!(first.len(), 3);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store
                .execute::<Counter>("c", CounterCommand::Increment(2), &meta("k"))
                .await
                .unwrap();
        })
    };
    let next = tokio::time::timeout(Duration::from_secs(10), sub.next_batch())
        .await
        .expect("the live event arrives")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].position, 4);
    assert_eq!(sub.cursor(), 4);
}

/// How a test writer puts events into the Postgres log.
#[derive(Clone, Copy)]
enum Insert {
    /// A plain INSERT with no feed position: the horizon sequencer stamps it later
    /// (COPY seeding and rows of older engine versions arrive this way).
    Unstamped,
    /// Through `emporium_append`, the engine's append path, which stamps at insert.
    Stamped,
}

/// Inserts `n` events for `aggregate_id` from `first_seq` inside one transaction and
/// commits or rolls back. Returns the ids of the events written.
async fn append_in_tx(
    db: &Db,
    aggregate_id: &str,
    first_seq: i64,
    n: i64,
    commit: bool,
    hold: Duration,
    how: Insert,
) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let payload = serde_json::json!({"Incremented": {"by": 1, "total": 0}});
    let metadata = serde_json::to_value(meta("writer").to_map()).unwrap();
    match db {
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            match how {
                Insert::Stamped => {
                    let k = ids.len();
                    sqlx::query("SELECT emporium_append($1, $2, $3, $4, $5, $6, $7, $8)")
                        .bind(vec!["Counter"; k])
                        .bind(vec![aggregate_id; k])
                        .bind((0..n).map(|i| first_seq + i).collect::<Vec<i64>>())
                        .bind(vec!["Incremented"; k])
                        .bind(vec!["1.0"; k])
                        .bind(vec![&payload; k])
                        .bind(vec![&metadata; k])
                        .bind(&ids)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                Insert::Unstamped => {
                    for (i, id) in ids.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO events (aggregate_type, aggregate_id, sequence, \
                             event_type, event_version, payload, metadata, event_id) \
                             VALUES ('Counter', $1, $2, 'Incremented', '1.0', $3, $4, $5)",
                        )
                        .bind(aggregate_id)
                        .bind(first_seq + i as i64)
                        .bind(&payload)
                        .bind(&metadata)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    }
                }
            }
            tokio::time::sleep(hold).await;
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
        }
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            // IMMEDIATE takes the write lock up front; a deferred transaction that upgrades
            // later can fail with SQLITE_BUSY instead of waiting.
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap();
            for (i, id) in ids.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, event_id) \
                     VALUES ('Counter', ?1, ?2, 'Incremented', '1.0', ?3, ?4, ?5)",
                )
                .bind(aggregate_id)
                .bind(first_seq + i as i64)
                .bind(payload.to_string())
                .bind(metadata.to_string())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await
                .unwrap();
            }
            tokio::time::sleep(hold).await;
            let end = if commit { "COMMIT" } else { "ROLLBACK" };
            sqlx::query(end).execute(&mut *conn).await.unwrap();
        }
    }
    if commit {
        ids
    } else {
        Vec::new()
    }
}

on_both_backends!(
    the_feed_never_skips_or_repeats_under_concurrency_rollbacks_and_a_slow_transaction
);
async fn the_feed_never_skips_or_repeats_under_concurrency_rollbacks_and_a_slow_transaction(
    kind: &str,
) {
    const TARGET: usize = 20_000;
    const WRITERS: usize = 8;
    let (_b, store) = backend(kind).await;
    let db = store.db().clone();
    let committed: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    let committed_count = Arc::new(AtomicUsize::new(0));
    let rolled_back = Arc::new(AtomicUsize::new(0));

    // The reader tails the feed from the start for the whole run.
    let reader = {
        let feed = store.feed().clone();
        tokio::spawn(async move {
            let mut sub = feed.subscribe(0).with_batch_size(500);
            let mut seen: Vec<FeedEvent> = Vec::new();
            loop {
                let batch = tokio::time::timeout(Duration::from_secs(60), sub.next_batch())
                    .await
                    .expect("the feed keeps moving")
                    .unwrap();
                seen.extend(batch);
                if seen.len() > TARGET {
                    // Give a late duplicate the chance to show up before stopping.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let more = feed.read_after(sub.cursor(), 1000).await.unwrap();
                    seen.extend(more);
                    return seen;
                }
            }
        })
    };

    // One transaction takes a low position early and commits only after 3 s.
    let slow = {
        let db = db.clone();
        tokio::spawn(async move {
            append_in_tx(
                &db,
                "slow",
                1,
                1,
                true,
                Duration::from_secs(3),
                Insert::Unstamped,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            let committed = committed.clone();
            let committed_count = committed_count.clone();
            let rolled_back = rolled_back.clone();
            tokio::spawn(async move {
                let mut next_seq: HashMap<String, i64> = HashMap::new();
                let mut written = 0usize;
                let mut i = 0u64;
                while written < TARGET / WRITERS {
                    i += 1;
                    let agg = format!("w{w}-{}", i % 50);
                    let seq = *next_seq.get(&agg).unwrap_or(&1);
                    let n = (1 + i % 3).min((TARGET / WRITERS - written) as u64) as i64;
                    let commit = i % 10 != 7; // ~10% roll back
                                              // Half the writers go through the engine's stamping append, half
                                              // leave the stamp to the horizon sequencer: both share one order.
                    let how = if w % 2 == 0 {
                        Insert::Stamped
                    } else {
                        Insert::Unstamped
                    };
                    let ids = append_in_tx(&db, &agg, seq, n, commit, Duration::ZERO, how).await;
                    if commit {
                        next_seq.insert(agg, seq + n);
                        written += ids.len();
                        committed_count.fetch_add(ids.len(), Ordering::SeqCst);
                        committed.lock().unwrap().extend(ids);
                    } else {
                        rolled_back.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let slow_ids = slow.await.unwrap();
    committed_count.fetch_add(1, Ordering::SeqCst);
    committed.lock().unwrap().extend(slow_ids.iter().copied());
    assert!(
        rolled_back.load(Ordering::SeqCst) > 500,
        "rollbacks happened"
    );

    let seen = reader.await.unwrap();
    let committed = committed.lock().unwrap().clone();
    assert_eq!(committed.len(), TARGET + 1);
    assert_eq!(seen.len(), TARGET + 1, "every committed event exactly once");
    let seen_ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event delivered twice");
    assert_eq!(seen_ids, committed, "no rolled-back event, no missing one");
    assert!(
        seen_ids.contains(&slow_ids[0]),
        "the slow transaction's event"
    );
    assert_eq!(
        seen.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=(TARGET as i64 + 1)).collect::<Vec<_>>(),
        "positions are gap-free and increasing"
    );
    let mut last_seq: HashMap<&str, i64> = HashMap::new();
    for e in &seen {
        let prev = last_seq.insert(&e.aggregate_id, e.sequence).unwrap_or(0);
        assert_eq!(
            e.sequence,
            prev + 1,
            "{}'s events in sequence order",
            e.aggregate_id
        );
    }

    // A second read from the start yields the identical sequence.
    let mut again = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.feed().read_after(cursor, 5000).await.unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().unwrap().position;
        again.extend(page);
    }
    assert_eq!(again, seen);
}

fn counter_event(id: &str, sequence: usize, total: u64) -> SerializedEvent {
    SerializedEvent::new(
        id.to_string(),
        sequence,
        "Counter".to_string(),
        "Incremented".to_string(),
        "1.0".to_string(),
        serde_json::json!({ "Incremented": { "by": 1, "total": total } }),
        serde_json::json!({}),
    )
}

on_both_backends!(appends_that_arrive_together_share_a_write_and_a_stale_one_fails_alone);
/// Group commit: 32 appends released at once are written in fewer writes than commands,
/// and in a batch where one append is stale (its sequence already taken, as by another
/// process), exactly that one is refused and every other one is written.
async fn appends_that_arrive_together_share_a_write_and_a_stale_one_fails_alone(kind: &str) {
    let (_b, store) = backend(kind).await;
    store
        .execute::<Counter>("taken", CounterCommand::Increment(1), &meta("k"))
        .await
        .unwrap();
    let mut written = 0u64;
    for round in 0..30 {
        let barrier = Arc::new(tokio::sync::Barrier::new(33));
        let tasks: Vec<_> = (0..33)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    // Task 0 appends sequence 1 of "taken" again: a stale append.
                    let (id, total) = if i == 0 {
                        ("taken".to_string(), 2)
                    } else {
                        (format!("r{round}-{i}"), 1)
                    };
                    let events = vec![counter_event(&id, 1, total), counter_event(&id, 2, total)];
                    barrier.wait().await;
                    (
                        i,
                        store.repository().persist::<Counter>(&events, None).await,
                    )
                })
            })
            .collect();
        for t in tasks {
            let (i, result) = t.await.unwrap();
            if i == 0 {
                assert!(
                    matches!(result, Err(PersistenceError::OptimisticLockError)),
                    "the stale append must be refused: {result:?}"
                );
            } else {
                result.unwrap();
                written += 2;
            }
        }
        if store.repository().group_commit_stats().mixed > 0 {
            break;
        }
    }
    let stats = store.repository().group_commit_stats();
    assert!(
        stats.mixed > 0,
        "a stale append never shared a batch with others: {stats:?}"
    );
    assert!(
        stats.batches < stats.commands,
        "appends arriving together were not batched: {stats:?}"
    );
    assert_eq!(store.event_count().await.unwrap() as u64, written + 1);
    let (taken, version) = store.load::<Counter>("taken").await.unwrap();
    assert_eq!(
        (taken.total, version),
        (1, 1),
        "the stale append left no trace"
    );
}

/// The group-commit writers keep their connection between batches; closing the pool (a
/// shutdown, a benchmark between phases) still closes every connection while the store
/// lives, and an append after the close is refused instead of using a kept connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_takes_back_the_writers_connections() {
    let db = TestDatabase::create().await;
    let store = db.store(4).await;
    for i in 0..20 {
        store
            .execute::<Counter>(&format!("c{i}"), CounterCommand::Increment(1), &meta("k"))
            .await
            .unwrap();
    }
    let Db::Postgres(pool) = store.db().clone() else {
        panic!("a Postgres store");
    };
    assert!(pool.size() > pool.num_idle() as u32, "a writer keeps one");
    tokio::time::timeout(Duration::from_secs(10), pool.close())
        .await
        .expect("the pool closes");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pool.size() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections still open after the close",
            pool.size()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = store
        .repository()
        .persist::<Counter>(&[counter_event("late", 1, 1)], None)
        .await;
    assert!(after.is_err(), "{after:?}");
}

/// Transactions opened with `begin_postgres` and abandoned at any point (the caller
/// cancelled while `BEGIN` is on the wire, or dropping the open transaction) never leave
/// the pool's connection inside a transaction: the next autocommit statement on it runs on
/// its own, and its write commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_cancelled_at_any_point_leaves_no_open_transaction_in_the_pool() {
    let db = TestDatabase::create().await;
    let pool = emporium_event_store::store::connect_postgres(db.url(), 1)
        .await
        .unwrap();
    Store::from_db(Db::Postgres(pool.clone()))
        .migrate()
        .await
        .unwrap();
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let (mut cancelled, mut opened) = (0, 0);
    for k in 0..400u64 {
        // Timeouts from 0 to ~1 ms land before, during and after the `BEGIN` round trip.
        let begun = tokio::time::timeout(
            std::time::Duration::from_micros((k * 37) % 1_100),
            emporium_event_store::store::begin_postgres(&pool),
        )
        .await;
        match begun {
            Err(_) => cancelled += 1,
            Ok(tx) => {
                let mut tx = tx.unwrap();
                sqlx::query(
                    "INSERT INTO relay_checkpoints (name, position, updated_at) \
                     VALUES ('dropped', 1, 0) ON CONFLICT DO NOTHING",
                )
                .execute(&mut *tx)
                .await
                .unwrap();
                opened += 1;
                // Dropped without commit.
            }
        }
        // Written on the pool's one connection and looked for from another: a write made
        // inside a left-open transaction would not be seen.
        sqlx::query("INSERT INTO relay_checkpoints (name, position, updated_at) VALUES ($1, 1, 0)")
            .bind(format!("probe-{k}"))
            .execute(&pool)
            .await
            .unwrap();
        let seen: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM relay_checkpoints WHERE name = $1")
                .bind(format!("probe-{k}"))
                .fetch_one(&mut other)
                .await
                .unwrap();
        assert_eq!(
            seen, 1,
            "round {k}: the pool's connection was left inside a transaction"
        );
    }
    assert!(
        cancelled > 0 && opened > 0,
        "both cases ran: {cancelled} cancelled, {opened} opened"
    );
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, position, updated_at) VALUES ('after', 1, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT name FROM relay_checkpoints ORDER BY name")
        .fetch_all(&mut other)
        .await
        .unwrap();
    assert!(
        rows.contains(&"after".to_string()),
        "the autocommit write committed: {rows:?}"
    );
    assert!(
        !rows.contains(&"dropped".to_string()),
        "dropped transactions rolled back: {rows:?}"
    );
}

/// Runs `sql` (with `$1`.. placeholders) binding `text` (a JSON document) as the only
/// argument, on either backend.
async fn exec_json(store: &Store, sql: &str, text: &str) {
    let sql = store.db().sql(sql).into_owned();
    match store.db() {
        Db::Postgres(pool) => {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            sqlx::query(&sql).bind(value).execute(pool).await.unwrap();
        }
        Db::Sqlite(pool) => {
            sqlx::query(&sql).bind(text).execute(pool).await.unwrap();
        }
    }
}

on_both_backends!(a_long_stream_loads_from_its_snapshot_and_the_events_after_it);
/// A stream longer than the snapshot interval gets a snapshot, and a process without the
/// aggregate in memory loads it from the snapshot and the events after it: an event before
/// the snapshot made unreadable does not stop that load (a load from the stream's start,
/// as-of, still trips on it). A snapshot that no longer decodes is passed over for a
/// replay from the start.
async fn a_long_stream_loads_from_its_snapshot_and_the_events_after_it(kind: &str) {
    let (b, store) = backend(kind).await;
    let fresh_store = || async {
        match &b {
            Backend::Postgres(db) => db.store(4).await,
            Backend::Sqlite(dir) => dir.store(4).await,
        }
    };
    let m = meta("snapshots");
    let n = emporium_event_store::store::SNAPSHOT_EVERY * 2 + 100;
    for _ in 0..n {
        store
            .execute::<Counter>("long", CounterCommand::Increment(1), &m)
            .await
            .unwrap();
    }
    // Written in the background: wait for the latest one.
    let latest = store
        .db()
        .sql("SELECT MAX(last_sequence) FROM snapshots WHERE aggregate_id = 'long'")
        .into_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let at: Option<i64> = match store.db() {
            Db::Postgres(p) => sqlx::query_scalar(&latest).fetch_one(p).await.unwrap(),
            Db::Sqlite(p) => sqlx::query_scalar(&latest).fetch_one(p).await.unwrap(),
        };
        if at == Some(2 * emporium_event_store::store::SNAPSHOT_EVERY as i64) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot: {at:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exec_json(
        &store,
        "UPDATE events SET payload = $1 WHERE aggregate_id = 'long' AND sequence = 10",
        r#"{"Unreadable": {}}"#,
    )
    .await;

    let other = fresh_store().await;
    let (counter, version) = other.load::<Counter>("long").await.unwrap();
    assert_eq!((counter.total, version), (n as u64, n));
    assert!(
        other
            .load_as_of::<Counter>("long", emporium_event_store::AsOf::Position(i64::MAX))
            .await
            .is_err(),
        "the load from the start must read the unreadable event"
    );
    other
        .execute::<Counter>("long", CounterCommand::Increment(1), &m)
        .await
        .unwrap();
    assert_eq!(other.load::<Counter>("long").await.unwrap().1, n + 1);

    // A snapshot that does not decode: the stream is replayed, and trips on event 10 until
    // it is readable again.
    exec_json(
        &store,
        "UPDATE snapshots SET payload = $1 WHERE aggregate_id = 'long'",
        r#"{"total": "not a number"}"#,
    )
    .await;
    assert!(fresh_store().await.load::<Counter>("long").await.is_err());
    exec_json(
        &store,
        "UPDATE events SET payload = $1 WHERE aggregate_id = 'long' AND sequence = 10",
        r#"{"Incremented": {"by": 1, "total": 10}}"#,
    )
    .await;
    let (counter, version) = fresh_store().await.load::<Counter>("long").await.unwrap();
    assert_eq!((counter.total, version), (n as u64 + 1, n + 1));
}
