//! `GET /v1/events` as a streamed export (NDJSON, CSV) and with filters, on both backends:
//! every event exactly once in position order, the same events as the JSON pages, filters
//! equal to a brute-force filter over the whole feed, CSV that parses back, problems for bad
//! parameters, and a failure mid-stream that aborts the response instead of ending it.

use chrono::{DateTime, TimeDelta, Utc};
use emporium_event_store::export::{self, EventFilter};
use emporium_event_store::testing::{append_raw, raw_payload, RAW_AGGREGATE_TYPE};
use emporium_event_store::Db;
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use futures::StreamExt;
use serde_json::Value;

macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(emporium_tests::Backend::Postgres).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(emporium_tests::Backend::Sqlite).await;
            }
        }
    };
}

const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

/// A raw HTTP answer: status, content type, `X-Feed-Through`, body text.
struct Raw {
    status: u16,
    content_type: String,
    through: Option<i64>,
    body: String,
}

async fn fetch(app: &TestApp, accept: Option<&str>, query: &[(&str, String)]) -> Raw {
    let mut req = app
        .client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(ADMIN_KEY)
        .query(query);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.expect("request reaches the server");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let through = header("x-feed-through").map(|v| v.parse().expect("numeric X-Feed-Through"));
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("the whole body arrives");
    Raw {
        status,
        content_type,
        through,
        body,
    }
}

/// The NDJSON export for `query`, checked for framing, parsed line by line.
async fn ndjson(app: &TestApp, query: &[(&str, String)]) -> (Vec<Value>, i64) {
    let r = fetch(app, Some(NDJSON), query).await;
    assert_eq!(r.status, 200, "{query:?}: {}", r.body);
    assert_eq!(r.content_type, NDJSON);
    assert!(
        r.body.is_empty() || r.body.ends_with('\n'),
        "every line is terminated"
    );
    let events = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect();
    (events, r.through.expect("a stream says where it ends"))
}

/// Every JSON page for `query` after position `after`, following `next_cursor`.
async fn pages(
    app: &TestApp,
    query: &[(&str, String)],
    mut after: i64,
    limit: usize,
) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let mut q = query.to_vec();
        q.push(("after", after.to_string()));
        q.push(("limit", limit.to_string()));
        let r = fetch(app, None, &q).await;
        assert_eq!(r.status, 200, "{q:?}: {}", r.body);
        assert_eq!(r.content_type, "application/json");
        let page: Value = serde_json::from_str(&r.body).unwrap();
        let events = page["events"].as_array().unwrap().clone();
        assert!(events.len() <= limit);
        all.extend(events);
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(events_len_of(&page), limit, "only full pages have a cursor");
                after = c.parse().unwrap();
            }
            None => return all,
        }
    }
}

fn events_len_of(page: &Value) -> usize {
    page["events"].as_array().map_or(0, Vec::len)
}

