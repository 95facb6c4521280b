//! The command line: `emporium serve | migrate | keys | timeline | projections`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use emporium_event_store::{Store, StoreConfig};

use crate::auth::Role;
use crate::engine::Engine;
use crate::keys::KeyStore;
use crate::state::{ApiConfig, AppState};

#[derive(Debug, Parser)]
#[command(name = "emporium", version, about = "Event-sourced commerce engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API keys.
    Keys(KeysArgs),
    /// Print every event concerning an order, in global order (auditors).
    Timeline {
        #[command(flatten)]
        store: StoreArgs,
        order_id: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints an aggregate's state as JSON, now or as it was at a past moment.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// order, payment (by order id), stock-item (`<warehouse>:<sku>`), product, warehouse.
        #[arg(value_enum)]
        kind: ShowKind,
        id: String,
        /// A feed position or an RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// The event log: export it for analysts.
    Events {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Checks the log for tampering: recomputes every seal in a range and the latest signed
    /// digest's Merkle root, and names the first broken position (exit status 1 if any).
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// First feed position to check.
        #[arg(long)]
        from: Option<i64>,
        /// Last feed position to check (default: the end of the log).
        #[arg(long)]
        to: Option<i64>,
        /// The engine's public key file (`<audit-key>.pub`): digests must be signed by it.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The whole report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checks offline a proof document (`GET /v1/orders/{id}/timeline?proof=true`, or its
    /// `proof` member): the digest's signature, each event's seal and Merkle path.
    VerifyProof {
        /// The JSON file.
        file: PathBuf,
        /// The engine's public key file (64 hex characters).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Signs a digest of the log now (an engine with --audit-key also does it periodically).
    Digest {
        #[command(flatten)]
        store: StoreArgs,
        /// The Ed25519 signing key file (created, with a `.pub` beside it, when missing).
        #[arg(long, env = "EMPORIUM_AUDIT_KEY")]
        audit_key: PathBuf,
    },
    /// Read models: list them, or rebuild one from the log.
    Projections {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Writes the feed (or a filtered range of it) to a file, with a progress bar.
    Export {
        /// parquet, csv or ndjson.
        #[arg(long, value_enum, default_value_t = ExportFormat::Parquet)]
        format: ExportFormat,
        /// The file to write.
        #[arg(short = 'o', long)]
        output: std::path::PathBuf,
        /// Only positions after this one.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Only events of this aggregate type.
        #[arg(long)]
        aggregate_type: Option<String>,
        /// Only events of this type.
        #[arg(long)]
        event_type: Option<String>,
        /// Only events recorded at or after this instant (RFC 3339).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events recorded before this instant (RFC 3339).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowKind {
    Order,
    Payment,
    StockItem,
    Product,
    Warehouse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Csv,
    Ndjson,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Position, head and lag of each projection.
    List,
    /// Replays the whole log into fresh tables and swaps them in while the engine serves.
    Rebuild {
        /// catalog, analytics or timeline
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (it is shown only this once).
    Create {
        #[arg(long, value_enum)]
        role: Role,
        /// The customer a `client` key is bound to.
        #[arg(long)]
        customer: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (ids, roles, customers; never secrets).
    List,
    /// Revoke a key by id.
    Revoke { key_id: String },
}

#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Postgres URL; unset means the embedded SQLite store under --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, env = "EMPORIUM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Database pool size.
    #[arg(long, env = "EMPORIUM_DB_POOL", default_value_t = 16)]
    pub pool_size: u32,
}

impl StoreArgs {
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            database_url: self.database_url.clone().filter(|u| !u.is_empty()),
            data_dir: self.data_dir.clone(),
            max_connections: self.pool_size,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, env = "EMPORIUM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Seed demo warehouses, products and stock (only into an empty store).
    #[arg(long)]
    pub demo: bool,
    /// Bootstrap admin API key (kept in memory only). Without it and without an admin key
    /// in the database, one is created on first start and printed once.
    #[arg(long, env = "EMPORIUM_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Ed25519 key file for signed digests of the log (created, with a `.pub` beside it,
    /// when missing; keep it outside the database). Unset: no digests are signed.
    #[arg(long, env = "EMPORIUM_AUDIT_KEY")]
    pub audit_key: Option<PathBuf>,
    /// Seconds between signed digests.
    #[arg(long, env = "EMPORIUM_DIGEST_INTERVAL_SECS", default_value_t = 60)]
    pub digest_interval_secs: u64,
    /// Directory each signed digest is also written to as `digest-<position>.json`.
    #[arg(long, env = "EMPORIUM_DIGEST_DIR")]
    pub digest_dir: Option<PathBuf>,
    /// Directory of this process's catalog search index (kept across restarts; one per
    /// process). Unset: the index is kept in memory and built from the feed at start.
    #[arg(long, env = "EMPORIUM_SEARCH_DIR")]
    pub search_dir: Option<PathBuf>,
    /// Commands handled at once; more are refused with 503 + Retry-After.
    #[arg(long, env = "EMPORIUM_MAX_INFLIGHT_COMMANDS", default_value_t = 256)]
    pub max_inflight_commands: usize,
    /// Requests per second per API key (0 = unlimited); bursts up to --rate-limit-burst.
    #[arg(long, env = "EMPORIUM_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    #[arg(long, env = "EMPORIUM_RATE_LIMIT_BURST", default_value_t = 0)]
    pub rate_limit_burst: u32,
    /// How long idempotency records are kept, in hours.
    #[arg(long, env = "EMPORIUM_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u64,
    /// Seconds after which a request whose process died mid-way may be retried with its
    /// `Idempotency-Key` (the retry checks the events and applies nothing twice).
    #[arg(long, env = "EMPORIUM_IDEMPOTENCY_LEASE_SECS", default_value_t = 60)]
    pub idempotency_lease_secs: u64,
    /// Longest a request may take, in seconds, before 504.
    #[arg(long, env = "EMPORIUM_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// NATS server for the event relay; unset means the in-process bus only.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Subject prefix; stream and consumer names derive from it.
    #[arg(long, env = "EMPORIUM_NATS_PREFIX", default_value = "emporium")]
    pub nats_prefix: String,
    /// The events stream's duplicate window, in seconds (must exceed the relay's worst
    /// re-publish gap; see docs/adr/0005-relay.md).
    #[arg(
        long,
        env = "EMPORIUM_NATS_DUPLICATE_WINDOW_SECS",
        default_value_t = 600
    )]
    pub nats_duplicate_window_secs: u64,
    /// Seconds a checkout may wait for the payment authorization before rejecting.
    #[arg(long, env = "EMPORIUM_PAYMENT_TIMEOUT_SECS", default_value_t = 30)]
    pub payment_timeout_secs: u64,
    /// Fraud score (0-100) at or above which an order waits `under_review` for
    /// `POST /v1/orders/{id}/review`; `off` screens nothing.
    #[arg(long, env = "EMPORIUM_REVIEW_THRESHOLD", default_value = "80", value_parser = parse_threshold)]
    pub review_threshold: Threshold,
    /// Seconds a held order waits for a reviewer before it is rejected.
    #[arg(long, env = "EMPORIUM_REVIEW_TIMEOUT_SECS", default_value_t = 86_400)]
    pub review_timeout_secs: u64,
    /// Serve /metrics to non-loopback clients too.
    #[arg(long, env = "EMPORIUM_METRICS_PUBLIC")]
    pub metrics_public: bool,
}

/// `--review-threshold`: a score, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct Threshold(pub Option<u8>);

fn parse_threshold(raw: &str) -> Result<Threshold, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(Threshold(None));
    }
    match raw.parse::<u8>() {
        Ok(n) if n <= 100 => Ok(Threshold(Some(n))),
        _ => Err("a score from 0 to 100, or `off`".into()),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EMPORIUM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("EMPORIUM_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let store = open_store(&args).await?;
            println!("migrations applied ({})", store.db().kind());
            Ok(())
        }
        Command::Keys(args) => keys(args).await,
        Command::Timeline {
            store,
            order_id,
            json,
        } => timeline(store, &order_id, json).await,
        Command::Projections { store, command } => projections(store, command).await,
        Command::Verify {
            store,
            from,
            to,
            public_key,
            json,
        } => verify(store, from, to, public_key.as_deref(), json).await,
        Command::VerifyProof { file, public_key } => verify_proof(&file, &public_key),
        Command::Digest { store, audit_key } => {
            let store = open_store(&store).await?;
            let key = emporium_event_store::audit::load_or_create_signing_key(&audit_key)?;
            let auditor = emporium_event_store::audit::Auditor::new(store.db().clone());
            match auditor.digest(&key).await? {
                Some(d) => println!("{}", serde_json::to_string_pretty(&d)?),
                None => println!("the latest digest already covers the whole log"),
            }
            Ok(())
        }
        Command::Show {
            store,
            kind,
            id,
            as_of,
        } => show(store, kind, &id, as_of.as_deref()).await,
        Command::Events {
            store,
            command:
                EventsCommand::Export {
                    format,
                    output,
                    after,
                    aggregate_type,
                    event_type,
                    from,
                    to,
                },
        } => {
            let filter = emporium_event_store::export::EventFilter {
                after,
                aggregate_type,
                event_type,
                from,
                to,
                ..Default::default()
            };
            export_events(store, format, &output, &filter).await
        }
    }
}

async fn verify(
    args: StoreArgs,
    from: Option<i64>,
    to: Option<i64>,
    public_key: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    let trusted = public_key
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            emporium_event_store::audit::parse_public_key(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .transpose()?;
    let store = open_store(&args).await?;
    let auditor = emporium_event_store::audit::Auditor::new(store.db().clone());
    let bar = indicatif::ProgressBar::new(store.feed().head().await?.max(1) as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = auditor
        .verify(from, to, trusted.as_ref(), &|n| bar.set_position(n))
        .await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} events (positions {}..{})",
            report.checked, report.from, report.to
        );
        match &report.digest {
            Some(d) => println!(
                "latest digest: position {}, signature {}, root {}",
                d.position,
                if d.signature_valid {
                    "valid"
                } else {
                    "INVALID"
                },
                match d.root_matches {
                    Some(true) => "matches",
                    Some(false) => "DOES NOT MATCH",
                    None => "not checked (the walk did not start at 1 or end past it)",
                }
            ),
            None => println!("no digest signed yet"),
        }
        for p in &report.problems {
            println!("position {}: {} ({})", p.position, p.detail, p.kind);
        }
    }
    if report.ok {
        println!("ok: the log matches its seals and its latest digest");
        Ok(())
    } else {
        let first = report
            .first_broken
            .as_ref()
            .map(|p| p.position)
            .unwrap_or(0);
        anyhow::bail!("the log was tampered with: first broken position {first}")
    }
}

