//! Every registered route × every kind of caller: no key → 401, a role the route does not
//! allow → 403, an allowed role → 2xx. The route list comes from the router itself, so a
//! new route without an example here fails the test.

use std::sync::atomic::{AtomicUsize, Ordering};

use emporium_gateway::auth::Access;
use emporium_gateway::keys::Role;
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;

static N: AtomicUsize = AtomicUsize::new(0);

fn n() -> usize {
    N.fetch_add(1, Ordering::SeqCst)
}

/// Who may call each route, written down from API.md independently of the router: if a
/// route's declared access drifts from this, the test fails. `None` = public.
fn expected_roles(method: &Method, path: &str) -> Option<Vec<Role>> {
    use Role::*;
    let any = vec![Admin, Operator, Client, Analyst, Auditor, Merchant];
    Some(match (method.as_str(), path) {
        ("GET", "/health/live" | "/health/ready" | "/metrics" | "/openapi.json" | "/docs") => {
            return None
        }
        (_, p) if p.starts_with("/v1/warehouses") => vec![Admin, Operator],
        (_, p) if p.starts_with("/v1/inventory") => vec![Admin, Operator, Merchant],
        ("GET", "/v1/products/{sku}") => any,
        ("GET", "/v1/catalog/products") => vec![Admin, Operator, Client, Analyst, Auditor],
        ("GET", "/v1/orders/{id}/timeline") => vec![Admin, Auditor],
        ("GET", "/v1/projections") => vec![Admin, Analyst],
        ("POST", "/v1/projections/search/rebuild") => vec![Admin],
        (_, p) if p.starts_with("/v1/analytics") => vec![Admin, Analyst],
        (_, p) if p.starts_with("/v1/products") => vec![Admin, Operator, Merchant],
        (
            "POST",
            "/v1/orders/{id}/shipments" | "/v1/orders/{id}/returns" | "/v1/orders/{id}/review",
        ) => {
            vec![Admin, Operator]
        }
        (_, p) if p.starts_with("/v1/promotions") => vec![Admin, Operator],
        ("GET", "/v1/merchants/{id}") => vec![Admin, Merchant],
        (_, p) if p.starts_with("/v1/merchants") => vec![Admin],
        ("GET", "/v1/orders/{id}") => vec![Admin, Client, Merchant],
        (_, p) if p.starts_with("/v1/orders") => vec![Admin, Client],
        ("GET", "/v1/events") => vec![Admin, Analyst, Auditor],
        ("GET", "/v1/audit/verify" | "/v1/audit/digest") => vec![Admin, Auditor],
        ("DELETE", "/v1/customers/{id}/personal-data") => vec![Admin],
        (_, p) if p.starts_with("/v1/keys") => vec![Admin],
        other => panic!("no expected roles for {other:?}: add them to roles.rs"),
    })
}

/// Places the fixture order and confirms it straight through the order aggregate (this
/// test runs no checkout saga): allocated to wh-fix, ready to ship.
async fn confirmed_fixture_order(app: &TestApp, order: Value) -> String {
    use emporium_domain::order::{Allocation, Order, OrderCommand};
    use emporium_domain::values::{Quantity, Sku, WarehouseId};
    let placed = app.post("/v1/orders", order).await;
    assert_eq!(placed.status, 202);
    let id = placed.body["order_id"].as_str().unwrap().to_string();
    app.store
        .execute::<Order>(
            &id,
            OrderCommand::ConfirmOrder {
                allocation: vec![Allocation {
                    sku: Sku::parse("SKU-FIX").unwrap(),
                    warehouse_id: WarehouseId::parse("wh-fix").unwrap(),
                    qty: Quantity::new(1).unwrap(),
                }],
            },
            &emporium_event_store::EventMetadata::system("test"),
        )
        .await
        .unwrap();
    id
}

