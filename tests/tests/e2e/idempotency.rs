//! `Idempotency-Key`: concurrent identical retries produce one order and identical answers;
//! the same key with another body is refused; nothing is written twice.

use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use serde_json::json;

async fn twenty_racing_retries_make_one_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.create_product("SKU-1", "Thing", 250).await.status, 201);
    let body = json!({"customer_id": "c-1", "lines": [{"sku": "SKU-1", "qty": 2}],
                      "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}});
    let before = app.event_count().await;

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (client, url, body) = (
                app.client.clone(),
                format!("{}/v1/orders", app.base),
                body.clone(),
            );
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(ADMIN_KEY)
                    .header("Idempotency-Key", "order-attempt-1")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "20 identical answers: {answers:?}"
    );
    assert_eq!(answers[0].0, 202);
    assert_eq!(
        app.event_count().await,
        before + 1,
        "exactly one OrderPlaced"
    );

    // The same key with a different body is refused and writes nothing.
    let mut other = body.clone();
    other["lines"][0]["qty"] = json!(3);
    let r = app
        .client
        .post(format!("{}/v1/orders", app.base))
        .bearer_auth(ADMIN_KEY)
        .header("Idempotency-Key", "order-attempt-1")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "idempotency_key_reused");

    // A later retry still gets the stored answer, flagged as a replay.
    let r = app
        .client
        .post(format!("{}/v1/orders", app.base))
        .bearer_auth(ADMIN_KEY)
        .header("Idempotency-Key", "order-attempt-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), answers[0]);

    // Without a key, or with another key, the same body places new orders.
    let r = app
        .client
        .post(format!("{}/v1/orders", app.base))
        .bearer_auth(ADMIN_KEY)
        .header("Idempotency-Key", "order-attempt-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(app.event_count().await, before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_twenty_racing_retries_make_one_order() {
    twenty_racing_retries_make_one_order(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_twenty_racing_retries_make_one_order() {
    twenty_racing_retries_make_one_order(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_failed_command_is_replayed_too_and_bad_keys_are_refused() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let send = |key: &'static str| {
        app.client
            .post(format!("{}/v1/inventory/wh-x/SKU-X/receive", app.base))
            .bearer_auth(ADMIN_KEY)
            .header("Idempotency-Key", key)
            .json(&json!({"qty": 1}))
            .send()
    };
    let first = send("k1").await.unwrap();
    assert_eq!(first.status(), 404, "unknown warehouse");
    let again = send("k1").await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let bad = send("has space").await.unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(app.event_count().await, 0);
}
