//! `emporium-bench catalog`: catalog search latency on a large catalog (default 100,000
//! products) on Postgres: typo'd and exact text queries, category and price filters, in-stock
//! only, with facets, as `GET /v1/catalog/products` runs them.

use std::time::Instant;

use clap::Args;
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{Db, Store};
use emporium_projections::catalog::{self, Search, Sort};
use hdrhistogram::Histogram;

#[derive(Debug, Args)]
pub(crate) struct CatalogBenchArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    #[arg(long, default_value_t = 100_000)]
    pub(crate) products: i64,
    /// Searches to time.
    #[arg(long, default_value_t = 600)]
    pub(crate) searches: usize,
}

pub(crate) async fn run(args: CatalogBenchArgs) -> anyhow::Result<()> {
    crate::commands::throwaway(&args.database_url.clone(), false, |url| async move {
        bench(&args, &url).await
    })
    .await
}

async fn bench(args: &CatalogBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 4).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    let projection = emporium_projections::by_name("catalog")?;
    let gen = emporium_projections::runner::ensure(store.db(), projection.as_ref()).await?;
    let t = emporium_projections::table(catalog::PRODUCTS, gen);
    let started = Instant::now();
    sqlx::query(&format!(
        "INSERT INTO {t} (sku, title, description, category, price_minor, currency, available,
                         on_hand, search, document)
         SELECT 'SKU-' || g, x.title, 'A ' || x.title || ' for everyday use', x.category,
                100 + (g * 7919) % 99900, 'EUR', (g % 3) * 5, (g % 3) * 5,
                lower(x.title || ' ' || x.category), x.title || ' A ' || x.title || ' for everyday use ' || x.category
         FROM generate_series(1, $1) g,
         LATERAL (SELECT
             (ARRAY['Wireless','Portable','Smart','Compact','Premium','Classic','Ergonomic','Outdoor',
                    'Digital','Electric','Foldable','Rugged','Vintage','Modern','Silent'])[1 + g % 15]
             || ' ' ||
             (ARRAY['Headphones','Speaker','Keyboard','Mouse','Lamp','Kettle','Backpack','Tent','Chair',
                    'Monitor','Blender','Toaster','Camera','Watch','Drill','Grinder','Router','Charger',
                    'Jacket','Bottle'])[1 + (g / 15) % 20]
             || ' ' || (g % 997) AS title,
             (ARRAY['audio','computing','kitchen','outdoor','home','tools','apparel'])[1 + g % 7] AS category
         ) x"
    ))
    .bind(args.products)
    .execute(&pool)
    .await?;
    sqlx::query(&format!("VACUUM ANALYZE {t}"))
        .execute(&pool)
        .await?;
    println!(
        "{} products loaded in {:.1} s",
        args.products,
        started.elapsed().as_secs_f64()
    );

    let queries: Vec<Search> = vec![
        Search {
            q: "wireles hedphones".into(),
            limit: 20,
            ..Default::default()
        },
        Search {
            q: "portable speaker".into(),
            limit: 20,
            ..Default::default()
        },
        Search {
            q: "ergonmic chiar".into(),
            limit: 20,
            ..Default::default()
        },
        Search {
            q: "kettle".into(),
            category: Some("kitchen".into()),
            limit: 20,
            ..Default::default()
        },
        Search {
            category: Some("audio".into()),
            min_price: Some(1000),
            max_price: Some(20_000),
            sort: Sort::PriceAsc,
            limit: 50,
            ..Default::default()
        },
        Search {
            in_stock: true,
            sort: Sort::PriceDesc,
            limit: 50,
            ..Default::default()
        },
        Search {
            q: "rugged tent".into(),
            in_stock: true,
            limit: 20,
            ..Default::default()
        },
    ];
    let mut hist = Histogram::<u64>::new(3)?;
    let mut per_query: Vec<Histogram<u64>> = queries
        .iter()
        .map(|_| Histogram::new(3))
        .collect::<Result<_, _>>()?;
    // Warm-up, then timed rounds.
    for q in &queries {
        catalog::search(store.db(), gen, q).await?;
    }
    for i in 0..args.searches {
        let n = i % queries.len();
        let started = Instant::now();
        let r = catalog::search(store.db(), gen, &queries[n]).await?;
        let micros = started.elapsed().as_micros() as u64;
        hist.record(micros)?;
        per_query[n].record(micros)?;
        if i < queries.len() {
            println!(
                "  {:<60} {:>6} matches",
                format!(
                    "{:?}",
                    (&queries[n].q, &queries[n].category, queries[n].in_stock)
                ),
                r.total
            );
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (q, h) in queries.iter().zip(&per_query) {
        println!(
            "  q={:<20} p50 {:>7.1} ms  p95 {:>7.1} ms",
            format!("{:?}", q.q),
            ms(h, 0.5),
            ms(h, 0.95)
        );
    }
    println!(
        "catalog search over {} products, {} searches (results + facets): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        args.products,
        hist.len(),
        ms(&hist, 0.5),
        ms(&hist, 0.95),
        ms(&hist, 0.99)
    );
    Ok(())
}
