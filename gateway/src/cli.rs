//! The command line: `emporium serve | migrate | bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use emporium_event_store::{Store, StoreConfig};

use crate::auth::{generate_key, KeyRing};
use crate::state::AppState;

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
    /// Measure the engine (see README).
    #[command(subcommand)]
    Bench(BenchCommand),
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
    /// Admin API key; generated and printed when unset.
    #[arg(long, env = "EMPORIUM_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Reserve-stock commands against Postgres versus plain INSERT baselines.
    Commands(crate::bench::BenchArgs),
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
            let store = Store::open(&args.config())
                .await
                .context("opening and migrating the event store")?;
            println!("migrations applied ({})", store.db().kind());
            Ok(())
        }
        Command::Bench(BenchCommand::Commands(args)) => crate::bench::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.store.config();
    let store = Store::open(&config)
        .await
        .context("opening the event store")?;
    match &config.database_url {
        Some(_) => tracing::info!("event store: postgres"),
        None => tracing::info!(
            "event store: embedded SQLite in {}",
            config.data_dir.display()
        ),
    }
    if args.demo {
        crate::demo::seed(&store)
            .await
            .context("seeding demo data")?;
    }
    let admin_key = match args.admin_key.filter(|k| !k.is_empty()) {
        Some(k) => k,
        None => {
            let k = generate_key();
            println!("admin key (generated for this run; set EMPORIUM_ADMIN_KEY to fix one): {k}");
            k
        }
    };
    let state = AppState {
        store,
        keys: KeyRing::with_admin_key(&admin_key),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("emporium listening on http://{addr}");
    crate::app::serve(listener, state, shutdown_signal()).await?;
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
