//! `emporium-bench commands`: the reserve-stock command path against Postgres, measured
//! beside baselines taken in the same run on the same server, so the ratios hold even
//! when absolute figures swing with load on a shared machine.
//!
//! Modes, each at every requested concurrency for the same duration:
//! - `insert`: one-row INSERT transactions into an events-shaped table (the ceiling).
//! - `select+insert`: a transaction that reads an aggregate's rows, then inserts one.
//! - `plain-cqrs`: cqrs-es + postgres-es as shipped (its repository, default pool, json).
//! - `emporium`: our command path (`Store::execute`), every event sealed (docs/audit.md).
//! - `emp-unsealed`: the same with the append of before sealing (no canonical bytes hashed
//!   by the engine, ADR 0011's `emporium_append`): what the hash chain costs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;
use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand};
use emporium_domain::values::{OrderId, Quantity, Sku, WarehouseId};
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{Db, EventMetadata, Store};
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Postgres server to benchmark on; a throwaway database is created there.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    /// Seconds per mode and concurrency.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Concurrency levels (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub(crate) concurrency: Vec<usize>,
    /// Number of stock items the workload picks from at random.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) items: usize,
    /// Keep the benchmark database instead of dropping it.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Modes to run at each concurrency, in this order; a mode named twice runs twice and
    /// the ratios use its mean (e.g. `emp-unsealed,emporium,emporium,emp-unsealed` cancels
    /// out what running first or second does to a figure).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "insert,select+insert,plain-cqrs,emporium,emp-unsealed"
    )]
    pub(crate) modes: Vec<Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    Insert,
    #[value(name = "select+insert")]
    SelectInsert,
    PlainCqrs,
    Emporium,
    #[value(name = "emp-unsealed")]
    EmporiumUnsealed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Insert => "insert",
            Mode::SelectInsert => "select+insert",
            Mode::PlainCqrs => "plain-cqrs",
            Mode::Emporium => "emporium",
            Mode::EmporiumUnsealed => "emp-unsealed",
        }
    }
}

struct Outcome {
    /// Writes that carried the emporium mode's appends (group commit), and their commands.
    batches: Option<(u64, u64)>,
    mode: Mode,
    concurrency: usize,
    per_sec: f64,
    hist: Histogram<u64>,
    errors: u64,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (server, keep) = (args.database_url.clone(), args.keep);
    throwaway(&server, keep, |url| async move { bench(&args, &url).await }).await
}

