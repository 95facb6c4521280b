//! The real `emporium` binary: start it, use it over HTTP, kill it, start it again, and
//! find everything still there. Once on the embedded store, once on Postgres.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use emporium_event_store::testing::{TestDataDir, TestDatabase};
use serde_json::{json, Value};

/// This test process's admin key: tests run in parallel, each with its own servers, and a
/// request that reaches another test's server (say, on a port reused after a kill) must be
/// refused rather than change that test's data.
static KEY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("binary-test-{}", uuid::Uuid::new_v4().simple()));

struct Running {
    child: Child,
    base: String,
    /// What the server printed before it listened.
    printed: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &std::path::Path, database_url: Option<&str>, demo: bool) -> Running {
    start_with(data_dir, database_url, demo, &[])
}

fn start_with(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
    demo: bool,
    env: &[(&str, &str)],
) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_emporium"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env("EMPORIUM_ADMIN_KEY", KEY.as_str())
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if demo {
        cmd.arg("--demo");
    }
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd.spawn().expect("start the emporium binary");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let base = loop {
        let line = lines
            .next()
            .expect("the server prints its address before exiting")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("emporium listening on ") {
            break rest.trim().to_string();
        }
        printed.push(line);
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        base,
        printed,
    }
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(KEY.as_str());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("server answers");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Registers a warehouse on the server at `base`; asserts it was created.
async fn warehouse(base: &str, id: &str, region: &str) {
    let (s, body) = call(
        base,
        reqwest::Method::POST,
        "/v1/warehouses",
        Some(json!({"id": id, "name": id, "region": region, "priority": 1})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
}

/// Creates a product priced `amount_minor` EUR on the server at `base`; asserts it was created.
async fn product(base: &str, sku: &str, amount_minor: i64) {
    let (s, body) = call(
        base,
        reqwest::Method::POST,
        "/v1/products",
        Some(
            json!({"sku": sku, "title": "Thing", "description": "", "category": "c",
                    "price": {"amount_minor": amount_minor, "currency": "EUR"}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{body}");
}

async fn survives_a_kill_and_restart(data_dir: &std::path::Path, database_url: Option<&str>) {
    use reqwest::Method;
    let server = start(data_dir, database_url, false);
    let b = server.base.clone();
    for (id, region) in [("wh-1", "eu-west"), ("wh-2", "us-east")] {
        warehouse(&b, id, region).await;
    }
    let (s, body) = call(
        &b,
        Method::POST,
        "/v1/products",
        Some(json!({
        "sku": "LAMP-1", "title": "Desk Lamp", "description": "bright", "category": "home",
        "price": {"amount_minor": 2500, "currency": "EUR"}})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    for w in ["wh-1", "wh-2"] {
        let (s, _) = call(
            &b,
            Method::POST,
            &format!("/v1/inventory/{w}/LAMP-1/receive"),
            Some(json!({"qty": 4})),
        )
        .await;
        assert_eq!(s, 200);
    }
    let (s, placed) = call(
        &b,
        Method::POST,
        "/v1/orders",
        Some(json!({
        "customer_id": "c-9", "lines": [{"sku": "LAMP-1", "qty": 2}],
        "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}})),
    )
    .await;
    assert_eq!(s, 202, "{placed}");
    let order_id = placed["order_id"].as_str().unwrap().to_string();

    // SIGKILL: no chance to flush anything that was not already durable.
    drop(server);

    let server = start(data_dir, database_url, false);
    let b = server.base.clone();
    let (s, order) = call(&b, Method::GET, &format!("/v1/orders/{order_id}"), None).await;
    assert_eq!(s, 200, "{order}");
    // The order survived the kill; its checkout may have run before the kill or since the
    // restart (the saga resumes unfinished checkouts at start).
    assert!(
        order["status"] == "pending" || order["status"] == "confirmed",
        "{order}"
    );
    assert_eq!(
        order["total"],
        json!({"amount_minor": 5000, "currency": "EUR"})
    );
    let (s, inv) = call(&b, Method::GET, "/v1/inventory/LAMP-1", None).await;
    assert_eq!(s, 200);
    assert_eq!(inv["total"]["on_hand"], 8);
    // On Postgres the feed trails commits by the server's oldest open write transaction
    // (other tests'), so wait briefly for it.
    let mut seen = 0;
    for _ in 0..500 {
        let (_, events) = call(&b, Method::GET, "/v1/events?limit=1000", None).await;
        let list = events["events"].as_array().cloned().unwrap_or_default();
        seen = list
            .iter()
            .filter(|e| e["metadata"]["actor"] == "admin")
            .count();
        if seen >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 6, "the six commands sent before the kill");
}

#[tokio::test]
async fn the_binary_keeps_everything_across_a_kill_on_the_embedded_store() {
    let dir = TestDataDir::create();
    survives_a_kill_and_restart(dir.path(), None).await;
}

#[tokio::test]
async fn the_binary_keeps_everything_across_a_kill_on_postgres() {
    let db = TestDatabase::create().await;
    let dir = TestDataDir::create();
    survives_a_kill_and_restart(dir.path(), Some(db.url())).await;
}

#[tokio::test]
async fn demo_mode_seeds_once() {
    use reqwest::Method;
    let dir = TestDataDir::create();
    let count = {
        let server = start(dir.path(), None, true);
        let (s, inv) = call(&server.base, Method::GET, "/v1/warehouses", None).await;
        assert_eq!(s, 200);
        assert_eq!(inv["items"].as_array().unwrap().len(), 3);
        let (_, page) = call(&server.base, Method::GET, "/v1/events?limit=1", None).await;
        page["head"].as_i64().unwrap()
    };
    assert!(
        count > 100,
        "demo seeds warehouses, products and stock ({count} events)"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = start(dir.path(), None, true);
    let (_, page) = call(&server.base, Method::GET, "/v1/events?limit=1", None).await;
    assert_eq!(
        page["head"].as_i64().unwrap(),
        count,
        "a second --demo start adds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_and_loses_no_accepted_command() {
    let db = TestDatabase::create().await;
    let dir = TestDataDir::create();
    let mut server = start(dir.path(), Some(db.url()), false);
    let b = server.base.clone();
    warehouse(&b, "wh-1", "eu-west").await;
    for i in 0..16 {
        product(&b, &format!("SKU-{i}"), 100).await;
    }

    let workers: Vec<_> = (0..16)
        .map(|i| {
            let url = format!("{b}/v1/inventory/wh-1/SKU-{i}/receive");
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let mut accepted = 0u64;
                for _ in 0..100_000 {
                    match client
                        .post(&url)
                        .bearer_auth(KEY.as_str())
                        .json(&json!({"qty": 1}))
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => accepted += 1,
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        // The server has stopped accepting connections.
                        Err(_) => break,
                    }
                }
                accepted
            })
        })
        .collect();
    stored_at_least(&b, 16, 60).await;
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (server, status)
    })
    .await
    .unwrap();
    let (_server, status) = exit;
    assert!(status.unwrap().success(), "a clean exit after draining");

    let mut accepted = 0;
    for w in workers {
        accepted += w.await.unwrap();
    }
    assert!(accepted > 50, "the load was real ({accepted} accepted)");
    let store = db.store(2).await;
    let stored = store.event_count().await.unwrap() - 17;
    println!("accepted {accepted}, stored {stored}");
    assert!(
        stored >= accepted as i64,
        "an accepted command was lost: {accepted} accepted, {stored} stored"
    );
    assert!(
        stored <= accepted as i64 + 16,
        "at most the in-flight requests without a response"
    );
}

async fn ready(base: &str) -> Value {
    reqwest::get(format!("{base}/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_database_run_one_relay_and_fail_over_within_five_seconds() {
    use emporium_event_store::testing::TestNats;
    let db = TestDatabase::create().await;
    let nats = TestNats::connect().await;
    let url = emporium_event_store::testing::nats_url();
    let env = [
        ("NATS_URL", url.as_str()),
        ("EMPORIUM_NATS_PREFIX", nats.prefix.as_str()),
    ];
    let (d1, d2) = (TestDataDir::create(), TestDataDir::create());
    let mut a = Some(start_with(d1.path(), Some(db.url()), false, &env));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = start_with(d2.path(), Some(db.url()), false, &env);
    let a_base = a.as_ref().unwrap().base.clone();

    // Exactly one leader.
    let mut leaders = 0;
    for _ in 0..50 {
        let (ra, rb) = (ready(&a_base).await, ready(&b.base).await);
        leaders = [&ra, &rb]
            .iter()
            .filter(|r| r["bus"]["relay"]["leader"] == true)
            .count();
        if leaders == 1 && ra["bus"]["relay"]["leader"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leaders, 1, "one active relay");
    assert_eq!(ready(&b.base).await["bus"]["relay"]["leader"], false);

    let js = async_nats::jetstream::new(nats.client.clone());
    let count = |js: async_nats::jetstream::Context, stream: String| async move {
        match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    };
    warehouse(&b.base, "wh-1", "eu-west").await;
    let stream = nats.names().stream();
    for _ in 0..100 {
        if count(js.clone(), stream.clone()).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(js.clone(), stream.clone()).await,
        1,
        "the leader published it"
    );

    // Kill the leader hard; the other engine takes over.
    drop(a.take());
    let killed_at = std::time::Instant::now();
    warehouse(&b.base, "wh-2", "eu-west").await;
    while count(js.clone(), stream.clone()).await < 2
        && killed_at.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed_at.elapsed();
    assert_eq!(count(js.clone(), stream.clone()).await, 2);
    println!("failover published after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(ready(&b.base).await["bus"]["relay"]["leader"], true);
}

/// Two engine processes on one Postgres and one NATS stream, orders sent to both, one of them
/// killed -9 and restarted twice: nothing is processed twice, nothing is stranded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_one_killed_twice_during_two_thousand_checkouts_strand_nothing() {
    use emporium_event_store::testing::TestNats;
    use reqwest::Method;
    let db = TestDatabase::create().await;
    let nats = TestNats::connect().await;
    let url = emporium_event_store::testing::nats_url();
    let env = [
        ("NATS_URL", url.as_str()),
        ("EMPORIUM_NATS_PREFIX", nats.prefix.as_str()),
        ("EMPORIUM_LOG", "warn"),
    ];
    let dir = TestDataDir::create();
    let steady_dir = TestDataDir::create();
    let steady = start_with(steady_dir.path(), Some(db.url()), false, &env);
    let mut server = start_with(dir.path(), Some(db.url()), false, &env);
    let base = server.base.clone();
    for (w, region) in [
        ("wh-a", "eu-west"),
        ("wh-b", "us-east"),
        ("wh-c", "ap-south"),
    ] {
        warehouse(&base, w, region).await;
    }
    for i in 0..5 {
        product(&base, &format!("SKU-{i}"), 500).await;
        for w in ["wh-a", "wh-b", "wh-c"] {
            let (s, _) = call(
                &base,
                Method::POST,
                &format!("/v1/inventory/{w}/SKU-{i}/receive"),
                Some(json!({"qty": 150})),
            )
            .await;
            assert_eq!(s, 200);
        }
    }

    // Clients place 2,000 orders with idempotency keys, half of them to each engine,
    // retrying through restarts.
    let base_now = std::sync::Arc::new(std::sync::Mutex::new(base.clone()));
    let steady_base = steady.base.clone();
    let placed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (base_now, placed) = (base_now.clone(), placed.clone());
            let steady_base = steady_base.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut ids = Vec::new();
                for n in 0..125 {
                    let key = format!("order-{c}-{n}");
                    let body = json!({"customer_id": format!("c{c}"),
                        "lines": [{"sku": format!("SKU-{}", (c + n) % 5), "qty": 1 + n % 2}],
                        "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}});
                    loop {
                        let b = if c % 2 == 0 {
                            steady_base.clone()
                        } else {
                            base_now.lock().unwrap().clone()
                        };
                        match client
                            .post(format!("{b}/v1/orders"))
                            .bearer_auth(KEY.as_str())
                            .header("Idempotency-Key", &key)
                            .json(&body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status() == 202 => {
                                let v: Value = r.json().await.unwrap();
                                ids.push(v["order_id"].as_str().unwrap().to_string());
                                placed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                break;
                            }
                            // The engine is down or restarting: the same key is safe to resend.
                            _ => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }
                ids
            })
        })
        .collect();
    for threshold in [600, 1300] {
        while placed.load(std::sync::atomic::Ordering::SeqCst) < threshold {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = server.child.kill(); // SIGKILL
        let _ = server.child.wait();
        server = start_with(dir.path(), Some(db.url()), false, &env);
        *base_now.lock().unwrap() = server.base.clone();
    }
    let mut ids = std::collections::HashSet::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    // Clients were still placing orders after the last restart; time from the moment the
    // run is complete (the last order accepted, after the last restart).
    let restarted = std::time::Instant::now();
    assert_eq!(
        ids.len(),
        2000,
        "2,000 distinct orders (idempotency keys kept retries single)"
    );

    let store = db.store(4).await;
    let emporium_event_store::Db::Postgres(pool) = store.db() else {
        unreachable!()
    };
    loop {
        let settled: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Order' AND event_type IN ('OrderConfirmed', 'OrderRejected')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if settled == 2000 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(90),
            "only {settled} of 2000 orders ended within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = restarted.elapsed();
    println!("all 2000 orders ended {took:?} after the last restart");
    assert!(
        took < Duration::from_secs(30),
        "every order ended within 30 s: {took:?}"
    );

    let confirmed_units: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM((a->>'qty')::bigint), 0)::bigint FROM events,
                jsonb_array_elements(payload->'OrderConfirmed'->'allocation') a
          WHERE aggregate_type = 'Order' AND event_type = 'OrderConfirmed'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let reserved: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM((last.payload->(SELECT k FROM jsonb_object_keys(last.payload) k LIMIT 1)->>'reserved')::bigint), 0)::bigint
           FROM (SELECT DISTINCT ON (aggregate_id) payload FROM events WHERE aggregate_type = 'StockItem'
                 ORDER BY aggregate_id, sequence DESC) last",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(reserved, confirmed_units, "no stranded reservation");
    let confirmed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Order' AND event_type = 'OrderConfirmed'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let approved: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_payments WHERE outcome = 'approved'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(approved, confirmed, "one authorization per confirmed order");
    let authorized_events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Payment' AND event_type = 'PaymentAuthorized'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(authorized_events, confirmed, "no payment authorized twice");
    let voided_confirmed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events v WHERE v.aggregate_type = 'Payment' AND v.event_type = 'PaymentVoided'
           AND EXISTS (SELECT 1 FROM events o WHERE o.aggregate_type = 'Order'
                       AND o.aggregate_id = v.aggregate_id AND o.event_type = 'OrderConfirmed')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        voided_confirmed, 0,
        "no confirmed order has its payment voided"
    );
    let released_after_confirm: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events r WHERE r.aggregate_type = 'StockItem'
           AND r.event_type = 'StockReservationReleased'
           AND EXISTS (SELECT 1 FROM events o WHERE o.aggregate_type = 'Order'
                       AND o.event_type = 'OrderConfirmed'
                       AND o.aggregate_id = r.payload->'StockReservationReleased'->>'order_id'
                       AND o.global_position < r.global_position)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        released_after_confirm, 0,
        "no confirmed order has a reservation released"
    );
    drop(server);
    drop(steady);
}

/// `emporium migrate`, run twice, creates every crate's tables (event store, gateway,
/// projections, sagas) and records each crate's migrations once in the shared history.
async fn migrate_twice_creates_every_crates_tables(database_url: Option<&str>) -> Vec<i64> {
    let dir = TestDataDir::create();
    for _ in 0..2 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_emporium"));
        cmd.arg("migrate")
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("DATABASE_URL");
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        let out = cmd.output().expect("run emporium migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    let db = match database_url {
        Some(url) => emporium_event_store::Db::Postgres(
            emporium_event_store::store::connect_postgres(url, 2)
                .await
                .unwrap(),
        ),
        None => emporium_event_store::Db::Sqlite(
            emporium_event_store::store::open_sqlite(dir.path(), 2)
                .await
                .unwrap(),
        ),
    };
    for table in [
        "events",
        "relay_checkpoints",
        "api_keys",
        "idempotency_keys",
        "projections",
        "sandbox_payments",
        "sandbox_settlements",
        "audit_digests",
        "console_sessions",
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = emporium_event_store::on_db!(&db, pool => {
            sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{table}: {e}"))
        });
        assert!(n >= 0);
    }
    emporium_event_store::on_db!(&db, pool => {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap()
    })
}

#[tokio::test]
async fn migrate_creates_every_crates_tables_on_both_backends() {
    let mut expected = vec![
        20261121000001,
        20261121000002,
        20261121000003,
        20261121000004,
        20261121000005,
        20261128000006,
        20261129000002,
        20261206000001,
        20261207000001,
        20261207000002,
        20261207000003,
        20261207000004,
        20261207000005,
    ];
    assert_eq!(
        migrate_twice_creates_every_crates_tables(None).await,
        expected
    );
    // Postgres only: appends stamp their feed position at insert (SQLite's trigger does),
    // and seal in a function of their own.
    expected.extend([20261129000001, 20261206000002, 20261206000003]);
    expected.sort();
    let db = TestDatabase::create().await;
    assert_eq!(
        migrate_twice_creates_every_crates_tables(Some(db.url())).await,
        expected
    );
}

/// Places a one-line order of `qty` SKU-1 with `token`; returns its id.
async fn place_one(base: &str, qty: i64, token: &str) -> String {
    let (s, body) = call(
        base,
        reqwest::Method::POST,
        "/v1/orders",
        Some(
            json!({"customer_id": "c-1", "lines": [{"sku": "SKU-1", "qty": qty}],
                    "shipping": {"region": "eu-west"}, "payment": {"token": token}}),
        ),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    body["order_id"].as_str().unwrap().to_string()
}

/// Polls `check` on the order (its view) until it holds or `within` passes.
async fn until(base: &str, id: &str, within: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (_, o) = call(
            base,
            reqwest::Method::GET,
            &format!("/v1/orders/{id}"),
            None,
        )
        .await;
        if check(&o) {
            return o;
        }
        assert!(std::time::Instant::now() < deadline, "order {id}: {o}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reserved_units(base: &str) -> i64 {
    let (_, inv) = call(base, reqwest::Method::GET, "/v1/inventory/SKU-1", None).await;
    inv["total"]["reserved"].as_i64().unwrap()
}

/// Cancels before, during and after checkout give back every unit and the payment, also
/// when the engine is killed right after it accepted the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_before_during_and_after_checkout_give_everything_back_across_a_kill() {
    use reqwest::Method;
    let db = TestDatabase::create().await;
    let dir = TestDataDir::create();
    let env = [("EMPORIUM_LOG", "warn")];
    let mut server = start_with(dir.path(), Some(db.url()), false, &env);
    warehouse(&server.base, "wh-a", "eu-west").await;
    product(&server.base, "SKU-1", 500).await;
    let (s, _) = call(
        &server.base,
        Method::POST,
        "/v1/inventory/wh-a/SKU-1/receive",
        Some(json!({"qty": 100})),
    )
    .await;
    assert_eq!(s, 200);

    // After: a confirmed order, cancelled, and the engine killed as soon as it said yes.
    let after = place_one(&server.base, 2, "tok_ok").await;
    until(&server.base, &after, Duration::from_secs(20), |o| {
        o["status"] == "confirmed"
    })
    .await;
    let (s, o) = call(
        &server.base,
        Method::POST,
        &format!("/v1/orders/{after}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!((s, o["status"].as_str()), (200, Some("cancelled")));
    let _ = server.child.kill();
    let _ = server.child.wait();
    server = start_with(dir.path(), Some(db.url()), false, &env);

    // During: the payment never answers, so the checkout holds stock while it waits; the
    // cancel lands mid-checkout, and the engine is killed right after accepting it.
    let during = place_one(&server.base, 3, "tok_timeout").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reserved_units(&server.base).await < 3 {
        assert!(std::time::Instant::now() < deadline, "never reserved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) = call(
        &server.base,
        Method::POST,
        &format!("/v1/orders/{during}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    let _ = server.child.kill();
    let _ = server.child.wait();
    server = start_with(dir.path(), Some(db.url()), false, &env);

    // Before: cancelled as soon as it is placed.
    let before = place_one(&server.base, 4, "tok_ok").await;
    let (s, _) = call(
        &server.base,
        Method::POST,
        &format!("/v1/orders/{before}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);

    // Everything comes back within 30 s of the last restart.
    let restarted = std::time::Instant::now();
    loop {
        if reserved_units(&server.base).await == 0 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "stock still reserved: {}",
            reserved_units(&server.base).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = db.store(2).await;
    for id in [&after, &during, &before] {
        let o = until(&server.base, id, Duration::from_secs(5), |o| {
            o["status"] == "cancelled"
        })
        .await;
        assert_eq!(o["status"], "cancelled");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (checkout, _) = store.load::<emporium_domain::Checkout>(id).await.unwrap();
            if checkout.is_compensated() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id}: compensation never recorded"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let emporium_event_store::Db::Postgres(pool) = store.db() else {
        unreachable!()
    };
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT idempotency_key, outcome FROM sandbox_payments")
            .fetch_all(pool)
            .await
            .unwrap();
    for (key, outcome) in &outcomes {
        assert_ne!(outcome, "approved", "{key} keeps an authorization");
    }
    assert!(
        outcomes.contains(&(after.clone(), "voided".to_string())),
        "{outcomes:?}"
    );
}

/// A PostgreSQL server of this test's own (initdb in a temporary directory, a free port), so
/// the test can restart it without disturbing tests that share the machine's server.
struct PrivatePostgres {
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn bin(tool: &str) -> std::path::PathBuf {
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config (PostgreSQL's server package) is installed");
        std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(tool)
    }

    /// Runs a server tool as the `postgres` user when we are root (initdb refuses root).
    fn run(tool: &str, args: &[&str]) {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Self::bin(tool));
            c
        } else {
            Command::new(Self::bin(tool))
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("emporium-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("data");
        Self::run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let pg = Self { dir, port };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        Self::run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-m",
                "fast",
                "-w",
                action,
            ],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = std::panic::catch_unwind(|| {
            Self::run(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
            )
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL restarted under 4 writers: the engine recovers by itself, readiness goes
/// not-ready and back, every command caught in the restart answers 503 with `Retry-After`
/// (never 500), and no acknowledged command is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_under_load_answers_503_and_loses_nothing_acknowledged() {
    let pg = std::sync::Arc::new(PrivatePostgres::start());
    let dir = TestDataDir::create();
    let engine = start(dir.path(), Some(&pg.url()), false);
    let base = engine.base.clone();
    let (stop, writers) = start_receive_load(&base, 4).await;
    let readiness = {
        let (base, stop) = (base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = reqwest::get(format!("{base}/health/ready"))
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if seen.last() != Some(&ok) {
                    seen.push(ok);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Down for 2 s: long enough for readiness to notice, short enough for commands that
    // wait for a connection to get one when it is back.
    let restarting = pg.clone();
    tokio::task::spawn_blocking(move || {
        restarting.ctl("stop");
        std::thread::sleep(Duration::from_secs(2));
        restarting.ctl("start");
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut totals = (0, 0);
    let mut acked_per = Vec::new();
    for w in writers {
        let Load {
            acked,
            unavailable,
            other,
            ..
        } = w.await.unwrap();
        assert!(other.is_empty(), "only 2xx or 503: {other:?}");
        totals.0 += acked;
        totals.1 += unavailable;
        acked_per.push((acked, unavailable));
    }
    let seen = readiness.await.unwrap();
    eprintln!(
        "postgres restart under 4 writers: {} acknowledged, {} answered 503, readiness {seen:?}",
        totals.0, totals.1
    );
    assert!(
        seen.windows(3).any(|w| w == [true, false, true]),
        "readiness went not-ready and back: {seen:?}"
    );
    // Every acknowledged unit is on hand; a 503 may or may not have been applied.
    for (w, (acked, unavailable)) in acked_per.iter().enumerate() {
        let on_hand = on_hand_of(&base, &format!("SKU-{w}")).await;
        assert!(
            on_hand >= *acked && on_hand <= acked + unavailable,
            "SKU-{w}: on hand {on_hand}, acknowledged {acked}, unavailable {unavailable}"
        );
    }
}

/// What one load writer saw.
#[derive(Debug, Default)]
struct Load {
    /// Answered 2xx: must never be lost.
    acked: i64,
    /// Answered 503 (may or may not have been applied).
    unavailable: i64,
    /// No answer at all (the engine died mid-request): may or may not have been applied.
    unanswered: i64,
    /// Anything else, with its body.
    other: Vec<(u16, String)>,
}

/// Registers wh-1 and SKU-0..SKU-<writers>, then starts [`receive_load`] on them; set the
/// flag to stop it.
async fn start_receive_load(
    base: &str,
    writers: usize,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Vec<tokio::task::JoinHandle<Load>>,
) {
    warehouse(base, "wh-1", "eu-west").await;
    for w in 0..writers {
        product(base, &format!("SKU-{w}"), 100).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = receive_load(base, writers, &stop);
    (stop, load)
}

/// `writers` tasks sending `receive` qty 1 of SKU-<w> at wh-1 until `stop`.
fn receive_load(
    base: &str,
    writers: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Load>> {
    (0..writers)
        .map(|w| {
            let (base, stop) = (base.to_string(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut load = Load::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = client
                        .post(format!("{base}/v1/inventory/wh-1/SKU-{w}/receive"))
                        .bearer_auth(KEY.as_str())
                        .json(&json!({"qty": 1}))
                        .send()
                        .await;
                    let Ok(resp) = sent else {
                        load.unanswered += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    match resp.status().as_u16() {
                        200 | 201 => load.acked += 1,
                        503 => {
                            assert!(
                                resp.headers().contains_key("retry-after"),
                                "a 503 says when to retry"
                            );
                            load.unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        s => load.other.push((s, resp.text().await.unwrap_or_default())),
                    }
                }
                load
            })
        })
        .collect()
}

/// Waits (at most a minute) until SKU-0..SKU-<skus> hold `n` units together, so a test
/// interrupts a load that has really run however slow the box is.
async fn stored_at_least(base: &str, skus: usize, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut stored = 0;
        for w in 0..skus {
            stored += on_hand_of(base, &format!("SKU-{w}")).await;
        }
        if stored >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the load never stored {n} commands: {stored}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// On hand of `sku` over all warehouses.
async fn on_hand_of(base: &str, sku: &str) -> i64 {
    let (s, body) = call(
        base,
        reqwest::Method::GET,
        &format!("/v1/inventory/{sku}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["total"]["on_hand"]
        .as_i64()
        .unwrap_or_else(|| panic!("on hand in {body}"))
}

/// The engine killed -9 under 4 writers and started again on the same database: every
/// command it acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_under_load_loses_no_acknowledged_command() {
    let db = TestDatabase::create().await;
    let dir = TestDataDir::create();
    let engine = start(dir.path(), Some(db.url()), false);
    let base = engine.base.clone();
    let (stop, writers) = start_receive_load(&base, 4).await;
    // The kill waits for stored commands rather than a fixed time: a loaded CI box (a debug
    // build running five projections and the notification worker beside the writes) may take
    // several seconds for them.
    stored_at_least(&base, 4, 120).await;
    drop(engine); // SIGKILL
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut loads = Vec::new();
    for w in writers {
        loads.push(w.await.unwrap());
    }
    let engine = start(dir.path(), Some(db.url()), false);
    let (mut acked, mut uncertain) = (0, 0);
    for (w, load) in loads.iter().enumerate() {
        assert!(load.other.is_empty(), "{:?}", load.other);
        let on_hand = on_hand_of(&engine.base, &format!("SKU-{w}")).await;
        assert!(
            on_hand >= load.acked && on_hand <= load.acked + load.unavailable + load.unanswered,
            "SKU-{w}: on hand {on_hand} after the kill, {load:?}"
        );
        acked += load.acked;
        uncertain += load.unavailable + load.unanswered;
    }
    eprintln!("kill -9 under 4 writers: {acked} acknowledged, all kept; {uncertain} unanswered");
    assert!(acked > 100, "the load ran: {acked}");
}

/// NATS stopped for 30 s under 4 writers with the real binary: every command is accepted
/// meanwhile, and once NATS is back the stream holds every event of the log exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thirty_second_nats_outage_under_load_loses_and_duplicates_nothing() {
    use emporium_event_store::nats::NatsNames;
    use emporium_event_store::testing::{assert_stream_matches_store, NatsServer};
    let db = TestDatabase::create().await;
    let dir = TestDataDir::create();
    let mut nats = NatsServer::start();
    let prefix = "outage30";
    let engine = start_with(
        dir.path(),
        Some(db.url()),
        false,
        &[("NATS_URL", &nats.url()), ("EMPORIUM_NATS_PREFIX", prefix)],
    );
    let base = engine.base.clone();
    let (stop, writers) = start_receive_load(&base, 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    nats.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = 0;
    for w in writers {
        let load = w.await.unwrap();
        assert!(
            load.other.is_empty() && load.unavailable == 0 && load.unanswered == 0,
            "every command is accepted while NATS is down: {load:?}"
        );
        acked += load.acked;
    }
    let store = db.store(4).await;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    assert_stream_matches_store(&js, &NatsNames::new(prefix), &store).await;
    eprintln!(
        "30 s NATS outage under 4 writers: {acked} commands accepted, {} events in the log, \
         the stream holds each once",
        store.event_count().await.unwrap()
    );
}

/// `POST` with an `Idempotency-Key`; `None` when the server did not answer (killed).
async fn post_keyed(base: &str, path: &str, body: &Value, key: &str) -> Option<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(KEY.as_str())
        .header("idempotency-key", key)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.unwrap_or(Value::Null)))
}

/// Two engines on one database settle shipments and returns, one of them killed while
/// requests are in flight and restarted: every order is captured once, every return
/// refunded and restocked once, and the stock adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_one_killed_settle_every_shipment_and_return_once() {
    use reqwest::Method;
    const ORDERS: usize = 40;
    const RETURNS: usize = 10;
    let db = TestDatabase::create().await;
    let (dir_a, dir_b) = (TestDataDir::create(), TestDataDir::create());
    let env = [
        ("EMPORIUM_LOG", "warn"),
        ("EMPORIUM_IDEMPOTENCY_LEASE_SECS", "2"),
    ];
    let mut a = start_with(dir_a.path(), Some(db.url()), false, &env);
    let b = start_with(dir_b.path(), Some(db.url()), false, &env);
    warehouse(&a.base, "wh-a", "eu-west").await;
    product(&a.base, "SKU-1", 500).await;
    let (s, _) = call(
        &a.base,
        Method::POST,
        "/v1/inventory/wh-a/SKU-1/receive",
        Some(json!({"qty": 100})),
    )
    .await;
    assert_eq!(s, 200);
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        ids.push(place_one(base, 1, "tok_ok").await);
    }
    for id in &ids {
        until(&b.base, id, Duration::from_secs(30), |o| {
            o["status"] == "confirmed"
        })
        .await;
    }

    // Every shipment at once, half of them to A, which is killed while they are in flight;
    // the client retries what got no answer on B with the same key.
    let ship = json!({"warehouse_id": "wh-a", "lines": [{"sku": "SKU-1", "qty": 1}]});
    let sends: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let base = if i % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            };
            let (id, ship) = (id.clone(), ship.clone());
            tokio::spawn(async move {
                post_keyed(
                    &base,
                    &format!("/v1/orders/{id}/shipments"),
                    &ship,
                    &format!("ship-{id}"),
                )
                .await
            })
        })
        .collect();
    // Killed mid-burst: once some shipments are recorded, while others are in flight.
    let store = db.store(2).await;
    let emporium_event_store::Db::Postgres(pool) = store.db() else {
        unreachable!()
    };
    let shipped_now = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM events WHERE event_type = 'OrderShipped'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while shipped_now().await < 6 {
        assert!(std::time::Instant::now() < deadline, "no shipment recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = a.child.kill();
    let _ = a.child.wait();
    let at_kill = shipped_now().await;
    let mut unanswered = 0;
    for (send, id) in sends.into_iter().zip(&ids) {
        let answer = match send.await.unwrap() {
            Some(answer) => answer,
            None => {
                unanswered += 1;
                retry_until_answered(
                    &b.base,
                    &format!("/v1/orders/{id}/shipments"),
                    &ship,
                    &format!("ship-{id}"),
                )
                .await
            }
        };
        assert_eq!(answer.0, 201, "{id}: {}", answer.1);
    }
    a = start_with(dir_a.path(), Some(db.url()), false, &env);

    // Returns of the first ten, alternating engines.
    let ret = json!({"reason": "damaged", "lines": [{"sku": "SKU-1", "qty": 1, "restock": true, "warehouse_id": "wh-a"}]});
    for (i, id) in ids.iter().take(RETURNS).enumerate() {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let answer = retry_until_answered(
            base,
            &format!("/v1/orders/{id}/returns"),
            &ret,
            &format!("return-{id}"),
        )
        .await;
        assert_eq!(answer.0, 201, "{id}: {}", answer.1);
    }

    // Everything settles, once.
    for (i, id) in ids.iter().enumerate() {
        let refunded = if i < RETURNS { 500 } else { 0 };
        until(&a.base, id, Duration::from_secs(30), |o| {
            o["captured"]["amount_minor"] == 500 && o["refunded"]["amount_minor"] == refunded
        })
        .await;
    }
    let (_, inv) = call(&b.base, Method::GET, "/v1/inventory/SKU-1", None).await;
    assert_eq!(
        (
            inv["total"]["on_hand"].as_i64(),
            inv["total"]["reserved"].as_i64()
        ),
        (Some((100 - ORDERS + RETURNS) as i64), Some(0)),
        "{inv}"
    );
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM sandbox_settlements WHERE kind = 'capture'").await,
        ORDERS as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM sandbox_settlements WHERE kind = 'refund'").await,
        RETURNS as i64
    );
    for (event, n) in [
        ("OrderShipped", ORDERS),
        ("StockShipped", ORDERS),
        ("PaymentCaptured", ORDERS),
        ("ItemsReturned", RETURNS),
        ("StockRestocked", RETURNS),
        ("PaymentRefunded", RETURNS),
    ] {
        let got: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(got, n as i64, "{event}");
    }
    eprintln!(
        "A killed with {at_kill} of {ORDERS} shipments recorded; {unanswered} requests got no \
         answer and were retried on B"
    );
    drop(a);
}

/// Retries a keyed `POST` until it gets an answer other than "in progress" (the killed
/// engine's claim lapses after the lease).
async fn retry_until_answered(base: &str, path: &str, body: &Value, key: &str) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, body)) = post_keyed(base, path, body, key).await {
            if !(status == 409 && body["code"] == "idempotency_in_progress") && status != 503 {
                return (status, body);
            }
        }
        assert!(std::time::Instant::now() < deadline, "{path}: no answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The suite's Python (scripts/python-env.sh); the test fails, never skips, without it.
fn python() -> std::path::PathBuf {
    let venv = std::env::var("EMPORIUM_PY_VENV").expect(
        "EMPORIUM_PY_VENV names the virtualenv with DuckDB and pandas: run the suite with \
         `bash scripts/test.sh` (or `export EMPORIUM_PY_VENV=$(bash scripts/python-env.sh)`)",
    );
    std::path::Path::new(&venv).join("bin/python")
}

/// What DuckDB makes of a Parquet file and pandas of a CSV file (counts, position range,
/// per-type counts), as JSON.
fn read_with_python(parquet: &std::path::Path, csv: &std::path::Path) -> Value {
    const SCRIPT: &str = r#"
import json, sys
import duckdb, pandas
p, c = sys.argv[1], sys.argv[2]
con = duckdb.connect()
n, lo, hi = con.execute("select count(*), min(position), max(position) from read_parquet(?)", [p]).fetchone()
types = dict(con.execute("select event_type, count(*) from read_parquet(?) group by 1", [p]).fetchall())
ts = con.execute("select typeof(recorded_at), typeof(position), typeof(sequence) from read_parquet(?) limit 1", [p]).fetchone()
df = pandas.read_csv(c)
print(json.dumps({"count": n, "min": lo, "max": hi, "types": types, "column_types": list(ts),
                  "csv_rows": len(df), "csv_min": int(df.position.min()), "csv_max": int(df.position.max()),
                  "csv_types": {k: int(v) for k, v in df.event_type.value_counts().items()}}))
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(parquet)
        .arg(csv)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python prints JSON")
}

/// Analysts' exports read as they are by their tools: DuckDB reads the Parquet file (from
/// `GET /v1/events` and from `emporium events export`), pandas the CSV, and their counts,
/// position range and per-type counts equal the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_and_pandas_read_the_exports_as_they_are() {
    use reqwest::Method;
    let db = TestDatabase::create().await;
    let dir = TestDataDir::create();
    let server = start_with(
        dir.path(),
        Some(db.url()),
        false,
        &[("EMPORIUM_LOG", "warn")],
    );
    warehouse(&server.base, "wh-a", "eu-west").await;
    for i in 0..30 {
        product(&server.base, &format!("SKU-{i}"), 100 + i).await;
        let (s, _) = call(
            &server.base,
            Method::POST,
            &format!("/v1/inventory/wh-a/SKU-{i}/receive"),
            Some(json!({"qty": 5})),
        )
        .await;
        assert_eq!(s, 200);
    }
    for _ in 0..20 {
        let (s, _) = call(
            &server.base,
            Method::POST,
            "/v1/orders",
            Some(
                json!({"customer_id": "c-1", "lines": [{"sku": "SKU-1", "qty": 1}],
                        "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}),
            ),
        )
        .await;
        assert_eq!(s, 202);
    }
    let client = reqwest::Client::new();
    let fetch = |format: &'static str| {
        let client = client.clone();
        let base = server.base.clone();
        async move {
            let resp = client
                .get(format!("{base}/v1/events?format={format}"))
                .bearer_auth(KEY.as_str())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let through: i64 = resp.headers()["x-feed-through"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (through, resp.bytes().await.unwrap())
        }
    };
    let (through, parquet) = fetch("parquet").await;
    let (csv_through, csv) = fetch("csv").await;
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"));
    let files = TestDataDir::create();
    let (pq_path, csv_path) = (
        files.path().join("events.parquet"),
        files.path().join("events.csv"),
    );
    std::fs::write(&pq_path, &parquet).unwrap();
    std::fs::write(&csv_path, &csv).unwrap();

    // The store's own figures, up to the exports' ranges.
    let store = db.store(2).await;
    let emporium_event_store::Db::Postgres(pool) = store.db() else {
        unreachable!()
    };
    let by_type = |upto: i64| async move {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT event_type, COUNT(*) FROM events WHERE feed_position <= $1 GROUP BY 1",
        )
        .bind(upto)
        .fetch_all(pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(t, n)| (t, json!(n)))
            .collect::<serde_json::Map<String, Value>>()
    };
    let read = read_with_python(&pq_path, &csv_path);
    assert_eq!(read["count"], through, "{read}");
    assert_eq!(read["min"], 1);
    assert_eq!(read["max"], through);
    assert_eq!(read["types"], Value::Object(by_type(through).await));
    assert_eq!(
        read["column_types"],
        json!(["TIMESTAMP WITH TIME ZONE", "BIGINT", "BIGINT"]),
        "typed columns"
    );
    assert_eq!(read["csv_rows"], csv_through);
    assert_eq!(read["csv_max"], csv_through);
    assert_eq!(read["csv_types"], Value::Object(by_type(csv_through).await));

    // The CLI writes the same file, with its progress bar on stderr.
    let cli_path = files.path().join("cli.parquet");
    let out = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["events", "export", "--format", "parquet", "-o"])
        .arg(&cli_path)
        .env("DATABASE_URL", db.url())
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = read_with_python(&cli_path, &csv_path);
    let head: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(cli["count"], head);
    assert_eq!(cli["types"], Value::Object(by_type(head).await));

    // `emporium show` sees an aggregate as it was: SKU-1 did not exist at position 1 (the
    // warehouse's registration) and had its one event by position 3.
    let show = |as_of: &str| {
        Command::new(env!("CARGO_BIN_EXE_emporium"))
            .args(["show", "product", "SKU-1", "--as-of", as_of])
            .env("DATABASE_URL", db.url())
            .env_remove("NATS_URL")
            .output()
            .unwrap()
    };
    let before = show("1");
    assert!(!before.status.success());
    assert!(String::from_utf8_lossy(&before.stderr).contains("at that point"));
    let after = show("4");
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    let shown: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["state"]["title"], "Thing");
}

/// The auditors' commands on the real binary: an engine with `--audit-key` signs digests on
/// its own; `emporium verify` passes on the untouched log and exits 1 naming the position of
/// an edited row; `emporium verify-proof` accepts a timeline's proofs and refuses them under
/// another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_verify_proof_on_the_command_line() {
    use reqwest::Method;
    let db = TestDatabase::create().await;
    let dir = TestDataDir::create();
    let key = dir.path().join("audit.key");
    let key_arg = key.to_str().unwrap().to_string();
    let server = start_with(
        dir.path(),
        Some(db.url()),
        false,
        &[
            ("EMPORIUM_LOG", "warn"),
            ("EMPORIUM_AUDIT_KEY", &key_arg),
            ("EMPORIUM_DIGEST_INTERVAL_SECS", "1"),
        ],
    );
    warehouse(&server.base, "wh-a", "eu-west").await;
    product(&server.base, "SKU-1", 100).await;
    let (s, _) = call(
        &server.base,
        Method::POST,
        "/v1/inventory/wh-a/SKU-1/receive",
        Some(json!({"qty": 5})),
    )
    .await;
    assert_eq!(s, 200);
    let order = place_one(&server.base, 1, "tok_ok").await;
    until(&server.base, &order, Duration::from_secs(20), |o| {
        o["status"] == "confirmed"
    })
    .await;
    let store = db.store(2).await;
    let emporium_event_store::Db::Postgres(pool) = store.db() else {
        unreachable!()
    };
    let head: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    // Wait for the engine's digest to cover the whole log.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let timeline = loop {
        let (s, t) = call(
            &server.base,
            Method::GET,
            &format!("/v1/orders/{order}/timeline?proof=true"),
            None,
        )
        .await;
        if s == 200 && t["proof"]["digest"]["position"].as_i64() >= Some(head) {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "{s} {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_emporium"))
            .args(args)
            .env("DATABASE_URL", db.url())
            .env_remove("NATS_URL")
            .env_remove("EMPORIUM_AUDIT_KEY")
            .output()
            .unwrap()
    };
    let public = format!("{key_arg}.pub");
    let ok = cli(&["verify", "--public-key", &public]);
    let stdout = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("root matches"), "{stdout}");

    let proof_file = dir.path().join("timeline.json");
    std::fs::write(&proof_file, serde_json::to_vec(&timeline).unwrap()).unwrap();
    let proof = proof_file.to_str().unwrap();
    let checked = cli(&["verify-proof", proof, "--public-key", &public]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let stranger = dir.path().join("stranger.key");
    let made = cli(&["digest", "--audit-key", stranger.to_str().unwrap()]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let refused = cli(&[
        "verify-proof",
        proof,
        "--public-key",
        &format!("{}.pub", stranger.display()),
    ]);
    assert!(!refused.status.success());

    // One edited payload: verify exits 1 and names its position.
    sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{qty}', '4') WHERE feed_position = 3",
    )
    .execute(pool)
    .await
    .unwrap();
    let broken = cli(&["verify"]);
    assert!(!broken.status.success());
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(err.contains("first broken position 3"), "{err}");
}

/// Creates a product titled `title` on the server at `base`.
async fn titled(base: &str, sku: &str, title: &str) {
    let (s, body) = call(
        base,
        reqwest::Method::POST,
        "/v1/products",
        Some(
            json!({"sku": sku, "title": title, "description": "", "category": "home",
                    "price": {"amount_minor": 1000, "currency": "EUR"}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{body}");
}

/// Waits until the search `path` on `base` answers `total` matches; returns the page.
async fn search_total(base: &str, path: &str, total: i64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, page) = call(base, reqwest::Method::GET, path, None).await;
        if s == 200 && page["total"] == total {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{base}{path}: wanted {total}, last {s} {page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two engines on one database each keep their own search index from the feed. One, with
/// its index in a directory, killed -9 and started again continues after the position of
/// its last commit, and neither index ever holds a product twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_keep_their_own_search_index_and_one_resumes_after_a_kill() {
    let db = TestDatabase::create().await;
    let (d1, d2) = (TestDataDir::create(), TestDataDir::create());
    let index_dir = d2.path().join("search-index");
    let env_b = [("EMPORIUM_SEARCH_DIR", index_dir.to_str().unwrap())];
    let a = start(d1.path(), Some(db.url()), false);
    let mut b = Some(start_with(d2.path(), Some(db.url()), false, &env_b));
    let b_base = b.as_ref().unwrap().base.clone();
    for i in 0..20 {
        titled(&a.base, &format!("LAMP-{i}"), &format!("Desk Lamp {i}")).await;
    }
    for i in 0..10 {
        titled(
            &b_base,
            &format!("KETTLE-{i}"),
            &format!("Electric Kettle {i}"),
        )
        .await;
    }
    // Each engine's index has what both wrote.
    for base in [&a.base, &b_base] {
        search_total(base, "/v1/catalog/products?q=lamp", 20).await;
        search_total(base, "/v1/catalog/products?q=ketle", 10).await;
    }
    let (_, page) = call(&b_base, reqwest::Method::GET, "/v1/catalog/products", None).await;
    let covered = page["position"].as_i64().unwrap();
    assert!(covered > 0, "{page}");

    // SIGKILL, more writes meanwhile, then the same index directory again.
    drop(b.take());
    for i in 20..30 {
        titled(&a.base, &format!("LAMP-{i}"), &format!("Desk Lamp {i}")).await;
    }
    let b = start_with(d2.path(), Some(db.url()), false, &env_b);
    let resumed: i64 = b
        .printed
        .iter()
        .find_map(|l| l.strip_prefix("search index: continuing after feed position "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resume line in {:?}", b.printed));
    assert!(
        resumed >= covered,
        "resumed at {resumed}, had covered {covered}"
    );
    for base in [&a.base, &b.base] {
        let lamps = search_total(base, "/v1/catalog/products?q=lamp&limit=1000", 30).await;
        let skus: std::collections::BTreeSet<&str> = lamps["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["sku"].as_str().unwrap())
            .collect();
        assert_eq!(skus.len(), 30, "each product once");
        search_total(base, "/v1/catalog/products?limit=1000", 40).await;
    }
    // Both indexes answer alike.
    let (_, pa) = call(
        &a.base,
        reqwest::Method::GET,
        "/v1/catalog/products?q=desk%20lam&limit=50",
        None,
    )
    .await;
    let (_, pb) = call(
        &b.base,
        reqwest::Method::GET,
        "/v1/catalog/products?q=desk%20lam&limit=50",
        None,
    )
    .await;
    assert_eq!(pa["items"], pb["items"]);
}

/// Issue 16's background work on two real engines, one killed -9 and restarted: the review
/// sweeper rejects every undecided review once, and the notification worker delivers every
/// order status change to the merchant's webhook (which refuses each first delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_one_killed_time_out_every_review_once_and_deliver_every_notification() {
    use emporium_event_store::testing::TestNats;
    use reqwest::Method;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    const ORDERS: usize = 20;
    let db = TestDatabase::create().await;
    let nats = TestNats::connect().await;
    let url = emporium_event_store::testing::nats_url();
    let env = [
        ("EMPORIUM_LOG", "warn"),
        ("NATS_URL", url.as_str()),
        ("EMPORIUM_NATS_PREFIX", nats.prefix.as_str()),
        ("EMPORIUM_REVIEW_THRESHOLD", "50"),
        ("EMPORIUM_REVIEW_TIMEOUT_SECS", "3"),
    ];
    // The merchant's endpoint: every notification refused once, then taken.
    let seen: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, _body: String| {
                let seen = seen.clone();
                async move {
                    let id = headers
                        .get("emporium-notification-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let mut seen = seen.lock().unwrap();
                    let first = !seen.iter().any(|(i, _)| *i == id);
                    let status = if first { 503 } else { 204 };
                    seen.push((id, status));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (dir_a, dir_b) = (TestDataDir::create(), TestDataDir::create());
    let mut a = start_with(dir_a.path(), Some(db.url()), false, &env);
    let b = start_with(dir_b.path(), Some(db.url()), false, &env);
    let (s, body) = call(
        &a.base,
        Method::POST,
        "/v1/merchants",
        Some(json!({"id": "acme", "name": "Acme", "commission_bps": 1000, "webhook_url": hook})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    warehouse(&a.base, "wh-a", "eu-west").await;
    for (sku, price) in [("TV-1", 600_000), ("CABLE-1", 500)] {
        let (s, body) = call(
            &a.base,
            Method::POST,
            "/v1/products",
            Some(json!({"sku": sku, "title": "Thing", "description": "", "category": "c",
                        "price": {"amount_minor": price, "currency": "EUR"}, "merchant_id": "acme"})),
        )
        .await;
        assert_eq!(s, 201, "{body}");
        let (s, _) = call(
            &a.base,
            Method::POST,
            &format!("/v1/inventory/wh-a/{sku}/receive"),
            Some(json!({"qty": 1000})),
        )
        .await;
        assert_eq!(s, 200);
    }
    // Each order from a new customer: TVs score 55 (held), cables 15 (confirmed).
    let mut held = Vec::new();
    let mut plain = Vec::new();
    for i in 0..ORDERS {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let sku = if i % 2 == 0 { "TV-1" } else { "CABLE-1" };
        let (s, body) = call(
            base,
            Method::POST,
            "/v1/orders",
            Some(
                json!({"customer_id": format!("c-{i}"), "lines": [{"sku": sku, "qty": 1}],
                        "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}),
            ),
        )
        .await;
        assert_eq!(s, 202, "{body}");
        let id = body["order_id"].as_str().unwrap().to_string();
        if sku == "TV-1" {
            held.push(id)
        } else {
            plain.push(id)
        }
    }
    // Killed while reviews wait and notifications are in flight; started again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = a.child.kill();
    let _ = a.child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a = start_with(dir_a.path(), Some(db.url()), false, &env);

    for id in &held {
        let o = until(&b.base, id, Duration::from_secs(60), |o| {
            o["status"] == "rejected"
        })
        .await;
        assert_eq!(
            o["reject_reason"], "rejected in fraud review: the review was not decided in time",
            "{o}"
        );
    }
    for id in &plain {
        until(&a.base, id, Duration::from_secs(30), |o| {
            o["status"] == "confirmed"
        })
        .await;
    }
    let store = db.store(2).await;
    let emporium_event_store::Db::Postgres(pool) = store.db() else {
        unreachable!()
    };
    let rejections: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, COUNT(*) FROM events WHERE event_type = 'OrderRejected' \
         GROUP BY aggregate_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rejections.len(), held.len(), "{rejections:?}");
    assert!(rejections.iter().all(|(_, n)| *n == 1), "{rejections:?}");
    let (_, inv) = call(&a.base, Method::GET, "/v1/inventory/TV-1", None).await;
    assert_eq!(inv["total"]["reserved"], 0, "held stock given back: {inv}");

    // Notifications: TVs pending, under_review, rejected; cables pending, confirmed.
    let expected = held.len() * 3 + plain.len() * 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (accepted, refused) = loop {
        let seen = seen.lock().unwrap().clone();
        let mut by_id: HashMap<String, (usize, usize)> = HashMap::new();
        for (id, status) in &seen {
            let e = by_id.entry(id.clone()).or_default();
            if *status == 204 {
                e.0 += 1
            } else {
                e.1 += 1
            }
        }
        let accepted = by_id.values().filter(|(ok, _)| *ok > 0).count();
        if accepted == expected {
            break (
                by_id.values().map(|(ok, _)| ok).sum::<usize>(),
                by_id.values().map(|(_, no)| no).sum::<usize>(),
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{accepted} of {expected} notifications delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "two engines, one killed: {expected} notifications delivered ({accepted} accepted \
         deliveries, {refused} refused first tries); {} reviews timed out once each",
        held.len()
    );
    drop(a);
    drop(b);
}
