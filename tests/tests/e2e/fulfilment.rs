//! After checkout (issue 12): shipments with partial capture, returns with restock and
//! refund, cancel after a partial shipment, and the figures and timeline that follow.

use std::collections::BTreeMap;
use std::time::Duration;

use emporium_sagas::{CheckoutConfig, Sandbox};
use emporium_tests::{Backend, Reply, TestApp, ADMIN_KEY};
use serde_json::{json, Value};

/// LAMP-1 (2.50 EUR) is stocked 2 at wh-a and 1 at wh-b, BULB-7 (0.99 EUR) 5 at wh-b: an
/// order of 3 lamps and a bulb is split across both warehouses.
async fn shop(backend: Backend) -> TestApp {
    let app = TestApp::with_checkout(backend, CheckoutConfig::default(), None).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_warehouse("wh-b", "eu-west", 2).await.status, 201);
    assert_eq!(app.create_product("LAMP-1", "Lamp", 250).await.status, 201);
    assert_eq!(app.create_product("BULB-7", "Bulb", 99).await.status, 201);
    assert_eq!(app.receive("wh-a", "LAMP-1", 2).await.status, 200);
    assert_eq!(app.receive("wh-b", "LAMP-1", 1).await.status, 200);
    assert_eq!(app.receive("wh-b", "BULB-7", 5).await.status, 200);
    app
}

async fn confirmed_order(app: &TestApp, lines: &[(&str, i64)]) -> (String, Value) {
    let placed = app.place_order("c-1", lines).await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    let id = placed.body["order_id"].as_str().unwrap().to_string();
    let order = app
        .wait_for_status(&id, "confirmed", Duration::from_secs(20))
        .await;
    (id, order)
}

/// The order's allocation as warehouse → [(sku, qty)].
fn allocation(order: &Value) -> BTreeMap<String, Vec<(String, i64)>> {
    let mut by_wh: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for a in order["allocation"].as_array().unwrap() {
        by_wh
            .entry(a["warehouse_id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                a["sku"].as_str().unwrap().to_string(),
                a["qty"].as_i64().unwrap(),
            ));
    }
    by_wh
}

async fn levels(app: &TestApp, wh: &str, sku: &str) -> (i64, i64, i64) {
    let inv = app.get(&format!("/v1/inventory/{sku}")).await;
    let w = inv.body["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warehouse_id"] == wh)
        .cloned()
        .unwrap_or(json!({"on_hand": 0, "reserved": 0, "available": 0}));
    (
        w["on_hand"].as_i64().unwrap(),
        w["reserved"].as_i64().unwrap(),
        w["available"].as_i64().unwrap(),
    )
}

async fn ship(app: &TestApp, id: &str, wh: &str, lines: &[(String, i64)]) -> Reply {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(s, q)| json!({"sku": s, "qty": q}))
        .collect();
    app.post(
        &format!("/v1/orders/{id}/shipments"),
        json!({"warehouse_id": wh, "lines": lines}),
    )
    .await
}

async fn return_one(app: &TestApp, id: &str, sku: &str, wh: &str) -> Reply {
    app.post(
        &format!("/v1/orders/{id}/returns"),
        json!({"reason": "changed my mind",
               "lines": [{"sku": sku, "qty": 1, "restock": true, "warehouse_id": wh}]}),
    )
    .await
}

