//! Bulk writes for benchmarks: rows put straight into the events table (bypassing
//! aggregates) so a benchmark can start from millions of events in seconds. Never used by
//! the engine itself. It lives here because the events table is this crate's.

use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// The bench's rows: orders going through four events each, with ~200-byte payloads and the
/// metadata every command writes. Positions are stamped as the rows go in: a fresh database
/// has no concurrent writers, so `global_position` order is commit order.
const SYNTHETIC_ORDERS_SQL: &str = r#"
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, global_position, feed_position)
SELECT 'Order',
       'order-' || ((i - 1) / 4),
       (i - 1) % 4 + 1,
       t.event_type,
       '1.0',
       jsonb_build_object(t.event_type, jsonb_build_object(
           'order_id', md5(((i - 1) / 4)::text)::uuid,
           'customer_id', 'c-' || (i % 5000),
           'lines', jsonb_build_array(jsonb_build_object(
               'sku', 'SKU-' || lpad((i % 1000)::text, 5, '0'),
               'qty', 1 + i % 5,
               'unit_price_minor', 100 + (i * 7) % 10000)),
           'currency', 'EUR',
           'total_minor', (1 + i % 5) * (100 + (i * 7) % 10000),
           'shipping_region', 'eu-west')),
       jsonb_build_object('actor', 'system:bench',
                          'request_id', gen_random_uuid(),
                          'correlation_id', gen_random_uuid(),
                          'causation_id', gen_random_uuid()),
       i,
       i
  FROM generate_series($1::bigint, $2::bigint) AS i,
       LATERAL (SELECT (ARRAY['OrderPlaced', 'OrderConfirmed', 'OrderRejected',
                              'OrderCancelled'])[(i - 1) % 4 + 1] AS event_type) AS t
"#;

/// Fills positions `from..=to` with synthetic order events (four per order, ~200-byte
/// payloads, the metadata every command writes), stamped as they go in: only for a fresh
/// database without concurrent writers.
pub async fn synthetic_orders(pool: &PgPool, from: i64, to: i64) -> Result<(), StoreError> {
    sqlx::query(SYNTHETIC_ORDERS_SQL)
        .bind(from)
        .bind(to)
        .execute(pool)
        .await?;
    Ok(())
}

/// The synthetic catalog of `bench catalog`, as a SELECT list over `g` (finish it with
/// `FROM generate_series(..) g`): product `g`'s SKU, title, category, price, and a stock of
/// `qty` in warehouse `wh-0<g % 3>` (none when `g % 3 = 0`).
pub const SYNTHETIC_PRODUCTS: &str = "SELECT g, 'SKU-' || lpad(g::text, 7, '0') AS sku,
       (ARRAY['Wireless','Portable','Smart','Compact','Premium','Classic','Ergonomic','Outdoor',
              'Digital','Electric','Foldable','Rugged','Vintage','Modern','Silent'])[1 + g % 15]
       || ' ' ||
       (ARRAY['Headphones','Speaker','Keyboard','Mouse','Lamp','Kettle','Backpack','Tent','Chair',
              'Monitor','Blender','Toaster','Camera','Watch','Drill','Grinder','Router','Charger',
              'Jacket','Bottle'])[1 + (g / 15) % 20]
       || ' ' || (g % 997) AS title,
       (ARRAY['audio','computing','kitchen','outdoor','home','tools','apparel'])[1 + g % 7] AS category,
       100 + (g * 7919) % 99900 AS price,
       (g % 3) * 5 AS qty";

/// Events for synthetic products `from..=to` of `total` (see [`SYNTHETIC_PRODUCTS`]): a
/// `ProductCreated` at position `g`, and its `StockReceived` at `total + g`. Only for a fresh
/// database without concurrent writers.
pub async fn synthetic_products(
    pool: &PgPool,
    from: i64,
    to: i64,
    total: i64,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "WITH p AS ({SYNTHETIC_PRODUCTS} FROM generate_series($1::bigint, $2::bigint) g)
         INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload, metadata, feed_position)
         SELECT 'Product', sku, 1, 'ProductCreated', '1.0',
                jsonb_build_object('ProductCreated', jsonb_build_object(
                    'sku', sku, 'title', title,
                    'description', 'A ' || title || ' for everyday use',
                    'category', category,
                    'price', jsonb_build_object('amount_minor', price, 'currency', 'EUR'))),
                jsonb_build_object('actor', 'system:bench'), g
           FROM p
         UNION ALL
         SELECT 'StockItem', 'wh-0' || (g % 3) || ':' || sku, 1, 'StockReceived', '1.0',
                jsonb_build_object('StockReceived', jsonb_build_object(
                    'warehouse_id', 'wh-0' || (g % 3), 'sku', sku, 'qty', qty,
                    'on_hand', qty, 'reserved', 0, 'available', qty)),
                jsonb_build_object('actor', 'system:bench'), $3 + g
           FROM p WHERE qty > 0"
    ))
    .bind(from)
    .bind(to)
    .bind(total)
    .execute(pool)
    .await?;
    Ok(())
}