fn verify_proof(file: &std::path::Path, public_key: &std::path::Path) -> anyhow::Result<()> {
    use emporium_event_store::audit::{parse_public_key, verify_proof_document, ProofDocument};
    let key_text = std::fs::read_to_string(public_key)
        .with_context(|| format!("reading {}", public_key.display()))?;
    let key = parse_public_key(&key_text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc = ProofDocument::from_json(&text).context("the file holds no proof document")?;
    let n = verify_proof_document(&doc, &key).map_err(|e| anyhow::anyhow!("proof FAILED: {e}"))?;
    println!(
        "ok: {n} events are in the log signed at position {} by {}",
        doc.digest.position, doc.digest.public_key
    );
    Ok(())
}

async fn show(
    args: StoreArgs,
    kind: ShowKind,
    id: &str,
    as_of: Option<&str>,
) -> anyhow::Result<()> {
    use emporium_domain::{Order, Payment, Product, StockItem, Warehouse};
    async fn state<A>(
        store: &emporium_event_store::Store,
        id: &str,
        at: Option<emporium_event_store::AsOf>,
    ) -> anyhow::Result<(serde_json::Value, usize)>
    where
        A: cqrs_es::Aggregate + Clone + 'static,
    {
        let (a, version) = match at {
            None => store.load::<A>(id).await?,
            Some(at) => store.load_as_of::<A>(id, at).await?,
        };
        Ok((serde_json::to_value(a)?, version))
    }
    let store = open_store(&args).await?;
    let at = as_of
        .map(|s| s.parse::<emporium_event_store::AsOf>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("--as-of: {e}"))?;
    let (value, version) = match kind {
        ShowKind::Order => state::<Order>(&store, id, at).await?,
        ShowKind::Payment => state::<Payment>(&store, id, at).await?,
        ShowKind::StockItem => state::<StockItem>(&store, id, at).await?,
        ShowKind::Product => state::<Product>(&store, id, at).await?,
        ShowKind::Warehouse => state::<Warehouse>(&store, id, at).await?,
    };
    if version == 0 {
        anyhow::bail!("no {kind:?} {id} at that point");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "id": id, "version": version, "as_of": as_of, "state": value,
        }))?
    );
    Ok(())
}