async fn split_order_ships_in_two_and_captures_exactly_the_total(backend: Backend) {
    let app = shop(backend).await;
    let (id, order) = confirmed_order(&app, &[("LAMP-1", 3), ("BULB-7", 1)]).await;
    let total = order["total"]["amount_minor"].as_i64().unwrap();
    assert_eq!(total, 849);
    let alloc = allocation(&order);
    assert_eq!(alloc.len(), 2, "split across both warehouses: {alloc:?}");

    let mut before = BTreeMap::new();
    for (wh, lines) in &alloc {
        for (sku, _) in lines {
            before.insert((wh.clone(), sku.clone()), levels(&app, wh, sku).await);
        }
    }
    let mut amounts = Vec::new();
    let mut statuses = Vec::new();
    for (wh, lines) in &alloc {
        let r = ship(&app, &id, wh, lines).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert!(r.body["shipment_id"].is_string());
        amounts.push(r.body["amount"]["amount_minor"].as_i64().unwrap());
        statuses.push(app.get(&format!("/v1/orders/{id}")).await.body["status"].clone());
    }
    assert_eq!(statuses, vec![json!("partially_shipped"), json!("shipped")]);
    assert_eq!(
        amounts.iter().sum::<i64>(),
        total,
        "two captures sum to the total"
    );

    let o = app.get(&format!("/v1/orders/{id}")).await.body;
    assert_eq!(o["captured"]["amount_minor"], total);
    assert_eq!(o["refunded"]["amount_minor"], 0);
    assert_eq!(o["shipments"].as_array().unwrap().len(), 2);
    for (wh, lines) in &alloc {
        for (sku, qty) in lines {
            let (on_hand, reserved, _) = before[&(wh.clone(), sku.clone())];
            assert_eq!(
                levels(&app, wh, sku).await,
                (on_hand - qty, reserved - qty, on_hand - reserved),
                "{wh}/{sku}: on hand and reserved both down by the shipped {qty}"
            );
        }
    }
    let (captures, captured, _, _) = Sandbox::new(app.store.db().clone())
        .settlements(&id)
        .await
        .unwrap();
    assert_eq!(
        (captures, captured),
        (2, total),
        "the provider took it in two captures"
    );

    // The catalog's stock figures follow the shipments.
    let inv = app.get("/v1/inventory/LAMP-1").await.body;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = app.get("/v1/catalog/products?q=Lamp").await;
        let item = found.body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["sku"] == "LAMP-1").cloned());
        if let Some(item) = &item {
            if item["on_hand"] == inv["total"]["on_hand"]
                && item["reserved"] == inv["total"]["reserved"]
            {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "catalog {item:?} never matched inventory {inv}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_split_order_ships_in_two_and_captures_exactly_the_total() {
    split_order_ships_in_two_and_captures_exactly_the_total(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_split_order_ships_in_two_and_captures_exactly_the_total() {
    split_order_ships_in_two_and_captures_exactly_the_total(Backend::Sqlite).await;
}

/// A one-unit return with restock refunds that line's unit price and puts the unit back;
/// returning it again is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_unit_is_refunded_and_restocked_once() {
    let app = shop(Backend::Postgres).await;
    let (id, order) = confirmed_order(&app, &[("BULB-7", 1)]).await;
    for (wh, lines) in allocation(&order) {
        assert_eq!(ship(&app, &id, &wh, &lines).await.status, 201);
    }
    let (_, _, available) = levels(&app, "wh-a", "BULB-7").await;
    let r = return_one(&app, &id, "BULB-7", "wh-a").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["amount"]["amount_minor"], 99, "the unit price");
    assert_eq!(levels(&app, "wh-a", "BULB-7").await.2, available + 1);
    let o = app.get(&format!("/v1/orders/{id}")).await.body;
    assert_eq!(o["status"], "returned");
    assert_eq!(o["refunded"]["amount_minor"], 99);

    let before = app.event_count().await;
    let again = return_one(&app, &id, "BULB-7", "wh-a").await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.body["code"], "exceeds_shipped");
    assert!(again.body["detail"].as_str().unwrap().contains("BULB-7"));
    assert_eq!(
        app.event_count().await,
        before,
        "a refused return writes nothing"
    );
    let (_, _, refunds, refunded) = Sandbox::new(app.store.db().clone())
        .settlements(&id)
        .await
        .unwrap();
    assert_eq!((refunds, refunded), (1, 99));
}

