//! `emporium-bench relay`: how fast the relay moves the feed into JetStream, against a plain
//! pipelined async-nats publish loop of the very same messages (subject, body, headers,
//! message id, same number of acks in flight) measured in the same run on the same server.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream;
use clap::Args;
use emporium_event_store::relay::{ensure_events_stream, Relay, RelayConfig, Step};
use emporium_event_store::store::connect_postgres;
use emporium_event_store::testing::append_raw;
use emporium_event_store::RawFeedEvent;
use emporium_event_store::{Db, Store};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub(crate) struct RelayBenchArgs {
    /// Postgres server; a throwaway database is created there.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub(crate) nats_url: String,
    /// Events to relay.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) events: usize,
    /// Rounds (each runs the baseline, then the relay, on fresh streams).
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: usize,
}

pub(crate) async fn run(args: RelayBenchArgs) -> anyhow::Result<()> {
    crate::commands::throwaway(&args.database_url.clone(), false, |url| async move {
        bench(&args, &url).await
    })
    .await
}

async fn bench(args: &RelayBenchArgs, url: &str) -> anyhow::Result<()> {
    let pool = connect_postgres(url, 8).await?;
    let store = Store::from_db(Db::Postgres(pool));
    store.migrate().await?;
    let client = async_nats::connect(&args.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))?;

    let bar = ProgressBar::new(args.events as u64).with_style(
        ProgressStyle::with_template("appending {bar:30} {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut written = 0;
    let mut i = 0;
    while written < args.events {
        let n = 100.min(args.events - written) as i64;
        append_raw(store.db(), &format!("agg-{i}"), 1, n).await;
        written += n as usize;
        i += 1;
        bar.set_position(written as u64);
    }
    bar.finish_and_clear();
    // The baseline publishes exactly what the relay will: read the feed once up front.
    let read_started = Instant::now();
    let mut events: Vec<RawFeedEvent> = Vec::with_capacity(args.events);
    let mut cursor = 0;
    while events.len() < args.events {
        let page = store.feed().read_after_raw(cursor, 10_000).await?;
        let Some(last) = page.last() else { break };
        cursor = last.position;
        events.extend(page);
    }
    // The first read also stamps feed positions; time a second, pure read.
    let read_started2 = Instant::now();
    let mut cursor2 = 0;
    let mut n2 = 0;
    loop {
        let page = store.feed().read_after_raw(cursor2, 2000).await?;
        let Some(last) = page.last() else { break };
        cursor2 = last.position;
        n2 += page.len();
    }
    println!(
        "{} events in the feed (first read with stamping {:.2} s; reading them all in relay-sized batches {:.2} s = {:.0} events/s)",
        events.len(),
        read_started.elapsed().as_secs_f64() - read_started2.elapsed().as_secs_f64(),
        read_started2.elapsed().as_secs_f64(),
        n2 as f64 / read_started2.elapsed().as_secs_f64()
    );

    let max_inflight = RelayConfig::new("x").max_inflight;
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        // Baseline: a plain pipelined publish loop.
        let config = RelayConfig::new(&format!("benchbase{}", uuid::Uuid::new_v4().simple()));
        let js = jetstream::context::ContextBuilder::new()
            .max_ack_inflight(max_inflight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        ensure_events_stream(&js, &config.names, config.duplicate_window).await?;
        let started = Instant::now();
        let mut inflight = VecDeque::with_capacity(max_inflight);
        for e in &events {
            let ack = js
                .send_publish(
                    config.names.subject(&e.aggregate_type, &e.aggregate_id),
                    emporium_event_store::relay::message(e)?,
                )
                .await?;
            inflight.push_back(ack);
            if inflight.len() >= max_inflight {
                if let Some(a) = inflight.pop_front() {
                    a.await?;
                }
            }
        }
        while let Some(a) = inflight.pop_front() {
            a.await?;
        }
        let base_rate = events.len() as f64 / started.elapsed().as_secs_f64();
        let _ = js.delete_stream(config.names.stream()).await;

        // The relay: from the feed, with checkpoints, until it has everything.
        let prefix = format!("benchrelay{}", uuid::Uuid::new_v4().simple());
        let mut relay = Relay::new(store.clone(), client.clone(), RelayConfig::new(&prefix));
        relay.ensure_stream().await?;
        let started = Instant::now();
        let mut published = 0;
        while let Step::Published(n) = relay.try_step().await? {
            published += n;
        }
        let relay_rate = published as f64 / started.elapsed().as_secs_f64();
        let _ = js.delete_stream(relay.names().stream()).await;
        let ratio = relay_rate / base_rate;
        ratios.push(ratio);
        println!(
            "round {round}: plain publish loop {base_rate:>9.0} msgs/s   relay {relay_rate:>9.0} msgs/s   relay/plain {ratio:.2}x"
        );
        // Each relay run uses its own checkpoint name (its stream), so the next round
        // starts from the beginning of the feed again.
        sqlx::query("DELETE FROM relay_checkpoints")
            .execute(match store.db() {
                Db::Postgres(p) => p,
                Db::Sqlite(_) => unreachable!("the benchmark runs on Postgres"),
            })
            .await?;
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
    println!("relay/plain over {} rounds: {mean:.2}x", ratios.len());
    Ok(())
}