/// Waits until the feed's head covers every stored event (the Postgres feed trails commits
/// while other tests' transactions hold the horizon), and returns it.
async fn settled_head(app: &TestApp) -> i64 {
    let stored = app.event_count().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let head = app.store.feed().head().await.expect("read the head");
        if head >= stored {
            assert_eq!(head, stored, "the feed is gap-free");
            return head;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the feed stayed at {head} of {stored} events"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn position(e: &Value) -> i64 {
    e["position"].as_i64().expect("a position")
}

fn time(e: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(e["recorded_at"].as_str().expect("recorded_at"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

on_both_backends!(ndjson_streams_every_event_once_in_position_order);
async fn ndjson_streams_every_event_once_in_position_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..30 {
        append_raw(app.store.db(), &format!("raw-{i}"), 1, 100).await;
    }
    let head = settled_head(&app).await;
    assert_eq!(head, 3000);

    let (events, through) = ndjson(&app, &[]).await;
    assert_eq!(through, 3000);
    assert_eq!(events.len(), 3000);
    let positions: Vec<i64> = events.iter().map(position).collect();
    assert_eq!(positions, (1..=3000).collect::<Vec<_>>());
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3000, "every event once");

    // The same events, field for field, as the concatenated JSON pages.
    let paged = pages(&app, &[], 0, 1000).await;
    assert_eq!(paged.len(), 3000);
    assert_eq!(events, paged);
    assert_eq!(events[0]["metadata"]["actor"], "system:test");
    assert_eq!(events[0]["payload"], raw_payload());

    // ?format= does what Accept does; after= and limit= bound the stream.
    let by_param = fetch(&app, None, &[("format", "ndjson".into())]).await;
    assert_eq!(by_param.content_type, NDJSON);
    assert_eq!(by_param.body.lines().count(), 3000);
    let (tail, _) = ndjson(&app, &[("after", "2990".into())]).await;
    assert_eq!(tail, events[2990..].to_vec());
    let (cursor_tail, _) = ndjson(&app, &[("cursor", "2990".into())]).await;
    assert_eq!(cursor_tail, tail);
    let (first, _) = ndjson(&app, &[("limit", "10".into())]).await;
    assert_eq!(first, events[..10].to_vec());
    let (beyond, through) = ndjson(&app, &[("after", "3000".into())]).await;
    assert!(beyond.is_empty());
    assert_eq!(through, 3000);
    // A limit past the page maximum is fine for a stream.
    let (all, _) = ndjson(&app, &[("limit", "5000".into())]).await;
    assert_eq!(all.len(), 3000);
}

on_both_backends!(the_json_page_works_as_before);
async fn the_json_page_works_as_before(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    append_raw(app.store.db(), "raw", 1, 150).await;
    settled_head(&app).await;
    for accept in [None, Some("application/json"), Some("text/html, */*;q=0.8")] {
        let r = fetch(&app, accept, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.through, None, "pages carry their head in the body");
        let page: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(events_len_of(&page), 100, "default page size");
        assert_eq!(page["next_cursor"], "100");
        assert_eq!(page["head"], 150);
    }
    let last = app.get("/v1/events?after=100&limit=100").await;
    assert_eq!(last.status, 200);
    assert_eq!(events_len_of(&last.body), 50);
    assert!(last.body["next_cursor"].is_null());
    assert_eq!(position(&last.body["events"][0]), 101);
    let cursor = app.get("/v1/events?cursor=149").await;
    assert_eq!(position(&cursor.body["events"][0]), 150);
}

/// Raw events and real commands in interleaved groups a few milliseconds apart, so types and
/// recording times vary along the feed. Returns the whole feed (from the JSON pages).
async fn varied_feed(app: &TestApp) -> Vec<Value> {
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(15));
    for round in 0..3 {
        append_raw(app.store.db(), &format!("raw-{round}"), 1, 120).await;
        pause().await;
        let wh = format!("wh-{round}");
        assert_eq!(
            app.create_warehouse(&wh, "eu-west", round + 1).await.status,
            201
        );
        for p in 0..4 {
            let sku = format!("SKU-{round}-{p}");
            assert_eq!(app.create_product(&sku, "Thing", 100 + p).await.status, 201);
            assert_eq!(app.receive(&wh, &sku, 5).await.status, 200);
        }
        pause().await;
    }
    let head = settled_head(app).await;
    let all = pages(app, &[], 0, 1000).await;
    assert_eq!(all.len() as i64, head);
    all
}

/// The filter rule, written out independently of the server's.
fn brute_force(all: &[Value], f: &EventFilter) -> Vec<Value> {
    all.iter()
        .filter(|e| {
            position(e) > f.after
                && f.aggregate_type
                    .as_deref()
                    .is_none_or(|t| e["aggregate_type"] == t)
                && f.event_type.as_deref().is_none_or(|t| e["event_type"] == t)
                && f.from.is_none_or(|from| time(e) >= from)
                && f.to.is_none_or(|to| time(e) < to)
        })
        .take(f.limit.map_or(usize::MAX, |l| l as usize))
        .cloned()
        .collect()
}

fn query_of(f: &EventFilter) -> Vec<(&'static str, String)> {
    let mut q = vec![("after", f.after.to_string())];
    if let Some(t) = &f.aggregate_type {
        q.push(("aggregate_type", t.clone()));
    }
    if let Some(t) = &f.event_type {
        q.push(("event_type", t.clone()));
    }
    if let Some(t) = f.from {
        q.push(("from", rfc3339(t)));
    }
    if let Some(t) = f.to {
        q.push(("to", rfc3339(t)));
    }
    if let Some(l) = f.limit {
        q.push(("limit", l.to_string()));
    }
    q
}

on_both_backends!(filters_equal_a_brute_force_filter_over_the_whole_feed);
async fn filters_equal_a_brute_force_filter_over_the_whole_feed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let all = varied_feed(&app).await;
    let n = all.len();
    let distinct = |field: &str| {
        let mut v: Vec<String> = all
            .iter()
            .map(|e| e[field].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let aggregate_types = distinct("aggregate_type");
    let event_types = distinct("event_type");
    assert!(aggregate_types.len() >= 4, "{aggregate_types:?}");
    assert!(event_types.len() >= 4, "{event_types:?}");

    // Bounds taken from stored times (exact hits for inclusive / exclusive), and a hair past
    // them (which must round the same way the database compares).
    let t1 = time(&all[n / 3]);
    // A later time than t1: events appended in one transaction (a group commit under load)
    // share their time, and an empty [t1, t2) would test nothing.
    let t2 = all[2 * n / 3..]
        .iter()
        .map(time)
        .find(|t| *t > t1)
        .expect("events at more than one time");
    let ns = TimeDelta::nanoseconds(1);
    let mut cases = vec![EventFilter::after(0), EventFilter::after(57)];
    for t in &aggregate_types {
        cases.push(EventFilter {
            aggregate_type: Some(t.clone()),
            ..EventFilter::default()
        });
    }
    for t in &event_types {
        cases.push(EventFilter {
            event_type: Some(t.clone()),
            ..EventFilter::default()
        });
    }
    for (from, to) in [
        (Some(t1), None),
        (None, Some(t2)),
        (Some(t1), Some(t2)),
        (Some(t1 + ns), Some(t2 + ns)),
        (Some(t1 - ns), Some(t2 - ns)),
    ] {
        cases.push(EventFilter {
            from,
            to,
            ..EventFilter::default()
        });
    }
    cases.push(EventFilter {
        after: 30,
        aggregate_type: Some(RAW_AGGREGATE_TYPE.into()),
        from: Some(t1),
        to: Some(time(&all[n - 1]) + TimeDelta::seconds(1)),
        ..EventFilter::default()
    });
    cases.push(EventFilter {
        aggregate_type: Some("StockItem".into()),
        event_type: Some(event_types[0].clone()),
        ..EventFilter::default()
    });
    cases.push(EventFilter {
        aggregate_type: Some("NoSuchType".into()),
        ..EventFilter::default()
    });
    cases.push(EventFilter {
        aggregate_type: Some(RAW_AGGREGATE_TYPE.into()),
        limit: Some(7),
        ..EventFilter::default()
    });

    let mut nonempty = 0;
    for f in &cases {
        let expected = brute_force(&all, f);
        nonempty += usize::from(!expected.is_empty());
        let q = query_of(f);
        let (streamed, through) = ndjson(&app, &q).await;
        assert_eq!(through as usize, n, "{f:?}");
        assert_eq!(
            streamed.len(),
            expected.len(),
            "{f:?}: streamed {} of {}",
            streamed.len(),
            expected.len()
        );
        assert_eq!(streamed, expected, "{f:?}");

        let csv = fetch(&app, Some(CSV), &q).await;
        assert_eq!(csv.status, 200);
        assert_eq!(
            csv_rows(&csv.body).len(),
            expected.len(),
            "{f:?}: one CSV row per event"
        );

        if f.limit.is_none() {
            // Filtered JSON pages: the same events, page by page.
            let q: Vec<_> = q.into_iter().filter(|(k, _)| *k != "after").collect();
            let paged = pages(&app, &q, f.after, 25).await;
            assert_eq!(paged, expected, "{f:?} as pages");
        }
    }
    assert!(nonempty >= cases.len() - 2, "the cases select something");
}

/// Parses a CSV body with the csv crate, checking the header; the data rows.
fn csv_rows(body: &str) -> Vec<csv::StringRecord> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a header row")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        emporium_gateway::routes::events::CSV_COLUMNS.to_vec(),
        "the documented columns"
    );
    reader
        .records()
        .map(|r| r.expect("a well-formed CSV record"))
        .collect()
}

