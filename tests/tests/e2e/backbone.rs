//! The typed event backbone, end to end: events stored in an older shape reach every
//! consumer (saga, aggregate loads, projections, timeline, export) as today's domain events
//! through the upcasters; an unknown version is an error naming the event; a field renamed
//! with an upcaster rebuilds to the same read models; one order's flow shares one
//! correlation id and every saga event names an earlier event as its cause; the engine runs
//! the saga with an injected payment provider.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emporium_event_store::export::{self, EventFilter};
use emporium_event_store::testing::{append_stored, rewrite_stored};
use emporium_event_store::{EventMetadata, Upcaster, Upcasters};
use emporium_sagas::payment::{Authorization, ProviderError};
use emporium_sagas::{CheckoutConfig, PaymentProvider};
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use futures::StreamExt;
use serde_json::{json, Value};

/// Release "0.9" of `OrderPlaced` called the customer `customer`; 1.0 calls it
/// `customer_id`.
fn customer_renamed(mut v: Value) -> Result<Value, String> {
    let body = v
        .get_mut("OrderPlaced")
        .and_then(Value::as_object_mut)
        .ok_or("not an OrderPlaced")?;
    let customer = body.remove("customer").ok_or("no customer field")?;
    body.insert("customer_id".into(), customer);
    Ok(v)
}

const ORDER_PLACED_0_9: Upcaster = Upcaster {
    aggregate_type: "Order",
    event_type: "OrderPlaced",
    from_version: "0.9",
    to_version: "1.0",
    upcast: customer_renamed,
};

/// What 1.0 renamed, undone: how 0.9 stored the event.
fn as_0_9(mut v: Value) -> Value {
    if let Some(body) = v.get_mut("OrderPlaced").and_then(Value::as_object_mut) {
        if let Some(c) = body.remove("customer_id") {
            body.insert("customer".into(), c);
        }
    }
    v
}

async fn stock_up(app: &TestApp, skus: &[(&str, i64)], warehouses: &[&str]) {
    for (i, w) in warehouses.iter().enumerate() {
        assert_eq!(
            app.create_warehouse(w, "eu-west", i as i64 + 1)
                .await
                .status,
            201
        );
    }
    for (sku, price) in skus {
        assert_eq!(app.create_product(sku, "Thing", *price).await.status, 201);
        for w in warehouses {
            assert_eq!(app.receive(w, sku, 10).await.status, 200);
        }
    }
}

