//! `emporium-bench`: measures the engine against baselines taken in the same run (see the
//! README's Benchmarks section). A crate of its own so the shipped `emporium` binary
//! carries no load generator and none of their dependencies.
//!
//! Each benchmark creates a throwaway database on the given Postgres server (and, with
//! NATS, a throwaway stream prefix), starts what it measures through the same
//! `emporium_gateway::Engine` builder that `emporium serve` uses, and drops it all after.

mod catalog;
mod checkout;
mod commands;
mod console;
mod export;
mod projections;
mod reads;
mod relay;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "emporium-bench", version, about = "Emporium's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Reserve-stock commands against Postgres versus plain INSERT baselines.
    Commands(commands::BenchArgs),
    /// The NATS relay versus a plain pipelined publish loop of the same messages.
    Relay(relay::RelayBenchArgs),
    /// The NDJSON export of /v1/events versus `psql COPY` of the same rows.
    Export(export::ExportBenchArgs),
    /// End-to-end checkouts over HTTP: throughput and placement-to-confirmation latency.
    Checkout(checkout::CheckoutBenchArgs),
    /// Catalog search latency on a large catalog.
    Catalog(catalog::CatalogBenchArgs),
    /// Projection lag while events are appended at a steady rate.
    Projections(projections::ProjectionBenchArgs),
    /// Order and timeline reads with millions of events in the store.
    Reads(reads::ReadsBenchArgs),
    /// Server render time of the console's pages with many orders in the store.
    Console(console::ConsoleBenchArgs),
}

/// The engine's allocator (see the `emporium` binary), so the engine runs here as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMPORIUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Bench::Commands(a) => commands::run(a).await,
            Bench::Relay(a) => relay::run(a).await,
            Bench::Export(a) => export::run(a).await,
            Bench::Checkout(a) => checkout::run(a).await,
            Bench::Catalog(a) => catalog::run(a).await,
            Bench::Projections(a) => projections::run(a).await,
            Bench::Reads(a) => reads::run(a).await,
            Bench::Console(a) => console::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
