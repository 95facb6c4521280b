//! Hundreds of generated malformed requests across the command routes: every one gets a
//! 4xx problem+json, none a 5xx, and none writes an event. Deterministic (seeded) so a
//! failure reproduces.

use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

fn valid_bodies() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "POST",
            "/v1/warehouses",
            json!({"id": "wh-new", "name": "New", "region": "eu-west", "priority": 5}),
        ),
        (
            "POST",
            "/v1/products",
            json!({"sku": "SKU-NEW", "title": "New thing", "description": "d", "category": "c", "price": {"amount_minor": 100, "currency": "EUR"}}),
        ),
        (
            "PUT",
            "/v1/products/SKU-OK",
            json!({"title": "T", "description": "d", "category": "c"}),
        ),
        (
            "PUT",
            "/v1/products/SKU-OK/price",
            json!({"price": {"amount_minor": 100, "currency": "EUR"}}),
        ),
        (
            "PUT",
            "/v1/warehouses/wh-a/priority",
            json!({"priority": 7}),
        ),
        (
            "POST",
            "/v1/inventory/wh-a/SKU-OK/receive",
            json!({"qty": 1}),
        ),
        (
            "POST",
            "/v1/inventory/wh-a/SKU-OK/adjust",
            json!({"delta": 1, "reason": "recount"}),
        ),
        (
            "POST",
            "/v1/orders",
            json!({"customer_id": "c1", "lines": [{"sku": "SKU-OK", "qty": 1}], "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}),
        ),
        ("POST", "/v1/keys", json!({"role": "analyst", "label": "l"})),
    ]
}

/// A value of the wrong kind or out of range for whatever field it replaces.
fn junk(rng: &mut StdRng) -> Value {
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(0),
        3 => json!(1e300),
        4 => json!(i64::MIN),
        5 => json!("x".repeat(rng.random_range(300..6000))),
        6 => json!(""),
        7 => json!("\u{0000}\u{202e}💥 drop table"),
        8 => json!([1, "two", null]),
        9 => json!({"nested": {"deeper": [{}]}}),
        10 => json!(true),
        _ => json!(1.5),
    }
}

/// Breaks `body` for sure (an unknown field, a missing required field, or a field of the
/// wrong kind), then maybe breaks it some more.
fn break_body(rng: &mut StdRng, body: &Value) -> Value {
    let mut obj: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
    let keys: Vec<String> = obj.keys().cloned().collect();
    let rounds = rng.random_range(1..4);
    for round in 0..rounds {
        let how = if round == 0 {
            rng.random_range(0..3)
        } else {
            rng.random_range(0..4)
        };
        match how {
            0 => {
                obj.insert(format!("unexpected_{}", rng.random::<u16>()), junk(rng));
            }
            1 if !keys.is_empty() => {
                let k = &keys[rng.random_range(0..keys.len())];
                obj.remove(k);
                // Some fields are optional, so removing one is not always a break.
                if round == 0 {
                    obj.insert("also_unexpected".into(), Value::Null);
                }
            }
            _ if !keys.is_empty() => {
                let k = &keys[rng.random_range(0..keys.len())];
                // A junk value that happens to be valid for this field (say "" for a
                // description) would not break the body, so add a sure break as well.
                obj.insert(k.clone(), junk(rng));
                if round == 0 {
                    obj.insert("also_unexpected".into(), Value::Null);
                }
            }
            _ => {
                obj.insert("extra".into(), junk(rng));
            }
        }
    }
    Value::Object(obj)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_malformed_requests_get_4xx_and_write_nothing() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("SKU-OK", "Thing", 100).await.status, 201);
    let before = app.event_count().await;
    let keys_before = app.get("/v1/keys").await.body["items"]
        .as_array()
        .unwrap()
        .len();

    let mut rng = StdRng::seed_from_u64(0x5eed_e3b0);
    let bodies = valid_bodies();
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..600 {
        let (method, path, body) = &bodies[i % bodies.len()];
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(ADMIN_KEY);
        req = match rng.random_range(0..10) {
            // Not JSON at all.
            0 => req.header("content-type", "application/json").body(
                (0..rng.random_range(1..200))
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<u8>>(),
            ),
            // Truncated JSON.
            1 => {
                let text = body.to_string();
                let cut = rng.random_range(1..text.len());
                req.header("content-type", "application/json")
                    .body(text[..cut].to_string())
            }
            // Right JSON, wrong content type.
            2 => req
                .header("content-type", "text/plain")
                .body(body.to_string()),
            // A body of the wrong shape.
            3 => req.json(&junk(&mut rng)),
            _ => req.json(&break_body(&mut rng, body)),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(
            (400..500).contains(&status),
            "request {i} to {method} {path} got {status}: {}",
            r.text().await.unwrap_or_default()
        );
        assert_eq!(ct, "application/problem+json", "request {i}");
        *statuses.entry(status).or_default() += 1;
        sent += 1;
    }
    assert!(sent >= 500);
    assert_eq!(
        app.event_count().await,
        before,
        "no malformed request wrote an event"
    );
    let keys_after = app.get("/v1/keys").await.body["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(keys_after, keys_before, "no key was created");
    // The mix really exercised several kinds of rejection.
    assert!(statuses.len() >= 3, "{statuses:?}");
}