/// Waits until every projection has applied the whole feed.
async fn projections_caught_up(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = app.store.feed().head().await.unwrap();
        // The Postgres feed trails commits while any transaction on the server is open:
        // first wait for it to cover every stored event.
        let mut behind = head < app.store.event_count().await.unwrap();
        for p in emporium_projections::all() {
            let (_, pos) = emporium_projections::runner::state(app.store.db(), p.name())
                .await
                .unwrap();
            behind |= pos < head;
        }
        if !behind {
            return;
        }
        assert!(Instant::now() < deadline, "projections did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dump_all(app: &TestApp) -> Vec<String> {
    let mut lines = Vec::new();
    for p in emporium_projections::all() {
        let (gen, _) = emporium_projections::runner::state(app.store.db(), p.name())
            .await
            .unwrap();
        lines.extend(
            emporium_projections::dump(app.store.db(), p.as_ref(), gen)
                .await
                .unwrap(),
        );
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_in_an_older_shape_reaches_every_consumer_as_todays_type() {
    let app = TestApp::start(Backend::Postgres, |b| {
        b.upcasters(Upcasters::engine().with(ORDER_PLACED_0_9))
            .checkout(CheckoutConfig::default())
    })
    .await;
    stock_up(&app, &[("SKU-1", 1500)], &["w1"]).await;

    // An order as release 0.9 stored it, straight into the log.
    let order_id = "0190f6a2-7c3e-7d41-9a51-1c2b3d4e5f61";
    let money = |a: i64| json!({"amount_minor": a, "currency": "EUR"});
    let old = json!({"OrderPlaced": {
        "order_id": order_id, "customer": "c-old", "shipping_region": "eu-west",
        "payment_token": "tok_ok", "total": money(3000),
        "lines": [{"sku": "SKU-1", "qty": 2, "unit_price": money(1500), "line_total": money(3000)}]}});
    let meta = EventMetadata::for_request("key_old", "req-old").correlated_with("corr-old");
    append_stored(
        app.store.db(),
        "Order",
        order_id,
        1,
        "OrderPlaced",
        "0.9",
        &old,
        &meta,
    )
    .await;

    // The saga decoded it (in-process bus) and checked it out; the order aggregate loads
    // through the same upcaster.
    let order = app
        .wait_for_status(order_id, "confirmed", Duration::from_secs(30))
        .await;
    assert_eq!(order["customer_id"], "c-old");
    assert_eq!(order["total"]["amount_minor"], 3000);

    // Projections: the analytics order row carries the renamed field's value.
    projections_caught_up(&app).await;
    let rows = dump_all(&app).await;
    let row = rows
        .iter()
        .find(|l| l.starts_with("analytics_orders|") && l.contains(order_id))
        .expect("the order is in analytics");
    assert!(row.contains("|c-old|"), "{row}");

    // Timeline: today's shape and version.
    let timeline = app.get(&format!("/v1/orders/{order_id}/timeline")).await;
    assert_eq!(timeline.status, 200);
    let placed = &timeline.body["events"][0];
    assert_eq!(placed["event_type"], "OrderPlaced");
    assert_eq!(placed["event_version"], "1.0");
    assert_eq!(placed["payload"]["OrderPlaced"]["customer_id"], "c-old");
    assert!(placed["payload"]["OrderPlaced"].get("customer").is_none());

    // Export (NDJSON over HTTP): the same.
    let resp = app
        .client
        .get(format!("{}/v1/events?aggregate_type=Order", app.base))
        .bearer_auth(ADMIN_KEY)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let exported: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let placed = exported
        .iter()
        .find(|e| e["aggregate_id"] == order_id && e["event_type"] == "OrderPlaced")
        .expect("exported");
    assert_eq!(placed["event_version"], "1.0");
    assert_eq!(placed["payload"]["OrderPlaced"]["customer_id"], "c-old");

    // Export (Parquet, which reads rows in place and holds only changed events owned):
    // the same.
    let bytes = app
        .client
        .get(format!(
            "{}/v1/events?format=parquet&aggregate_type=Order",
            app.base
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let rows = crate::parquet_string_rows(bytes);
    let placed = rows
        .iter()
        .find(|r| r["aggregate_id"] == order_id && r["event_type"] == "OrderPlaced")
        .expect("exported as Parquet");
    assert_eq!(placed["event_version"], "1.0");
    let payload: Value = serde_json::from_str(&placed["payload"]).unwrap();
    assert_eq!(payload["OrderPlaced"]["customer_id"], "c-old");
    assert!(payload["OrderPlaced"].get("customer").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_version_is_an_error_that_names_the_event_not_zeros() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let payload = json!({"ProductCreated": {"sku": "SKU-X", "title": "X", "description": "",
        "category": "c", "price": {"amount_minor": 5, "currency": "EUR"}}});
    append_stored(
        app.store.db(),
        "Product",
        "SKU-X",
        1,
        "ProductCreated",
        "7.0",
        &payload,
        &EventMetadata::system("test"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.store.feed().head().await.unwrap() < 1 {
        assert!(
            Instant::now() < deadline,
            "the event never got a feed position"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names_it = |e: &str| {
        e.contains("ProductCreated Product/SKU-X #1") && e.contains("no upcaster from version 7.0")
    };

    let err = app.store.feed().read_events(0, 100).await.unwrap_err();
    assert!(names_it(&err.to_string()), "{err}");

    let runner = emporium_projections::Runner::new(
        app.store.clone(),
        emporium_projections::by_name("catalog").unwrap(),
    );
    let err = runner.try_step().await.unwrap_err();
    assert!(names_it(&err.to_string()), "{err}");
    // Nothing was written as a default.
    let rows = dump_all(&app).await;
    assert!(!rows.iter().any(|l| l.contains("SKU-X")), "{rows:?}");

    let mut export = export::open(&app.store, &EventFilter::after(0))
        .await
        .unwrap();
    let first = export.events.next().await.expect("an item");
    let err = first.unwrap_err();
    assert!(names_it(&err.to_string()), "{err}");
    assert!(
        export.events.next().await.is_none(),
        "the export stops there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_renamed_with_an_upcaster_rebuilds_to_the_same_read_models() {
    let app = TestApp::with_checkout(Backend::Postgres, CheckoutConfig::default(), None).await;
    stock_up(&app, &[("SKU-1", 1500), ("SKU-2", 700)], &["w1", "w2"]).await;
    let mut ids = Vec::new();
    for (i, lines) in [
        vec![("SKU-1", 2)],
        vec![("SKU-1", 1), ("SKU-2", 3)],
        vec![("SKU-2", 15)],
        vec![("SKU-1", 30)],
    ]
    .iter()
    .enumerate()
    {
        let r = app.place_order(&format!("c-{i}"), lines).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        ids.push(r.body["order_id"].as_str().unwrap().to_string());
    }
    app.wait_for_status(&ids[0], "confirmed", Duration::from_secs(30))
        .await;
    app.wait_for_status(&ids[1], "confirmed", Duration::from_secs(30))
        .await;
    app.wait_for_status(&ids[2], "confirmed", Duration::from_secs(30))
        .await;
    app.wait_for_status(&ids[3], "rejected", Duration::from_secs(30))
        .await;
    assert_eq!(
        app.post(&format!("/v1/orders/{}/cancel", ids[1]), json!({}))
            .await
            .status,
        200
    );
    // The saga compensates the cancel from its event: wait for it before taking the dump.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app
        .store
        .load::<emporium_domain::Checkout>(&ids[1])
        .await
        .unwrap()
        .0
        .is_compensated()
    {
        assert!(
            Instant::now() < deadline,
            "the cancel was never compensated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    projections_caught_up(&app).await;
    let before = dump_all(&app).await;
    assert!(before.iter().any(|l| l.contains("|c-2|")));

    // The log now looks as if release 0.9 had written every OrderPlaced.
    let rewritten = rewrite_stored(app.store.db(), "OrderPlaced", "0.9", as_0_9).await;
    assert_eq!(rewritten, 4);

    // Without the upcaster a rebuild refuses, naming the event (so this test can fail).
    let err = emporium_projections::rebuild(
        &app.store,
        emporium_projections::by_name("analytics").unwrap().as_ref(),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("OrderPlaced Order/"), "{err}");

    // With it, every projection rebuilt from the log equals what it was, row by row.
    let upcast = app
        .store
        .clone()
        .with_upcasters(Upcasters::engine().with(ORDER_PLACED_0_9));
    for p in emporium_projections::all() {
        emporium_projections::rebuild(&upcast, p.as_ref(), |_, _| {})
            .await
            .unwrap();
    }
    let after = dump_all(&app).await;
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_has_one_correlation_id_and_saga_events_name_earlier_causes() {
    let app = TestApp::with_checkout(Backend::Postgres, CheckoutConfig::default(), None).await;
    stock_up(&app, &[("SKU-1", 1500), ("SKU-2", 700)], &["w1", "w2"]).await;
    // Enough SKU-2 for both orders.
    assert_eq!(app.receive("w2", "SKU-2", 20).await.status, 200);
    for (correlation, request) in [(Some("corr-flow-1"), "req-flow-1"), (None, "req-flow-2")] {
        let mut req = app
            .client
            .post(format!("{}/v1/orders", app.base))
            .bearer_auth(ADMIN_KEY)
            .header("x-request-id", request)
            .json(&json!({"customer_id": "c-1", "lines": [{"sku": "SKU-1", "qty": 1}, {"sku": "SKU-2", "qty": 12}],
                          "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}));
        if let Some(c) = correlation {
            req = req.header("x-correlation-id", c);
        }
        let placed = TestApp::reply(req.send().await.unwrap()).await;
        assert_eq!(placed.status, 202, "{:?}", placed.body);
        let order_id = placed.body["order_id"].as_str().unwrap().to_string();
        app.wait_for_status(&order_id, "confirmed", Duration::from_secs(30))
            .await;
        projections_caught_up(&app).await;
        let timeline = app.get(&format!("/v1/orders/{order_id}/timeline")).await;
        let events = timeline.body["events"].as_array().unwrap().clone();
        let types: HashSet<&str> = events
            .iter()
            .map(|e| e["aggregate_type"].as_str().unwrap())
            .collect();
        for t in ["Order", "Checkout", "StockItem", "Payment"] {
            assert!(types.contains(t), "{t} missing from {types:?}");
        }
        let expected = correlation.unwrap_or(request);
        let mut seen = HashSet::new();
        let mut saga_events = 0;
        for e in &events {
            assert_eq!(e["metadata"]["correlation_id"], expected, "{e}");
            if e["metadata"]["actor"] == "system:checkout" {
                saga_events += 1;
                let cause = e["metadata"]["causation_id"].as_str().unwrap();
                assert!(seen.contains(cause), "{e} is caused by no earlier event");
            }
            seen.insert(e["event_id"].as_str().unwrap().to_string());
        }
        assert!(saga_events >= 6, "{saga_events} saga events");
    }
}

/// A provider of the test's own: declines above a limit and records every call.
#[derive(Default)]
struct Capped {
    calls: Mutex<Vec<(String, i64)>>,
    voids: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl PaymentProvider for Capped {
    async fn authorize(
        &self,
        idempotency_key: &str,
        _token: &str,
        amount_minor: i64,
        _currency: &str,
    ) -> Result<Authorization, ProviderError> {
        self.calls
            .lock()
            .unwrap()
            .push((idempotency_key.to_string(), amount_minor));
        Ok(if amount_minor > 5_000 {
            Authorization::Declined {
                reason: "over the test's limit".into(),
            }
        } else {
            Authorization::Approved {
                authorization_id: format!("capped-{idempotency_key}"),
            }
        })
    }

    async fn void(&self, idempotency_key: &str) -> Result<(), ProviderError> {
        self.voids.lock().unwrap().push(idempotency_key.to_string());
        Ok(())
    }

    async fn capture(
        &self,
        _authorization_key: &str,
        _key: &str,
        _amount_minor: i64,
        _currency: &str,
    ) -> Result<(), ProviderError> {
        // This test's orders never ship.
        Err(ProviderError::Transient("not used by this test".into()))
    }

    async fn refund(
        &self,
        _authorization_key: &str,
        _key: &str,
        _amount_minor: i64,
        _currency: &str,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::Transient("not used by this test".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_the_saga_with_an_injected_payment_provider() {
    let provider = Arc::new(Capped::default());
    let app = TestApp::start(Backend::Sqlite, |b| {
        b.payment_provider(provider.clone())
            .checkout(CheckoutConfig::default())
    })
    .await;
    stock_up(&app, &[("SKU-1", 1500)], &["w1"]).await;
    let small = app.place_order("c-1", &[("SKU-1", 2)]).await;
    let large = app.place_order("c-2", &[("SKU-1", 4)]).await;
    let small = small.body["order_id"].as_str().unwrap().to_string();
    let large = large.body["order_id"].as_str().unwrap().to_string();
    app.wait_for_status(&small, "confirmed", Duration::from_secs(30))
        .await;
    let rejected = app
        .wait_for_status(&large, "rejected", Duration::from_secs(30))
        .await;
    assert!(
        rejected["reject_reason"]
            .as_str()
            .unwrap()
            .contains("over the test's limit"),
        "{rejected}"
    );
    let calls = provider.calls.lock().unwrap().clone();
    assert!(calls.contains(&(small.clone(), 3000)), "{calls:?}");
    assert!(calls.contains(&(large.clone(), 6000)), "{calls:?}");
    // The sandbox was not asked.
    let sandbox = emporium_sagas::Sandbox::new(app.store.db().clone());
    assert_eq!(sandbox.approved_count(&small).await.unwrap(), 0);
}