/// A request that an allowed caller can make successfully, setting up what it needs first.
async fn example(app: &TestApp, method: &Method, path: &str) -> (String, Option<Value>) {
    let i = n();
    let product = |sku: String| {
        json!({"sku": sku, "title": "Thing", "description": "", "category": "c",
               "price": {"amount_minor": 100, "currency": "EUR"}, "merchant_id": "m-fix"})
    };
    let order = json!({"customer_id": "cust-1", "lines": [{"sku": "SKU-FIX", "qty": 1}],
                       "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}});
    match (method.as_str(), path) {
        ("POST", "/v1/warehouses") => (
            path.into(),
            Some(json!({"id": format!("wh-{i}"), "name": "n", "region": "eu-west", "priority": 1})),
        ),
        ("GET", "/v1/warehouses") => (path.into(), None),
        ("GET", "/v1/warehouses/{id}") => ("/v1/warehouses/wh-fix".into(), None),
        ("PUT", "/v1/warehouses/{id}/priority") => (
            "/v1/warehouses/wh-fix/priority".into(),
            Some(json!({"priority": 3})),
        ),
        ("POST", "/v1/warehouses/{id}/close") => {
            let id = format!("wh-close-{i}");
            assert_eq!(app.create_warehouse(&id, "eu-west", 1).await.status, 201);
            (format!("/v1/warehouses/{id}/close"), None)
        }
        ("POST", "/v1/products") => (path.into(), Some(product(format!("SKU-{i}")))),
        ("GET", "/v1/products/{sku}") => ("/v1/products/SKU-FIX".into(), None),
        ("PUT", "/v1/products/{sku}") => (
            "/v1/products/SKU-FIX".into(),
            Some(json!({"title": format!("Thing {i}"), "description": "d", "category": "c"})),
        ),
        ("PUT", "/v1/products/{sku}/price") => (
            "/v1/products/SKU-FIX/price".into(),
            Some(json!({"price": {"amount_minor": 100 + i as i64, "currency": "EUR"}})),
        ),
        ("POST", "/v1/products/{sku}/discontinue") => {
            let sku = format!("SKU-OLD-{i}");
            assert_eq!(
                app.post("/v1/products", product(sku.clone())).await.status,
                201
            );
            (format!("/v1/products/{sku}/discontinue"), None)
        }
        ("POST", "/v1/inventory/{warehouse_id}/{sku}/receive") => (
            "/v1/inventory/wh-fix/SKU-FIX/receive".into(),
            Some(json!({"qty": 1})),
        ),
        ("POST", "/v1/inventory/{warehouse_id}/{sku}/adjust") => (
            "/v1/inventory/wh-fix/SKU-FIX/adjust".into(),
            Some(json!({"delta": 1, "reason": "recount"})),
        ),
        ("GET", "/v1/inventory/{sku}") => ("/v1/inventory/SKU-FIX".into(), None),
        ("GET", "/v1/audit/verify") => (path.into(), None),
        ("GET", "/v1/audit/digest") => {
            let dir = emporium_event_store::testing::TestDataDir::create();
            let key =
                emporium_event_store::audit::load_or_create_signing_key(&dir.path().join("k"))
                    .unwrap();
            // A new digest when the log grew since the last one; the last one stays valid.
            let _ = app.state.auditor.digest(&key).await.unwrap();
            (path.into(), None)
        }
        ("DELETE", "/v1/customers/{id}/personal-data") => {
            (format!("/v1/customers/c-erase-{i}/personal-data"), None)
        }
        ("POST", "/v1/orders") => (path.into(), Some(order)),
        ("POST", "/v1/merchants") => (
            path.into(),
            Some(json!({"id": format!("m-{i}"), "name": "Merchant", "commission_bps": 1000})),
        ),
        ("GET", "/v1/merchants/{id}") => ("/v1/merchants/m-fix".into(), None),
        ("POST", "/v1/promotions") => (
            path.into(),
            Some(json!({"code": format!("ROLE-{i}"), "percent_off": 10})),
        ),
        ("GET", "/v1/promotions/{code}") => {
            let code = format!("ROLE-{i}");
            let made = app
                .post("/v1/promotions", json!({"code": code, "percent_off": 10}))
                .await;
            assert_eq!(made.status, 201, "{:?}", made.body);
            (format!("/v1/promotions/{code}"), None)
        }
        ("POST", "/v1/orders/{id}/review") => {
            use emporium_domain::order::{Order, OrderCommand};
            let placed = app.post("/v1/orders", order).await;
            assert_eq!(placed.status, 202);
            let id = placed.body["order_id"].as_str().unwrap().to_string();
            app.store
                .execute::<Order>(
                    &id,
                    OrderCommand::HoldForReview {
                        score: 90,
                        reasons: vec![],
                        review_deadline_ms: i64::MAX,
                    },
                    &emporium_event_store::EventMetadata::system("test"),
                )
                .await
                .unwrap();
            (
                format!("/v1/orders/{id}/review"),
                Some(json!({"decision": "approve", "note": "looks fine"})),
            )
        }
        ("GET", "/v1/orders/{id}") => {
            let placed = app.post("/v1/orders", order).await;
            assert_eq!(placed.status, 202);
            (
                format!("/v1/orders/{}", placed.body["order_id"].as_str().unwrap()),
                None,
            )
        }
        ("POST", "/v1/orders/{id}/shipments") => {
            let id = confirmed_fixture_order(app, order).await;
            (
                format!("/v1/orders/{id}/shipments"),
                Some(json!({"warehouse_id": "wh-fix", "lines": [{"sku": "SKU-FIX", "qty": 1}]})),
            )
        }
        ("POST", "/v1/orders/{id}/returns") => {
            let id = confirmed_fixture_order(app, order).await;
            let shipped = app
                .post(
                    &format!("/v1/orders/{id}/shipments"),
                    json!({"warehouse_id": "wh-fix", "lines": [{"sku": "SKU-FIX", "qty": 1}]}),
                )
                .await;
            assert_eq!(shipped.status, 201, "{:?}", shipped.body);
            (
                format!("/v1/orders/{id}/returns"),
                Some(json!({"reason": "r", "lines": [{"sku": "SKU-FIX", "qty": 1,
                            "restock": false, "warehouse_id": "wh-fix"}]})),
            )
        }
        ("GET", "/v1/orders/{id}/payment") => {
            let placed = app.post("/v1/orders", order).await;
            assert_eq!(placed.status, 202);
            (
                format!(
                    "/v1/orders/{}/payment",
                    placed.body["order_id"].as_str().unwrap()
                ),
                None,
            )
        }
        ("POST", "/v1/orders/{id}/cancel") => {
            let placed = app.post("/v1/orders", order).await;
            assert_eq!(placed.status, 202);
            (
                format!(
                    "/v1/orders/{}/cancel",
                    placed.body["order_id"].as_str().unwrap()
                ),
                Some(json!({"reason": "changed my mind"})),
            )
        }
        ("GET", "/v1/events") => (path.into(), None),
        ("GET", "/v1/orders/{id}/timeline") => {
            let placed = app.post("/v1/orders", order).await;
            assert_eq!(placed.status, 202);
            (
                format!(
                    "/v1/orders/{}/timeline",
                    placed.body["order_id"].as_str().unwrap()
                ),
                None,
            )
        }
        ("GET", "/v1/catalog/products") => {
            ("/v1/catalog/products?q=fixture&in_stock=true".into(), None)
        }
        (
            "GET",
            "/v1/analytics/summary"
            | "/v1/analytics/top-products"
            | "/v1/analytics/warehouses"
            | "/v1/analytics/funnel"
            | "/v1/analytics/merchants"
            | "/v1/analytics/fulfilment"
            | "/v1/analytics/stream"
            | "/v1/projections",
        ) => (path.into(), None),
        ("POST", "/v1/projections/search/rebuild") => (path.into(), None),
        ("POST", "/v1/keys") => (path.into(), Some(json!({"role": "analyst", "label": "x"}))),
        ("GET", "/v1/keys") => (path.into(), None),
        ("POST", "/v1/keys/{key_id}/revoke") => {
            let created = app.post("/v1/keys", json!({"role": "auditor"})).await;
            assert_eq!(created.status, 201);
            (
                format!(
                    "/v1/keys/{}/revoke",
                    created.body["key_id"].as_str().unwrap()
                ),
                None,
            )
        }
        ("GET", "/health/live" | "/health/ready" | "/metrics" | "/openapi.json" | "/docs") => {
            (path.into(), None)
        }
        other => panic!("no example request for route {other:?}: add one to roles.rs"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_401_403_or_2xx_by_role() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(
        app.create_warehouse("wh-fix", "eu-west", 1).await.status,
        201
    );
    // The fixture product belongs to a merchant, so that merchant's key can use every
    // route it is allowed on.
    let made = app
        .post(
            "/v1/merchants",
            json!({"id": "m-fix", "name": "Fixture merchant", "commission_bps": 1000}),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let fixture = app
        .post(
            "/v1/products",
            json!({"sku": "SKU-FIX", "title": "Fixture", "description": "", "category": "c",
                   "price": {"amount_minor": 500, "currency": "EUR"}, "merchant_id": "m-fix"}),
        )
        .await;
    assert_eq!(fixture.status, 201, "{:?}", fixture.body);
    assert_eq!(app.receive("wh-fix", "SKU-FIX", 1000).await.status, 200);

    let mut keys = vec![(Role::Admin, ADMIN_KEY.to_string())];
    for role in [Role::Operator, Role::Client, Role::Analyst, Role::Auditor] {
        let customer = (role == Role::Client).then_some("cust-1");
        keys.push((role, app.key(role, customer).await));
    }
    keys.push((Role::Merchant, app.merchant_key("m-fix").await));
    assert!(app.routes.len() >= 25, "the route table is complete");

    let mut checked = 0;
    for route in app.routes.clone() {
        match expected_roles(&route.method, &route.path) {
            None => assert_eq!(
                route.access,
                Access::Public,
                "{} {}",
                route.method,
                route.path
            ),
            Some(roles) => assert_eq!(
                route.access.roles(),
                roles,
                "{} {}: declared access differs from API.md",
                route.method,
                route.path
            ),
        }
        // No key, and a key that does not exist.
        for key in [None, Some("emp_0123456789abcdef_nope")] {
            let (path, body) = example(&app, &route.method, &route.path).await;
            let r = app.send_as(key, route.method.clone(), &path, body).await;
            if route.access == Access::Public {
                assert!(
                    r.status < 300,
                    "{} {} public: {}",
                    route.method,
                    route.path,
                    r.status
                );
            } else {
                assert_eq!(
                    r.status, 401,
                    "{} {} without a valid key",
                    route.method, route.path
                );
                assert_eq!(r.content_type, "application/problem+json");
            }
            checked += 1;
        }
        for (role, key) in &keys {
            let (path, body) = example(&app, &route.method, &route.path).await;
            let r = if path.ends_with("/stream") {
                // An event stream never ends: judge it by its status line alone.
                let resp = app
                    .client
                    .get(format!("{}{path}", app.base))
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap();
                emporium_tests::Reply {
                    status: resp.status().as_u16(),
                    content_type: resp
                        .headers()
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                    body: Value::Null,
                }
            } else {
                app.send_as(Some(key), route.method.clone(), &path, body)
                    .await
            };
            if route.access.allows(*role) {
                assert!(
                    (200..300).contains(&r.status),
                    "{} {} as {}: expected 2xx, got {} {:?}",
                    route.method,
                    route.path,
                    role.as_str(),
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(
                    r.status,
                    403,
                    "{} {} as {}: expected 403, got {:?}",
                    route.method,
                    route.path,
                    role.as_str(),
                    r.body
                );
                assert_eq!(r.content_type, "application/problem+json");
            }
            checked += 1;
        }
    }
    assert!(checked >= app.routes.len() * 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_sees_and_cancels_only_its_own_customers_orders() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(app.create_product("SKU-1", "Thing", 500).await.status, 201);
    let alice = app.key(Role::Client, Some("alice")).await;
    let bob = app.key(Role::Client, Some("bob")).await;
    let body = json!({"lines": [{"sku": "SKU-1", "qty": 1}], "shipping": {"region": "eu-west"},
                      "payment": {"token": "tok_ok"}});
    let placed = app
        .send_as(Some(&alice), Method::POST, "/v1/orders", Some(body.clone()))
        .await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    let id = placed.body["order_id"].as_str().unwrap().to_string();
    let order = app.get(&format!("/v1/orders/{id}")).await;
    assert_eq!(
        order.body["customer_id"], "alice",
        "the key's customer is used"
    );

    let as_bob = app
        .send_as(Some(&bob), Method::GET, &format!("/v1/orders/{id}"), None)
        .await;
    assert_eq!(as_bob.status, 404, "another customer's order is invisible");
    let cancel = app
        .send_as(
            Some(&bob),
            Method::POST,
            &format!("/v1/orders/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(cancel.status, 404);
    let mut for_alice = body.clone();
    for_alice["customer_id"] = json!("alice");
    let spoof = app
        .send_as(Some(&bob), Method::POST, "/v1/orders", Some(for_alice))
        .await;
    assert_eq!(spoof.status, 403, "bob cannot order for alice");

    let own = app
        .send_as(
            Some(&alice),
            Method::POST,
            &format!("/v1/orders/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_not_recoverable_from_the_database_and_revocation_works() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let created = app
        .post("/v1/keys", json!({"role": "analyst", "label": "nightly"}))
        .await;
    assert_eq!(created.status, 201);
    let key = created.body["key"].as_str().unwrap().to_string();
    let key_id = created.body["key_id"].as_str().unwrap().to_string();
    let secret = key.rsplit('_').next().unwrap().to_string();

    let emporium_event_store::Db::Postgres(pool) = app.store.db() else {
        unreachable!()
    };
    let rows = sqlx::query("SELECT * FROM api_keys")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let dump = format!(
        "{:?}",
        rows.iter()
            .map(|r| {
                let hash: Vec<u8> = r.get("key_hash");
                (
                    r.get::<String, _>("key_id"),
                    r.get::<String, _>("role"),
                    r.get::<String, _>("label"),
                    hex(&hash),
                )
            })
            .collect::<Vec<_>>()
    );
    assert!(
        !dump.contains(&key) && !dump.contains(&secret),
        "the key is not stored"
    );
    let hash: Vec<u8> = rows[0].get("key_hash");
    assert_eq!(hash.len(), 32, "only a SHA-256 digest is kept");

    let listed = app.get("/v1/keys").await;
    assert!(
        !listed.body.to_string().contains(&secret),
        "listing never shows secrets"
    );

    let events = app
        .send_as(Some(&key), Method::GET, "/v1/events", None)
        .await;
    assert_eq!(events.status, 200);
    assert_eq!(
        app.post(&format!("/v1/keys/{key_id}/revoke"), json!({}))
            .await
            .status,
        200
    );
    let after = app
        .send_as(Some(&key), Method::GET, "/v1/events", None)
        .await;
    assert_eq!(after.status, 401, "a revoked key stops working at once");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
