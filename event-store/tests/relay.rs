//! The relay against a real nats-server: every event reaches the stream exactly once, in
//! feed order per subject, through NATS outages and relay crashes.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use emporium_event_store::relay::{Relay, RelayConfig};
use emporium_event_store::testing::{
    append_raw, assert_stream_matches_store, TestDatabase, TestNats,
};
use emporium_event_store::Store;
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
