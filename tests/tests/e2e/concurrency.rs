//! Stock under contention: many concurrent reservations against one stock item.

use std::sync::Arc;

use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand, StockItemError};
use emporium_domain::values::{OrderId, Quantity, Sku, WarehouseId};
use emporium_event_store::testing::{TestDataDir, TestDatabase};
use emporium_event_store::{CommandError, EventMetadata, Store};

async fn sixty_four_reservations_against_fifty_units(store: Store) {
    let w = WarehouseId::parse("wh-a").unwrap();
    let s = Sku::parse("HOT-1").unwrap();
    let id = stock_item_id(&w, &s);
    let meta = EventMetadata::system("test");
    store
        .execute::<StockItem>(
            &id,
            StockItemCommand::ReceiveStock {
                warehouse_id: w.clone(),
                sku: s.clone(),
                qty: Quantity::new(50).unwrap(),
            },
            &meta,
        )
        .await
        .unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, w, s, id, meta, barrier) = (
                store.clone(),
                w.clone(),
                s.clone(),
                id.clone(),
                meta.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .execute::<StockItem>(
                        &id,
                        StockItemCommand::ReserveStock {
                            warehouse_id: w,
                            sku: s,
                            order_id: OrderId::new(),
                            qty: Quantity::new(1).unwrap(),
                        },
                        &meta,
                    )
                    .await
            })
        })
        .collect();
    let (mut ok, mut insufficient, mut other) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(CommandError::Rejected(StockItemError::InsufficientStock { .. })) => {
                insufficient += 1
            }
            Err(e) => other.push(e.to_string()),
        }
    }
    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert_eq!(ok, 50);
    assert_eq!(insufficient, 14);

    // Replaying the stored events gives the same levels.
    let (item, version) = store.load::<StockItem>(&id).await.unwrap();
    assert_eq!(version, 51, "one receive, fifty reservations");
    assert_eq!(item.on_hand(), 50);
    assert_eq!(item.reserved(), 50);
    assert_eq!(item.available(), 0);
    assert_eq!(store.event_count().await.unwrap(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_never_oversells_under_64_concurrent_reservations() {
    let db = TestDatabase::create().await;
    sixty_four_reservations_against_fifty_units(db.store(32).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_never_oversells_under_64_concurrent_reservations() {
    let dir = TestDataDir::create();
    sixty_four_reservations_against_fifty_units(dir.store(8).await).await;
}
