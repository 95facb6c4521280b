//! `emporium-bench catalog`: catalog search on a large catalog (default 1,000,000 products)
//! through the engine's search index (`emporium_projections::search`, what
//! `GET /v1/catalog/products` answers from), against the Postgres trigram path it replaced
//! (`emporium_projections::catalog::search`) on the same products in the same run.
//!
//! 1. Seeds the products as events (one `ProductCreated` each, a `StockReceived` for two
//!    of three) straight into the events table, and the same rows into the trigram table.
//! 2. Builds the search index from the feed, as an engine does at first start: time, RSS.
//! 3. Times a fixed mix of queries by class (typo'd, prefix, exact, filter-only,
//!    facet-heavy) on both paths; prints p50/p95/p99 and the ratio.
//! 4. Index lag: price changes at `--rate` commands/s for `--lag-seconds` while searches
//!    run; how long after an event is committed the index covers it (sampled every 2 ms).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use emporium_domain::product::{Product, ProductCommand};
use emporium_domain::values::{Currency, Money};
use emporium_event_store::seeding;
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{Db, EventMetadata, Store};
use emporium_projections::catalog::{self, Search, Sort};
use emporium_projections::search::{CatalogSearch, SearchQuery, SortBy};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;

#[derive(Debug, Args)]
pub(crate) struct CatalogBenchArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) products: i64,
    /// Timed searches per query on the search index.
    #[arg(long, default_value_t = 100)]
    pub(crate) searches: usize,
    /// Timed searches per query on the trigram baseline (slow: seconds each at 1M).
    #[arg(long, default_value_t = 5)]
    pub(crate) baseline_searches: usize,
    /// Price changes per second during the lag measurement (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub(crate) rate: u64,
    #[arg(long, default_value_t = 20)]
    pub(crate) lag_seconds: u64,
    /// Keep the index in a directory (as with `--search-dir`) instead of in memory (the
    /// engine's default).
    #[arg(long)]
    pub(crate) on_disk: bool,
    /// Searches per second during the lag measurement (0: none).
    #[arg(long, default_value_t = 100)]
    pub(crate) search_rate: u64,
}

pub(crate) async fn run(args: CatalogBenchArgs) -> anyhow::Result<()> {
    crate::commands::throwaway(&args.database_url.clone(), false, |url| async move {
        bench(&args, &url).await
    })
    .await
}

