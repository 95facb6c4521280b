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

/// Sends `receive` of `qty` units of SKU-1 at wh-1 with `key`; returns (status, body).
async fn receive_with_key(app: &TestApp, key: &str, qty: i64) -> (u16, serde_json::Value) {
    let r = app
        .client
        .post(format!("{}/v1/inventory/wh-1/SKU-1/receive", app.base))
        .bearer_auth(ADMIN_KEY)
        .header("Idempotency-Key", key)
        .json(&json!({ "qty": qty }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn on_hand(app: &TestApp) -> i64 {
    let r = app.get("/v1/inventory/SKU-1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["total"]["on_hand"].as_i64().expect("total on hand")
}

/// The response of `receive` qty 5 with key K is lost after the append committed (a fault
/// point standing in for a crash at that moment). A retry with K after the lease takes the
/// claim over, finds the key in the events' metadata and applies nothing: on-hand moved by
/// exactly 5.
async fn a_command_whose_response_was_lost_is_not_applied_again(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        emporium_gateway::ApiConfig {
            idempotency_lease: std::time::Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.create_warehouse("wh-1", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("SKU-1", "Thing", 250).await.status, 201);
    assert_eq!(app.receive("wh-1", "SKU-1", 10).await.status, 200);
    assert_eq!(on_hand(&app).await, 10);

    app.state
        .faults
        .lose_response_after_commit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _) = receive_with_key(&app, "restock-42", 5).await;
    assert_eq!(status, 500, "the response was lost");
    assert_eq!(on_hand(&app).await, 15, "the command itself was applied");

    // The retry waits out the lease, takes over and verifies.
    let (status, body) = receive_with_key(&app, "restock-42", 5).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(on_hand(&app).await, 15, "applied exactly once");
    // And from then on the stored answer is replayed.
    let (status, again) = receive_with_key(&app, "restock-42", 5).await;
    assert_eq!(status, 200);
    assert_eq!(again, body);
    assert_eq!(on_hand(&app).await, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_command_whose_response_was_lost_is_not_applied_again() {
    a_command_whose_response_was_lost_is_not_applied_again(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_command_whose_response_was_lost_is_not_applied_again() {
    a_command_whose_response_was_lost_is_not_applied_again(Backend::Sqlite).await;
}

/// A key stuck in progress (its first request died) makes its retries wait, but the waiting
/// holds no command slot: with 2 slots, 8 waiting retries and 30 other commands, every
/// other command succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_key_cannot_make_other_clients_commands_fail() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        emporium_gateway::ApiConfig {
            max_inflight_commands: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.create_warehouse("wh-1", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("SKU-1", "Thing", 250).await.status, 201);
    app.state
        .faults
        .lose_response_after_commit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(receive_with_key(&app, "stuck", 1).await.0, 500);

    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let (client, base) = (app.client.clone(), app.base.clone());
            tokio::spawn(async move {
                client
                    .post(format!("{base}/v1/inventory/wh-1/SKU-1/receive"))
                    .bearer_auth(ADMIN_KEY)
                    .header("Idempotency-Key", "stuck")
                    .json(&json!({ "qty": 1 }))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut failed = Vec::new();
    for i in 0..30 {
        let r = app.receive("wh-1", "SKU-1", 1).await;
        if r.status != 200 {
            failed.push((i, r.status));
        }
    }
    assert!(failed.is_empty(), "other commands failed: {failed:?}");
    for w in waiters {
        assert_eq!(
            w.await.unwrap(),
            409,
            "a retry of the stuck key is told to wait"
        );
    }
}
