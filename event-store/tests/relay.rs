//! The relay against a real nats-server: every event reaches the stream exactly once, in
//! feed order per subject, through NATS outages and relay crashes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use emporium_event_store::nats::NatsNames;
use emporium_event_store::relay::{Relay, RelayConfig};
use emporium_event_store::testing::{append_raw, NatsServer, TestDatabase, TestNats};
use emporium_event_store::{FeedEvent, Store};
use futures::StreamExt;
use tokio::sync::oneshot;

/// Appends `total` events from `writers` concurrent writers, `per_tx` per transaction.
async fn append(store: &Store, total: usize, writers: usize, per_tx: i64, tag: &str) {
    let per_writer = total / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let db = store.db().clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut seq: HashMap<String, i64> = HashMap::new();
                let mut done = 0usize;
                let mut i = 0;
                while done < per_writer {
                    i += 1;
                    let agg = format!("{tag}-w{w}-{}", i % 40);
                    let n = per_tx.min((per_writer - done) as i64);
                    let s = *seq.get(&agg).unwrap_or(&1);
                    append_raw(&db, &agg, s, n).await;
                    seq.insert(agg, s + n);
                    done += n as usize;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn spawn_relay(
    store: &Store,
    client: async_nats::Client,
    prefix: &str,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = Relay::new(store.clone(), client, RelayConfig::new(prefix));
    let handle = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

/// Waits until the stream holds `expected` messages (or 90 s pass).
async fn wait_for_count(js: &jetstream::Context, names: &NatsNames, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = match js.get_stream(names.stream()).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if n >= expected || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every message of the stream and checks: exactly the store's events, no
/// duplicates, and per subject in feed-position order.
async fn assert_stream_matches_store(js: &jetstream::Context, names: &NatsNames, store: &Store) {
    let expected = store.event_count().await.unwrap() as u64;
    let count = wait_for_count(js, names, expected).await;
    // A little longer, so a late duplicate would show up in the count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stream = js.get_stream(names.stream()).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(count, expected);
    assert_eq!(
        info.state.messages, expected,
        "exactly one message per event"
    );

    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen_ids = HashSet::new();
    let mut last_position: HashMap<String, i64> = HashMap::new();
    for _ in 0..expected {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("every message can be read")
            .unwrap()
            .unwrap();
        let e: FeedEvent = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            m.subject.as_str(),
            names.subject(&e.aggregate_type, &e.aggregate_id)
        );
        let headers = m.headers.as_ref().unwrap();
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            e.event_id.to_string()
        );
        assert_eq!(
            headers.get("Emporium-Position").unwrap().as_str(),
            e.position.to_string()
        );
        assert!(seen_ids.insert(e.event_id), "duplicate {}", e.event_id);
        let prev = last_position
            .insert(m.subject.to_string(), e.position)
            .unwrap_or(0);
        assert!(e.position > prev, "{} out of order", m.subject);
    }
    assert_eq!(seen_ids.len() as u64, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_thousand_events_reach_the_stream_once_each_in_order() {
    let db = TestDatabase::create().await;
    let store = db.store(12).await;
    let nats = TestNats::connect().await;
    let (stop, relay) = spawn_relay(&store, nats.client.clone(), &nats.prefix);
    append(&store, 50_000, 4, 25, "a").await;
    let js = jetstream::new(nats.client.clone());
    assert_stream_matches_store(&js, &nats.names(), &store).await;
    assert_eq!(store.event_count().await.unwrap(), 50_000);
    let _ = stop.send(());
    relay.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_batch_three_times_still_publishes_each_event_once() {
    let db = TestDatabase::create().await;
    let store = db.store(12).await;
    let nats = TestNats::connect().await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append(&store, 30_000, 3, 20, "k").await })
    };
    for round in 0..3 {
        let relay = Relay::new(
            store.clone(),
            nats.client.clone(),
            RelayConfig::new(&nats.prefix),
        );
        let handle = tokio::spawn(relay.run(std::future::pending()));
        // Kill it at an arbitrary moment, most likely mid-batch.
        tokio::time::sleep(Duration::from_millis(400 + 300 * round)).await;
        handle.abort();
        let _ = handle.await;
    }
    writer.await.unwrap();
    let (stop, relay) = spawn_relay(&store, nats.client.clone(), &nats.prefix);
    let js = jetstream::new(nats.client.clone());
    assert_stream_matches_store(&js, &nats.names(), &store).await;
    let _ = stop.send(());
    relay.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_twenty_second_nats_outage_loses_and_duplicates_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store(12).await;
    let mut server = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let prefix = "outage";
    let (stop, relay) = spawn_relay(&store, client.clone(), prefix);

    // Commands keep being accepted throughout: the store is the outbox.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut batches = 0;
            while started.elapsed() < Duration::from_secs(26) {
                append_raw(store.db(), &format!("o-{batches}"), 1, 50).await;
                batches += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            batches
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    server.restart();
    let batches = writer.await.unwrap();
    assert!(batches > 100, "appends continued during the outage");

    let js = jetstream::new(client.clone());
    assert_stream_matches_store(&js, &NatsNames::new(prefix), &store).await;
    let _ = stop.send(());
    relay.await.unwrap();
}
