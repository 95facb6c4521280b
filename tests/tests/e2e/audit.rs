//! Tamper evidence (issue 13): seals chained per stream, signed digests, verification that
//! names the broken position, and inclusion proofs checked offline.

use std::time::Duration;

use emporium_event_store::audit::{
    load_or_create_signing_key, public_key_path, verify_proof_document, ProofDocument,
};
use emporium_event_store::testing::{TestDataDir, TestNats};
use emporium_event_store::Db;
use emporium_gateway::keys::Role;
use emporium_gateway::AuditOptions;
use emporium_sagas::CheckoutConfig;
use emporium_tests::{Backend, TestApp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// A shop with a few confirmed, cancelled and rejected orders: a real log of a few hundred
/// events over every aggregate type.
async fn busy_shop(app: &TestApp) {
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_warehouse("wh-b", "eu-west", 2).await.status, 201);
    for (sku, price) in [("LAMP-1", 250), ("BULB-7", 99), ("DESK-3", 12_000)] {
        assert_eq!(app.create_product(sku, sku, price).await.status, 201);
        assert_eq!(app.receive("wh-a", sku, 10).await.status, 200);
        assert_eq!(app.receive("wh-b", sku, 10).await.status, 200);
    }
    let mut ids = Vec::new();
    for i in 0..12 {
        let lines: &[(&str, i64)] = match i % 3 {
            0 => &[("LAMP-1", 1), ("BULB-7", 2)],
            1 => &[("DESK-3", 1)],
            _ => &[("BULB-7", 1), ("DESK-3", 1), ("LAMP-1", 1)],
        };
        let placed = app.place_order(&format!("c-{}", i % 4), lines).await;
        assert_eq!(placed.status, 202, "{:?}", placed.body);
        ids.push(placed.body["order_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        app.wait_for_status(id, "confirmed", Duration::from_secs(30))
            .await;
    }
    for id in ids.iter().step_by(4) {
        let r = app
            .post(&format!("/v1/orders/{id}/cancel"), Value::Null)
            .await;
        assert!(r.status < 300, "{:?}", r.body);
    }
}

/// Waits until nothing appends any more (the saga's compensations are done): the count
/// unchanged for three seconds, since under a loaded test run a compensation can trail its
/// cancel by more than a second.
async fn quiet(app: &TestApp) -> i64 {
    let (mut last, mut steady) = (-1, 0);
    loop {
        let n = app.event_count().await;
        if n == last {
            steady += 1;
            if steady == 6 {
                return n;
            }
        } else {
            (last, steady) = (n, 0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn exec(db: &Db, sql: &str, args: &[i64]) {
    let sql = db.sql(sql);
    match db {
        Db::Postgres(pool) => {
            let mut q = sqlx::query(&sql);
            for a in args {
                q = q.bind(a);
            }
            q.execute(pool).await.expect(&sql);
        }
        Db::Sqlite(pool) => {
            let mut q = sqlx::query(&sql);
            for a in args {
                q = q.bind(a);
            }
            q.execute(pool).await.expect(&sql);
        }
    }
}

async fn text_column(db: &Db, column: &str, position: i64) -> String {
    let sql = match db {
        Db::Postgres(_) => format!("SELECT {column}::text FROM events WHERE feed_position = $1"),
        Db::Sqlite(_) => format!("SELECT {column} FROM events WHERE feed_position = ?1"),
    };
    emporium_event_store::on_db!(db, pool => sqlx::query_scalar(&sql)
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap())
}

async fn set_text_column(db: &Db, column: &str, position: i64, value: &str) {
    let sql = match db {
        Db::Postgres(_) => {
            format!("UPDATE events SET {column} = $1::jsonb WHERE feed_position = $2")
        }
        Db::Sqlite(_) => format!("UPDATE events SET {column} = ?1 WHERE feed_position = ?2"),
    };
    emporium_event_store::on_db!(db, pool => sqlx::query(&sql)
        .bind(value)
        .bind(position)
        .execute(pool)
        .await
        .map(|_| ())
        .unwrap())
}

/// The JSON with one letter of one of its strings (a key or a value) changed.
fn flip_one_letter(json: &str, rng: &mut StdRng) -> String {
    let bytes = json.as_bytes();
    // Letters inside string literals only: `true`, `false` and `null` must stay JSON.
    let mut in_string = false;
    let mut escaped = false;
    let mut candidates = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if *b == b'\\' {
                escaped = true;
            } else if *b == b'"' {
                in_string = false;
            } else if b.is_ascii_alphabetic() && !(i > 0 && bytes[i - 1] == b'\\') {
                candidates.push(i);
            }
        } else if *b == b'"' {
            in_string = true;
        }
    }
    assert!(!candidates.is_empty(), "no letter to change in {json}");
    let at = candidates[rng.random_range(0..candidates.len())];
    let mut out = bytes.to_vec();
    out[at] = if out[at] == b'q' { b'z' } else { b'q' };
    String::from_utf8(out).unwrap()
}

async fn tamper_and_verify(backend: Backend) {
    let mut app = TestApp::with_checkout(backend, CheckoutConfig::default(), None).await;
    busy_shop(&app).await;
    quiet(&app).await;
    // Nothing in the background may append while rows are taken out and put back: a late
    // compensation once took the position a forged row was to get.
    app.engine.halt().await;
    let events = app.event_count().await;
    let db = app.store.db().clone();
    let keys = TestDataDir::create();
    let key = load_or_create_signing_key(&keys.path().join("audit.key")).unwrap();
    let auditor = &app.state.auditor;
    let digest = auditor.digest(&key).await.unwrap().expect("a first digest");
    assert_eq!(digest.position, events);

    let clean = auditor
        .verify(None, None, Some(&key.verifying_key()), &|_| {})
        .await
        .unwrap();
    assert!(clean.ok, "{:?}", clean.problems);
    assert_eq!(clean.checked as i64, events);
    let check = clean.digest.as_ref().unwrap();
    assert!(check.signature_valid);
    assert_eq!(check.root_matches, Some(true));

    // A holding table with the events table's columns, for rows taken out and put back.
    match &db {
        Db::Postgres(_) => exec(&db, "CREATE TABLE tamper_hold (LIKE events)", &[]).await,
        Db::Sqlite(_) => {
            exec(
                &db,
                "CREATE TABLE tamper_hold AS SELECT * FROM events WHERE 0",
                &[],
            )
            .await
        }
    }

    let mut rng = StdRng::seed_from_u64(13);
    let mut kinds = [0usize; 5];
    for round in 0..1000 {
        let kind = round % 5;
        kinds[kind] += 1;
        let p = rng.random_range(1..=events);
        let expected = match kind {
            // One letter of a payload, or of a metadata document, changed.
            0 | 1 => {
                let column = if kind == 0 { "payload" } else { "metadata" };
                let before = text_column(&db, column, p).await;
                let after = flip_one_letter(&before, &mut rng);
                set_text_column(&db, column, p, &after).await;
                let report = auditor.verify(None, None, None, &|_| {}).await.unwrap();
                set_text_column(&db, column, p, &before).await;
                (report, p)
            }
            // A row deleted (the last one too, which only the digest can tell).
            2 => {
                exec(
                    &db,
                    "INSERT INTO tamper_hold SELECT * FROM events WHERE feed_position = $1",
                    &[p],
                )
                .await;
                exec(&db, "DELETE FROM events WHERE feed_position = $1", &[p]).await;
                let report = auditor.verify(None, None, None, &|_| {}).await.unwrap();
                exec(&db, "INSERT INTO events SELECT * FROM tamper_hold", &[]).await;
                exec(&db, "DELETE FROM tamper_hold", &[]).await;
                (report, p)
            }
            // Two rows swapped in the log's order.
            3 => {
                let mut q = rng.random_range(1..=events);
                while q == p {
                    q = rng.random_range(1..=events);
                }
                let swap = |db: Db| async move {
                    exec(
                        &db,
                        "UPDATE events SET feed_position = -1 WHERE feed_position = $1",
                        &[p],
                    )
                    .await;
                    exec(
                        &db,
                        "UPDATE events SET feed_position = $1 WHERE feed_position = $2",
                        &[p, q],
                    )
                    .await;
                    exec(
                        &db,
                        "UPDATE events SET feed_position = $1 WHERE feed_position = -1",
                        &[q],
                    )
                    .await;
                };
                swap(db.clone()).await;
                let report = auditor.verify(None, None, None, &|_| {}).await.unwrap();
                swap(db.clone()).await;
                (report, p.min(q))
            }
            // A row inserted: a copy of another under a new identity, with no seal or a
            // made-up one.
            _ => {
                let at = events + 1;
                let seal = if round % 2 == 0 { "NULL" } else { "chain_hash" };
                let sql = match &db {
                    Db::Postgres(_) => format!(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata, feed_position, chain_hash) \
                         SELECT aggregate_type, 'forged-' || $2, sequence, event_type, \
                                event_version, payload, metadata, $2, {seal} \
                           FROM events WHERE feed_position = $1"
                    ),
                    Db::Sqlite(_) => format!(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata, event_id, feed_position, chain_hash) \
                         SELECT aggregate_type, 'forged-' || ?2, sequence, event_type, \
                                event_version, payload, metadata, 'forged-' || ?2, ?2, {seal} \
                           FROM events WHERE feed_position = ?1"
                    ),
                };
                emporium_event_store::on_db!(&db, pool => sqlx::query(&sql)
                    .bind(p)
                    .bind(at)
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .unwrap());
                let report = auditor.verify(None, None, None, &|_| {}).await.unwrap();
                exec(&db, "DELETE FROM events WHERE feed_position = $1", &[at]).await;
                (report, at)
            }
        };
        let (report, position) = expected;
        assert!(!report.ok, "round {round} (kind {kind}) went unnoticed");
        let first = report.first_broken.as_ref().unwrap();
        assert_eq!(
            first.position, position,
            "round {round} (kind {kind}): reported {first:?}"
        );
    }
    assert!(kinds.iter().all(|k| *k == 200));
    // Every tampering was undone: the log verifies again.
    let after = auditor.verify(None, None, None, &|_| {}).await.unwrap();
    assert!(after.ok, "{:?}", after.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_names_the_position_of_each_of_1000_tamperings() {
    tamper_and_verify(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_verify_names_the_position_of_each_of_1000_tamperings() {
    tamper_and_verify(Backend::Sqlite).await;
}

/// The engine signs digests on its own, writes them to the directory and NATS; a timeline
/// with proofs checks offline, and fails when an event or the digest is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inclusion_proof_verifies_offline_and_fails_when_anything_changes() {
    let nats = TestNats::connect().await;
    let dir = TestDataDir::create();
    let key_path = dir.path().join("keys").join("audit.key");
    let digest_dir = dir.path().join("digests");
    let mut published = nats
        .client
        .subscribe(format!("{}.audit.digest", nats.prefix))
        .await
        .unwrap();
    let app = TestApp::start(Backend::Postgres, |b| {
        b.nats_client(nats.client.clone(), nats.prefix.clone())
            .audit(AuditOptions {
                key_path: key_path.clone(),
                interval: Duration::from_millis(300),
                dir: Some(digest_dir.clone()),
            })
    })
    .await;
    busy_shop(&app).await;
    quiet(&app).await;
    let auditor_key = app.key(Role::Auditor, None).await;

    // The engine signs a digest of the whole log on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (digest, events) = loop {
        let d = app
            .send_as(
                Some(&auditor_key),
                reqwest::Method::GET,
                "/v1/audit/digest",
                None,
            )
            .await;
        // The whole log as it is now: a compensation trailing the quiet spell only moves
        // the target.
        let events = app.event_count().await;
        if d.status == 200 && d.body["position"].as_i64() == Some(events) {
            break (d.body, events);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no digest of the whole log: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let public_key = std::fs::read_to_string(public_key_path(&key_path)).unwrap();
    assert_eq!(digest["public_key"].as_str().unwrap(), public_key.trim());
    let file = digest_dir.join(format!("digest-{events:020}.json"));
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk, digest);
    let mut seen_on_nats = false;
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_secs(2), futures_next(&mut published)).await
    {
        let d: Value = serde_json::from_slice(&m.payload).unwrap();
        if d == digest {
            seen_on_nats = true;
            break;
        }
    }
    assert!(seen_on_nats, "the digest was not published on NATS");

    // An auditor's verify over HTTP: clean, and only for auditors.
    let v = app
        .send_as(
            Some(&auditor_key),
            reqwest::Method::GET,
            "/v1/audit/verify",
            None,
        )
        .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["ok"], true, "{:?}", v.body);
    assert_eq!(v.body["digest"]["root_matches"], true);
    let client = app.key(Role::Client, Some("c-1")).await;
    let refused = app
        .send_as(
            Some(&client),
            reqwest::Method::GET,
            "/v1/audit/verify",
            None,
        )
        .await;
    assert_eq!(refused.status, 403);
    let bad = app
        .send_as(
            Some(&auditor_key),
            reqwest::Method::GET,
            "/v1/audit/verify?from=0",
            None,
        )
        .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let empty = app
        .send_as(
            Some(&auditor_key),
            reqwest::Method::GET,
            "/v1/audit/verify?from=5&to=2",
            None,
        )
        .await;
    assert_eq!(empty.body["checked"], 0, "{:?}", empty.body);
    assert_eq!(empty.body["ok"], true);

    // An order's timeline with proofs.
    let orders = app.get("/v1/events?event_type=OrderPlaced&limit=1").await;
    let order_id = orders.body["events"][0]["aggregate_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The console's order page shows the same check as a badge, for an auditor.
    let signed_in = app.console_sign_in(&auditor_key, None).await;
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = app
        .client
        .get(format!("{}/console/orders/{order_id}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("class=\"badge verified\"") && page.contains("with this engine's key"),
        "{page}"
    );

    let t = app
        .send_as(
            Some(&auditor_key),
            reqwest::Method::GET,
            &format!("/v1/orders/{order_id}/timeline?proof=true"),
            None,
        )
        .await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    let doc: ProofDocument = serde_json::from_value(t.body["proof"].clone()).unwrap();
    assert_eq!(doc.events.len(), t.body["events"].as_array().unwrap().len());
    assert!(doc.events.len() >= 5, "{}", doc.events.len());
    let key = emporium_event_store::audit::parse_public_key(&public_key).unwrap();
    assert_eq!(verify_proof_document(&doc, &key).unwrap(), doc.events.len());

    // Any change to any event it covers, or to the digest, makes it fail.
    let mut rng = StdRng::seed_from_u64(4);
    for i in 0..doc.events.len() {
        let mut changed = doc.clone();
        let e = &mut changed.events[i];
        // The documented shape (newline-separated) kept, one letter of the payload changed.
        let mut lines: Vec<String> = doc.events[i]
            .canonical
            .split('\n')
            .map(String::from)
            .collect();
        let last = lines.len() - 2; // the payload line
        lines[last] = flip_one_letter(&lines[last], &mut rng);
        e.canonical = lines.join("\n");
        assert!(
            verify_proof_document(&changed, &key).is_err(),
            "event {i} changed, proof held"
        );
        let mut changed = doc.clone();
        changed.events[i].path.reverse();
        if changed.events[i].path != doc.events[i].path {
            assert!(verify_proof_document(&changed, &key).is_err());
        }
    }
    let mut changed = doc.clone();
    let mut sig = hex_bytes(&changed.digest.signature);
    sig[10] ^= 1;
    changed.digest.signature = hex_string(&sig);
    assert!(
        verify_proof_document(&changed, &key).is_err(),
        "a changed signature held"
    );
    let mut changed = doc.clone();
    let mut root = hex_bytes(&changed.digest.root);
    root[0] ^= 1;
    changed.digest.root = hex_string(&root);
    assert!(
        verify_proof_document(&changed, &key).is_err(),
        "a changed root held"
    );
    let stranger = load_or_create_signing_key(&dir.path().join("stranger.key")).unwrap();
    assert!(verify_proof_document(&doc, &stranger.verifying_key()).is_err());

    // A seal rewritten in the database: no proof is given against the signed digest any
    // more (an engine that has not cached the signed tree reads the seals afresh), 409.
    let Db::Postgres(pool) = app.store.db() else {
        unreachable!()
    };
    sqlx::query("UPDATE events SET chain_hash = sha256('forged') WHERE feed_position = 1")
        .execute(pool)
        .await
        .unwrap();
    let fresh = emporium_event_store::audit::Auditor::new(app.store.db().clone());
    let refused = fresh.proofs(&[1]).await;
    assert!(
        matches!(refused, Err(emporium_event_store::StoreError::Tampered(_))),
        "{refused:?}"
    );
}

async fn futures_next(s: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    use futures::StreamExt;
    s.next().await
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An embedded store from before sealing: its events are sealed when it is next opened, and
/// only then (verify reports them unsealed before).
#[tokio::test]
async fn an_upgraded_embedded_store_seals_the_events_it_already_held() {
    use emporium_event_store::testing::append_stored;
    let dir = TestDataDir::create();
    let store = dir.store(2).await;
    let meta = emporium_event_store::EventMetadata::system("upgrade-test");
    for seq in 1..=3 {
        append_stored(
            store.db(),
            "Counter",
            "c-1",
            seq,
            "Incremented",
            "1.0",
            &serde_json::json!({"by": seq}),
            &meta,
        )
        .await;
    }
    let auditor = emporium_event_store::audit::Auditor::new(store.db().clone());
    let before = auditor.verify(None, None, None, &|_| {}).await.unwrap();
    assert_eq!(before.problems.len(), 3, "{:?}", before.problems);
    assert!(before.problems.iter().all(|p| p.kind == "unsealed"));
    // What the sealing migration leaves behind for the store to finish.
    exec(
        store.db(),
        "CREATE TABLE audit_backfill (pending integer NOT NULL) STRICT",
        &[],
    )
    .await;
    store.migrate().await.unwrap();
    let after = auditor.verify(None, None, None, &|_| {}).await.unwrap();
    assert!(after.ok, "{:?}", after.problems);
    assert_eq!(after.checked, 3);
}

/// Both ways Postgres seals a batch (each stream once: one statement; a stream several
/// times: one by one), and the embedded store's, give seals `verify` recomputes.
async fn seals_of_both_batch_shapes(backend: Backend) {
    use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
    let app = TestApp::spawn(backend).await;
    let event = |id: &str, seq: usize| SerializedEvent {
        aggregate_id: id.to_string(),
        sequence: seq,
        aggregate_type: "Counter".into(),
        event_type: "Incremented".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({"Incremented": {"by": seq, "note": "é \"quoted\" \\ ✓"}}),
        metadata: serde_json::json!({"actor": "test"}),
    };
    let repo = app.store.repository();
    for round in 1..=3 {
        let s = (round - 1) * 3;
        // One stream three times.
        let same: Vec<_> = (1..=3).map(|k| event("same", s + k)).collect();
        repo.persist::<emporium_domain::Order>(&same, None)
            .await
            .unwrap();
        // Three streams once each.
        let distinct: Vec<_> = ["a", "b", "c"].iter().map(|id| event(id, round)).collect();
        repo.persist::<emporium_domain::Order>(&distinct, None)
            .await
            .unwrap();
    }
    assert_eq!(app.assert_log_verifies().await.checked, 18);
}

#[tokio::test]
async fn postgres_seals_batches_of_one_stream_and_of_many_alike() {
    seals_of_both_batch_shapes(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_seals_batches_of_one_stream_and_of_many_alike() {
    seals_of_both_batch_shapes(Backend::Sqlite).await;
}

/// The seals an engine remembers per stream (so an append need not read its predecessor's
/// back) stay right when two engines append to the same streams: each one's memory goes
/// stale whenever the other appends, and conflicts and retries interleave. Every event
/// appended, by either engine, must verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_appending_to_the_same_streams_keep_every_seal_right() {
    use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand};
    use emporium_domain::values::{OrderId, Quantity, Sku, WarehouseId};
    use emporium_event_store::audit::Auditor;
    use emporium_event_store::testing::TestDatabase;
    use emporium_event_store::EventMetadata;

    let db = TestDatabase::create().await;
    let engines = [db.store(8).await, db.store(8).await];
    let meta = EventMetadata::system("test");
    let items: Vec<_> = (0..4)
        .map(|i| {
            let w = WarehouseId::parse(&format!("wh-{i}")).unwrap();
            let s = Sku::parse("HOT-1").unwrap();
            (stock_item_id(&w, &s), w, s)
        })
        .collect();
    for (id, w, s) in &items {
        engines[0]
            .execute::<StockItem>(
                id,
                StockItemCommand::ReceiveStock {
                    warehouse_id: w.clone(),
                    sku: s.clone(),
                    qty: Quantity::new(1_000_000).unwrap(),
                },
                &meta,
            )
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let engine = engines[worker % 2].clone();
        let (items, meta) = (items.clone(), meta.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0;
            for k in 0..25 {
                let (id, w, s) = &items[(worker + k) % items.len()];
                let reserve = StockItemCommand::ReserveStock {
                    warehouse_id: w.clone(),
                    sku: s.clone(),
                    order_id: OrderId::new(),
                    qty: Quantity::new(1).unwrap(),
                };
                if engine
                    .execute::<StockItem>(id, reserve, &meta)
                    .await
                    .is_ok()
                {
                    accepted += 1;
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert!(
        accepted > 300,
        "only {accepted} of 400 reservations went through"
    );
    let report = Auditor::new(engines[0].db().clone())
        .verify(None, None, None, &|_| {})
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.checked, 4 + accepted as u64);
}

/// An engine whose cached copy of a stream refuses a command confirms the refusal on the
/// events another engine appended since (a catch-up), and appends if they change the answer.
/// The catch-up reads the seal of the stream's last event, so that append, and the engine's
/// later ones to the stream, pass it and read none themselves. Without it the engine, never
/// learning the seal, read it on every later append to the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_catching_up_on_anothers_appends_learns_the_seal() {
    use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand};
    use emporium_domain::values::{OrderId, Quantity, Sku, WarehouseId};
    use emporium_event_store::audit::Auditor;
    use emporium_event_store::testing::TestDatabase;
    use emporium_event_store::{EventMetadata, Store};

    let db = TestDatabase::create().await;
    let (a, b) = (db.store(4).await, db.store(4).await);
    let meta = EventMetadata::system("test");
    let (w, s) = (
        WarehouseId::parse("wh-1").unwrap(),
        Sku::parse("TURNS-1").unwrap(),
    );
    let id = stock_item_id(&w, &s);
    let receive = |qty| StockItemCommand::ReceiveStock {
        warehouse_id: w.clone(),
        sku: s.clone(),
        qty: Quantity::new(qty).unwrap(),
    };
    let reserve = || StockItemCommand::ReserveStock {
        warehouse_id: w.clone(),
        sku: s.clone(),
        order_id: OrderId::new(),
        qty: Quantity::new(1).unwrap(),
    };
    let run = |store: &Store, command| {
        let (store, id, meta) = (store.clone(), id.clone(), meta.clone());
        async move {
            store
                .execute::<StockItem>(&id, command, &meta)
                .await
                .unwrap()
        }
    };
    // A's cached copy ends with nothing available; B then receives more.
    run(&a, receive(1)).await;
    run(&a, reserve()).await;
    run(&b, receive(10)).await;
    // A's copy refuses, the catch-up finds B's stock, and A appends; then more on A's copy.
    for _ in 0..6 {
        run(&a, reserve()).await;
    }
    let lookups = |s: &Store| s.repository().group_commit_stats().seal_lookups;
    assert_eq!(
        (lookups(&a), lookups(&b)),
        (0, 0),
        "appends that had to read a seal (engine A, engine B)"
    );
    let report = Auditor::new(a.db().clone())
        .verify(None, None, None, &|_| {})
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.checked, 9);
}

/// The long history `bench checkout --prior-events` writes around the engine is stamped
/// and sealed as the engine's own appends would be: the feed holds every row at once (no
/// sequencer pass, whose updates would leave a dead index entry per row), `verify` passes,
/// and the engine appends to the stream after it on the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_history_is_stamped_and_sealed_like_the_engines_appends() {
    use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand};
    use emporium_domain::values::{OrderId, Quantity, Sku, WarehouseId};
    use emporium_event_store::audit::Auditor;
    use emporium_event_store::testing::TestDatabase;
    use emporium_event_store::EventMetadata;

    let db = TestDatabase::create().await;
    let store = db.store(4).await;
    let meta = EventMetadata::system("test");
    let (w, s) = (
        WarehouseId::parse("wh-1").unwrap(),
        Sku::parse("HIST-1").unwrap(),
    );
    let id = stock_item_id(&w, &s);
    store
        .execute::<StockItem>(
            &id,
            StockItemCommand::ReceiveStock {
                warehouse_id: w.clone(),
                sku: s.clone(),
                qty: Quantity::new(100).unwrap(),
            },
            &meta,
        )
        .await
        .unwrap();
    let Db::Postgres(pool) = store.db() else {
        unreachable!("TestDatabase is Postgres")
    };
    emporium_event_store::seeding::prior_reservations(pool, "wh-1", "HIST-1", 100, 1, 6_000)
        .await
        .unwrap();
    let unstamped: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE feed_position IS NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(unstamped, 0);
    assert_eq!(store.feed().head().await.unwrap(), 6_001);
    store
        .execute::<StockItem>(
            &id,
            StockItemCommand::ReserveStock {
                warehouse_id: w,
                sku: s,
                order_id: OrderId::new(),
                qty: Quantity::new(100).unwrap(),
            },
            &meta,
        )
        .await
        .unwrap();
    let report = Auditor::new(store.db().clone())
        .verify(None, None, None, &|_| {})
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.checked, 6_002);
}
