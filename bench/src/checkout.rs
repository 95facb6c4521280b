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

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use emporium_domain::inventory::stock_item_id;
use emporium_domain::{
    Allocation, Currency, CustomerId, Money, Order, OrderCommand, OrderEvent, OrderId, OrderLine,
    Payment, PaymentCommand, Quantity, Region, Sku, StockItem, StockItemCommand, WarehouseId,
};
use emporium_gateway::{ApiConfig, Engine};
use postgres_es::PostgresEventRepository;

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
    /// Open loop: place this many orders per second whatever the engine's pace (instead of
    /// closed-loop clients), and report placement -> confirmation latency.
    #[arg(long)]
    pub(crate) rate: Option<u64>,
    /// Skip the plain cqrs-es baseline (open-loop runs compare latency, not rates).
    #[arg(long)]
    pub(crate) skip_baseline: bool,
    /// Events of history to put on the hot stock items before measuring (reserve/release
    /// pairs, spread over the 90 items); the engine measures after its read models caught up.
    #[arg(long, default_value_t = 0)]
    pub(crate) prior_events: u64,
    /// Run the engine twice in this invocation, without and then with a merchant webhook
    /// receiving every order notification (a local endpoint answering 204), and print the
    /// ratio (issue 16: with webhooks ≥ 0.9× without).
    #[arg(long)]
    pub(crate) webhooks: bool,
    /// Leave order notifications undelivered (the outbox still fills), to measure their cost.
    #[arg(long)]
    pub(crate) no_notifications: bool,
    /// Screen no order for fraud, to measure the screen's cost.
    #[arg(long)]
    pub(crate) no_fraud_screen: bool,
}

pub(crate) async fn run(args: CheckoutBenchArgs) -> anyhow::Result<()> {
    let baseline = if args.skip_baseline || args.rate.is_some() {
        0.0
    } else {
        let (clients, duration) = (args.clients, args.duration);
        let mut rate = 0.0;
        crate::commands::throwaway(&args.database_url.clone(), false, |url| {
            let rate = &mut rate;
            async move {
                *rate = plain_cqrs(&url, clients, duration).await?;
                Ok(())
            }
        })
        .await?;
        rate
    };
    if baseline > 0.0 {
        println!(
            "baseline: plain cqrs-es + postgres-es, inline checkout in {} client tasks: {baseline:.0} checkouts/s",
            args.clients
        );
    }
    let mut engine = 0.0;
    crate::commands::throwaway(&args.database_url.clone(), false, |url| {
        let engine = &mut engine;
        let args = &args;
        async move {
            *engine = bench(args, &url, None).await?;
            Ok(())
        }
    })
    .await?;
    if args.webhooks {
        let received = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hook = format!("http://{}/hook", listener.local_addr()?);
        let router = {
            let received = received.clone();
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |_body: String| {
                    let received = received.clone();
                    async move {
                        received.fetch_add(1, Ordering::Relaxed);
                        axum::http::StatusCode::NO_CONTENT
                    }
                }),
            )
        };
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let mut with = 0.0;
        crate::commands::throwaway(&args.database_url.clone(), false, |url| {
            let with = &mut with;
            let (args, hook, received) = (&args, hook.clone(), &*received);
            async move {
                *with = bench(args, &url, Some((&hook, received))).await?;
                Ok(())
            }
        })
        .await?;
        server.abort();
        println!(
            "webhooks on/off {:.2}x ({with:.0} vs {engine:.0} checkouts/s, same workload, same run; {} webhook deliveries received)",
            with / engine,
            received.load(Ordering::Relaxed)
        );
    }
    if baseline > 0.0 {
        println!(
            "engine/baseline {:.2}x ({engine:.0} vs {baseline:.0} checkouts/s, same workload, same run)",
            engine / baseline
        );
    }
    Ok(())
}

type Plain<A> = CqrsFramework<A, PersistedEventStore<PostgresEventRepository, A>>;

fn plain<A: Aggregate<Services = ()>>(pool: &sqlx::PgPool) -> Plain<A> {
    CqrsFramework::new(
        PersistedEventStore::new_event_store(
            PostgresEventRepository::new(pool.clone())
                .with_tables("plain_events", "plain_snapshots"),
        ),
        vec![],
        (),
    )
}