/// Over-capture, over-refund, shipping a cancelled order and shipping from an unallocated
/// warehouse: each a problem naming the cause, none writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_shipments_and_returns_name_the_cause_and_write_nothing() {
    let app = shop(Backend::Postgres).await;
    let (id, order) = confirmed_order(&app, &[("LAMP-1", 3), ("BULB-7", 1)]).await;
    let alloc = allocation(&order);
    let before = app.event_count().await;
    let cases: Vec<(Reply, &str)> = vec![
        (
            ship(&app, &id, "wh-a", &[("LAMP-1".into(), 3)]).await,
            "exceeds_allocation",
        ),
        (
            ship(&app, &id, "wh-a", &[("BULB-7".into(), 1)]).await,
            "not_allocated",
        ),
        (
            return_one(&app, &id, "LAMP-1", "wh-a").await,
            "illegal_transition",
        ),
    ];
    for (r, code) in cases {
        assert_eq!(r.status, 409, "{code}: {:?}", r.body);
        assert_eq!(r.body["code"], code, "{:?}", r.body);
        assert!(r.content_type.starts_with("application/problem+json"));
    }
    assert_eq!(app.event_count().await, before);

    // Over-refund: one shipped lamp cannot be returned twice over.
    let wh_a = &alloc["wh-a"];
    assert_eq!(ship(&app, &id, "wh-a", wh_a).await.status, 201);
    let before = app.event_count().await;
    let r = app
        .post(
            &format!("/v1/orders/{id}/returns"),
            json!({"reason": "x", "lines": [{"sku": "LAMP-1", "qty": 3, "restock": false, "warehouse_id": "wh-a"}]}),
        )
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["code"], "exceeds_shipped");
    assert!(r.body["detail"].as_str().unwrap().contains("LAMP-1"));
    assert_eq!(
        app.event_count().await,
        before,
        "a refused refund writes nothing"
    );

    // A cancelled order ships nothing.
    let (other, other_order) = confirmed_order(&app, &[("BULB-7", 1)]).await;
    assert_eq!(
        app.post(&format!("/v1/orders/{other}/cancel"), json!({}))
            .await
            .status,
        200
    );
    // The saga compensates the cancel in the background: count the order's own events.
    let order_events = || async {
        app.feed_until(0)
            .await
            .iter()
            .filter(|e| e["aggregate_id"] == other.as_str() && e["aggregate_type"] == "Order")
            .count()
    };
    let before = order_events().await;
    let (wh, lines) = allocation(&other_order).into_iter().next().unwrap();
    let r = ship(&app, &other, &wh, &lines).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["code"], "illegal_transition");
    assert!(r.body["detail"].as_str().unwrap().contains("cancelled"));
    assert_eq!(order_events().await, before);
    assert!(
        !app.feed_until(0)
            .await
            .iter()
            .any(|e| e["event_type"] == "OrderShipped" && e["aggregate_id"] == other.as_str()),
        "nothing shipped"
    );
}

