//! NATS goes away for 20 s while commands keep arriving: every command is accepted, and once
//! NATS is back the stream holds every event exactly once.

use std::time::{Duration, Instant};

use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand};
use emporium_domain::values::{Quantity, Sku, WarehouseId};
use emporium_event_store::nats::NatsNames;
use emporium_event_store::relay::{Relay, RelayConfig};
use emporium_event_store::testing::{assert_stream_matches_store, NatsServer, TestDatabase};
use emporium_event_store::EventMetadata;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_twenty_second_nats_outage_loses_and_duplicates_nothing_and_commands_go_on() {
    let db = TestDatabase::create().await;
    let store = db.store(12).await;
    let mut server = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let prefix = "outage";
    let relay = Relay::new(store.clone(), client.clone(), RelayConfig::new(prefix));
    let status = relay.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let meta = EventMetadata::system("test");
                let wid = WarehouseId::parse("wh-1").unwrap();
                let started = Instant::now();
                let mut accepted = 0u64;
                while started.elapsed() < Duration::from_secs(27) {
                    let sku = Sku::parse(&format!("SKU-{w}-{}", accepted % 25)).unwrap();
                    store
                        .execute::<StockItem>(
                            &stock_item_id(&wid, &sku),
                            StockItemCommand::ReceiveStock {
                                warehouse_id: wid.clone(),
                                sku,
                                qty: Quantity::new(1).unwrap(),
                            },
                            &meta,
                        )
                        .await
                        .expect("commands are accepted while NATS is down");
                    accepted += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.stop();
    let during_from = store.event_count().await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during_to = store.event_count().await.unwrap();
    let lag_during = status.lag();
    server.restart();
    let mut accepted = 0;
    for w in writers {
        accepted += w.await.unwrap();
    }
    assert!(
        during_to - during_from > 200,
        "commands kept landing during the outage ({} while NATS was down)",
        during_to - during_from
    );
    assert_eq!(store.event_count().await.unwrap() as u64, accepted);
    println!("accepted {accepted} commands, relay lag during the outage reached {lag_during}");

    let js = async_nats::jetstream::new(client.clone());
    assert_stream_matches_store(&js, &NatsNames::new(prefix), &store).await;
    let _ = stop.send(());
    relay.await.unwrap();
}
