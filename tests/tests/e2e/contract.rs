//! The published OpenAPI document and the engine agree (issue 11, acceptance 4): what the
//! schema calls valid is accepted, what the engine refuses because of stored state is 404
//! or 409, and values that could hurt storage never reach it. `scripts/schemathesis.sh`
//! fuzzes the whole document; these tests pin the cases it found.

use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use serde_json::{json, Value};

async fn on_hand(app: &TestApp, warehouse: &str, sku: &str) -> u64 {
    let inv = app.get(&format!("/v1/inventory/{sku}")).await;
    inv.body["warehouses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["warehouse_id"] == warehouse)
        .and_then(|w| w["on_hand"].as_u64())
        .unwrap_or(0)
}

async fn whole_numbers_with_a_fraction_part_are_integers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // JSON Schema's `integer` is any number without a fraction: 2.0 is 2.
    let wh = app
        .post(
            "/v1/warehouses",
            json!({"id": "wh-a", "name": "A", "region": "eu-west", "priority": 2.0}),
        )
        .await;
    assert_eq!(wh.status, 201, "{:?}", wh.body);
    assert_eq!(wh.body["priority"], 2);
    let p = app
        .post(
            "/v1/products",
            json!({"sku": "S-1", "title": "Lamp", "category": "home",
                   "price": {"amount_minor": 1999.0, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert_eq!(
        app.post("/v1/inventory/wh-a/S-1/receive", json!({"qty": 3.0}))
            .await
            .status,
        200
    );
    assert_eq!(on_hand(&app, "wh-a", "S-1").await, 3);

    let before = app.event_count().await;
    for qty in [json!(2.5), json!(1e300), json!(-0.5), json!(9.3e18)] {
        let r = app
            .post("/v1/inventory/wh-a/S-1/receive", json!({"qty": qty}))
            .await;
        assert_eq!(r.status, 422, "qty {qty}: {:?}", r.body);
    }
    assert_eq!(
        app.event_count().await,
        before,
        "a refused number wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_whole_numbers_with_a_fraction_part_are_integers() {
    whole_numbers_with_a_fraction_part_are_integers(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_whole_numbers_with_a_fraction_part_are_integers() {
    whole_numbers_with_a_fraction_part_are_integers(Backend::Sqlite).await;
}

fn order(lines: Value) -> Value {
    json!({"customer_id": "c-1", "lines": lines,
           "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}})
}

/// Lines naming one SKU are one line; a SKU the catalog does not know is 404, one it cannot
/// sell 409; nothing is written for a refused order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_lines_are_merged_and_catalog_state_refusals_are_404_or_409() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(app.create_product("S-1", "Lamp", 500).await.status, 201);
    assert_eq!(app.create_product("S-2", "Bulb", 100).await.status, 201);

    let placed = app
        .post(
            "/v1/orders",
            order(json!([{"sku": "S-1", "qty": 1}, {"sku": "S-2", "qty": 1}, {"sku": "S-1", "qty": 2}])),
        )
        .await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    let id = placed.body["order_id"].as_str().unwrap();
    let o = app.get(&format!("/v1/orders/{id}")).await;
    let lines = o.body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{:?}", o.body);
    assert_eq!(lines[0]["sku"], "S-1");
    assert_eq!(lines[0]["qty"], 3);
    assert_eq!(o.body["total"]["amount_minor"], 1600);

    let before = app.event_count().await;
    let too_many = app
        .post(
            "/v1/orders",
            order(json!([{"sku": "S-1", "qty": 600000}, {"sku": "S-1", "qty": 500000}])),
        )
        .await;
    assert_eq!(too_many.status, 422, "{:?}", too_many.body);
    assert_eq!(too_many.body["errors"][0]["pointer"], "/lines/1/qty");

    let unknown = app
        .post(
            "/v1/orders",
            order(json!([{"sku": "S-1", "qty": 1}, {"sku": "NOPE", "qty": 1}])),
        )
        .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    assert!(unknown.body["detail"].as_str().unwrap().contains("NOPE"));

    let r = app.post("/v1/products/S-2/discontinue", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let discontinued = app
        .post("/v1/orders", order(json!([{"sku": "S-2", "qty": 1}])))
        .await;
    assert_eq!(discontinued.status, 409, "{:?}", discontinued.body);
    assert_eq!(discontinued.body["code"], "product_discontinued");
    assert_eq!(
        app.event_count().await,
        before + 1,
        "only the discontinuation was written"
    );
}

/// `null` is a cancel body meaning "no reason", as an empty body is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_takes_a_null_body() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(app.create_product("S-1", "Lamp", 500).await.status, 201);
    let placed = app.place_order("c-1", &[("S-1", 1)]).await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    let id = placed.body["order_id"].as_str().unwrap();
    let r = app
        .client
        .post(format!("{}/v1/orders/{id}/cancel", app.base))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    let r = TestApp::reply(r).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "cancelled");
}

/// A range that holds nothing (`to` at or before `from`, `min_price` above `max_price`) is
/// an empty answer, not an error; a page larger than 1000 is 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_ranges_answer_empty_results() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(app.create_product("S-1", "Lamp", 500).await.status, 201);
    app.feed_until(1).await;

    let events = app
        .get("/v1/events?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(events.status, 200, "{:?}", events.body);
    assert_eq!(events.body["events"], json!([]));
    let all = app.get("/v1/events?limit=5000").await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(all.body["events"].as_array().unwrap().len(), 1);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let catalog = loop {
        let r = app
            .get("/v1/catalog/products?min_price=900&max_price=100")
            .await;
        if r.status != 503 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(catalog.status, 200, "{:?}", catalog.body);
    assert_eq!(catalog.body["total"], 0);
}

/// Control characters in query values, path segments and key labels are refused at the
/// edge (PostgreSQL refuses NUL in text; before, these answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_never_reach_storage() {
    let app = TestApp::spawn(Backend::Postgres).await;
    for path in [
        "/v1/catalog/products?q=%00",
        "/v1/catalog/products?category=a%00b",
        "/v1/events?event_type=%00",
        "/v1/events?aggregate_type=Order%07",
        "/v1/events?event_type=%00&format=ndjson",
        "/v1/events?event_type=%00&format=csv",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 422, "{path}: {:?}", r.body);
        assert!(r.content_type.starts_with("application/problem+json"));
    }
    let r = app.post("/v1/keys/%00/revoke", json!({})).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = app
        .post("/v1/keys", json!({"role": "analyst", "label": "bell\u{7}"}))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["errors"][0]["pointer"], "/label");
    let r = app
        .post(
            "/v1/keys",
            json!({"role": "analyst", "label": "Émile's laptop"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}
