//! `emporium-bench console`: how long the console's pages take the server to render with
//! `--orders` (default 100,000) orders in the store, against the API's JSON answer for the
//! same data measured in the same run where the API has one.
//!
//! The store is seeded as `emporium-bench reads` does it: a few real checkouts, their whole
//! stories copied as new orders with `INSERT ... SELECT`; the copies also get their timeline
//! and analytics rows (spread back in time, over a thousand customers per template), so every
//! page reads a store of that size. A fresh engine then serves the pages to an admin session
//! over loopback HTTP; each page is fetched `--rounds` times, interleaved with its API
//! counterpart, and every answer is checked (status 200, the page's own heading).

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{seeding, Db, Store};
use emporium_gateway::Engine;
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;

use crate::catalog::{ms, ratio};
use crate::reads::{checkouts, copy, progress, AnalyticsCopies, KEY};

#[derive(Debug, Args)]
pub(crate) struct ConsoleBenchArgs {
    /// Postgres server; a throwaway database is created there (and dropped).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    /// Orders in the store when the pages are measured.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) orders: u64,
    /// Fetches of each page (and of its API counterpart).
    #[arg(long, default_value_t = 200)]
    pub(crate) rounds: usize,
    /// Keep the database afterwards (its name is printed).
    #[arg(long)]
    pub(crate) keep: bool,
}

pub(crate) async fn run(args: ConsoleBenchArgs) -> anyhow::Result<()> {
    let (server, keep) = (args.database_url.clone(), args.keep);
    crate::commands::throwaway(&server, keep, |url| async move { bench(&args, &url).await }).await
}

/// One measured page: the console path, the heading it must show, and the API path that
/// answers the same question as JSON (if any).
struct Target {
    name: &'static str,
    page: String,
    heading: &'static str,
    api: Option<String>,
}