/// The highest feed position stamped (0 when none): a cheap poll of the head for benchmarks
/// that sample it often.
pub async fn highest_position(pool: &PgPool) -> Result<i64, StoreError> {
    let head: Option<i64> = sqlx::query_scalar("SELECT MAX(feed_position) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(head.unwrap_or(0))
}

/// Average payload and metadata sizes, as text, in bytes.
pub async fn average_sizes(pool: &PgPool) -> Result<(i64, i64), StoreError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(SUM(octet_length(payload::text)), 0)::bigint / GREATEST(COUNT(*), 1), \
                COALESCE(SUM(octet_length(metadata::text)), 0)::bigint / GREATEST(COUNT(*), 1) \
           FROM events",
    )
    .fetch_one(pool)
    .await?)
}

/// `VACUUM ANALYZE events`, so plans see the filled table.
pub async fn vacuum_analyze(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::raw_sql("VACUUM ANALYZE events").execute(pool).await?;
    Ok(())
}

/// Copies every event into `table`, a postgres-es events table (json columns), so plain
/// cqrs-es starts from the same state.
pub async fn copy_to_postgres_es_table(pool: &PgPool, table: &str) -> Result<(), StoreError> {
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::Config(format!("bad table name {table}")));
    }
    sqlx::query(&format!(
        "INSERT INTO {table} SELECT aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload::json, metadata::json FROM events"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// Appends `(aggregate_type, aggregate_id, sequence, event_type, payload)` rows at version
/// 1.0 with `metadata`, in one statement.
pub async fn append_rows(
    pool: &PgPool,
    rows: &[(String, String, i64, String, serde_json::Value)],
    metadata: &serde_json::Value,
) -> Result<(), StoreError> {
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
    );
    q.push_values(rows.iter(), |mut b, (t, id, seq, et, payload)| {
        b.push_bind(t)
            .push_bind(id)
            .push_bind(seq)
            .push_bind(et)
            .push_bind("1.0")
            .push_bind(payload)
            .push_bind(metadata);
    });
    q.build().execute(pool).await?;
    Ok(())
}

/// The baseline tables of `emporium-bench commands`: `bench_events` shaped like `events`
/// (for the plain INSERT baselines) and postgres-es's own `plain_events`/`plain_snapshots`.
pub async fn create_baseline_tables(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::raw_sql(include_str!("../sql/bench_tables.sql"))
        .execute(pool)
        .await?;
    Ok(())
}

/// History for a hot stock item: `count` events after sequence `after` that reserve one unit
/// for an order and release it again, alternately, with the levels each would announce
/// (`on_hand` units, 1 or 0 reserved). Ends with nothing reserved when `count` is even. Lets a
/// benchmark measure commands on items with a long past.
///
/// The rows are written as the engine's own appends would leave them: stamped with their
/// feed positions at insert (under the sequencer's lock, so the feed stays gap-free) and
/// sealed on the stream's chain. Rows left for the sequencer to stamp would each be updated
/// once more, and until a vacuum every feed read would walk past their dead index entries: a
/// cost of bulk loading around the engine, not of a long history.
pub async fn prior_reservations(
    pool: &PgPool,
    warehouse_id: &str,
    sku: &str,
    on_hand: i64,
    after: i64,
    count: i64,
) -> Result<(), StoreError> {
    const CHUNK: i64 = 5_000;
    let id = format!("{warehouse_id}:{sku}");
    let mut tx = crate::store::begin_postgres(pool).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::feed::SEQUENCER_LOCK)
        .execute(&mut *tx)
        .await?;
    let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(feed_position), 0) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    let prev: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT chain_hash FROM events WHERE aggregate_type = 'StockItem' \
           AND aggregate_id = $1 AND sequence = $2",
    )
    .bind(&id)
    .bind(after)
    .fetch_optional(&mut *tx)
    .await?;
    let mut prev: [u8; 32] = match prev.flatten() {
        Some(h) => h
            .try_into()
            .map_err(|_| StoreError::Decode("a seal is not 32 bytes".into()))?,
        None if after == 0 => [0; 32],
        None => return Err(StoreError::Decode(format!("{id}@{after} is not sealed"))),
    };
    let now = chrono::Utc::now();
    let micros = now.timestamp_micros();
    let recorded_at = chrono::DateTime::from_timestamp_micros(micros).unwrap_or(now);
    let metadata = serde_json::json!({"actor": "system:bench", "request_id": "seed",
        "correlation_id": "seed", "causation_id": "seed"});
    let canonical_metadata = crate::audit::canonical_json(&metadata);
    let mut i = 1;
    while i <= count {
        let last = (i + CHUNK - 1).min(count);
        let (mut seqs, mut etypes, mut payloads, mut ids, mut positions, mut seals) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for n in i..=last {
            let event_type = if n % 2 == 1 {
                "StockReserved"
            } else {
                "StockReservationReleased"
            };
            let order = Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("{id}:{}", (n + 1) / 2).as_bytes(),
            );
            let payload = serde_json::json!({ event_type: {
                "warehouse_id": warehouse_id, "sku": sku, "order_id": order, "qty": 1,
                "on_hand": on_hand, "reserved": n % 2, "available": on_hand - n % 2 }});
            let event_id = Uuid::now_v7();
            let position = base + n;
            let canonical = crate::audit::canonical(
                "StockItem",
                &id,
                after + n,
                event_type,
                "1.0",
                &event_id.to_string(),
                micros,
                &crate::audit::canonical_json(&payload),
                &canonical_metadata,
            );
            prev = crate::audit::seal(&prev, position, canonical.as_bytes());
            seqs.push(after + n);
            etypes.push(event_type);
            payloads.push(payload);
            ids.push(event_id);
            positions.push(position);
            seals.push(prev.to_vec());
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                                 event_version, payload, metadata, event_id, recorded_at, \
                                 feed_position, chain_hash) \
             SELECT 'StockItem', $1, u.s, u.t, '1.0', u.p, $2, u.e, $3, u.f, u.h \
               FROM UNNEST($4::bigint[], $5::text[], $6::jsonb[], $7::uuid[], $8::bigint[], \
                           $9::bytea[]) AS u(s, t, p, e, f, h)",
        )
        .bind(&id)
        .bind(&metadata)
        .bind(recorded_at)
        .bind(&seqs)
        .bind(&etypes)
        .bind(&payloads)
        .bind(&ids)
        .bind(&positions)
        .bind(&seals)
        .execute(&mut *tx)
        .await?;
        i = last + 1;
    }
    tx.commit().await?;
    Ok(())
}

