//! The HTTP API end to end: real server on loopback, real Postgres or SQLite underneath.

use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use reqwest::Method;
use serde_json::{json, Value};

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

on_both_backends!(an_admin_stocks_two_warehouses_and_places_an_order);
async fn an_admin_stocks_two_warehouses_and_places_an_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_warehouse("wh-b", "us-east", 2).await.status, 201);
    let p = app
        .create_product("HEAD-1", "Wireless Headphones", 4999)
        .await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert_eq!(
        p.body["price"],
        json!({"amount_minor": 4999, "currency": "EUR"})
    );

    let r = app.receive("wh-a", "HEAD-1", 5).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["on_hand"], 5);
    let r = app.receive("wh-b", "HEAD-1", 7).await;
    assert_eq!(r.body["available"], 7);

    let inv = app.get("/v1/inventory/HEAD-1").await;
    assert_eq!(inv.status, 200);
    assert_eq!(inv.body["total"]["on_hand"], 12);
    assert_eq!(inv.body["warehouses"].as_array().unwrap().len(), 2);

    let placed = app.place_order("cust-1", &[("HEAD-1", 3)]).await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    assert_eq!(placed.body["status"], "pending");
    let id = placed.body["order_id"].as_str().unwrap().to_string();

    // A later price change does not touch the placed order.
    let changed = app
        .send(
            Method::PUT,
            "/v1/products/HEAD-1/price",
            Some(json!({"price": {"amount_minor": 5999, "currency": "EUR"}})),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);

    let order = app.get(&format!("/v1/orders/{id}")).await;
    assert_eq!(order.status, 200, "{:?}", order.body);
    assert_eq!(order.body["status"], "pending");
    assert_eq!(order.body["customer_id"], "cust-1");
    assert_eq!(order.body["lines"][0]["unit_price"]["amount_minor"], 4999);
    assert_eq!(
        order.body["total"],
        json!({"amount_minor": 14997, "currency": "EUR"})
    );

    let cancelled = app
        .post(&format!("/v1/orders/{id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = app
        .post(&format!("/v1/orders/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["code"], "illegal_transition");

    // Every event carries its metadata, and the feed lists them in order.
    let stored = app.event_count().await;
    let events = app.feed_until(stored).await;
    assert_eq!(events.len() as i64, stored);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["position"], i as i64 + 1);
        assert_eq!(e["metadata"]["actor"], "admin");
        assert!(!e["metadata"]["request_id"].as_str().unwrap().is_empty());
    }
}

on_both_backends!(requests_without_a_valid_key_are_refused);
async fn requests_without_a_valid_key_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let no_key = app
        .client
        .post(format!("{}/v1/warehouses", app.base))
        .json(&json!({"id": "w", "name": "n", "region": "eu-west", "priority": 1}))
        .send()
        .await
        .unwrap();
    let reply = TestApp::reply(no_key).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.content_type, "application/problem+json");
    let wrong = app
        .client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(format!("{ADMIN_KEY}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(app.event_count().await, 0);
    let live = app
        .client
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

fn bad_requests() -> Vec<(&'static str, Method, String, Value)> {
    let product = |price: Value| json!({"sku": "SKU-1", "title": "T", "description": "", "category": "c", "price": price});
    let order = |lines: Value| json!({"customer_id": "c1", "lines": lines, "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}});
    let p = "/v1/products".to_string();
    let o = "/v1/orders".to_string();
    let recv = "/v1/inventory/wh-a/SKU-OK/receive".to_string();
    let adj = "/v1/inventory/wh-a/SKU-OK/adjust".to_string();
    vec![
        (
            "negative qty",
            Method::POST,
            recv.clone(),
            json!({"qty": -5}),
        ),
        ("zero qty", Method::POST, recv.clone(), json!({"qty": 0})),
        (
            "huge qty",
            Method::POST,
            recv.clone(),
            json!({"qty": 10_000_000_000_i64}),
        ),
        (
            "qty as string",
            Method::POST,
            recv.clone(),
            json!({"qty": "5"}),
        ),
        (
            "qty as float",
            Method::POST,
            recv.clone(),
            json!({"qty": 1.5}),
        ),
        ("missing qty", Method::POST, recv.clone(), json!({})),
        (
            "unknown field",
            Method::POST,
            recv.clone(),
            json!({"qty": 1, "extra": true}),
        ),
        (
            "receive into unknown warehouse",
            Method::POST,
            "/v1/inventory/wh-zz/SKU-OK/receive".into(),
            json!({"qty": 1}),
        ),
        (
            "receive unknown sku",
            Method::POST,
            "/v1/inventory/wh-a/NOPE/receive".into(),
            json!({"qty": 1}),
        ),
        (
            "bad sku in path",
            Method::POST,
            "/v1/inventory/wh-a/bad%20sku/receive".into(),
            json!({"qty": 1}),
        ),
        (
            "zero adjustment",
            Method::POST,
            adj.clone(),
            json!({"delta": 0, "reason": "count"}),
        ),
        (
            "adjust below zero",
            Method::POST,
            adj.clone(),
            json!({"delta": -1000, "reason": "count"}),
        ),
        (
            "adjust without reason",
            Method::POST,
            adj.clone(),
            json!({"delta": 1, "reason": ""}),
        ),
        (
            "unknown currency",
            Method::POST,
            p.clone(),
            product(json!({"amount_minor": 100, "currency": "XXY"})),
        ),
        (
            "lowercase currency",
            Method::POST,
            p.clone(),
            product(json!({"amount_minor": 100, "currency": "eur"})),
        ),
        (
            "negative price",
            Method::POST,
            p.clone(),
            product(json!({"amount_minor": -1, "currency": "EUR"})),
        ),
        (
            "float price",
            Method::POST,
            p.clone(),
            product(json!({"amount_minor": 19.99, "currency": "EUR"})),
        ),
        (
            "price as string",
            Method::POST,
            p.clone(),
            product(json!("19.99 EUR")),
        ),
        (
            "missing price",
            Method::POST,
            p.clone(),
            json!({"sku": "S", "title": "T", "category": "c"}),
        ),
        (
            "empty title",
            Method::POST,
            p.clone(),
            json!({"sku": "S2", "title": " ", "category": "c", "price": {"amount_minor": 1, "currency": "EUR"}}),
        ),
        (
            "sku with spaces",
            Method::POST,
            p.clone(),
            json!({"sku": "a b", "title": "T", "category": "c", "price": {"amount_minor": 1, "currency": "EUR"}}),
        ),
        (
            "overlong title",
            Method::POST,
            p.clone(),
            json!({"sku": "S3", "title": "x".repeat(10_000), "category": "c", "price": {"amount_minor": 1, "currency": "EUR"}}),
        ),
        (
            "body is an array",
            Method::POST,
            p.clone(),
            json!([1, 2, 3]),
        ),
        ("body is null", Method::POST, p.clone(), Value::Null),
        ("empty order", Method::POST, o.clone(), order(json!([]))),
        (
            "order of unknown sku",
            Method::POST,
            o.clone(),
            order(json!([{"sku": "NOPE", "qty": 1}])),
        ),
        (
            "order qty zero",
            Method::POST,
            o.clone(),
            order(json!([{"sku": "SKU-OK", "qty": 0}])),
        ),
        (
            "order lines for one sku adding up past the maximum",
            Method::POST,
            o.clone(),
            order(json!([{"sku": "SKU-OK", "qty": 600000}, {"sku": "SKU-OK", "qty": 500000}])),
        ),
        (
            "order too many lines",
            Method::POST,
            o.clone(),
            order(Value::Array(
                (0..101)
                    .map(|i| json!({"sku": format!("S{i}"), "qty": 1}))
                    .collect(),
            )),
        ),
        (
            "order without payment",
            Method::POST,
            o.clone(),
            json!({"customer_id": "c1", "lines": [{"sku": "SKU-OK", "qty": 1}], "shipping": {"region": "eu-west"}}),
        ),
        (
            "order with bad customer",
            Method::POST,
            o.clone(),
            json!({"customer_id": "", "lines": [{"sku": "SKU-OK", "qty": 1}], "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}),
        ),
        (
            "order with bad token",
            Method::POST,
            o.clone(),
            json!({"customer_id": "c1", "lines": [{"sku": "SKU-OK", "qty": 1}], "shipping": {"region": "eu-west"}, "payment": {"token": "tok ok"}}),
        ),
        (
            "warehouse priority out of range",
            Method::POST,
            "/v1/warehouses".into(),
            json!({"id": "w2", "name": "n", "region": "eu-west", "priority": -1}),
        ),
        (
            "warehouse bad region",
            Method::POST,
            "/v1/warehouses".into(),
            json!({"id": "w2", "name": "n", "region": "EU WEST", "priority": 1}),
        ),
        (
            "duplicate warehouse",
            Method::POST,
            "/v1/warehouses".into(),
            json!({"id": "wh-a", "name": "n", "region": "eu-west", "priority": 1}),
        ),
        (
            "cancel unknown order",
            Method::POST,
            "/v1/orders/00000000-0000-4000-8000-000000000000/cancel".into(),
            json!({}),
        ),
        (
            "cancel malformed order id",
            Method::POST,
            "/v1/orders/not-a-uuid/cancel".into(),
            json!({}),
        ),
        (
            "price change of unknown product",
            Method::PUT,
            "/v1/products/NOPE/price".into(),
            json!({"price": {"amount_minor": 1, "currency": "EUR"}}),
        ),
        (
            "events with negative cursor",
            Method::GET,
            "/v1/events?after=-1".into(),
            Value::Null,
        ),
        (
            "events with a negative limit",
            Method::GET,
            "/v1/events?limit=-5".into(),
            Value::Null,
        ),
        (
            "events with text limit",
            Method::GET,
            "/v1/events?limit=lots".into(),
            Value::Null,
        ),
    ]
}

on_both_backends!(bad_input_gets_a_problem_and_writes_nothing);
async fn bad_input_gets_a_problem_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("SKU-OK", "Thing", 100).await.status, 201);
    assert_eq!(app.receive("wh-a", "SKU-OK", 3).await.status, 200);
    let before = app.event_count().await;

    for (what, method, path, body) in bad_requests() {
        let body = (method != Method::GET).then_some(body);
        let reply = app.send(method, &path, body).await;
        assert!(
            (400..500).contains(&reply.status),
            "{what}: expected 4xx, got {} {:?}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.content_type, "application/problem+json", "{what}");
        assert_eq!(reply.body["status"], reply.status, "{what}");
        assert!(reply.body["title"].is_string(), "{what}");
        assert!(reply.body["detail"].is_string(), "{what}");
    }

    // Not JSON at all, the wrong content type, and a 10 MB body.
    let raw = |body: Vec<u8>, ct: &'static str| {
        app.client
            .post(format!("{}/v1/products", app.base))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", ct)
            .body(body)
    };
    let r = TestApp::reply(
        raw(b"{not json".to_vec(), "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.content_type, "application/problem+json");
    let r = TestApp::reply(raw(b"sku=1".to_vec(), "text/plain").send().await.unwrap()).await;
    assert_eq!(r.status, 415);
    let mut big = br#"{"sku":"BIG","title":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    big.extend(br#"","category":"c","price":{"amount_minor":1,"currency":"EUR"}}"#);
    // Over a raw socket: the server answers 413 before the body is sent and may close the
    // connection mid-upload, which an HTTP client library reports as a broken pipe instead
    // of showing the response. Read the answer regardless of the write failing.
    let (status, head, body) = raw_post(&app.base, "/v1/products", &big).await;
    assert_eq!(status, 413, "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(body.contains("\"status\":413"), "{body}");

    let validation = app
        .post("/v1/products", json!({"sku": "a b", "title": "", "category": "", "price": {"amount_minor": -1, "currency": "EUR"}}))
        .await;
    let pointers: Vec<&str> = validation.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/sku", "/title", "/category", "/price/amount_minor"]
    );

    assert_eq!(
        app.event_count().await,
        before,
        "no bad request wrote an event"
    );
}

/// POSTs `body` over a plain TCP connection, writing and reading at the same time, and
/// returns the status, the response head and the body text.
async fn raw_post(base: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        for chunk in body.chunks(64 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                break;
            }
        }
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&response);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if len.is_some_and(|l| rest.len() >= l) {
                break;
            }
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}
