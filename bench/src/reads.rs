//! `emporium-bench reads`: what auditors and clients wait for on a big log. With
//! `--events` (default 10,000,000) events in the store, `GET /v1/orders/{id}` and
//! `GET /v1/orders/{id}/timeline` over HTTP for `--orders` random orders, each against the
//! plainest read of the same rows measured in the same run (one indexed SELECT).
//!
//! 1. A real engine takes a few real checkouts (one to three lines, personal data): these
//!    orders' stories, every event of their timelines, are the templates.
//! 2. The templates are copied, in batches of one `INSERT ... SELECT`, up to `--events`
//!    events: each copy is an order of its own (new id in every stream and payload),
//!    and the timeline index gets its rows for the copies the same way. Other read models
//!    are told they are current (they do not cover the copies; nothing here reads them).
//! 3. A fresh engine (cold aggregate cache) starts on that store and waits for its search
//!    index to have read the feed; then the orders are read once each, in random order.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{seeding, Db, Store};
use emporium_gateway::Engine;

use crate::catalog::{ms, ratio};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::json;
use sqlx::PgPool;

#[derive(Debug, Args)]
pub(crate) struct ReadsBenchArgs {
    /// Postgres server; a throwaway database is created there (and dropped).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    /// Events in the store when the reads are measured.
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) events: u64,
    /// Random orders read (each once, by each contender).
    #[arg(long, default_value_t = 1_000)]
    pub(crate) orders: usize,
    /// Real checkouts whose stories are copied.
    #[arg(long, default_value_t = 6)]
    pub(crate) templates: usize,
    /// Keep the database afterwards (its name is printed).
    #[arg(long)]
    pub(crate) keep: bool,
}

pub(crate) const KEY: &str = "bench-key";
/// Copies per `INSERT ... SELECT` (one progress step).
const COPY_BATCH: usize = 5_000;

pub(crate) async fn run(args: ReadsBenchArgs) -> anyhow::Result<()> {
    let (server, keep) = (args.database_url.clone(), args.keep);
    crate::commands::throwaway(&server, keep, |url| async move { bench(&args, &url).await }).await
}

/// One order the bench reads: its id and the positions of its story.
pub(crate) struct Sample {
    pub(crate) id: String,
    pub(crate) positions: Vec<i64>,
}

/// Where copies also get analytics rows (`emporium-bench console`): the analytics
/// generation, the newest copy's `placed_at` and the step back in time between copies.
#[derive(Clone, Copy)]
pub(crate) struct AnalyticsCopies {
    pub(crate) gen: i64,
    pub(crate) latest: i64,
    pub(crate) step_ms: i64,
}