on_both_backends!(csv_has_a_header_and_one_row_per_event_that_parses_back);
async fn csv_has_a_header_and_one_row_per_event_that_parses_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Ids with a comma, quotes and a line break need quoting.
    append_raw(app.store.db(), "plain", 1, 40).await;
    append_raw(app.store.db(), "odd, \"quoted\"\nid", 1, 3).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(
        app.create_product("SKU-1", "Comma, \"quote\" product", 250)
            .await
            .status,
        201
    );
    settled_head(&app).await;
    let all = pages(&app, &[], 0, 1000).await;

    let r = fetch(&app, Some(CSV), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
    assert_eq!(r.through, Some(all.len() as i64));
    let rows = csv_rows(&r.body);
    assert_eq!(rows.len(), all.len());
    for (row, e) in rows.iter().zip(&all) {
        let col = |i: usize| row.get(i).expect("13 columns");
        assert_eq!(row.len(), 13);
        assert_eq!(col(0), position(e).to_string());
        assert_eq!(col(1), e["event_id"]);
        assert_eq!(
            DateTime::parse_from_rfc3339(col(2))
                .unwrap()
                .with_timezone(&Utc),
            time(e)
        );
        assert_eq!(col(3), e["aggregate_type"]);
        assert_eq!(col(4), e["aggregate_id"]);
        assert_eq!(col(5), e["sequence"].as_i64().unwrap().to_string());
        assert_eq!(col(6), e["event_type"]);
        assert_eq!(col(7), e["event_version"]);
        assert_eq!(col(8), e["metadata"]["actor"]);
        assert_eq!(col(9), e["metadata"]["request_id"]);
        assert_eq!(col(10), e["metadata"]["correlation_id"]);
        assert_eq!(col(11), e["metadata"]["causation_id"]);
        let payload: Value = serde_json::from_str(col(12)).expect("payload is JSON text");
        assert_eq!(payload, e["payload"]);
    }
    assert!(rows.iter().any(|r| &r[4] == "odd, \"quoted\"\nid"));

    // ?format=csv, and an empty range: the header alone.
    let empty = fetch(
        &app,
        None,
        &[("format", "csv".into()), ("after", all.len().to_string())],
    )
    .await;
    assert!(empty.content_type.starts_with("text/csv"));
    assert_eq!(csv_rows(&empty.body).len(), 0);
    assert!(empty.body.starts_with("position,event_id,"));
}