/// Retries a cqrs-es command while other clients win the race for the same aggregate, as
/// an application on plain cqrs-es must. `Ok(false)`: the aggregate refused it.
async fn until_not_conflicting<A, F>(mut f: impl FnMut() -> F) -> anyhow::Result<bool>
where
    A: Aggregate,
    F: std::future::Future<Output = Result<(), AggregateError<A::Error>>>,
{
    loop {
        match f().await {
            Ok(()) => return Ok(true),
            Err(AggregateError::UserError(_)) => return Ok(false),
            Err(AggregateError::AggregateConflict) => tokio::task::yield_now().await,
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        }
    }
}

/// The same checkout written inline on plain cqrs-es + postgres-es: place, reserve each line
/// at the first warehouse that accepts, authorize, confirm. No bus, no saga state. Returns
/// checkouts per second.
async fn plain_cqrs(url: &str, clients: usize, duration: u64) -> anyhow::Result<f64> {
    let pool = connect_postgres(url, 48).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    emporium_event_store::seeding::create_baseline_tables(&pool).await?;
    let stock = Arc::new(plain::<StockItem>(&pool));
    let orders = Arc::new(plain::<Order>(&pool));
    let payments = Arc::new(plain::<Payment>(&pool));
    let warehouses: Vec<WarehouseId> = ["wh-a", "wh-b", "wh-c"]
        .iter()
        .map(|w| WarehouseId::parse(w))
        .collect::<Result<_, _>>()?;
    let skus: Vec<Sku> = (0..30)
        .map(|i| Sku::parse(&format!("SKU-{i}")))
        .collect::<Result<_, _>>()?;
    for sku in &skus {
        for w in &warehouses {
            stock
                .execute(
                    &stock_item_id(w, sku),
                    StockItemCommand::ReceiveStock {
                        warehouse_id: w.clone(),
                        sku: sku.clone(),
                        qty: Quantity::new(1_000_000)?,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let eur = Currency::parse("EUR")?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (stock, orders, payments, stop, done) = (
                stock.clone(),
                orders.clone(),
                payments.clone(),
                stop.clone(),
                done.clone(),
            );
            let (warehouses, skus) = (warehouses.clone(), skus.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let order_id = OrderId::new();
                    let oid = order_id.to_string();
                    let mut lines = Vec::new();
                    for k in 0..3 {
                        let i = (c * 7 + n * 3 + k * 11) % 30;
                        let price = Money::new(1000 + i as i64, eur)?;
                        if lines.iter().all(|l: &OrderLine| l.sku != skus[i]) {
                            lines.push(OrderLine {
                                sku: skus[i].clone(),
                                qty: Quantity::new(1)?,
                                unit_price: price,
                                merchant_id: None,
                            });
                        }
                    }
                    let total =
                        Money::new(lines.iter().map(|l| l.unit_price.amount_minor()).sum(), eur)?;
                    let place = OrderCommand::PlaceOrder {
                        order_id,
                        customer_id: CustomerId::parse(&format!("c{c}"))?,
                        lines: lines.clone(),
                        shipping_region: Region::parse("eu-west")?,
                        payment_token: "tok_ok".into(),
                        personal: None,
                        promotions: vec![],
                    };
                    until_not_conflicting::<Order, _>(|| orders.execute(&oid, place.clone()))
                        .await?;
                    let mut allocation = Vec::new();
                    for line in &lines {
                        for w in &warehouses {
                            let reserve = StockItemCommand::ReserveStock {
                                warehouse_id: w.clone(),
                                sku: line.sku.clone(),
                                order_id,
                                qty: line.qty,
                            };
                            let id = stock_item_id(w, &line.sku);
                            if until_not_conflicting::<StockItem, _>(|| {
                                stock.execute(&id, reserve.clone())
                            })
                            .await?
                            {
                                allocation.push(Allocation {
                                    sku: line.sku.clone(),
                                    warehouse_id: w.clone(),
                                    qty: line.qty,
                                });
                                break;
                            }
                        }
                    }
                    let authorize = PaymentCommand::AuthorizePayment {
                        order_id,
                        amount: total,
                    };
                    until_not_conflicting::<Payment, _>(|| {
                        payments.execute(&oid, authorize.clone())
                    })
                    .await?;
                    let confirm = OrderCommand::ConfirmOrder {
                        allocation: allocation.clone(),
                    };
                    if until_not_conflicting::<Order, _>(|| orders.execute(&oid, confirm.clone()))
                        .await?
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(duration)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The engine end to end over HTTP; returns checkouts per second (drain included).
/// With `hook`, every product belongs to a merchant whose webhook is `hook`.
async fn bench(
    args: &CheckoutBenchArgs,
    url: &str,
    hook: Option<(&str, &AtomicU64)>,
) -> anyhow::Result<f64> {
    let (hook, received) = (hook.map(|h| h.0), hook.map(|h| h.1));
    let store = Store::from_db(Db::Postgres(connect_postgres(url, 48).await?));
    let mut builder = Engine::on_store(store.clone())
        .admin_key(Some("bench-key".into()))
        .api(ApiConfig {
            max_inflight_commands: 10_000,
            ..ApiConfig::default()
        });
    if args.no_notifications {
        builder = builder.notify(None);
    }
    if args.no_fraud_screen {
        builder = builder.checkout(emporium_sagas::CheckoutConfig {
            fraud: emporium_sagas::FraudConfig {
                threshold: None,
                ..Default::default()
            },
            ..Default::default()
        });
    }
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
    if let Some(hook) = hook {
        post(
            "/v1/merchants",
            json!({"id": "bench-merchant", "name": "Bench", "commission_bps": 1000, "webhook_url": hook}),
        )
        .await?;
    }
    for i in 0..30 {
        let mut product = json!({"sku": format!("SKU-{i}"), "title": "Thing", "description": "",
            "category": "c", "price": {"amount_minor": 1000 + i, "currency": "EUR"}});
        if hook.is_some() {
            product["merchant_id"] = json!("bench-merchant");
        }
        post("/v1/products", product).await?;
        for w in ["wh-a", "wh-b", "wh-c"] {
            post(
                &format!("/v1/inventory/{w}/SKU-{i}/receive"),
                json!({"qty": 1_000_000}),
            )
            .await?;
        }
    }

    if args.prior_events > 0 {
        seed_history(&store, &engine, args.prior_events).await?;
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
    // The engine's (and this process's) resident memory, sampled while it works.
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let max_rss = max_rss.clone();
        tokio::spawn(async move {
            loop {
                max_rss.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let place = {
        let (client, base) = (client.clone(), base.clone());
        move |c: usize, n: usize| {
            let lines: Vec<_> = (0..3)
                .map(|k| json!({"sku": format!("SKU-{}", (c * 7 + n * 3 + k * 11) % 30), "qty": 1}))
                .collect();
            client
                .post(format!("{base}/v1/orders"))
                .bearer_auth("bench-key")
                .json(&json!({"customer_id": format!("c{c}"), "lines": lines,
                              "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}))
                .send()
        }
    };
    let opened = match args.rate {
        Some(rate) => {
            // Open loop: one order every 1/rate s, each sent on its own task.
            let (stop, placed_at, orders, place) = (
                stop.clone(),
                placed_at.clone(),
                orders.clone(),
                place.clone(),
            );
            Some(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0usize;
                let in_flight = Arc::new(AtomicU64::new(0));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    n += 1;
                    let (placed_at, orders) = (placed_at.clone(), orders.clone());
                    let sent = Instant::now();
                    let request = place(n % 64, n);
                    let in_flight = in_flight.clone();
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        if let Ok(r) = request.await {
                            if let Ok(v) = r.json::<serde_json::Value>().await {
                                if let Some(id) = v["order_id"].as_str() {
                                    if let Ok(mut p) = placed_at.lock() {
                                        p.insert(id.to_string(), sent);
                                    }
                                    orders.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                // Every order sent is answered before placements are counted.
                let waited = Instant::now();
                while in_flight.load(Ordering::Relaxed) > 0
                    && waited.elapsed() < Duration::from_secs(60)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }))
        }
        None => None,
    };
    let clients = if args.rate.is_some() { 0 } else { args.clients };
    let workers: Vec<_> = (0..clients)
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
    if let Some(o) = opened {
        let _ = o.await;
    }
    let placed = orders.load(Ordering::Relaxed);
    let confirmed_in_time = confirmed.load(Ordering::Relaxed);
    // Let the saga finish what was placed.
    let drain = Instant::now();
    while confirmed.load(Ordering::Relaxed) < placed && drain.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed().as_secs_f64();
    let done = confirmed.load(Ordering::Relaxed);
    if let Some(received) = received {
        // Not part of the rate: how long the webhook's deliveries take to catch up (two
        // notifications per order: pending, confirmed).
        let want = 2 * done;
        let caught = Instant::now();
        while received.load(Ordering::Relaxed) < want && caught.elapsed() < Duration::from_secs(180)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = received.load(Ordering::Relaxed);
        println!(
            "webhook: {got} of {want} notifications received {:.1} s after the last confirmation ({:.0} deliveries/s over the run)",
            caught.elapsed().as_secs_f64(),
            got as f64 / started.elapsed().as_secs_f64()
        );
    }
    follower.abort();
    sampler.abort();
    engine.stop().await;
    let (p50, p95, p99) = {
        let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (ms(0.5), ms(0.95), ms(0.99))
    };
    println!(
        "{}, {} bus: placed {placed} orders in {}s ({:.0}/s); confirmed {done} ({:.0} checkouts/s end to end incl. drain; {confirmed_in_time} by the end of placing); placement -> confirmation p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; max RSS {:.0} MB",
        match args.rate {
            Some(r) => format!("open loop at {r} orders/s"),
            None => format!("{} clients", args.clients),
        },
        if args.nats_url.is_some() { "NATS" } else { "in-process" },
        args.duration,
        placed as f64 / args.duration as f64,
        done as f64 / total,
        p50,
        p95,
        p99,
        max_rss.load(Ordering::Relaxed) as f64 / 1e6
    );
    if let Some((client, names)) = cleanup {
        let js = async_nats::jetstream::new(client);
        let _ = js.delete_stream(names.stream()).await;
        let _ = js.delete_stream(names.dlq_stream()).await;
        let _ = js.delete_stream(names.notifications_stream()).await;
    }
    Ok(done as f64 / total)
}

/// This process's resident set size (Linux `/proc/self/status`), 0 where unknown.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Puts `total` events of reservation history on the 90 hot stock items (each already at
/// sequence 1 from its receipt), then waits until the read models have applied them all, so
/// the measurement sees only the cost of the long history itself.
/// Writes the history, then waits until everything that follows the feed in the engine has
/// passed it (projections, this process's search index, the checkout saga's consumer, and
/// the relay when NATS is on): the measured phase then starts on a long history, not on a
/// backlog of it.
async fn seed_history(store: &Store, engine: &Engine, total: u64) -> anyhow::Result<()> {
    let Db::Postgres(pool) = store.db() else {
        anyhow::bail!("the history seed needs Postgres");
    };
    let per_item = ((total / 90).max(2) / 2 * 2) as i64;
    let bar = indicatif::ProgressBar::new(90).with_style(
        indicatif::ProgressStyle::with_template("history {bar:30} {pos}/{len} stock items")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for i in 0..30 {
        for w in ["wh-a", "wh-b", "wh-c"] {
            emporium_event_store::seeding::prior_reservations(
                pool,
                w,
                &format!("SKU-{i}"),
                1_000_000,
                1,
                per_item,
            )
            .await?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let head_target = store.event_count().await?;
    let spinner = indicatif::ProgressBar::new_spinner().with_message("read models catching up");
    spinner.enable_steady_tick(Duration::from_millis(200));
    loop {
        let head = store.feed().head().await?;
        let slowest = emporium_projections::runner::slowest_position(store.db())
            .await?
            .unwrap_or(0);
        let search = engine.state.search.as_ref().map_or(head, |s| s.position());
        let relay = engine
            .state
            .bus
            .as_ref()
            .map_or(head, |b| b.relay.position.load(Ordering::Relaxed));
        // On NATS the saga's consumer is filtered by the server to order events (none in
        // the history); in process it reads the feed itself.
        let consumer = if engine.state.bus.is_some() {
            head
        } else {
            emporium_event_store::bus::checkpoint(store, "checkout")
                .await?
                .unwrap_or(0)
        };
        if head >= head_target && slowest.min(search).min(relay).min(consumer) >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    spinner.finish_and_clear();
    // The engine's copies of the hot items were taken before the history was written
    // around it. An engine that wrote the history itself has them current; bring them up
    // to date once (each read also leaves a snapshot) rather than charge the measured
    // phase with a million events of catch-up. Timed and printed apart.
    let warm = Instant::now();
    for i in 0..30 {
        for w in ["wh-a", "wh-b", "wh-c"] {
            let id = stock_item_id(&WarehouseId::parse(w)?, &Sku::parse(&format!("SKU-{i}"))?);
            store.load::<StockItem>(&id).await?;
        }
    }
    println!(
        "history: {} events on 90 hot stock items ({per_item} each); the engine's copies caught up in {:.1}s",
        per_item * 90,
        warm.elapsed().as_secs_f64()
    );
    Ok(())
}