/// 20 identical concurrent requests with one `Idempotency-Key` make one shipment and one
/// capture; 20 different concurrent shipments of the same lines ship the allocation once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_shipments_never_ship_more_than_allocated() {
    let app = shop(Backend::Postgres).await;
    let (id, order) = confirmed_order(&app, &[("LAMP-1", 3), ("BULB-7", 1)]).await;
    let alloc = allocation(&order);
    let body = |wh: &str, lines: &[(String, i64)]| {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(s, q)| json!({"sku": s, "qty": q}))
            .collect();
        json!({"warehouse_id": wh, "lines": lines})
    };
    let same = body("wh-a", &alloc["wh-a"]);
    let replies = futures::future::join_all((0..20).map(|_| {
        app.client
            .post(format!("{}/v1/orders/{id}/shipments", app.base))
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", "ship-wh-a-once")
            .json(&same)
            .send()
    }))
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for r in replies {
        let r = TestApp::reply(r.unwrap()).await;
        assert!(matches!(r.status, 201 | 409), "{:?}", r.body);
        if r.status == 201 {
            ids.insert(r.body["shipment_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ids.len(), 1, "one shipment id for one key");

    let other = body("wh-b", &alloc["wh-b"]);
    let path = format!("/v1/orders/{id}/shipments");
    let replies = futures::future::join_all((0..20).map(|_| app.post(&path, other.clone()))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    for r in &replies {
        assert!(matches!(r.status, 201 | 409 | 503), "{:?}", r.body);
    }
    assert_eq!(created, 1, "the wh-b allocation ships once");

    let o = app.get(&format!("/v1/orders/{id}")).await.body;
    assert_eq!(o["shipments"].as_array().unwrap().len(), 2);
    assert_eq!(o["status"], "shipped");
    let (captures, captured, _, _) = Sandbox::new(app.store.db().clone())
        .settlements(&id)
        .await
        .unwrap();
    assert_eq!((captures, captured), (2, 849));
    let feed = app.feed_until(0).await;
    let payment_captures = feed
        .iter()
        .filter(|e| e["event_type"] == "PaymentCaptured" && e["aggregate_id"] == id.as_str())
        .count();
    assert_eq!(
        payment_captures, 2,
        "one capture per shipment in the Payment aggregate"
    );
    assert_eq!(levels(&app, "wh-a", "LAMP-1").await, (0, 0, 0));
    assert_eq!(levels(&app, "wh-b", "LAMP-1").await, (0, 0, 0));
}

/// Cancel after the first of two shipments: only the second warehouse's stock comes back
/// and only the uncaptured amount is voided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_one_of_two_shipments_gives_back_only_the_rest() {
    let app = shop(Backend::Postgres).await;
    let (id, order) = confirmed_order(&app, &[("LAMP-1", 3), ("BULB-7", 1)]).await;
    let alloc = allocation(&order);
    let first = ship(&app, &id, "wh-a", &alloc["wh-a"]).await;
    assert_eq!(first.status, 201);
    let shipped_amount = first.body["amount"]["amount_minor"].as_i64().unwrap();
    let wh_b_before: Vec<_> = futures::future::join_all(
        alloc["wh-b"]
            .iter()
            .map(|(sku, _)| levels(&app, "wh-b", sku)),
    )
    .await;
    let r = app
        .post(
            &format!("/v1/orders/{id}/cancel"),
            json!({"reason": "too slow"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let feed = app.feed_until(0).await;
        if feed
            .iter()
            .any(|e| e["event_type"] == "CheckoutCompensated")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never compensated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for ((sku, qty), (on_hand, reserved, _)) in alloc["wh-b"].iter().zip(wh_b_before) {
        assert_eq!(
            levels(&app, "wh-b", sku).await,
            (on_hand, reserved - qty, on_hand - reserved + qty),
            "wh-b {sku}: reservation released, nothing shipped"
        );
    }
    assert_eq!(
        levels(&app, "wh-a", "LAMP-1").await,
        (0, 0, 0),
        "wh-a shipped"
    );
    let feed = app.feed_until(0).await;
    let voided: Vec<i64> = feed
        .iter()
        .filter(|e| e["event_type"] == "PaymentVoided")
        .map(|e| {
            e["payload"]["PaymentVoided"]["amount"]["amount_minor"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        voided,
        vec![849 - shipped_amount],
        "only the uncaptured remainder"
    );
    let o = app.get(&format!("/v1/orders/{id}")).await.body;
    assert_eq!(o["status"], "cancelled");
    assert_eq!(o["captured"]["amount_minor"], shipped_amount);
}

/// The timeline of an order placed, confirmed, shipped in two parts and partly returned
/// lists every step in feed order, each with its actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_tells_the_whole_story_with_actors() {
    let app = shop(Backend::Sqlite).await;
    let (id, order) = confirmed_order(&app, &[("LAMP-1", 3), ("BULB-7", 1)]).await;
    for (wh, lines) in allocation(&order) {
        assert_eq!(ship(&app, &id, &wh, &lines).await.status, 201);
    }
    assert_eq!(return_one(&app, &id, "LAMP-1", "wh-a").await.status, 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let events = loop {
        let t = app.get(&format!("/v1/orders/{id}/timeline")).await;
        assert_eq!(t.status, 200, "{:?}", t.body);
        let events = t.body["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["event_type"] == "PaymentRefunded") {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timeline incomplete: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for step in [
        "OrderPlaced",
        "OrderConfirmed",
        "OrderShipped",
        "StockShipped",
        "PaymentCaptured",
        "ItemsReturned",
        "StockRestocked",
        "PaymentRefunded",
    ] {
        assert!(types.contains(&step), "{step} missing from {types:?}");
    }
    assert_eq!(types.iter().filter(|t| **t == "OrderShipped").count(), 2);
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "feed order: {positions:?}"
    );
    for e in &events {
        assert!(
            !e["metadata"]["actor"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "every step names its actor: {e}"
        );
    }
    let shipped_by = events
        .iter()
        .find(|e| e["event_type"] == "OrderShipped")
        .unwrap();
    assert_eq!(shipped_by["metadata"]["actor"], "admin");
    let placed = events
        .iter()
        .find(|e| e["event_type"] == "OrderPlaced")
        .unwrap();
    assert_eq!(
        shipped_by["metadata"]["correlation_id"], placed["metadata"]["correlation_id"],
        "a shipment carries the order's correlation id"
    );
}

/// The fulfilment figures equal what the raw events say, for a scripted day of 200 orders
/// with shipments and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfilment_analytics_equal_figures_from_the_raw_events() {
    use futures::StreamExt;

    let app = TestApp::with_checkout(Backend::Postgres, CheckoutConfig::default(), None).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_warehouse("wh-b", "eu-west", 2).await.status, 201);
    assert_eq!(app.create_product("LAMP-1", "Lamp", 250).await.status, 201);
    assert_eq!(app.create_product("BULB-7", "Bulb", 99).await.status, 201);
    assert_eq!(app.receive("wh-a", "LAMP-1", 150).await.status, 200);
    assert_eq!(app.receive("wh-b", "LAMP-1", 500).await.status, 200);
    assert_eq!(app.receive("wh-b", "BULB-7", 900).await.status, 200);

    let app = &app;
    futures::stream::iter(0..200)
        .for_each_concurrent(8, |i| async move {
            let lines: &[(&str, i64)] = if i % 2 == 0 {
                &[("LAMP-1", 1), ("BULB-7", 1)]
            } else {
                &[("BULB-7", 2)]
            };
            let (id, order) = confirmed_order(app, lines).await;
            for (wh, lines) in allocation(&order) {
                let r = ship(app, &id, &wh, &lines).await;
                assert_eq!(r.status, 201, "{:?}", r.body);
            }
            if i % 4 == 0 {
                let sku = lines[0].0;
                let r = return_one(app, &id, sku, "wh-a").await;
                assert_eq!(r.status, 201, "{:?}", r.body);
            }
        })
        .await;

    // The raw events, all of them, in feed order.
    let resp = app
        .client
        .get(format!("{}/v1/events?format=ndjson", app.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ms = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["recorded_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let day = |t: i64| t.div_euclid(86_400_000) * 86_400_000;
    let mut money: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    let mut shipped: BTreeMap<String, i64> = BTreeMap::new();
    let mut returned: BTreeMap<String, i64> = BTreeMap::new();
    let mut confirmed_at: BTreeMap<String, i64> = BTreeMap::new();
    let mut first_ship: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in &events {
        let order = e["aggregate_id"].as_str().unwrap().to_string();
        match e["event_type"].as_str().unwrap() {
            "OrderConfirmed" => {
                confirmed_at.insert(order, ms(e));
            }
            "OrderShipped" => {
                let p = &e["payload"]["OrderShipped"];
                let currency = p["amount"]["currency"].as_str().unwrap().to_string();
                money.entry((day(ms(e)), currency)).or_default().0 +=
                    p["amount"]["amount_minor"].as_i64().unwrap();
                for l in p["lines"].as_array().unwrap() {
                    *shipped
                        .entry(l["sku"].as_str().unwrap().into())
                        .or_default() += l["qty"].as_i64().unwrap();
                }
                let wh = p["warehouse_id"].as_str().unwrap().to_string();
                first_ship.entry((order, wh)).or_insert(ms(e));
            }
            "ItemsReturned" => {
                let p = &e["payload"]["ItemsReturned"];
                let currency = p["amount"]["currency"].as_str().unwrap().to_string();
                money.entry((day(ms(e)), currency)).or_default().1 +=
                    p["amount"]["amount_minor"].as_i64().unwrap();
                for l in p["lines"].as_array().unwrap() {
                    *returned
                        .entry(l["sku"].as_str().unwrap().into())
                        .or_default() += l["qty"].as_i64().unwrap();
                }
            }
            _ => {}
        }
    }
    let mut per_wh: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for ((order, wh), at) in &first_ship {
        let waited = at - confirmed_at[order];
        let e = per_wh.entry(wh.clone()).or_default();
        e.0 += 1;
        e.1 += waited;
        e.2 = e.2.max(waited);
    }
    let expected = json!({
        "revenue_by_day": money.iter().map(|((d, c), (g, r))| json!({
            "day": chrono::DateTime::from_timestamp_millis(*d).unwrap(),
            "currency": c, "gross_minor": g, "refunded_minor": r, "net_minor": g - r,
        })).collect::<Vec<_>>(),
        "return_rates": shipped.iter().map(|(sku, s)| {
            let r = returned.get(sku).copied().unwrap_or(0);
            json!({"sku": sku, "shipped": s, "returned": r, "rate": r as f64 / *s as f64})
        }).collect::<Vec<_>>(),
        "time_to_ship": per_wh.iter().map(|(wh, (n, sum, max))| json!({
            "warehouse_id": wh, "shipments": n, "average_ms": sum.div_euclid(*n), "max_ms": max,
        })).collect::<Vec<_>>(),
    });
    assert_eq!(
        shipped.values().sum::<i64>(),
        400,
        "every ordered unit shipped"
    );
    assert_eq!(returned.values().sum::<i64>(), 50);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.get("/v1/analytics/fulfilment").await;
        if r.status == 200 && r.body == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "analytics {:?}\n!= raw events {expected}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A shipment recorded without being settled (the request died right after the commit) is
/// settled by the saga worker when the event reaches it: stock out, money captured, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_settles_a_shipment_whose_request_died_after_recording_it() {
    use emporium_domain::order::{Order, OrderCommand, ShipmentLine};
    use emporium_domain::values::{OrderId, Quantity, Sku, WarehouseId};
    use emporium_event_store::EventMetadata;

    let app = shop(Backend::Postgres).await;
    let (id, order) = confirmed_order(&app, &[("BULB-7", 2)]).await;
    let (wh, lines) = allocation(&order).into_iter().next().unwrap();
    let before = levels(&app, &wh, "BULB-7").await;
    let shipment_id = uuid::Uuid::now_v7();
    // Straight to the order aggregate, as the request does before it settles.
    app.store
        .execute::<Order>(
            &id,
            OrderCommand::ShipOrder {
                shipment_id,
                warehouse_id: WarehouseId::parse(&wh).unwrap(),
                lines: lines
                    .iter()
                    .map(|(s, q)| ShipmentLine {
                        sku: Sku::parse(s).unwrap(),
                        qty: Quantity::new(*q).unwrap(),
                    })
                    .collect(),
            },
            &EventMetadata::for_request("test", "died-after-commit"),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let o = app.get(&format!("/v1/orders/{id}")).await.body;
        if o["captured"]["amount_minor"] == 198 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {o}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        levels(&app, &wh, "BULB-7").await,
        (before.0 - 2, before.1 - 2, before.2)
    );
    // Settling it again (the request after all, or another engine) changes nothing.
    app.state
        .checkout
        .settle_shipment(
            &OrderId::parse(&id).unwrap(),
            shipment_id,
            &EventMetadata::system("test"),
        )
        .await
        .unwrap();
    assert_eq!(
        levels(&app, &wh, "BULB-7").await,
        (before.0 - 2, before.1 - 2, before.2)
    );
    let (captures, captured, _, _) = Sandbox::new(app.store.db().clone())
        .settlements(&id)
        .await
        .unwrap();
    assert_eq!((captures, captured), (1, 198));
}

/// `as_of` at 50 random points of a real order's history (feed positions and recording
/// times) equals what its events up to that point say, worked out by hand from the feed.
async fn as_of_equals_the_events_up_to_that_point(backend: Backend) {
    use rand::{Rng, SeedableRng};

    let app = shop(backend).await;
    let (id, order) = confirmed_order(&app, &[("LAMP-1", 3), ("BULB-7", 1)]).await;
    for (wh, lines) in allocation(&order) {
        assert_eq!(ship(&app, &id, &wh, &lines).await.status, 201);
    }
    assert_eq!(return_one(&app, &id, "LAMP-1", "wh-a").await.status, 201);
    let feed = app.feed_until(0).await;
    let mine: Vec<&Value> = feed
        .iter()
        .filter(|e| e["aggregate_id"] == id.as_str())
        .collect();
    let time = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["recorded_at"].as_str().unwrap()).unwrap()
    };
    // By hand: the status each order event leaves, captures and refunds, counts.
    let expected = |included: &dyn Fn(&Value) -> bool| {
        let (mut status, mut shipments, mut returns, mut captured, mut refunded) =
            (None, 0, 0, 0_i64, 0_i64);
        for e in mine.iter().filter(|e| included(e)) {
            let kind = e["event_type"].as_str().unwrap();
            let p = &e["payload"][kind];
            match kind {
                "OrderPlaced" => status = Some("pending".to_string()),
                "OrderConfirmed" => status = Some("confirmed".to_string()),
                "OrderCancelled" => status = Some("cancelled".to_string()),
                "OrderShipped" | "ItemsReturned" => {
                    status = Some(p["status"].as_str().unwrap().to_string());
                    if kind == "OrderShipped" {
                        shipments += 1;
                    } else {
                        returns += 1;
                    }
                }
                "PaymentCaptured" => captured += p["amount"]["amount_minor"].as_i64().unwrap(),
                "PaymentRefunded" => refunded += p["amount"]["amount_minor"].as_i64().unwrap(),
                _ => {}
            }
        }
        (status, shipments, returns, captured, refunded)
    };
    let first = mine.first().unwrap()["position"].as_i64().unwrap();
    let last = mine.last().unwrap()["position"].as_i64().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for n in 0..50 {
        let (as_of, want) = if n % 5 == 4 {
            // A recording time: an event's own, so boundaries are exercised.
            let e = mine[rng.random_range(0..mine.len())];
            let t = time(e);
            let s = e["recorded_at"].as_str().unwrap().to_string();
            (s, expected(&|x: &Value| time(x) <= t))
        } else {
            let p = rng.random_range(first - 3..=last + 3);
            (
                p.to_string(),
                expected(&|x: &Value| x["position"].as_i64().unwrap() <= p),
            )
        };
        let got = app
            .client
            .get(format!("{}/v1/orders/{id}", app.base))
            .bearer_auth(ADMIN_KEY)
            .query(&[("as_of", &as_of)])
            .send()
            .await
            .unwrap();
        let got = TestApp::reply(got).await;
        match &want.0 {
            None => assert_eq!(got.status, 404, "as_of {as_of}: {:?}", got.body),
            Some(status) => {
                assert_eq!(got.status, 200, "as_of {as_of}: {:?}", got.body);
                let o = &got.body;
                assert_eq!(
                    (
                        o["status"].as_str().unwrap().to_string(),
                        o["shipments"].as_array().unwrap().len(),
                        o["returns"].as_array().unwrap().len(),
                        o["captured"]["amount_minor"].as_i64().unwrap(),
                        o["refunded"]["amount_minor"].as_i64().unwrap(),
                    ),
                    (status.clone(), want.1, want.2, want.3, want.4),
                    "as_of {as_of}"
                );
            }
        }
    }
    // Bad points are refused, naming the parameter.
    let bad = app.get(&format!("/v1/orders/{id}?as_of=yesterday")).await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["errors"][0]["pointer"], "/as_of");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_as_of_equals_the_events_up_to_that_point() {
    as_of_equals_the_events_up_to_that_point(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_as_of_equals_the_events_up_to_that_point() {
    as_of_equals_the_events_up_to_that_point(Backend::Sqlite).await;
}