/// Accept header, query, and the JSON pointer the problem must name.
type BadCase = (
    Option<&'static str>,
    Vec<(&'static str, String)>,
    &'static str,
);

on_both_backends!(bad_parameters_get_a_problem);
async fn bad_parameters_get_a_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    append_raw(app.store.db(), "raw", 1, 5).await;
    let cases: Vec<BadCase> = vec![
        (None, vec![("from", "yesterday".into())], "/from"),
        (
            Some(NDJSON),
            vec![("from", "2026-13-01T00:00:00Z".into())],
            "/from",
        ),
        (Some(CSV), vec![("to", "2026-01-01".into())], "/to"),
        (Some(NDJSON), vec![("limit", "0".into())], "/limit"),
        (Some(NDJSON), vec![("after", "-1".into())], "/after"),
        (None, vec![("limit", "0".into())], "/limit"),
        (
            None,
            vec![("cursor", "abc".into()), ("after", "3".into())],
            "/cursor",
        ),
        (
            Some(NDJSON),
            vec![("event_type", "Order\u{0}Placed".into())],
            "/event_type",
        ),
        (
            None,
            vec![("aggregate_type", String::new())],
            "/aggregate_type",
        ),
    ];
    for (accept, query, pointer) in cases {
        let r = fetch(&app, accept, &query).await;
        assert_eq!(r.status, 422, "{query:?}: {}", r.body);
        assert_eq!(r.content_type, "application/problem+json");
        let problem: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(problem["status"], 422);
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["pointer"] == pointer),
            "{query:?}: {problem}"
        );
    }
    // Parquet is served by parameter and by Accept (its content is read by DuckDB in
    // gateway/tests/binary.rs); an unknown format is refused.
    for (accept, query) in [
        (None, vec![("format", "parquet".to_string())]),
        (Some("application/vnd.apache.parquet"), vec![]),
    ] {
        let resp = app
            .client
            .get(format!("{}/v1/events", app.base))
            .bearer_auth(emporium_tests::ADMIN_KEY)
            .query(&query)
            .header("accept", accept.unwrap_or("*/*"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/vnd.apache.parquet"
        );
        let bytes = resp.bytes().await.unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    }
    let r = fetch(&app, None, &[("format", "xml".into())]).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(app.event_count().await, 5, "nothing was written");
}

