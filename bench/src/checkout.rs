//! `emporium-bench checkout`: end-to-end checkouts over HTTP. The engine runs in-process on
//! a throwaway Postgres database (with NATS and the relay when `--nats-url` is given, else
//! the in-process bus); `--clients` concurrent clients place three-line orders for
//! `--duration` seconds; a feed subscriber times each order from placement to
//! confirmation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{Db, Store};
use hdrhistogram::Histogram;
use serde_json::json;
use uuid::Uuid;

use emporium_domain::{Order, OrderEvent};
use emporium_gateway::{ApiConfig, Engine};

#[derive(Debug, Args)]
pub(crate) struct CheckoutBenchArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    /// Use NATS (relay + durable consumer) instead of the in-process bus.
    #[arg(long)]
    pub(crate) nats_url: Option<String>,
    #[arg(long, default_value_t = 32)]
    pub(crate) clients: usize,
    #[arg(long, default_value_t = 20)]
    pub(crate) duration: u64,
}

pub(crate) async fn run(args: CheckoutBenchArgs) -> anyhow::Result<()> {
    crate::commands::throwaway(&args.database_url.clone(), false, |url| async move {
        bench(&args, &url).await
    })
    .await
}

async fn bench(args: &CheckoutBenchArgs, url: &str) -> anyhow::Result<()> {
    let store = Store::from_db(Db::Postgres(connect_postgres(url, 48).await?));
    let mut builder = Engine::on_store(store.clone())
        .admin_key(Some("bench-key".into()))
        .api(ApiConfig {
            max_inflight_commands: 10_000,
            ..ApiConfig::default()
        });
    let mut cleanup = None;
    if let Some(u) = &args.nats_url {
        let client = async_nats::connect(u).await?;
        let prefix = format!("bench{}", &Uuid::new_v4().simple().to_string()[..8]);
        cleanup = Some((
            client.clone(),
            emporium_event_store::nats::NatsNames::new(&prefix),
        ));
        builder = builder.nats_client(client, prefix);
    }
    let engine = builder.start().await?;
    let base = engine.url();

    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth("bench-key")
            .json(&body)
            .send()
    };
    for (w, region) in [
        ("wh-a", "eu-west"),
        ("wh-b", "us-east"),
        ("wh-c", "ap-south"),
    ] {
        post(
            "/v1/warehouses",
            json!({"id": w, "name": w, "region": region, "priority": 1}),
        )
        .await?;
    }
    for i in 0..30 {
        post(
            "/v1/products",
            json!({"sku": format!("SKU-{i}"), "title": "Thing", "description": "",
            "category": "c", "price": {"amount_minor": 1000 + i, "currency": "EUR"}}),
        )
        .await?;
        for w in ["wh-a", "wh-b", "wh-c"] {
            post(
                &format!("/v1/inventory/{w}/SKU-{i}/receive"),
                json!({"qty": 1_000_000}),
            )
            .await?;
        }
    }

    // Placement times, and a feed follower that sees the confirmations.
    let placed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let confirmed = Arc::new(AtomicU64::new(0));
    let follower = {
        let (placed_at, hist, confirmed, store) = (
            placed_at.clone(),
            hist.clone(),
            confirmed.clone(),
            store.clone(),
        );
        let head = store.feed().head().await?;
        tokio::spawn(async move {
            let mut sub = store.feed().subscribe(head).with_batch_size(1000);
            while let Ok(batch) = sub.next_batch().await {
                let now = Instant::now();
                let confirmations = batch.iter().filter(|e| {
                    matches!(
                        store.upcasters().decode::<Order, _>(e).map(|e| e.payload),
                        Ok(OrderEvent::OrderConfirmed { .. })
                    )
                });
                for e in confirmations {
                    if let Some(at) = placed_at
                        .lock()
                        .ok()
                        .and_then(|p| p.get(&e.aggregate_id).copied())
                    {
                        if let Ok(mut h) = hist.lock() {
                            let _ = h.record(now.duration_since(at).as_micros() as u64);
                        }
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let orders = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|c| {
            let (client, base, stop, placed_at, orders) =
                (client.clone(), base.clone(), stop.clone(), placed_at.clone(), orders.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let lines: Vec<_> = (0..3)
                        .map(|k| json!({"sku": format!("SKU-{}", (c * 7 + n * 3 + k * 11) % 30), "qty": 1}))
                        .collect();
                    let sent = Instant::now();
                    let r = client
                        .post(format!("{base}/v1/orders"))
                        .bearer_auth("bench-key")
                        .json(&json!({"customer_id": format!("c{c}"), "lines": lines,
                                      "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}))
                        .send()
                        .await;
                    if let Ok(r) = r {
                        if let Ok(v) = r.json::<serde_json::Value>().await {
                            if let Some(id) = v["order_id"].as_str() {
                                if let Ok(mut p) = placed_at.lock() {
                                    p.insert(id.to_string(), sent);
                                }
                                orders.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let placed = orders.load(Ordering::Relaxed);
    // Let the saga finish what was placed.
    let drain = Instant::now();
    while confirmed.load(Ordering::Relaxed) < placed && drain.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed().as_secs_f64();
    let done = confirmed.load(Ordering::Relaxed);
    follower.abort();
    engine.stop().await;
    let (p50, p95, p99) = {
        let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (ms(0.5), ms(0.95), ms(0.99))
    };
    println!(
        "{} clients, {} bus: placed {placed} orders in {}s ({:.0}/s); confirmed {done} ({:.0} checkouts/s end to end incl. drain); placement -> confirmation p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        args.clients,
        if args.nats_url.is_some() { "NATS" } else { "in-process" },
        args.duration,
        placed as f64 / args.duration as f64,
        done as f64 / total,
        p50,
        p95,
        p99
    );
    if let Some((client, names)) = cleanup {
        let js = async_nats::jetstream::new(client);
        let _ = js.delete_stream(names.stream()).await;
        let _ = js.delete_stream(names.dlq_stream()).await;
    }
    Ok(())
}