/// Runs `f` on a fresh database `emporium_bench_<uuid>` on the server at `server_url`, and
/// drops it afterwards, also when `f` fails (unless `keep`).
pub(crate) async fn throwaway<F, Fut>(server_url: &str, keep: bool, f: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let name = format!("emporium_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server_url)
        .await
        .with_context(|| format!("connecting to {server_url}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let result = f(database_url_for(server_url, &name)?).await;
    if keep {
        println!("kept database {name}");
    } else {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    result
}

fn database_url_for(base: &str, name: &str) -> anyhow::Result<String> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let opts = sqlx::postgres::PgConnectOptions::from_str(base)?.database(name);
    Ok(opts.to_url_lossy().to_string())
}

/// The stock items a mode works on: `emp-unsealed` gets its own, the `items` after the
/// others'. Its appends leave unsealed events at the head of the streams they touch, and a
/// sealed append after one has no predecessor seal to chain on: it would take the general
/// append (which looks the seal up and chains one by one) on that stream for good, a state
/// no engine meets, where every event is sealed. Sharing the items made `emporium` pay for
/// what `emp-unsealed` left behind whenever it ran after it (0.72-0.80x on/off, against
/// 1.04x when each ran alone on fresh items; docs/performance.md).
fn item_of(mode: Mode, i: usize, items: usize) -> (WarehouseId, Sku) {
    match mode {
        Mode::EmporiumUnsealed => item(items + i),
        _ => item(i),
    }
}

fn item(i: usize) -> (WarehouseId, Sku) {
    // Ten warehouses x items/10 skus: realistic ids, all distinct aggregates.
    let w = WarehouseId::parse(&format!("wh-{:02}", i % 10)).expect("valid warehouse id");
    let s = Sku::parse(&format!("SKU-{:06}", i / 10)).expect("valid sku");
    (w, s)
}

async fn bench(args: &BenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 16).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    emporium_event_store::seeding::create_baseline_tables(&pool).await?;

    // Seed: every item receives plenty of stock so reservations never run out (a second set
    // for `emp-unsealed`, see item_of).
    let seeded = if args.modes.contains(&Mode::EmporiumUnsealed) {
        2 * args.items
    } else {
        args.items
    };
    let bar = progress(seeded as u64, "seeding stock items");
    let next = Arc::new(AtomicU64::new(0));
    let mut seeders = Vec::new();
    for _ in 0..16 {
        let (store, next, bar, n) = (store.clone(), next.clone(), bar.clone(), seeded);
        seeders.push(tokio::spawn(async move {
            let meta = EventMetadata::system("bench");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let (w, s) = item(i);
                store
                    .execute::<StockItem>(
                        &stock_item_id(&w, &s),
                        StockItemCommand::ReceiveStock {
                            warehouse_id: w,
                            sku: s,
                            qty: Quantity::new(1_000_000)?,
                        },
                        &meta,
                    )
                    .await
                    .map_err(|e| anyhow!("seeding: {e}"))?;
                bar.inc(1);
            }
        }));
    }
    for s in seeders {
        s.await??;
    }
    bar.finish();
    // postgres-es's own table gets the same starting state.
    emporium_event_store::seeding::copy_to_postgres_es_table(&pool, "plain_events").await?;
    pool.close().await;

    let mut outcomes = Vec::new();
    for &c in &args.concurrency {
        for &mode in &args.modes {
            let o = run_mode(mode, c, url, args).await?;
            println!(
                "{:<14} c={:<3} {:>9.0} cmds/s  p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                o.mode.name(),
                o.concurrency,
                o.per_sec,
                ms(o.hist.value_at_quantile(0.50)),
                ms(o.hist.value_at_quantile(0.95)),
                ms(o.hist.value_at_quantile(0.99)),
                o.errors
            );
            if let Some((batches, commands)) = o.batches.filter(|(b, _)| *b > 0) {
                println!(
                    "{:<14}          group commit: {commands} commands in {batches} writes ({:.1} per write)",
                    "",
                    commands as f64 / batches as f64
                );
            }
            outcomes.push(o);
        }
    }

    println!();
    println!("ratios (same run, same server):");
    for &c in &args.concurrency {
        // The mean over the runs of a mode (NaN when it did not run).
        let rate = |m: Mode| {
            let runs: Vec<f64> = outcomes
                .iter()
                .filter(|o| o.mode == m && o.concurrency == c)
                .map(|o| o.per_sec)
                .collect();
            runs.iter().sum::<f64>() / runs.len() as f64
        };
        let (ins, sel, plain, emp, unsealed) = (
            rate(Mode::Insert),
            rate(Mode::SelectInsert),
            rate(Mode::PlainCqrs),
            rate(Mode::Emporium),
            rate(Mode::EmporiumUnsealed),
        );
        // Only the ratios whose modes ran.
        let mut line = format!("  c={c:<3}");
        for (name, a, b) in [
            ("emporium/insert", emp, ins),
            ("emporium/select+insert", emp, sel),
            ("emporium/plain-cqrs", emp, plain),
            ("plain-cqrs/insert", plain, ins),
        ] {
            if (a / b).is_finite() {
                line.push_str(&format!(" {name} {:.2}x ", a / b));
            }
        }
        println!("{}", line.trim_end());
        if (emp / unsealed).is_finite() {
            println!(
                "  c={c:<3} hash chain on/off {:.2}x (emporium {emp:.0} vs unsealed {unsealed:.0} cmds/s)",
                emp / unsealed
            );
        }
    }
    Ok(())
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn progress(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}} ({{per_sec}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

type PlainFramework =
    CqrsFramework<StockItem, PersistedEventStore<postgres_es::PostgresEventRepository, StockItem>>;

async fn run_mode(
    mode: Mode,
    concurrency: usize,
    url: &str,
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let pool_size = concurrency.min(64) as u32;
    // Each mode gets its own pool, closed afterwards, so modes never share connections and
    // the server's connection limit is respected.
    // The baselines get plain pools: the engine's pool guard (a rollback on every
    // release) is part of what the engine pays, not of the ceiling it is measured against.
    let pool: PgPool = match mode {
        Mode::PlainCqrs => {
            PgPoolOptions::new()
                .max_connections(pool_size)
                .connect(url)
                .await?
        }
        Mode::Emporium | Mode::EmporiumUnsealed => connect_postgres(url, pool_size).await?,
        _ => {
            PgPoolOptions::new()
                .max_connections(pool_size)
                .test_before_acquire(false)
                .connect(url)
                .await?
        }
    };
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store
        .repository()
        .set_sealing(mode != Mode::EmporiumUnsealed);
    if matches!(mode, Mode::Emporium | Mode::EmporiumUnsealed) {
        // Warm-up, not timed: a running engine holds its hot aggregates in memory, so each
        // item is loaded once before the clock starts (the same replay the first command
        // on it would do).
        let bar = progress(args.items as u64, "warming the aggregate cache");
        let loads = (0..args.items).map(|i| {
            let (store, bar) = (store.clone(), bar.clone());
            async move {
                let (w, s) = item_of(mode, i, args.items);
                let r = store.load_cached::<StockItem>(&stock_item_id(&w, &s)).await;
                bar.inc(1);
                r
            }
        });
        for r in futures::stream::iter(loads)
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
        {
            r?;
        }
        bar.finish_and_clear();
    }
    let plain: Arc<PlainFramework> = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(
            postgres_es::PostgresEventRepository::new(pool.clone())
                .with_tables("plain_events", "plain_snapshots"),
        ),
        vec![],
        (),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (store, plain, pool, stop, items) = (
            store.clone(),
            plain.clone(),
            pool.clone(),
            stop.clone(),
            args.items,
        );
        workers.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut errors = 0u64;
            let meta = EventMetadata::system("bench");
            let mut sequence_hint: i64 = 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let i = rand::rng().random_range(0..items);
                let (w, s) = item_of(mode, i, items);
                let id = stock_item_id(&w, &s);
                let started = Instant::now();
                let ok = match mode {
                    Mode::Insert => {
                        sequence_hint += 1;
                        baseline_insert(&pool, &id, sequence_hint).await.is_ok()
                    }
                    Mode::SelectInsert => baseline_select_insert(&pool, &id).await.is_ok(),
                    Mode::PlainCqrs => plain
                        .execute_with_metadata(&id, reserve(w, s), meta.to_map())
                        .await
                        .is_ok(),
                    Mode::Emporium | Mode::EmporiumUnsealed => store
                        .execute::<StockItem>(&id, reserve(w, s), &meta)
                        .await
                        .is_ok(),
                };
                if ok {
                    let _ = hist.record(started.elapsed().as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
            }
            (hist, errors)
        }));
    }
    let started = Instant::now();
    let bar = progress(
        args.duration,
        &format!("{:<14} c={concurrency:<3}", mode.name()),
    );
    for _ in 0..args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for w in workers {
        let (h, e) = w.await?;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let gc = store.repository().group_commit_stats();
    let batches = matches!(mode, Mode::Emporium | Mode::EmporiumUnsealed)
        .then_some((gc.batches, gc.commands));
    pool.close().await;
    Ok(Outcome {
        batches,
        mode,
        concurrency,
        per_sec: hist.len() as f64 / elapsed,
        hist,
        errors,
    })
}

fn reserve(warehouse_id: WarehouseId, sku: Sku) -> StockItemCommand {
    StockItemCommand::ReserveStock {
        warehouse_id,
        sku,
        order_id: OrderId::new(),
        qty: Quantity::new(1).expect("1 is a valid quantity"),
    }
}

async fn baseline_insert(pool: &PgPool, id: &str, sequence: i64) -> sqlx::Result<()> {
    // A unique aggregate id per row: the ceiling has no key contention.
    sqlx::query(include_str!("bench_insert.sql"))
        .bind(format!("{id}#{}", uuid::Uuid::new_v4().simple()))
        .bind(sequence)
        .execute(pool)
        .await?;
    Ok(())
}

async fn baseline_select_insert(pool: &PgPool, id: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT max(sequence) FROM bench_events WHERE aggregate_type = 'StockItem' AND aggregate_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(include_str!("bench_insert.sql"))
        .bind(id)
        .bind(last.unwrap_or(0) + 1)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
