//! `emporium-bench projections`: projection lag under a steady append rate. A writer
//! appends shop events (products, stock, orders, confirmations) at `--rate` events/s in
//! 10 ms batches while the three projection runners follow; for every batch we record the
//! time from its commit until every projection's position covers it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{Db, EventMetadata, Store};
use emporium_gateway::Engine;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Args)]
pub(crate) struct ProjectionBenchArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    /// Events appended per second.
    #[arg(long, default_value_t = 2000)]
    pub(crate) rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
}

pub(crate) async fn run(args: ProjectionBenchArgs) -> anyhow::Result<()> {
    crate::commands::throwaway(&args.database_url.clone(), false, |url| async move {
        bench(&args, &url).await
    })
    .await
}

/// One 10 ms batch of shop events: products, stock, orders and confirmations.
fn batch(n: usize, k: u64) -> Vec<(String, String, i64, String, serde_json::Value)> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        let sku = format!("B{k}-{i}");
        let order = Uuid::new_v4().to_string();
        let money = |a: i64| json!({"amount_minor": a, "currency": "EUR"});
        out.push((
            "Product".into(),
            sku.clone(),
            1,
            "ProductCreated".into(),
            json!({"ProductCreated": {
            "sku": sku, "title": format!("Bench item {k} {i}"), "description": "bench",
            "category": "bench", "price": money(1999)}}),
        ));
        out.push(("StockItem".into(), format!("w1:{sku}"), 1, "StockReceived".into(), json!({"StockReceived": {
            "warehouse_id": "w1", "sku": sku, "qty": 10, "on_hand": 10, "reserved": 0, "available": 10}})));
        out.push(("Order".into(), order.clone(), 1, "OrderPlaced".into(), json!({"OrderPlaced": {
            "order_id": order, "customer_id": "c1", "shipping_region": "eu-west", "payment_token": "tok_ok",
            "lines": [{"sku": sku, "qty": 1, "unit_price": money(1999), "line_total": money(1999)}],
            "total": money(1999)}})));
        out.push(("Order".into(), order.clone(), 2, "OrderConfirmed".into(), json!({"OrderConfirmed": {
            "order_id": order, "allocation": [{"sku": sku, "warehouse_id": "w1", "qty": 1}], "total": money(1999)}})));
        i += 1;
    }
    out.truncate(n);
    out
}

async fn bench(args: &ProjectionBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 12).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    let engine = Engine::on_store(store.clone())
        .admin_key(Some("bench-key".into()))
        .run_checkout(false)
        .start()
        .await?;

    let per_batch = (args.rate / 100).max(1) as usize;
    let pending: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (pending, hist, done, db) = (
            pending.clone(),
            hist.clone(),
            done.clone(),
            store.db().clone(),
        );
        tokio::spawn(async move {
            loop {
                let min = emporium_projections::runner::slowest_position(&db)
                    .await
                    .unwrap_or(None);
                let now = Instant::now();
                if let (Some(min), Ok(mut p), Ok(mut h)) = (min, pending.lock(), hist.lock()) {
                    p.retain(|(n, at)| {
                        if *n <= min {
                            let _ = h.record(now.duration_since(*at).as_micros() as u64);
                            false
                        } else {
                            true
                        }
                    });
                    if done.load(Ordering::Relaxed) && p.is_empty() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let meta = serde_json::to_value(EventMetadata::system("bench").to_map())?;
    let bar = ProgressBar::new(args.duration).with_style(
        ProgressStyle::with_template("appending {bar:30} {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut appended: i64 = 0;
    let mut k = 0;
    while started.elapsed() < Duration::from_secs(args.duration) {
        tick.tick().await;
        k += 1;
        let rows = batch(per_batch, k);
        emporium_event_store::seeding::append_rows(&pool, &rows, &meta).await?;
        appended += rows.len() as i64;
        if let Ok(mut p) = pending.lock() {
            p.push((appended, Instant::now()));
        }
        bar.set_position(started.elapsed().as_secs());
    }
    bar.finish_and_clear();
    let rate = appended as f64 / started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(120), poller).await??;
    engine.stop().await;
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "appended {appended} events at {rate:.0}/s; projection lag (commit → all three projections): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} batches",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        h.max() as f64 / 1000.0,
        h.len()
    );
    Ok(())
}
