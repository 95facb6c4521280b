//! The checkout saga end to end over HTTP: every payment token path with its compensations,
//! split allocations shown in the timeline, and a thousand checkouts racing for a hundred
//! units.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use emporium_event_store::testing::TestNats;
use emporium_event_store::{on_db, Db};
use emporium_sagas::CheckoutConfig;
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use serde_json::{json, Value};

fn config() -> CheckoutConfig {
    CheckoutConfig {
        payment_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_millis(500),
        ..CheckoutConfig::default()
    }
}

async fn place(app: &TestApp, lines: &[(&str, i64)], token: &str) -> String {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(s, q)| json!({"sku": s, "qty": q}))
        .collect();
    let r = app
        .post(
            "/v1/orders",
            json!({"customer_id": "c1", "lines": lines, "shipping": {"region": "eu-west"},
                   "payment": {"token": token}}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    r.body["order_id"].as_str().unwrap().to_string()
}

/// Waits until the order leaves `pending` and its checkout has finished (compensations
/// included), and returns the order.
async fn settled(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = app.get(&format!("/v1/orders/{id}")).await.body;
        let (checkout, _) = app
            .store
            .load::<emporium_sagas::Checkout>(id)
            .await
            .unwrap();
        if o["status"] != "pending" && checkout.finished().is_some() {
            return o;
        }
        assert!(Instant::now() < deadline, "order {id} never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reserved(app: &TestApp, sku: &str) -> i64 {
    app.get(&format!("/v1/inventory/{sku}")).await.body["total"]["reserved"]
        .as_i64()
        .unwrap()
}

async fn sandbox(db: &Db, order: &str) -> Vec<String> {
    let sql = db.sql("SELECT outcome FROM sandbox_payments WHERE idempotency_key = $1");
    on_db!(db, pool => {
        sqlx::query_scalar(&sql).bind(order).fetch_all(pool).await.unwrap()
    })
}

async fn every_token_path_ends_right_with_its_compensations(backend: Backend) {
    let app = TestApp::with_checkout(backend, config(), None).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("SKU-1", "Thing", 1250).await.status, 201);
    assert_eq!(app.receive("wh-a", "SKU-1", 10).await.status, 200);

    let ok = place(&app, &[("SKU-1", 2)], "tok_ok").await;
    let o = settled(&app, &ok).await;
    assert_eq!(o["status"], "confirmed", "{o}");
    assert_eq!(
        o["allocation"],
        json!([{"sku": "SKU-1", "warehouse_id": "wh-a", "qty": 2}])
    );
    assert_eq!(sandbox(app.store.db(), &ok).await, ["approved"]);
    assert_eq!(reserved(&app, "SKU-1").await, 2);

    let declined = place(&app, &[("SKU-1", 1)], "tok_decline").await;
    let o = settled(&app, &declined).await;
    assert_eq!(o["status"], "rejected");
    assert!(
        o["reject_reason"].as_str().unwrap().contains("declined"),
        "{o}"
    );
    assert_eq!(
        reserved(&app, "SKU-1").await,
        2,
        "the declined order's reservation is released"
    );

    let started = Instant::now();
    let timeout = place(&app, &[("SKU-1", 1)], "tok_timeout").await;
    let o = settled(&app, &timeout).await;
    assert_eq!(o["status"], "rejected");
    assert_eq!(o["reject_reason"], "payment timed out");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the deadline was awaited"
    );
    assert_eq!(reserved(&app, "SKU-1").await, 2);

    let flaky = place(&app, &[("SKU-1", 1)], "tok_error").await;
    let o = settled(&app, &flaky).await;
    assert_eq!(
        o["status"], "confirmed",
        "a transient error is retried: {o}"
    );
    assert_eq!(
        sandbox(app.store.db(), &flaky).await,
        ["approved"],
        "one authorization"
    );
    assert_eq!(reserved(&app, "SKU-1").await, 3);

    let short = place(&app, &[("SKU-1", 50)], "tok_ok").await;
    let o = settled(&app, &short).await;
    assert_eq!(o["status"], "rejected");
    assert!(
        o["reject_reason"].as_str().unwrap().contains("SKU-1"),
        "names the SKU: {o}"
    );
    assert!(
        sandbox(app.store.db(), &short).await.is_empty(),
        "no payment without stock"
    );

    // Cancelling a confirmed order releases its stock and voids its payment: the request
    // records the cancel, the saga compensates from it.
    let c = app
        .post(&format!("/v1/orders/{ok}/cancel"), json!({}))
        .await;
    assert_eq!(c.body["status"], "cancelled");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reserved(&app, "SKU-1").await != 1 || sandbox(app.store.db(), &ok).await != ["voided"] {
        assert!(
            Instant::now() < deadline,
            "the cancel was never compensated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_every_token_path_ends_right_with_its_compensations() {
    every_token_path_ends_right_with_its_compensations(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_every_token_path_ends_right_with_its_compensations() {
    every_token_path_ends_right_with_its_compensations(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_needing_two_warehouses_is_split_and_the_timeline_shows_every_step() {
    let nats = TestNats::connect().await;
    let app = TestApp::with_checkout(Backend::Postgres, config(), Some(&nats)).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_warehouse("wh-b", "us-east", 2).await.status, 201);
    assert_eq!(app.create_product("SKU-1", "Thing", 100).await.status, 201);
    assert_eq!(app.receive("wh-a", "SKU-1", 3).await.status, 200);
    assert_eq!(app.receive("wh-b", "SKU-1", 3).await.status, 200);
    let id = place(&app, &[("SKU-1", 5)], "tok_ok").await;
    let o = settled(&app, &id).await;
    assert_eq!(o["status"], "confirmed", "{o}");
    let mut split: Vec<(String, i64)> = o["allocation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["warehouse_id"].as_str().unwrap().to_string(),
                a["qty"].as_i64().unwrap(),
            )
        })
        .collect();
    split.sort();
    assert_eq!(split, [("wh-a".to_string(), 3), ("wh-b".to_string(), 2)]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let types = loop {
        let t = app.get(&format!("/v1/orders/{id}/timeline")).await;
        assert_eq!(t.status, 200, "{:?}", t.body);
        let events = t.body["events"].as_array().unwrap().clone();
        let types: Vec<String> = events
            .iter()
            .map(|e| e["event_type"].as_str().unwrap().to_string())
            .collect();
        if types.contains(&"CheckoutCompleted".to_string()) || Instant::now() > deadline {
            let positions: Vec<i64> = events
                .iter()
                .map(|e| e["position"].as_i64().unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "global order");
            assert!(events
                .iter()
                .all(|e| !e["metadata"]["correlation_id"].as_str().unwrap().is_empty()));
            break types;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for step in [
        "OrderPlaced",
        "CheckoutStarted",
        "StockReserved",
        "CheckoutStockReserved",
        "PaymentAuthorized",
        "CheckoutPaymentAuthorized",
        "OrderConfirmed",
        "CheckoutCompleted",
    ] {
        assert!(
            types.iter().any(|t| t == step),
            "timeline lacks {step}: {types:?}"
        );
    }
    assert_eq!(
        types.iter().filter(|t| *t == "StockReserved").count(),
        2,
        "one reservation per warehouse"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_checkouts_for_a_hundred_units_confirm_exactly_a_hundred() {
    let nats = TestNats::connect().await;
    a_thousand_checkouts_for_a_hundred_units(Backend::Postgres, Some(&nats)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_thousand_checkouts_for_a_hundred_units_confirm_exactly_a_hundred() {
    a_thousand_checkouts_for_a_hundred_units(Backend::Sqlite, None).await;
}

async fn a_thousand_checkouts_for_a_hundred_units(backend: Backend, nats: Option<&TestNats>) {
    // The payment deadline runs from the start of each checkout; queueing behind a thousand
    // others must not eat it.
    let volume = CheckoutConfig {
        payment_timeout: Duration::from_secs(300),
        ..config()
    };
    let app = TestApp::with_checkout(backend, volume, nats).await;
    for (w, region, qty) in [
        ("wh-a", "eu-west", 40),
        ("wh-b", "us-east", 35),
        ("wh-c", "ap-south", 25),
    ] {
        assert_eq!(app.create_warehouse(w, region, 1).await.status, 201);
        if w == "wh-a" {
            assert_eq!(app.create_product("HOT", "Hot item", 999).await.status, 201);
        }
        assert_eq!(app.receive(w, "HOT", qty).await.status, 200);
    }
    let started = Instant::now();
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (client, base) = (app.client.clone(), app.base.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..1000 / 32 + usize::from(c < 1000 % 32) {
                    let r = client
                        .post(format!("{base}/v1/orders"))
                        .bearer_auth(ADMIN_KEY)
                        .json(&json!({"customer_id": format!("c{c}"), "lines": [{"sku": "HOT", "qty": 1}],
                                      "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    let body: Value = r.json().await.unwrap();
                    ids.push(body["order_id"].as_str().unwrap().to_string());
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    assert_eq!(ids.len(), 1000);

    let db = app.store.db().clone();
    let count = |event: &'static str| {
        let db = db.clone();
        async move {
            let sql = db.sql(
                "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Order' AND event_type = $1",
            );
            let n: i64 = on_db!(&db, pool => {
                sqlx::query_scalar(&sql).bind(event).fetch_one(pool).await.unwrap()
            });
            n
        }
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let done = count("OrderConfirmed").await + count("OrderRejected").await;
        if done == 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 1000 orders settled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "1000 checkouts settled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        count("OrderConfirmed").await,
        100,
        "exactly the stock is sold"
    );
    assert_eq!(count("OrderRejected").await, 900);

    // Stock never went negative at any event, and only confirmed orders hold reservations.
    let sql = match &db {
        Db::Postgres(_) => "SELECT aggregate_id, payload::text FROM events WHERE aggregate_type = 'StockItem' ORDER BY feed_position",
        Db::Sqlite(_) => "SELECT aggregate_id, payload FROM events WHERE aggregate_type = 'StockItem' ORDER BY feed_position",
    };
    let text: Vec<(String, String)> = on_db!(&db, pool => {
        sqlx::query_as(sql).fetch_all(pool).await.unwrap()
    });
    let rows: Vec<(String, Value)> = text
        .into_iter()
        .map(|(id, p)| (id, serde_json::from_str(&p).unwrap()))
        .collect();
    let mut last: HashMap<String, Value> = HashMap::new();
    for (item, payload) in rows {
        let body = payload
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone();
        assert!(
            body["available"].as_i64().unwrap() >= 0,
            "negative stock at {item}"
        );
        assert!(body["reserved"].as_i64().unwrap() <= body["on_hand"].as_i64().unwrap());
        last.insert(item, body);
    }
    let total_reserved: i64 = last.values().map(|b| b["reserved"].as_i64().unwrap()).sum();
    assert_eq!(
        total_reserved, 100,
        "no reservation left behind by rejected orders"
    );
    let approved: i64 = on_db!(&db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_payments WHERE outcome = 'approved'")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(
        approved, 100,
        "one authorization per confirmed order, none for the rest"
    );
}
