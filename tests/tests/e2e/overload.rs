//! Overload behaviour: past the command concurrency limit, excess requests are shed at once
//! with 503 + Retry-After while accepted ones keep a bounded latency and are all stored;
//! a key over its rate gets 429 + Retry-After; `/metrics` shows the families operators use.

use std::time::{Duration, Instant};

use emporium_gateway::ApiConfig;
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use hdrhistogram::Histogram;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_times_the_concurrency_limit_sheds_quickly_and_loses_nothing() {
    const LIMIT: usize = 8;
    let config = ApiConfig {
        max_inflight_commands: LIMIT,
        ..ApiConfig::default()
    };
    let app = TestApp::spawn_with(Backend::Postgres, config).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    for i in 0..LIMIT * 4 {
        let sku = format!("SKU-{i}");
        assert_eq!(app.create_product(&sku, "Thing", 100).await.status, 201);
    }
    let before = app.event_count().await;

    let deadline = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..LIMIT * 4)
        .map(|i| {
            let (client, url) = (
                app.client.clone(),
                format!("{}/v1/inventory/wh-a/SKU-{i}/receive", app.base),
            );
            tokio::spawn(async move {
                let mut out = Vec::new();
                while Instant::now() < deadline && out.len() < 2000 {
                    let started = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(ADMIN_KEY)
                        .json(&json!({"qty": 1}))
                        .send()
                        .await
                        .unwrap();
                    let retry_after = r.headers().contains_key("retry-after");
                    out.push((r.status().as_u16(), started.elapsed(), retry_after));
                }
                out
            })
        })
        .collect();
    let mut accepted = Histogram::<u64>::new(3).unwrap();
    let mut shed = Histogram::<u64>::new(3).unwrap();
    for w in workers {
        for (status, took, retry_after) in w.await.unwrap() {
            let micros = took.as_micros() as u64;
            match status {
                200 => accepted.record(micros).unwrap(),
                503 => {
                    assert!(retry_after, "a shed request says when to retry");
                    shed.record(micros).unwrap()
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "accepted {} (p50 {:.1} ms, p99 {:.1} ms), shed {} (p99 {:.1} ms)",
        accepted.len(),
        accepted.value_at_quantile(0.5) as f64 / 1000.0,
        p99(&accepted),
        shed.len(),
        p99(&shed)
    );
    assert!(!shed.is_empty(), "excess load is shed");
    assert!(accepted.len() > 100, "work still gets done");
    assert!(
        p99(&shed) < 250.0,
        "shedding is quick: p99 {:.1} ms",
        p99(&shed)
    );
    assert!(
        p99(&accepted) < 2000.0,
        "accepted p99 stays bounded: {:.1} ms",
        p99(&accepted)
    );

    // Every accepted command is stored, and nothing else.
    assert_eq!(app.event_count().await, before + accepted.len() as i64);
    let mut on_hand = 0;
    for i in 0..LIMIT * 4 {
        let inv = app.get(&format!("/v1/inventory/SKU-{i}")).await;
        on_hand += inv.body["total"]["on_hand"].as_u64().unwrap_or(0);
    }
    assert_eq!(on_hand, accepted.len());
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let config = ApiConfig {
        rate_limit_per_sec: 5,
        rate_limit_burst: 5,
        ..ApiConfig::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, config).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = app
            .client
            .get(format!("{}/v1/warehouses", app.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            let after: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(after >= 1);
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    // Health checks are not rate limited (no key).
    let live = app
        .client
        .get(format!("{}/health/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn metrics_show_requests_latency_commands_retries_and_the_pool() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 409);
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "emporium_http_requests_total",
        "emporium_http_request_duration_seconds_bucket",
        "emporium_commands_total",
        "emporium_command_retries_total",
        "emporium_command_duration_seconds_bucket",
        "emporium_db_pool_connections",
        "emporium_load_shed_total",
        "emporium_rate_limited_total",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    assert!(
        text.contains(r#"route="/v1/warehouses""#),
        "labelled by route template"
    );
    assert!(text.contains(r#"status="409""#));
    assert!(text.contains(r#"emporium_commands_total{aggregate="Warehouse",outcome="rejected"} 1"#));
}