async fn bench(args: &ReadsBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 16).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    let templates = checkouts(&store, args.templates).await?;

    // The templates' stories, as the timeline index has them.
    let db = store.db();
    let (gen, _) = emporium_projections::runner::state(db, "timeline").await?;
    let mut stories = Vec::new();
    for id in &templates {
        let positions = emporium_projections::timeline::positions(db, gen, id).await?;
        if positions.is_empty() {
            bail!("template order {id} has no timeline");
        }
        stories.push((id.clone(), positions));
    }
    let per_story: Vec<usize> = stories.iter().map(|(_, p)| p.len()).collect();
    println!(
        "{} template checkouts, {}..{} events each",
        stories.len(),
        per_story.iter().min().unwrap_or(&0),
        per_story.iter().max().unwrap_or(&0)
    );

    let samples = copy(&pool, &store, gen, &stories, args.events, None).await?;
    let head = seeding::highest_position(&pool).await?;
    emporium_projections::runner::assume_applied_until(db, head).await?;
    seeding::vacuum_analyze(&pool).await?;
    println!(
        "{} events in the store ({} orders)",
        head,
        samples.len() + stories.len()
    );

    // A fresh engine: nothing cached, the search index read from the feed as at any start.
    let engine = Engine::on_store(Store::from_db(Db::Postgres(pool.clone())))
        .admin_key(Some(KEY.into()))
        .run_checkout(false)
        .start()
        .await?;
    let base = engine.url();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner().with_message("search index reading the feed");
    spinner.enable_steady_tick(Duration::from_millis(200));
    loop {
        let views = get(&client, &format!("{base}/v1/projections")).await?;
        let caught_up = views.as_array().is_some_and(|v| {
            v.iter()
                .any(|p| p["name"] == "search" && p["lag"] == 0 && p["head"] == head)
        });
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spinner.finish_and_clear();
    println!(
        "engine started; its search index read the feed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut picked: Vec<&Sample> = samples
        .choose_multiple(&mut rand::rng(), args.orders)
        .collect();
    picked.shuffle(&mut rand::rng());
    let mut h = [(); 4].map(|()| Histogram::<u64>::new(3).expect("3 significant digits"));
    let bar = progress(picked.len() as u64, "reading orders");
    for (i, s) in picked.iter().enumerate() {
        // Alternate which contender reads an order first, so neither always pays for
        // bringing its pages into memory.
        let engine_first = i % 2 == 0;
        if !engine_first {
            plain_reads(&pool, s, &mut h).await?;
        }
        let t = Instant::now();
        let order = get(&client, &format!("{base}/v1/orders/{}", s.id)).await?;
        h[0].record(t.elapsed().as_micros() as u64)?;
        if order["status"] != "confirmed" {
            bail!("copied order {} reads as {order}", s.id);
        }
        let t = Instant::now();
        let timeline = get(&client, &format!("{base}/v1/orders/{}/timeline", s.id)).await?;
        h[2].record(t.elapsed().as_micros() as u64)?;
        let events = timeline["events"].as_array().map_or(0, Vec::len);
        if events != s.positions.len() {
            bail!(
                "timeline of {} has {events} events, expected {}",
                s.id,
                s.positions.len()
            );
        }
        if engine_first {
            plain_reads(&pool, s, &mut h).await?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    engine.stop().await;

    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "read (ms)", "p50", "p95", "p99", "max"
    );
    for (name, hist) in [
        ("GET /v1/orders/{id} (HTTP, JSON)", &h[0]),
        ("  plain SELECT of order + payment streams", &h[1]),
        ("GET /v1/orders/{id}/timeline (HTTP, JSON)", &h[2]),
        ("  plain SELECT of the timeline's events", &h[3]),
    ] {
        println!(
            "{name:<44} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            ms(hist, 0.5),
            ms(hist, 0.95),
            ms(hist, 0.99),
            hist.max() as f64 / 1000.0
        );
    }
    for (name, engine, plain) in [("order", &h[0], &h[1]), ("timeline", &h[2], &h[3])] {
        println!(
            "{name}: engine / plain SELECT p50 {:.2}x, p99 {:.2}x",
            ratio(engine, plain, 0.5),
            ratio(engine, plain, 0.99)
        );
    }
    Ok(())
}

/// The floor: one SELECT per stream the order read folds (order, payment), and one SELECT
/// of the timeline's events by position.
async fn plain_reads(pool: &PgPool, s: &Sample, h: &mut [Histogram<u64>; 4]) -> anyhow::Result<()> {
    let t = Instant::now();
    let order = seeding::read_stream(pool, "Order", &s.id).await?;
    let payment = seeding::read_stream(pool, "Payment", &s.id).await?;
    h[1].record(t.elapsed().as_micros() as u64)?;
    if order.is_empty() || payment.is_empty() {
        bail!("no order or payment stream for {}", s.id);
    }
    let t = Instant::now();
    let rows = seeding::read_positions_plain(pool, &s.positions).await?;
    h[3].record(t.elapsed().as_micros() as u64)?;
    if rows.len() != s.positions.len() {
        bail!(
            "{} of {} timeline events for {}",
            rows.len(),
            s.positions.len(),
            s.id
        );
    }
    Ok(())
}

pub(crate) async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let r = client.get(url).bearer_auth(KEY).send().await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    if !status.is_success() {
        bail!("GET {url}: {status} {body}");
    }
    Ok(body)
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}} ({{eta}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// Runs `n` real checkouts (1 to 3 lines, with personal data) on an engine over HTTP and
/// returns their order ids once all are confirmed and every read model has applied them.
pub(crate) async fn checkouts(store: &Store, n: usize) -> anyhow::Result<Vec<String>> {
    let engine = Engine::on_store(store.clone())
        .admin_key(Some(KEY.into()))
        .start()
        .await?;
    let base = engine.url();
    let client = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        let r = client
            .post(format!("{base}{path}"))
            .bearer_auth(KEY)
            .json(&body)
            .send();
        async move {
            let r = r.await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    for (w, region) in [("wh-a", "eu-west"), ("wh-b", "us-east")] {
        post(
            "/v1/warehouses".into(),
            json!({"id": w, "name": w, "region": region, "priority": 1}),
        )
        .await?;
    }
    for i in 0..6 {
        post(
            "/v1/products".into(),
            json!({"sku": format!("SKU-{i}"), "title": format!("Thing {i}"), "description": "",
                   "category": "things", "price": {"amount_minor": 1000 + i, "currency": "EUR"}}),
        )
        .await?;
        for w in ["wh-a", "wh-b"] {
            post(
                format!("/v1/inventory/{w}/SKU-{i}/receive"),
                json!({"qty": 1_000_000}),
            )
            .await?;
        }
    }
    let mut ids = Vec::new();
    for k in 0..n {
        let lines: Vec<_> = (0..=k % 3)
            .map(|l| json!({"sku": format!("SKU-{}", (k + l) % 6), "qty": 1 + l}))
            .collect();
        let placed = post(
            "/v1/orders".into(),
            json!({"customer_id": format!("customer-{k}"), "lines": lines,
                   "shipping": {"region": "eu-west", "address_lines": ["1 Bench Street", "Testville"]},
                   "payment": {"token": "tok_ok"},
                   "customer": {"name": format!("Customer {k}"), "email": format!("c{k}@example.com")}}),
        )
        .await?;
        ids.push(
            placed["order_id"]
                .as_str()
                .context("order_id in the answer")?
                .to_string(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let order = get(&client, &format!("{base}/v1/orders/{id}")).await?;
            if order["status"] == "confirmed" {
                break;
            }
            if Instant::now() > deadline {
                bail!("template order {id} not confirmed in 60 s: {order}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    loop {
        let head = store.feed().head().await?;
        let slowest = emporium_projections::runner::slowest_position(store.db())
            .await?
            .unwrap_or(0);
        if slowest >= head {
            break;
        }
        if Instant::now() > deadline {
            bail!("read models not caught up in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.stop().await;
    Ok(ids)
}

/// Copies the templates' stories, round-robin in batches, until the store holds `events`
/// events; indexes the copies' timelines. Returns every copy.
pub(crate) async fn copy(
    pool: &PgPool,
    store: &Store,
    gen: i64,
    stories: &[(String, Vec<i64>)],
    events: u64,
    analytics: Option<AnalyticsCopies>,
) -> anyhow::Result<Vec<Sample>> {
    let mut head = seeding::highest_position(pool).await?;
    let bar = ProgressBar::new(events).with_style(
        ProgressStyle::with_template("copying {bar:30} {pos}/{len} events ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(head as u64);
    let mut samples = Vec::new();
    let mut round = 0;
    while (head as u64) < events {
        let (template, positions) = &stories[round % stories.len()];
        round += 1;
        let per = positions.len() as u64;
        let copies = (((events - head as u64) / per).max(1) as usize).min(COPY_BATCH);
        let ids: Vec<String> = (0..copies)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let first = head + 1;
        let written = seeding::copy_order_events(pool, template, positions, &ids, first).await?;
        if written != per * copies as u64 {
            bail!("copied {written} events, expected {}", per * copies as u64);
        }
        emporium_projections::timeline::index_copies(store.db(), gen, &ids, first, per as i64)
            .await?;
        if let Some(a) = analytics {
            let latest = a.latest - samples.len() as i64 * a.step_ms;
            emporium_projections::analytics::index_copies(
                store.db(),
                a.gen,
                template,
                &ids,
                latest,
                a.step_ms,
            )
            .await?;
        }
        for (n, id) in ids.into_iter().enumerate() {
            let from = first + n as i64 * per as i64;
            samples.push(Sample {
                id,
                positions: (from..from + per as i64).collect(),
            });
        }
        head += written as i64;
        bar.set_position(head as u64);
    }
    bar.finish_and_clear();
    Ok(samples)
}