/// A row that cannot be decoded (only possible on the embedded store, whose payload column
/// is text) ends the export with an error: an `Err` item from the store, an aborted response
/// over HTTP, never a short stream that looks complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_stream_is_an_error_not_a_short_export() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    append_raw(app.store.db(), "before", 1, 500).await;
    let Db::Sqlite(pool) = app.store.db() else {
        unreachable!("spawned on SQLite")
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata, event_id) \
         VALUES ('Checkout', 'broken', 1, 'CheckoutCompleted', '1.0', '{not json', '{}', ?1)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .execute(pool)
    .await
    .unwrap();
    append_raw(app.store.db(), "after", 1, 500).await;

    let mut export = export::open(&app.store, &EventFilter::after(0))
        .await
        .unwrap();
    assert_eq!(export.through, 1001);
    let mut ok = 0;
    let mut errors = 0;
    while let Some(item) = export.events.next().await {
        match item {
            Ok(e) => {
                assert_eq!(errors, 0, "nothing after the error");
                assert_eq!(e.position, ok + 1);
                ok += 1;
            }
            Err(_) => errors += 1,
        }
    }
    assert_eq!((ok, errors), (500, 1));

    for accept in [NDJSON, CSV] {
        let resp = app
            .client
            .get(format!("{}/v1/events", app.base))
            .bearer_auth(ADMIN_KEY)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "the failure comes after the headers");
        let body = resp.bytes().await;
        assert!(
            body.is_err(),
            "{accept}: the body is cut off, not ended normally"
        );
    }
}

/// The Parquet encoder reads each row in place (`ExportPage::view`) instead of taking an
/// owned event: it must see exactly what the owned stream serves, `limit` must cut across
/// pages, and a row that cannot be read must end the pages with an error after the rows
/// before it (Postgres: a valid row of a type the engine does not know).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_in_place_equal_the_owned_events() {
    let app = TestApp::spawn(Backend::Postgres).await;
    append_raw(app.store.db(), "before", 1, 4_320).await;
    let Db::Postgres(pool) = app.store.db() else {
        unreachable!("spawned on Postgres")
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata, event_id) \
         VALUES ('Checkout', 'unknown', 1, 'CheckoutTeleported', '1.0', '{}', '{}', $1)",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(pool)
    .await
    .unwrap();
    append_raw(app.store.db(), "after", 1, 700).await;
    // Positions are stamped after commit (by this engine's sequencer or the export's own
    // steps); wait until all of them are, so both reads below cover the same range.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.store.feed().head().await.unwrap() < 5_021 {
        assert!(
            std::time::Instant::now() < deadline,
            "positions never stamped"
        );
        app.store.feed().stamp().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let mut owned = Vec::new();
    let mut owned_errors = 0;
    let mut events = export::open(&app.store, &EventFilter::after(0))
        .await
        .unwrap()
        .events;
    while let Some(e) = events.next().await {
        match e {
            Ok(e) => owned.push(e),
            Err(_) => owned_errors += 1,
        }
    }
    assert_eq!((owned.len(), owned_errors), (4_320, 1));

    let paged = export::open_pages(&app.store, &EventFilter::after(0))
        .await
        .unwrap();
    assert_eq!(paged.through, 5_021);
    let mut pages = paged.pages;
    let (mut seen, mut errors) = (0, 0);
    while let Some(page) = pages.next().await {
        let Ok(page) = page else {
            errors += 1;
            continue;
        };
        assert_eq!(errors, 0, "nothing after the error");
        for i in 0..page.len() {
            let v = page.view(i).unwrap();
            let e = &owned[seen];
            assert_eq!(
                (v.position, v.event_id, v.recorded_at, v.sequence),
                (e.position, e.event_id, e.recorded_at, e.sequence)
            );
            assert_eq!(
                [
                    v.aggregate_type,
                    v.aggregate_id,
                    v.event_type,
                    v.event_version
                ],
                [
                    e.aggregate_type.as_str(),
                    &e.aggregate_id,
                    &e.event_type,
                    &e.event_version
                ]
            );
            assert_eq!(v.payload, e.payload.get());
            assert_eq!(
                [v.actor, v.request_id, v.correlation_id, v.causation_id],
                [
                    e.metadata.actor.as_str(),
                    &e.metadata.request_id,
                    &e.metadata.correlation_id,
                    &e.metadata.causation_id
                ]
            );
            seen += 1;
        }
    }
    assert_eq!((seen, errors), (4_320, 1));

    let limited = export::open_pages(
        &app.store,
        &EventFilter {
            limit: Some(2_500),
            ..EventFilter::after(100)
        },
    )
    .await
    .unwrap();
    let sizes: Vec<usize> = limited
        .pages
        .map(|p| p.unwrap().len())
        .collect::<Vec<_>>()
        .await;
    assert_eq!(sizes.iter().sum::<usize>(), 2_500, "{sizes:?}");
    assert!(sizes.len() >= 2, "the limit cuts across pages: {sizes:?}");

    let resp = app
        .client
        .get(format!("{}/v1/events?format=parquet", app.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the failure comes after the headers");
    assert!(
        resp.bytes().await.is_err(),
        "parquet: the body is cut off, not ended normally"
    );
}