async fn export_events(
    args: StoreArgs,
    format: ExportFormat,
    output: &std::path::Path,
    filter: &emporium_event_store::export::EventFilter,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::io::Write;

    let store = open_store(&args).await?;
    let export = emporium_event_store::export::open_pages(&store, filter).await?;
    let through = export.through;
    let bar = indicatif::ProgressBar::new((through - filter.after).max(1) as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "exporting {bar:30} {pos}/{len} positions ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let after = filter.after;
    let progress = bar.clone();
    let keys = std::sync::Arc::new(emporium_event_store::personal::KeyRing::new(
        store.db().clone(),
    ));
    let pages = emporium_event_store::personal::present_pages(keys, export.pages)
        .inspect(move |page| {
            let last = page
                .as_ref()
                .ok()
                .and_then(|p| p.len().checked_sub(1).and_then(|i| p.view(i).ok()));
            if let Some(last) = last {
                progress.set_position((last.position - after).max(0) as u64);
            }
        })
        .boxed();
    let file = std::fs::File::create(output)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rows = 0u64;
    match format {
        ExportFormat::Parquet => {
            let mut chunks = crate::parquet::encode(pages);
            while let Some(chunk) = chunks.next().await {
                out.write_all(&chunk?)?;
            }
        }
        ExportFormat::Csv | ExportFormat::Ndjson => {
            let mut buf = Vec::with_capacity(1 << 16);
            if format == ExportFormat::Csv {
                buf.extend(crate::export::csv_header());
            }
            let mut pages = pages;
            while let Some(page) = pages.next().await {
                for e in page?.into_events() {
                    let e = e?;
                    if format == ExportFormat::Csv {
                        crate::export::csv_record(&e, &mut buf)?;
                    } else {
                        crate::export::ndjson_line(&e, &mut buf)?;
                    }
                    rows += 1;
                    if buf.len() >= 1 << 16 {
                        out.write_all(&buf)?;
                        buf.clear();
                    }
                }
            }
            out.write_all(&buf)?;
        }
    }
    out.flush()?;
    bar.finish();
    let size = std::fs::metadata(output)?.len();
    if format == ExportFormat::Parquet {
        println!(
            "wrote {} through position {through} ({size} bytes)",
            output.display(),
        );
    } else {
        println!(
            "wrote {rows} events to {} through position {through} ({size} bytes)",
            output.display(),
        );
    }
    Ok(())
}

async fn timeline(args: StoreArgs, order_id: &str, json: bool) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    let id = emporium_domain::values::OrderId::parse(order_id)?;
    let state = AppState::new(store, None, ApiConfig::default());
    // The timeline index is a projection; bring it up to date before reading.
    let runner = emporium_projections::Runner::new(
        state.store.clone(),
        emporium_projections::by_name("timeline")?,
    );
    emporium_projections::runner::ensure(
        state.store.db(),
        emporium_projections::by_name("timeline")?.as_ref(),
    )
    .await?;
    while runner.try_step().await? > 0 {}
    let Some(t) = crate::routes::timeline::timeline(&state, &id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    else {
        anyhow::bail!("no order {id}");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(());
    }
    println!(
        "{:>8}  {:<24}  {:<10}  {:<28}  {:<26}  {:<18}  {:<36}",
        "position", "time", "aggregate", "event", "aggregate id", "actor", "correlation"
    );
    for e in &t.events {
        println!(
            "{:>8}  {:<24}  {:<10}  {:<28}  {:<26}  {:<18}  {:<36}",
            e.position,
            e.recorded_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            e.aggregate_type,
            format!("{} v{}", e.event_type, e.event_version),
            e.aggregate_id,
            e.metadata.actor,
            e.metadata.correlation_id
        );
    }
    Ok(())
}

async fn projections(args: StoreArgs, command: ProjectionsCommand) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    match command {
        ProjectionsCommand::List => {
            let head = store.feed().head().await?;
            println!(
                "{:<10} {:>10} {:>10} {:>10} {:>10}",
                "name", "generation", "position", "head", "lag"
            );
            for p in emporium_projections::all() {
                let (gen, pos) = emporium_projections::runner::state(store.db(), p.name()).await?;
                println!(
                    "{:<10} {:>10} {:>10} {:>10} {:>10}",
                    p.name(),
                    gen,
                    pos,
                    head,
                    (head - pos).max(0)
                );
            }
        }
        ProjectionsCommand::Rebuild { name } => {
            let projection = emporium_projections::by_name(&name)?;
            let bar = indicatif::ProgressBar::new(store.feed().head().await?.max(1) as u64)
                .with_style(
                    indicatif::ProgressStyle::with_template(
                        "rebuilding {msg} {bar:30} {pos}/{len} events ({per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            bar.set_message(name.clone());
            let started = std::time::Instant::now();
            let gen = emporium_projections::rebuild(&store, projection.as_ref(), |done, head| {
                bar.set_length(head.max(1) as u64);
                bar.set_position(done as u64);
            })
            .await?;
            bar.finish();
            println!(
                "{name}: generation {gen} is live ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store).await?;
    let keys = KeyStore::new(store.db().clone(), None);
    match args.command {
        KeysCommand::Create {
            role,
            customer,
            label,
        } => {
            let customer = customer
                .map(|c| emporium_domain::values::CustomerId::parse(&c))
                .transpose()?;
            let created = keys.create(role, customer, &label).await?;
            println!("key id:  {}", created.info.key_id);
            println!("role:    {}", created.info.role.as_str());
            if let Some(c) = &created.info.customer_id {
                println!("customer: {c}");
            }
            println!("key:     {}", created.key);
            println!("(store the key now: it cannot be shown again)");
        }
        KeysCommand::List => {
            println!(
                "{:<18} {:<9} {:<20} {:<8} label",
                "key id", "role", "customer", "state"
            );
            for k in keys.list().await? {
                println!(
                    "{:<18} {:<9} {:<20} {:<8} {}",
                    k.key_id,
                    k.role.as_str(),
                    k.customer_id.as_deref().unwrap_or("-"),
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    k.label
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            if keys.revoke(&key_id).await? {
                println!("revoked {key_id}");
            } else {
                anyhow::bail!("no active key {key_id}");
            }
        }
    }
    Ok(())
}

/// Opens the store and applies every crate's migrations.
async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    let store = Store::open(&args.config())
        .await
        .context("opening the event store")?;
    crate::migrate::all(&store)
        .await
        .context("migrating the database")?;
    Ok(store)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.store.config();
    match &config.database_url {
        Some(_) => tracing::info!("event store: postgres"),
        None => tracing::info!(
            "event store: embedded SQLite in {}",
            config.data_dir.display()
        ),
    }
    let mut builder = Engine::builder(config)
        .listen(args.listen.clone())
        .admin_key(args.admin_key.clone())
        .demo(args.demo)
        .api(ApiConfig {
            idempotency_ttl: std::time::Duration::from_secs(args.idempotency_ttl_hours * 3600),
            idempotency_lease: std::time::Duration::from_secs(args.idempotency_lease_secs.max(1)),
            max_inflight_commands: args.max_inflight_commands,
            rate_limit_per_sec: args.rate_limit,
            rate_limit_burst: args.rate_limit_burst,
            request_timeout: std::time::Duration::from_secs(args.request_timeout_secs.max(1)),
            metrics_public: args.metrics_public,
        })
        .checkout(emporium_sagas::CheckoutConfig {
            payment_timeout: std::time::Duration::from_secs(args.payment_timeout_secs.max(1)),
            fraud: emporium_sagas::FraudConfig {
                threshold: args.review_threshold.0,
                review_timeout: std::time::Duration::from_secs(args.review_timeout_secs.max(1)),
                ..Default::default()
            },
            ..Default::default()
        });
    if let Some(url) = args.nats_url.clone().filter(|u| !u.is_empty()) {
        tracing::info!(%url, "NATS JetStream");
        builder = builder
            .nats_url(url, args.nats_prefix.clone())
            .nats_duplicate_window(std::time::Duration::from_secs(
                args.nats_duplicate_window_secs.max(1),
            ));
    }
    builder = builder.search_dir(args.search_dir.clone());
    if let Some(key_path) = args.audit_key.clone() {
        builder = builder.audit(crate::engine::AuditOptions {
            key_path,
            interval: std::time::Duration::from_secs(args.digest_interval_secs.max(1)),
            dir: args.digest_dir.clone(),
        });
    }
    crate::metrics::handle();
    let engine = builder.start().await?;
    if let Some(key) = &engine.created_admin_key {
        println!(
            "admin key (created on first start, shown once; `emporium keys` manages keys): {key}"
        );
    }
    if let Some(search) = &engine.state.search {
        if search.position() > 0 {
            println!(
                "search index: continuing after feed position {}",
                search.position()
            );
        }
    }
    println!("emporium listening on {}", engine.url());
    engine.run_until(shutdown_signal()).await?;
    println!("emporium stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests drain before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
