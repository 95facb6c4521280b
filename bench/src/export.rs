//! `emporium-bench export`: how fast `GET /v1/events` streams the feed as NDJSON and as
//! Parquet, against `psql`'s `COPY ... TO STDOUT` of the same rows and columns (the
//! database's own bulk export, the ceiling) measured in the same run on the same server,
//! alternating; and how large each is.
//!
//! A throwaway database `emporium_bench_<uuid>` is filled with one `INSERT ... SELECT ...
//! FROM generate_series` per batch (positions stamped as the rows go in), vacuumed, then
//! read back whole by each contender; it is dropped at the end, also after a failure.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use emporium_event_store::store::connect_postgres;
use emporium_event_store::{seeding, Db, Store};
use emporium_gateway::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;
use tokio::io::AsyncReadExt;

#[derive(Debug, Args)]
pub(crate) struct ExportBenchArgs {
    /// Postgres server; a throwaway database is created there (and dropped).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    /// Events in the feed to export.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: u64,
    /// Rounds; each runs `psql COPY`, then the HTTP export.
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: usize,
    /// The engine's formats measured each round after `psql COPY` (the baseline always runs).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Format::Ndjson, Format::Parquet])]
    pub(crate) formats: Vec<Format>,
}

/// A representation of `GET /v1/events` the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Ndjson,
    Parquet,
}

/// Rows per fill statement (one progress step).
const FILL_BATCH: u64 = 50_000;
const KEY: &str = "bench-key";

pub(crate) async fn run(args: ExportBenchArgs) -> anyhow::Result<()> {
    crate::commands::throwaway(&args.database_url.clone(), false, |url| async move {
        bench(&args, &url).await
    })
    .await
}

async fn bench(args: &ExportBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 8).await?;
    let store = Store::from_db(Db::Postgres(pool.clone()));
    store.migrate().await?;
    fill(&pool, args.events).await?;

    let sizes = seeding::average_sizes(&pool).await?;
    println!(
        "{} events, payload ~{} bytes, metadata ~{} bytes as text",
        args.events, sizes.0, sizes.1
    );
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN {}",
        emporium_event_store::export::POSTGRES_SQL
    ))
    .bind(0_i64)
    .bind(args.events as i64)
    .bind(None::<String>)
    .bind(None::<String>)
    .bind(None::<chrono::DateTime<chrono::Utc>>)
    .bind(None::<chrono::DateTime<chrono::Utc>>)
    .bind(None::<i64>)
    .fetch_all(&pool)
    .await?;
    let scan = plan
        .iter()
        .map(|l| l.trim_start_matches([' ', '-', '>']))
        .find(|l| l.contains("Scan"))
        .unwrap_or("?");
    println!("export plan: {scan}");

    // The gateway, in process, on a loopback port.
    let engine = Engine::on_store(store)
        .admin_key(Some(KEY.into()))
        .run_projections(false)
        .run_checkout(false)
        .start()
        .await?;
    let client = reqwest::Client::new();
    let endpoint = format!("{}/v1/events", engine.url());

    let copy_sql = copy_statement(args.events);
    // psql gets the same database, in the server URL's own form (psql rejects sqlx's extra
    // URL parameters).
    let db_name = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url)?
        .get_database()
        .unwrap_or_default()
        .to_string();
    let psql_url = with_database(&args.database_url, &db_name);
    let rounds = measure_rounds(args, &client, &endpoint, &psql_url, &copy_sql).await;
    engine.stop().await;
    let rounds = rounds?;
    let n = rounds.len() as f64;
    let mut summary = format!("over {} rounds:", rounds.len());
    for format in &args.formats {
        let mean = rounds
            .iter()
            .filter_map(|r| r.iter().find(|(f, _, _)| f == format).map(|x| x.1))
            .sum::<f64>()
            / n;
        let goal = match format {
            Format::Ndjson => 0.5,
            Format::Parquet => 1.0,
        };
        summary.push_str(&format!(
            " {format:?}/COPY {mean:.2}x (goal >= {goal:.1}x),"
        ));
    }
    let bytes = |format: Format| {
        rounds
            .first()
            .and_then(|r| r.iter().find(|(f, _, _)| *f == format).map(|x| x.2))
    };
    match (bytes(Format::Parquet), bytes(Format::Ndjson)) {
        (Some(pq), Some(nd)) => summary.push_str(&format!(
            " Parquet size {:.2} of NDJSON (goal < 1)",
            pq as f64 / nd as f64
        )),
        _ => {
            summary.pop();
        }
    }
    println!("{summary}");
    Ok(())
}

