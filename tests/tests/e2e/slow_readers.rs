//! Slow export readers must not take the engine down for writers (issue 11): 32 clients
//! reading `/v1/events` as NDJSON at 1 byte/s over a 300,000-event log.

use std::time::{Duration, Instant};

use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 300,000 small events put straight into the log, stamped as they go in (a fresh database).
async fn seed(app: &TestApp, n: i64) {
    let emporium_event_store::Db::Postgres(pool) = app.store.db() else {
        unreachable!("a Postgres app")
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, global_position, feed_position)
         SELECT 'Counter', 'c-' || (i % 1000), i / 1000 + 1, 'Incremented', '1.0',
                jsonb_build_object('Incremented', jsonb_build_object('by', 1, 'total', i,
                                   'note', repeat('x', 150))),
                jsonb_build_object('actor', 'system:seed', 'request_id', gen_random_uuid(),
                                   'correlation_id', gen_random_uuid(),
                                   'causation_id', gen_random_uuid()),
                i, i
           FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("SELECT setval(pg_get_serial_sequence('events', 'global_position'), $1::bigint)")
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
}

/// Times `n` `receive` commands one after another; every one must succeed.
async fn time_commands(app: &TestApp, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = app.receive("wh-1", "SKU-1", 1).await;
        took.push(started.elapsed());
        assert_eq!(
            r.status, 200,
            "a command failed next to slow readers: {:?}",
            r.body
        );
    }
    took
}

/// Opens an NDJSON export and then reads one byte per second.
async fn slow_reader(addr: String) -> (String, usize) {
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /v1/events?format=ndjson HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {ADMIN_KEY}\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 12];
    conn.read_exact(&mut head).await.unwrap();
    let mut read = head.len();
    let mut byte = [0u8; 1];
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match conn.read(&mut byte).await {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&head).into_owned(), read),
            Ok(n) => read += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_slow_export_readers_do_not_slow_or_fail_commands() {
    let app = TestApp::start(Backend::Postgres, |b| {
        b.run_projections(false).run_checkout(false)
    })
    .await;
    seed(&app, 300_000).await;
    assert_eq!(app.create_warehouse("wh-1", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("SKU-1", "Thing", 250).await.status, 201);
    time_commands(&app, 5).await; // warm up
    let without = time_commands(&app, 20).await;

    let addr = app.base.trim_start_matches("http://").to_string();
    let readers: Vec<_> = (0..32)
        .map(|_| tokio::spawn(slow_reader(addr.clone())))
        .collect();
    // Long enough for every export to start and fill its socket buffers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let with = time_commands(&app, 20).await;
    for r in &readers {
        assert!(!r.is_finished(), "a slow reader's export was cut off");
    }
    for r in readers {
        r.abort();
    }
    let max = |d: &[Duration]| d.iter().max().copied().unwrap_or_default();
    eprintln!(
        "receive latency: without readers max {:?}, with 32 slow readers max {:?}",
        max(&without),
        max(&with)
    );
    assert!(
        max(&with) <= max(&without) + Duration::from_millis(100),
        "commands waited longer next to slow readers: {:?} vs {:?}",
        max(&with),
        max(&without)
    );
}