async fn seed(pool: &sqlx::PgPool, products: i64) -> anyhow::Result<()> {
    let bar = ProgressBar::new(products as u64).with_style(
        ProgressStyle::with_template("seeding products {bar:30} {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let chunk = 100_000;
    let mut from = 1;
    while from <= products {
        let to = (from + chunk - 1).min(products);
        seeding::synthetic_products(pool, from, to, products).await?;
        bar.inc((to - from + 1) as u64);
        from = to + 1;
    }
    bar.finish();
    Ok(())
}

/// The same products in the trigram read model (the catalog projection's table).
async fn seed_baseline(store: &Store, pool: &sqlx::PgPool, products: i64) -> anyhow::Result<i64> {
    let projection = emporium_projections::by_name("catalog")?;
    let gen = emporium_projections::runner::ensure(store.db(), projection.as_ref()).await?;
    let t = emporium_projections::table(catalog::PRODUCTS, gen);
    sqlx::query(&format!(
        "INSERT INTO {t} (sku, title, description, category, price_minor, currency, available,
                         on_hand, search, document)
         SELECT sku, title, 'A ' || title || ' for everyday use', category, price, 'EUR', qty, qty,
                lower(title || ' ' || category),
                title || ' A ' || title || ' for everyday use ' || category
           FROM ({} FROM generate_series(1, $1::bigint) g) p",
        seeding::SYNTHETIC_PRODUCTS
    ))
    .bind(products)
    .execute(pool)
    .await?;
    sqlx::query(&format!("VACUUM ANALYZE {t}"))
        .execute(pool)
        .await?;
    Ok(gen)
}

/// One query of the mix, for both paths.
struct Case {
    class: &'static str,
    engine: SearchQuery,
    baseline: Search,
}

fn case(class: &'static str, q: &str, f: impl Fn(&mut SearchQuery)) -> Case {
    let mut engine = SearchQuery {
        q: q.into(),
        limit: 20,
        ..Default::default()
    };
    f(&mut engine);
    let baseline = Search {
        q: engine.q.clone(),
        category: engine.category.clone(),
        min_price: engine.min_price,
        max_price: engine.max_price,
        in_stock: engine.in_stock,
        sort: match engine.sort {
            SortBy::PriceAsc => Sort::PriceAsc,
            SortBy::PriceDesc => Sort::PriceDesc,
            SortBy::Title => Sort::Title,
            SortBy::Relevance | SortBy::Newest => Sort::Relevance,
        },
        offset: 0,
        limit: engine.limit as i64,
    };
    Case {
        class,
        engine,
        baseline,
    }
}

fn cases(products: i64) -> Vec<Case> {
    vec![
        case("typo", "wireles hedphones", |_| {}),
        case("typo", "ergonmic chiar", |_| {}),
        case("typo", "portble speker", |q| q.in_stock = true),
        case("typo", "rugged tnet", |q| {
            q.category = Some("outdoor".into())
        }),
        case("prefix", "blen", |_| {}),
        case("prefix", "smart wat", |_| {}),
        case("exact", "kettle", |q| q.category = Some("kitchen".into())),
        case("exact", &format!("SKU-{:07}", products / 2), |_| {}),
        case("filter-only", "", |q| {
            q.category = Some("audio".into());
            q.min_price = Some(1000);
            q.max_price = Some(20_000);
            q.sort = SortBy::PriceAsc;
            q.limit = 50;
        }),
        case("filter-only", "", |q| {
            q.in_stock = true;
            q.sort = SortBy::PriceDesc;
            q.limit = 50;
        }),
        case("facet-heavy", "smart", |q| q.in_stock = true),
        case("facet-heavy", "", |q| q.min_price = Some(50_000)),
    ]
}

pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// How many times `slow` takes `fast`'s time at quantile `q`.
pub(crate) fn ratio(slow: &Histogram<u64>, fast: &Histogram<u64>, q: f64) -> f64 {
    ms(slow, q) / ms(fast, q).max(0.001)
}

async fn bench(args: &CatalogBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 8).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    emporium_projections::migrate(store.db()).await?;

    let started = Instant::now();
    seed(&pool, args.products).await?;
    emporium_event_store::seeding::vacuum_analyze(&pool).await?;
    let events = store.event_count().await?;
    println!(
        "{} products ({events} events) seeded in {:.1} s",
        args.products,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let gen = if args.baseline_searches > 0 {
        let gen = seed_baseline(&store, &pool, args.products).await?;
        println!(
            "trigram baseline table loaded and indexed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        gen
    } else {
        0
    };

    // The index, built from the feed as an engine builds it at first start.
    let dir = std::env::temp_dir().join(format!("emporium-bench-search-{}", uuid::Uuid::new_v4()));
    let index = CatalogSearch::open(args.on_disk.then(|| dir.clone()))?;
    let rss_before = crate::checkout::rss_bytes();
    let bar = ProgressBar::new(events as u64).with_style(
        ProgressStyle::with_template("indexing the feed {bar:30} {pos}/{len} events ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    while index.step(&store).await? > 0 {
        bar.set_position(index.position() as u64);
    }
    bar.finish();
    let build = started.elapsed();
    println!(
        "search index built from {events} events in {:.1} s ({:.0} events/s); RSS {:.0} MB (+{:.0} MB), on disk {:.0} MB",
        build.as_secs_f64(),
        events as f64 / build.as_secs_f64(),
        crate::checkout::rss_bytes() as f64 / 1e6,
        crate::checkout::rss_bytes().saturating_sub(rss_before) as f64 / 1e6,
        dir_size(&dir) as f64 / 1e6
    );

    // Latency per class, both paths.
    let cases = cases(args.products);
    let mut engine: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    let mut baseline: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    let new_hist = || Histogram::<u64>::new(3).expect("3 significant digits");
    let mut engine_each: Vec<Histogram<u64>> = cases.iter().map(|_| new_hist()).collect();
    let mut baseline_each: Vec<Histogram<u64>> = cases.iter().map(|_| new_hist()).collect();
    for c in cases.iter().filter(|_| args.baseline_searches > 0) {
        let r = search_blocking(&index, &c.engine).await?;
        let b = catalog::search(store.db(), gen, &c.baseline).await?;
        println!(
            "  {:<12} {:<45} engine {:>7} matches, first {:<12} | trigram {:>7} matches",
            c.class,
            format!(
                "{:?} {:?} stock={}",
                c.engine.q, c.engine.category, c.engine.in_stock
            ),
            r.total,
            r.items.first().map_or("-", |i| i.sku.as_str()),
            b.total
        );
    }
    for _ in 0..args.searches {
        for (n, c) in cases.iter().enumerate() {
            let t = Instant::now();
            search_blocking(&index, &c.engine).await?;
            let micros = t.elapsed().as_micros() as u64;
            engine
                .entry(c.class)
                .or_insert_with(new_hist)
                .record(micros)?;
            engine_each[n].record(micros)?;
        }
    }
    for _ in 0..args.baseline_searches {
        for (n, c) in cases.iter().enumerate() {
            let t = Instant::now();
            catalog::search(store.db(), gen, &c.baseline).await?;
            let micros = t.elapsed().as_micros() as u64;
            baseline
                .entry(c.class)
                .or_insert_with(new_hist)
                .record(micros)?;
            baseline_each[n].record(micros)?;
        }
    }
    if args.baseline_searches > 0 && args.searches > 0 {
        println!();
        println!("per query, p50 / p95 ms, engine vs trigram:");
        for (n, c) in cases.iter().enumerate() {
            let (e, b) = (&engine_each[n], &baseline_each[n]);
            println!(
                "  {:<12} {:<40} {:>7.1} {:>7.1}  vs {:>7.1} {:>7.1}   p50 {:>6.1}x  p95 {:>6.1}x",
                c.class,
                format!(
                    "{:?} {:?} stock={}",
                    c.engine.q, c.engine.category, c.engine.in_stock
                ),
                ms(e, 0.5),
                ms(e, 0.95),
                ms(b, 0.5),
                ms(b, 0.95),
                ratio(b, e, 0.5),
                ratio(b, e, 0.95)
            );
        }
    }
    println!();
    println!(
        "catalog search over {} products (results + facets), same run:",
        args.products
    );
    println!(
        "  {:<12} {:>28} {:>30} {:>9} {:>9}",
        "class", "engine p50/p95/p99 ms", "trigram p50/p95/p99 ms", "p50 ratio", "p95 ratio"
    );
    for (class, e) in &engine {
        let Some(b) = baseline.get(class) else {
            continue;
        };
        println!(
            "  {:<12} {:>8.1} {:>8.1} {:>8.1}   {:>8.1} {:>8.1} {:>8.1}   {:>7.1}x  {:>7.1}x",
            class,
            ms(e, 0.5),
            ms(e, 0.95),
            ms(e, 0.99),
            ms(b, 0.5),
            ms(b, 0.95),
            ms(b, 0.99),
            ratio(b, e, 0.5),
            ratio(b, e, 0.95)
        );
    }

    if args.rate > 0 {
        lag(args, &store, &pool, index.clone()).await?;
    }
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn search_blocking(
    index: &Arc<CatalogSearch>,
    q: &SearchQuery,
) -> anyhow::Result<emporium_projections::search::SearchResults> {
    let (index, q) = (index.clone(), q.clone());
    Ok(tokio::task::spawn_blocking(move || index.search(&q)).await??)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Index lag under writes and searches: price changes at `args.rate`/s on random products,
/// a search loop, the index following the feed as in the engine; a 2 ms sampler notes when
/// each head position is first seen and when the index first covers it.
async fn lag(
    args: &CatalogBenchArgs,
    store: &Store,
    pool: &sqlx::PgPool,
    index: Arc<CatalogSearch>,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let token = tokio_util::sync::CancellationToken::new();
    let follower = {
        let (index, store, token) = (index.clone(), store.clone(), token.clone());
        tokio::spawn(index.follow(store, async move { token.cancelled().await }))
    };
    let searches = {
        let (index, stop, products, rate) =
            (index.clone(), stop.clone(), args.products, args.search_rate);
        tokio::spawn(async move {
            let cases = cases(products);
            let mut h = Histogram::<u64>::new(3).expect("3 significant digits");
            let mut n = 0;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
            while rate > 0 && !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let c = &cases[n % cases.len()];
                n += 1;
                let t = Instant::now();
                if search_blocking(&index, &c.engine).await.is_ok() {
                    let _ = h.record(t.elapsed().as_micros() as u64);
                }
            }
            h
        })
    };
    // Writers: `rate` price changes per second in total, on 16 tasks.
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            let (products, per_task) = (args.products, args.rate as f64 / 16.0);
            tokio::spawn(async move {
                let meta = EventMetadata::system("bench");
                let eur = Currency::parse("EUR").map_err(|e| anyhow!("{e}"))?;
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_task));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let g = rand::rng().random_range(1..=products);
                    let sku = format!("SKU-{g:07}");
                    let price = Money::new(100 + (g + done as i64 + w) % 99_900, eur)
                        .map_err(|e| anyhow!("{e}"))?;
                    store
                        .execute::<Product>(&sku, ProductCommand::ChangePrice { price }, &meta)
                        .await
                        .map_err(|e| anyhow!("price change: {e}"))?;
                    done += 1;
                }
                Ok::<u64, anyhow::Error>(done)
            })
        })
        .collect();
    // Sampler.
    let started = Instant::now();
    let mut first_seen: Vec<(i64, Instant)> = Vec::new();
    let mut covered: Vec<(i64, Instant)> = Vec::new();
    let mut last_head = 0;
    while started.elapsed() < Duration::from_secs(args.lag_seconds) {
        let head = seeding::highest_position(pool).await?;
        let now = Instant::now();
        if head > last_head {
            first_seen.push((head, now));
            last_head = head;
        }
        covered.push((index.position(), now));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await??;
    }
    // Let the index cover the last writes, sampling on.
    let target = store.feed().head().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while index.position() < target && Instant::now() < deadline {
        covered.push((index.position(), Instant::now()));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    covered.push((index.position(), Instant::now()));
    token.cancel();
    let _ = follower.await;
    let search_hist = searches.await?;

    let mut lag = Histogram::<u64>::new(3)?;
    // Also per 5 s of the run: whether the tail is steady or bunched (merges, start-up).
    let mut windows: Vec<Histogram<u64>> = Vec::new();
    let mut j = 0;
    for (position, seen) in &first_seen {
        while j < covered.len() && covered[j].0 < *position {
            j += 1;
        }
        if let Some((_, at)) = covered.get(j) {
            let micros = at.saturating_duration_since(*seen).as_micros() as u64;
            lag.record(micros)?;
            let w = (seen.saturating_duration_since(started).as_secs() / 5) as usize;
            while windows.len() <= w {
                windows.push(Histogram::<u64>::new(3)?);
            }
            windows[w].record(micros)?;
        }
    }
    let secs = args.lag_seconds as f64;
    println!();
    println!(
        "index lag at {:.0} price changes/s for {secs:.0} s ({} head samples), searches running: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        written as f64 / secs,
        lag.len(),
        ms(&lag, 0.5),
        ms(&lag, 0.95),
        ms(&lag, 0.99),
        lag.max() as f64 / 1000.0
    );
    let per_window: Vec<String> = windows
        .iter()
        .map(|h| format!("{:.0}", ms(h, 0.99)))
        .collect();
    println!("  lag p99 per 5 s: {} ms", per_window.join(" / "));
    println!(
        "  searches meanwhile: {} at {}/s (p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms)",
        search_hist.len(),
        args.search_rate,
        ms(&search_hist, 0.5),
        ms(&search_hist, 0.95),
        ms(&search_hist, 0.99)
    );
    Ok(())
}