/// Each round: `psql COPY`, then each format; per format its ratio to that round's COPY
/// and its size in bytes.
async fn measure_rounds(
    args: &ExportBenchArgs,
    client: &reqwest::Client,
    endpoint: &str,
    psql_url: &str,
    copy_sql: &str,
) -> anyhow::Result<Vec<Vec<(Format, f64, u64)>>> {
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let copy = copy_out(psql_url, copy_sql).await?;
        check_rows("psql COPY", &copy, args.events)?;
        println!("round {round}: psql COPY     {}", copy.line());
        let mut this = Vec::new();
        for &format in &args.formats {
            let m = match format {
                Format::Ndjson => http_export(client, endpoint).await?,
                Format::Parquet => http_parquet(client, endpoint).await?,
            };
            check_rows(&format!("HTTP {format:?}"), &m, args.events)?;
            let ratio = m.per_sec() / copy.per_sec();
            println!(
                "round {round}: HTTP {:<8} {}   {format:?}/COPY {ratio:.2}x",
                format!("{format:?}"),
                m.line()
            );
            this.push((format, ratio, m.bytes));
        }
        rounds.push(this);
    }
    Ok(rounds)
}

fn check_rows(what: &str, m: &Measured, events: u64) -> anyhow::Result<()> {
    if m.lines != events {
        bail!("{what} returned {} lines, expected {events}", m.lines);
    }
    Ok(())
}

async fn fill(pool: &PgPool, events: u64) -> anyhow::Result<()> {
    let bar = ProgressBar::new(events).with_style(
        ProgressStyle::with_template("filling {bar:30} {pos}/{len} ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut next = 1;
    while next <= events {
        let last = (next + FILL_BATCH - 1).min(events);
        seeding::synthetic_orders(pool, next as i64, last as i64)
            .await
            .context("filling the events table")?;
        bar.set_position(last);
        next = last + 1;
    }
    bar.finish_and_clear();
    let spinner = ProgressBar::new_spinner().with_message("VACUUM ANALYZE events");
    spinner.enable_steady_tick(Duration::from_millis(200));
    seeding::vacuum_analyze(pool).await?;
    spinner.finish_and_clear();
    Ok(())
}

/// `url` with its database replaced by `db`, query string kept.
fn with_database(url: &str, db: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let path = url[start..].find('/').map_or(url.len(), |i| start + i);
    let query = url[path..].find('?').map_or(url.len(), |i| path + i);
    format!("{}/{db}{}", &url[..path], &url[query..])
}

/// The export statement with its parameters written in (the whole feed, no filter), as a
/// `COPY ... TO STDOUT`: the same rows, columns and plan, the database's fastest way out.
fn copy_statement(events: u64) -> String {
    let mut sql = emporium_event_store::export::POSTGRES_SQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for (param, value) in [
        ("$7", "NULL".to_string()),
        ("$6", "NULL".to_string()),
        ("$5", "NULL".to_string()),
        ("$4", "NULL".to_string()),
        ("$3", "NULL".to_string()),
        ("$2", events.to_string()),
        ("$1", "0".to_string()),
    ] {
        sql = sql.replace(param, &value);
    }
    format!("COPY ({sql}) TO STDOUT")
}

struct Measured {
    bytes: u64,
    lines: u64,
    elapsed: Duration,
}

impl Measured {
    fn per_sec(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64()
    }

    fn line(&self) -> String {
        format!(
            "{:>9} lines {:>8.1} MB in {:>6.2} s = {:>9.0} events/s {:>7.1} MB/s",
            self.lines,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.per_sec(),
            self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
        )
    }
}

/// `psql <url> -c "COPY (...) TO STDOUT"`, its output counted as it arrives.
async fn copy_out(url: &str, sql: &str) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running psql (is the PostgreSQL client installed?)")?;
    let mut stdout = child.stdout.take().context("psql stdout")?;
    let mut buf = vec![0_u8; 256 * 1024];
    let (mut bytes, mut lines) = (0_u64, 0_u64);
    loop {
        let n = stdout.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += count_lines(&buf[..n]);
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("psql COPY failed: {status}");
    }
    Ok(Measured {
        bytes,
        lines,
        elapsed: started.elapsed(),
    })
}

/// `GET /v1/events` as NDJSON, the body counted as it streams in.
async fn http_export(client: &reqwest::Client, endpoint: &str) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut response = client
        .get(endpoint)
        .header("accept", "application/x-ndjson")
        .bearer_auth(KEY)
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "GET /v1/events answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let (mut bytes, mut lines) = (0_u64, 0_u64);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        lines += count_lines(&chunk);
    }
    Ok(Measured {
        bytes,
        lines,
        elapsed: started.elapsed(),
    })
}

/// `GET /v1/events` as Parquet, the body received whole; its rows counted from the footer.
async fn http_parquet(client: &reqwest::Client, endpoint: &str) -> anyhow::Result<Measured> {
    use parquet::file::reader::FileReader;
    let started = Instant::now();
    let mut response = client
        .get(endpoint)
        .header("accept", "application/vnd.apache.parquet")
        .bearer_auth(KEY)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("GET /v1/events (parquet) answered {}", response.status());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    let elapsed = started.elapsed();
    let bytes = body.len() as u64;
    let reader = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(body))?;
    Ok(Measured {
        bytes,
        lines: reader.metadata().file_metadata().num_rows() as u64,
        elapsed,
    })
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}
