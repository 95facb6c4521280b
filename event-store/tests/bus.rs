//! The subscriber API on both transports: durable progress, redelivery on nak, dead letters
//! after max deliveries, and competing workers that never both handle one event.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use emporium_event_store::bus::{LocalSubscriber, NatsSubscriber, Subscriber, SubscriberConfig};
use emporium_event_store::relay::{Relay, RelayConfig};
use emporium_event_store::testing::{append_raw, TestDataDir, TestDatabase, TestNats};
use emporium_event_store::{on_db, Store};
use futures::StreamExt;

async fn next(sub: &mut dyn Subscriber) -> emporium_event_store::bus::Delivery {
    tokio::time::timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("a delivery arrives")
        .expect("no bus error")
}

/// The contract both transports keep, checked on one subscriber over events 1..=5:
/// event 1 is nak'd twice and then acked; event 2 is nak'd until it is dead-lettered
/// (max_deliver = 3); the others are acked at once. JetStream may interleave redeliveries
/// with later events, so only per-event attempts are checked, not their global order.
async fn ack_nak_and_dead_letter(sub: &mut dyn Subscriber) {
    let mut attempts: std::collections::BTreeMap<i64, Vec<u64>> = Default::default();
    let mut settled = HashSet::new();
    while settled.len() < 5 {
        let d = next(sub).await;
        let position = d.event.position;
        attempts.entry(position).or_default().push(d.attempt);
        match (position, d.attempt) {
            (1, a) if a < 3 => sub.nak(d, Some(Duration::from_millis(50))).await.unwrap(),
            (2, a) => {
                sub.nak(d, None).await.unwrap();
                if a == 3 {
                    settled.insert(position);
                }
            }
            _ => {
                sub.ack(d).await.unwrap();
                settled.insert(position);
            }
        }
    }
    assert_eq!(attempts[&1], vec![1, 2, 3], "redelivered after each nak");
    assert_eq!(attempts[&2], vec![1, 2, 3], "given up after max_deliver");
    for p in 3..=5 {
        assert_eq!(attempts[&p], vec![1]);
    }
    // Nothing more: the dead letter is not delivered again.
    let more = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(more.is_err(), "no further deliveries");
}

fn config() -> SubscriberConfig {
    SubscriberConfig {
        max_deliver: 3,
        ack_wait: Duration::from_secs(30),
        ..SubscriberConfig::new("worker")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_bus_redelivers_dead_letters_and_resumes_after_its_last_ack() {
    let dir = TestDataDir::create();
    let store = dir.store(4).await;
    append_raw(store.db(), "a", 1, 5).await;
    let mut sub = LocalSubscriber::open(store.clone(), config())
        .await
        .unwrap();
    ack_nak_and_dead_letter(&mut sub).await;
    drop(sub);

    let dead: i64 = on_db!(store.db(), pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters WHERE consumer = 'worker' AND position = 2")
            .fetch_one(pool).await.unwrap()
    });
    assert_eq!(dead, 1);
    // A new subscriber with the same name resumes after the last ack.
    append_raw(store.db(), "b", 1, 1).await;
    let mut again = LocalSubscriber::open(store.clone(), config())
        .await
        .unwrap();
    let d = next(&mut again).await;
    assert_eq!(d.event.position, 6, "resumes after the last settled event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_bus_filters_by_aggregate_type() {
    let dir = TestDataDir::create();
    let store = dir.store(4).await;
    append_raw(store.db(), "a", 1, 3).await;
    let mut sub = LocalSubscriber::open(
        store.clone(),
        SubscriberConfig {
            aggregate_type: Some("Other".into()),
            ..config()
        },
    )
    .await
    .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(
        waited.is_err(),
        "no raw event is delivered to an Other subscriber"
    );
}

async fn relayed(store: &Store, nats: &TestNats) -> tokio::task::JoinHandle<()> {
    let relay = Relay::new(
        store.clone(),
        nats.client.clone(),
        RelayConfig::new(&nats.prefix),
    );
    tokio::spawn(relay.run(std::future::pending()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_subscriber_redelivers_and_dead_letters() {
    let db = TestDatabase::create().await;
    let store = db.store(4).await;
    let nats = TestNats::connect().await;
    append_raw(store.db(), "a", 1, 5).await;
    let relay = relayed(&store, &nats).await;
    let mut sub = NatsSubscriber::connect(nats.client.clone(), nats.names(), config())
        .await
        .unwrap();
    ack_nak_and_dead_letter(&mut sub).await;

    let js = jetstream::new(nats.client.clone());
    let mut dlq = js.get_stream(nats.names().dlq_stream()).await.unwrap();
    assert_eq!(
        dlq.info().await.unwrap().state.messages,
        1,
        "one dead letter"
    );
    relay.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_jetstream_workers_share_the_events_without_overlap() {
    let db = TestDatabase::create().await;
    let store = db.store(4).await;
    let nats = TestNats::connect().await;
    for i in 0..20 {
        append_raw(store.db(), &format!("agg-{i}"), 1, 10).await;
    }
    let relay = relayed(&store, &nats).await;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (client, names) = (nats.client.clone(), nats.names());
            tokio::spawn(async move {
                let mut sub = NatsSubscriber::connect(client, names, config())
                    .await
                    .unwrap();
                let mut mine = Vec::new();
                while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await
                {
                    mine.push(d.event.position);
                    sub.ack(d).await.unwrap();
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut busy = 0;
    for w in workers {
        let mine = w.await.unwrap();
        busy += usize::from(!mine.is_empty());
        all.extend(mine);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200, "each event handled once");
    assert_eq!(unique.len(), 200);
    assert!(busy >= 2, "the work was shared");
    relay.abort();
    let _ = jetstream::new(nats.client.clone())
        .get_stream(nats.names().stream())
        .await
        .unwrap()
        .consumers()
        .count()
        .await;
}

/// The relay sets the stream's duplicate window from configuration; a subscriber joining
/// later must not reset it to its own default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_keeps_the_configured_duplicate_window() {
    let db = TestDatabase::create().await;
    let store = db.store(4).await;
    let nats = TestNats::connect().await;
    let relay = Relay::new(
        store.clone(),
        nats.client.clone(),
        RelayConfig {
            duplicate_window: Duration::from_secs(120),
            ..RelayConfig::new(&nats.prefix)
        },
    );
    relay.ensure_stream().await.unwrap();
    let _sub = NatsSubscriber::connect(nats.client.clone(), nats.names(), config())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats.client.clone());
    let mut stream = js.get_stream(nats.names().stream()).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.duplicate_window,
        Duration::from_secs(120)
    );
}