async fn bench(args: &ConsoleBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 16).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    let templates = checkouts(&store, 6).await?;
    let db = store.db();
    let (timeline_gen, _) = emporium_projections::runner::state(db, "timeline").await?;
    let (analytics_gen, _) = emporium_projections::runner::state(db, "analytics").await?;
    let mut stories = Vec::new();
    for id in &templates {
        let positions = emporium_projections::timeline::positions(db, timeline_gen, id).await?;
        stories.push((id.clone(), positions));
    }
    let per_order = stories.iter().map(|(_, p)| p.len() as u64).sum::<u64>() / stories.len() as u64;
    let head = seeding::highest_position(&pool).await? as u64;
    let events = head + args.orders.saturating_sub(templates.len() as u64) * per_order;
    // Copies spread back over the last 30 days, newest now.
    let step_ms = (30 * 24 * 3_600_000 / args.orders.max(1)) as i64;
    let analytics = AnalyticsCopies {
        gen: analytics_gen,
        latest: chrono::Utc::now().timestamp_millis(),
        step_ms: step_ms.max(1),
    };
    let samples = copy(
        &pool,
        &store,
        timeline_gen,
        &stories,
        events,
        Some(analytics),
    )
    .await?;
    let head = seeding::highest_position(&pool).await?;
    emporium_projections::runner::assume_applied_until(db, head).await?;
    seeding::vacuum_analyze(&pool).await?;
    // Planner statistics for the read models too, as autovacuum gathers them after a load of
    // this size (without them Postgres guesses and scans whole tables for a day's orders).
    sqlx::raw_sql("ANALYZE").execute(&pool).await?;
    let orders: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {}",
        emporium_projections::table(emporium_projections::analytics::ORDERS, analytics_gen)
    ))
    .fetch_one(&pool)
    .await?;
    println!("{head} events in the store, {orders} orders in the analytics read model");

    let engine = Engine::on_store(Store::from_db(Db::Postgres(pool.clone())))
        .admin_key(Some(KEY.into()))
        .run_checkout(false)
        .start()
        .await?;
    let base = engine.url();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed_in = client
        .post(format!("{base}/console/login"))
        .form(&[("key", KEY)])
        .send()
        .await?;
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("the sign-in set no session cookie")?
        .to_string();

    let order = &samples.choose(&mut rand::rng()).context("no orders")?.id;
    let customer = format!("customer-0-{}", 500);
    let first_page = client
        .get(format!("{base}/console/orders"))
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let cursor = first_page
        .split("before=")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("the order list has no next page")?
        .to_string();
    let targets = [
        Target {
            name: "overview",
            page: "/console/overview".into(),
            heading: "Overview",
            api: Some("/v1/analytics/summary".into()),
        },
        Target {
            name: "orders, newest",
            page: "/console/orders".into(),
            heading: "Orders",
            api: None,
        },
        Target {
            name: "orders, 2nd page",
            page: format!("/console/orders?before={cursor}"),
            heading: "Orders",
            api: None,
        },
        Target {
            name: "orders, status=confirmed",
            page: "/console/orders?status=confirmed".into(),
            heading: "Orders",
            api: None,
        },
        Target {
            name: "orders, one customer",
            page: format!("/console/orders?q={customer}"),
            heading: "Orders",
            api: None,
        },
        Target {
            name: "order page + timeline",
            page: format!("/console/orders/{order}"),
            heading: "Order",
            api: Some(format!("/v1/orders/{order}/timeline")),
        },
        Target {
            name: "events, first page",
            page: "/console/events".into(),
            heading: "Events",
            api: Some("/v1/events?limit=50".into()),
        },
        Target {
            name: "events, OrderPlaced",
            page: "/console/events?event_type=OrderPlaced".into(),
            heading: "Events",
            api: Some("/v1/events?limit=50&event_type=OrderPlaced".into()),
        },
        Target {
            name: "catalog",
            page: "/console/catalog".into(),
            heading: "Catalog",
            api: Some("/v1/catalog/products?limit=25".into()),
        },
        Target {
            name: "system",
            page: "/console/system".into(),
            heading: "System",
            api: Some("/v1/projections".into()),
        },
    ];
    let new = || Histogram::<u64>::new(3).expect("3 significant digits");
    // The overview's figures computed from the read model each time (what a page waits for
    // at most once a second per engine while orders arrive; see the figures cache).
    let mut cold = new();
    for _ in 0..args.rounds.min(50) {
        let started = Instant::now();
        emporium_gateway::console::overview::figures(&engine.state)
            .await
            .map_err(|_| anyhow::anyhow!("the overview's figures failed"))?;
        cold.record(started.elapsed().as_micros() as u64)?;
    }
    let mut results = Vec::new();
    let bar = progress((targets.len() * args.rounds) as u64, "rendering pages");
    for t in &targets {
        let (mut page_h, mut api_h) = (new(), new());
        for round in 0..args.rounds {
            // Alternate which goes first so neither always finds the cache warm.
            if round % 2 == 1 {
                if let Some(api) = &t.api {
                    api_h.record(fetch_api(&client, &base, api).await?)?;
                }
            }
            let started = Instant::now();
            let r = client
                .get(format!("{base}{}", t.page))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = r.status();
            let body = r.text().await?;
            page_h.record(started.elapsed().as_micros() as u64)?;
            if status != 200 || !body.contains(&format!("<h1>{}", t.heading)) {
                bail!("{}: {status}: {}", t.page, &body[..body.len().min(400)]);
            }
            if round % 2 == 0 {
                if let Some(api) = &t.api {
                    api_h.record(fetch_api(&client, &base, api).await?)?;
                }
            }
            bar.inc(1);
        }
        results.push((t, page_h, api_h));
    }
    bar.finish_and_clear();
    engine.stop().await;

    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8}   {:<44} {:>8} {:>8}",
        "console page (ms)", "p50", "p95", "p99", "max", "API counterpart", "p95", "ratio"
    );
    let mut worst: f64 = 0.0;
    for (t, page, api) in &results {
        worst = worst.max(ms(page, 0.95));
        let (api_p95, r) = match &t.api {
            Some(_) => (
                format!("{:.2}", ms(api, 0.95)),
                format!("{:.2}x", ratio(page, api, 0.95)),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<28} {:>8.2} {:>8.2} {:>8.2} {:>8.2}   {:<44} {:>8} {:>8}",
            t.name,
            ms(page, 0.5),
            ms(page, 0.95),
            ms(page, 0.99),
            page.max() as f64 / 1000.0,
            t.api
                .as_deref()
                .unwrap_or("(none: the API has no order list)"),
            api_p95,
            r
        );
    }
    println!(
        "{:<28} {:>8.2} {:>8.2} {:>8.2} {:>8.2}   (the figures computed without the cache, in process)",
        "overview figures, uncached",
        ms(&cold, 0.5),
        ms(&cold, 0.95),
        ms(&cold, 0.99),
        cold.max() as f64 / 1000.0
    );
    println!(
        "slowest page p95: {worst:.2} ms with {orders} orders ({}: target < 50 ms)",
        if worst < 50.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

async fn fetch_api(client: &reqwest::Client, base: &str, path: &str) -> anyhow::Result<u64> {
    let started = Instant::now();
    let r = client
        .get(format!("{base}{path}"))
        .bearer_auth(KEY)
        .send()
        .await?;
    let status = r.status();
    let _ = r.bytes().await?;
    let took = started.elapsed().as_micros() as u64;
    if status != 200 {
        bail!("GET {path}: {status}");
    }
    Ok(took)
}
