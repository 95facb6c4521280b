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

/// An event too large for NATS (a 350,000-character request id copied into three metadata
/// fields) is parked in `dead_letters`, and everything after it still reaches the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_nats_cannot_take_is_parked_and_the_relay_goes_on() {
    use emporium_event_store::testing::append_stored;
    use emporium_event_store::{on_db, EventMetadata};
    let db = TestDatabase::create().await;
    let store = db.store(4).await;
    let nats = TestNats::connect().await;
    append_raw(store.db(), "before", 1, 3).await;
    let huge = "r".repeat(350_000);
    let meta = EventMetadata::for_request("k-1", huge.clone())
        .correlated_with(huge.clone())
        .caused_by(huge);
    append_stored(
        store.db(),
        "Counter",
        "huge",
        1,
        "Incremented",
        "1.0",
        &serde_json::json!({"Incremented": {"by": 1, "total": 1}}),
        &meta,
    )
    .await;
    append_raw(store.db(), "after", 1, 5).await;

    let mut relay = Relay::new(
        store.clone(),
        nats.client.clone(),
        RelayConfig::new(&nats.prefix),
    );
    relay.ensure_stream().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while relay
        .status()
        .position
        .load(std::sync::atomic::Ordering::Relaxed)
        < 9
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay moves past the big event"
        );
        relay
            .try_step()
            .await
            .expect("a step never fails on the big event");
    }
    let js = jetstream::new(nats.client.clone());
    let mut stream = js.get_stream(nats.names().stream()).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        8,
        "every event but the parked one is in the stream"
    );
    let parked: Vec<(i64, String)> = on_db!(store.db(), pool => {
        sqlx::query_as("SELECT position, reason FROM dead_letters WHERE consumer LIKE 'relay:%'")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0, 4, "the big event's position");
    assert!(parked[0].1.contains("max_payload"), "{}", parked[0].1);
}

/// A former leader that finishes a step late must not move the checkpoint back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_checkpoint_never_moves_backwards() {
    use emporium_event_store::on_db;
    let db = TestDatabase::create().await;
    let store = db.store(4).await;
    let nats = TestNats::connect().await;
    append_raw(store.db(), "c", 1, 100).await;
    let small = RelayConfig {
        batch: 10,
        ..RelayConfig::new(&nats.prefix)
    };
    let mut former = Relay::new(store.clone(), nats.client.clone(), small.clone());
    former.ensure_stream().await.unwrap();
    // The former leader publishes a first batch, then stalls.
    while former
        .status()
        .position
        .load(std::sync::atomic::Ordering::Relaxed)
        < 10
    {
        former.try_step().await.unwrap();
    }
    // The new leader publishes everything.
    let mut leader = Relay::new(
        store.clone(),
        nats.client.clone(),
        RelayConfig::new(&nats.prefix),
    );
    while leader
        .status()
        .position
        .load(std::sync::atomic::Ordering::Relaxed)
        < 100
    {
        leader.try_step().await.unwrap();
    }
    // The former leader wakes up and finishes a step from its stale checkpoint.
    former.try_step().await.unwrap();
    former.try_step().await.unwrap();
    let at: i64 = on_db!(store.db(), pool => {
        sqlx::query_scalar("SELECT position FROM relay_checkpoints")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(
        at, 100,
        "the checkpoint stays at the newest leader's position"
    );
}