/// Copies the events at `positions` (one order's whole story: its own stream, its payment,
/// its checkout and the stock reservations made for it) once per id in `ids`, the template
/// order's id `template` replaced by the copy's id in aggregate ids and payloads. Streams
/// that are not the order's own (stock items) become streams of their own per copy
/// (`<id>~<copy id>`), so copies never share a stream or interleave with the template's.
/// Copy `n` (1-based) takes positions `first + (n - 1) * positions.len()` onward, in the
/// template's order. Rows carry no seal (like any row written around the engine).
pub async fn copy_order_events(
    pool: &PgPool,
    template: &str,
    positions: &[i64],
    ids: &[String],
    first: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, feed_position)
         SELECT e.aggregate_type,
                CASE WHEN strpos(e.aggregate_id, $1) > 0 THEN replace(e.aggregate_id, $1, c.id)
                     ELSE e.aggregate_id || '~' || c.id END,
                e.sequence, e.event_type, e.event_version,
                replace(e.payload::text, $1, c.id)::jsonb,
                e.metadata,
                $4 + (c.n - 1) * cardinality($2::bigint[]) + t.j - 1
           FROM unnest($3::text[]) WITH ORDINALITY AS c(id, n)
          CROSS JOIN unnest($2::bigint[]) WITH ORDINALITY AS t(p, j)
           JOIN events e ON e.feed_position = t.p",
    )
    .bind(template)
    .bind(positions)
    .bind(ids)
    .bind(first)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Reads one aggregate's events the plainest way (one indexed SELECT of the payloads), the
/// floor a benchmark compares the engine's reads with.
pub async fn read_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<serde_json::Value>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2
          ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?)
}

/// Reads the events at `positions` the plainest way (one SELECT by feed position), the floor
/// a benchmark compares timeline reads with.
pub async fn read_positions_plain(
    pool: &PgPool,
    positions: &[i64],
) -> Result<Vec<(i64, String, serde_json::Value, serde_json::Value)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT feed_position, event_type, payload, metadata FROM events
          WHERE feed_position = ANY($1) ORDER BY feed_position",
    )
    .bind(positions)
    .fetch_all(pool)
    .await?)
}
