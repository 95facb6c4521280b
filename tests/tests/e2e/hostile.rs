//! Hostile input found by the issue 11 review: values a client controls must be bounded
//! before they reach storage or the bus, and secrets must not be stored in clear.

use emporium_event_store::relay::{Relay, RelayConfig};
use emporium_event_store::testing::{assert_stream_matches_store, TestNats};
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use serde_json::json;

/// Registers warehouse wh-<n> sending `request_id` (and `correlation_id`); asserts 201 and
/// returns the request id the engine answered with.
async fn register_warehouse_with_ids(
    app: &TestApp,
    n: u32,
    request_id: &str,
    correlation_id: Option<&str>,
) -> String {
    let mut req = app
        .client
        .post(format!("{}/v1/warehouses", app.base))
        .bearer_auth(ADMIN_KEY)
        .header("x-request-id", request_id)
        .json(&json!({"id": format!("wh-{n}"), "name": "W", "region": "eu-west", "priority": n}));
    if let Some(c) = correlation_id {
        req = req.header("x-correlation-id", c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// A 350,000-character `X-Request-Id` (with a 1,000-character `X-Correlation-Id`) gets a
/// normal answer under a fresh id; nothing of it is stored; the relay publishes every event to JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_request_id_is_replaced_and_the_relay_keeps_publishing() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let huge = "x".repeat(350_000);
    let long_correlation = "c".repeat(1_000);
    let echoed = register_warehouse_with_ids(&app, 1, &huge, Some(&long_correlation)).await;
    assert!(
        uuid::Uuid::parse_str(&echoed).is_ok(),
        "a fresh id replaces the huge one: {}…",
        &echoed[..echoed.len().min(40)]
    );
    // Ids with spaces or control characters are not kept either.
    assert_ne!(
        register_warehouse_with_ids(&app, 2, "has space", None).await,
        "has space"
    );
    // A well-formed one is kept.
    assert_eq!(
        register_warehouse_with_ids(&app, 3, "req-ok-1", None).await,
        "req-ok-1"
    );

    let events = app.feed_until(3).await;
    for e in &events {
        for field in ["request_id", "correlation_id", "causation_id"] {
            let v = e["metadata"][field].as_str().unwrap_or_default();
            assert!(v.len() <= 128, "{field} is bounded: {} chars", v.len());
        }
    }
    assert_eq!(events[2]["metadata"]["request_id"], "req-ok-1");

    let nats = TestNats::connect().await;
    let relay = Relay::new(
        app.store.clone(),
        nats.client.clone(),
        RelayConfig::new(&nats.prefix),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let js = async_nats::jetstream::new(nats.client.clone());
    assert_stream_matches_store(&js, &nats.names(), &app.store).await;
    let _ = stop.send(());
    running.await.unwrap();
}

/// A new API key's secret is answered once and kept nowhere: no table of the database holds
/// it, in text or hex, also when the request carried an `Idempotency-Key`. A retry with
/// that key is told the key exists and gets no secret; no second key is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_keys_secret_is_stored_in_no_table() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let create = || {
        app.client
            .post(format!("{}/v1/keys", app.base))
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", "make-key-1")
            .json(&json!({"role": "analyst", "label": "dashboards"}))
            .send()
    };
    let first = TestApp::reply(create().await.unwrap()).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let secret = first.body["key"].as_str().unwrap().to_string();
    let key_id = first.body["key_id"].as_str().unwrap().to_string();
    assert!(secret.len() >= 20);

    let retry = TestApp::reply(create().await.unwrap()).await;
    assert_eq!(retry.status, 409, "{:?}", retry.body);
    assert_eq!(retry.body["code"], "idempotent_response_withheld");
    let detail = retry.body["detail"].as_str().unwrap();
    assert!(detail.contains(&key_id), "{detail}");
    assert!(!retry.body.to_string().contains(&secret));

    let emporium_event_store::Db::Postgres(pool) = app.store.db() else {
        unreachable!("a Postgres app")
    };
    let tables = emporium_tests::user_tables(pool).await;
    assert!(tables.iter().any(|(_, t)| t == "idempotency_keys"));
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    for (schema, table) in &tables {
        let sql = format!(
            "SELECT COUNT(*) FROM \"{schema}\".\"{table}\" t \
             WHERE t::text LIKE '%' || $1 || '%' OR t::text LIKE '%' || $2 || '%'"
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(&secret)
            .bind(&hex)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{schema}.{table} holds the new key's secret");
    }
    let keys = app.get("/v1/keys").await;
    let made = keys.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["label"] == "dashboards")
        .count();
    assert_eq!(made, 1, "the retry created no second key");
}

/// Revocation takes effect at once on the revoking engine, even while lookups of the same
/// key race the revoke, and within 1 s on another engine that had the key cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_at_once_here_and_within_a_second_elsewhere() {
    use emporium_gateway::keys::{KeyStore, Role};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let app = TestApp::spawn(Backend::Postgres).await;
    let other = KeyStore::new(app.store.db().clone(), None);
    for round in 0..5 {
        let created = app
            .state
            .keys
            .create(Role::Analyst, None, "racing")
            .await
            .unwrap();
        let secret = Arc::new(created.key.clone());
        assert!(other.authenticate(&secret).await.unwrap().is_some());
        // Lookups hammer the key while it is revoked.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammer = {
            let (state, secret, stop) = (app.state.clone(), secret.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = state.keys.authenticate(&secret).await;
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(app.state.keys.revoke(&created.info.key_id).await.unwrap());
        let revoked_at = Instant::now();
        while revoked_at.elapsed() < Duration::from_millis(100) {
            assert!(
                app.state
                    .keys
                    .authenticate(&secret)
                    .await
                    .unwrap()
                    .is_none(),
                "round {round}: the revoking engine refuses the key at once"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hammer.await.unwrap();
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(1000).saturating_sub(revoked_at.elapsed()))
                .await;
            assert!(
                other.authenticate(&secret).await.unwrap().is_none(),
                "another engine refuses it within 1 s"
            );
        }
    }
}
