//! Read models: exactly once across crashes, rebuilds that match the live projection,
//! catalog search with typos/filters/facets, and analytics equal to figures computed
//! independently from the raw events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use emporium_event_store::testing::{TestDataDir, TestDatabase};
use emporium_event_store::Store;
use emporium_projections::{dump, rebuild, runner, Projection, Runner};
use emporium_tests::script::Script;
use emporium_tests::{Backend, TestApp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()
}

/// A busy shop: products, stock in three warehouses, orders that are confirmed, rejected
/// or cancelled. At least `n` events.
fn busy_shop(n: usize, seed: u64) -> Script {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sc = Script::default();
    let categories = ["audio", "kitchen", "books", "outdoor"];
    for p in 0..300 {
        let sku = format!("P-{p}");
        sc.product(
            &sku,
            &format!("Product {p}"),
            categories[p % 4],
            500 + (p as i64 * 37) % 20_000,
            "EUR",
            t0(),
        );
        for w in ["w1", "w2", "w3"] {
            sc.receive(w, &sku, rng.random_range(1..100), t0());
        }
    }
    let mut minute = 0;
    while sc.events.len() < n {
        minute += 1;
        let at = t0() + chrono::Duration::minutes(minute);
        let sku = format!("P-{}", rng.random_range(0..300));
        let qty = rng.random_range(1..4);
        let price = 500 + rng.random_range(0..20_000);
        let (id, total) = sc.order(
            &format!("c{}", rng.random_range(0..50)),
            &[(&sku, qty, price)],
            "EUR",
            at,
        );
        let w = ["w1", "w2", "w3"][rng.random_range(0..3)];
        match rng.random_range(0..10) {
            1..=7 if sc.available(w, &sku) < qty => sc.reject(&id, at),
            0 => sc.reject(&id, at),
            1..=7 => {
                sc.reserve(w, &sku, &id, qty, at);
                sc.confirm(&id, &[(&sku, w, qty)], total, "EUR", at);
                if rng.random_range(0..8) == 0 {
                    sc.cancel(&id, "confirmed", at);
                }
            }
            _ => sc.price(&sku, price, price + 100, "EUR", at),
        }
    }
    sc
}

fn spawn_runners(store: &Store) -> Vec<tokio::task::JoinHandle<()>> {
    emporium_projections::all()
        .into_iter()
        .map(|p| tokio::spawn(Runner::new(store.clone(), p).run(std::future::pending())))
        .collect()
}

async fn caught_up(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let head = store.feed().head().await.unwrap();
        // The head trails commits while other transactions hold the horizon: wait for it
        // to cover every stored event first.
        let mut behind = head < store.event_count().await.unwrap();
        for p in emporium_projections::all() {
            let (_, pos) = runner::state(store.db(), p.name()).await.unwrap();
            behind |= pos < head;
        }
        if !behind {
            return;
        }
        assert!(Instant::now() < deadline, "projections did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rebuilds every projection from scratch into a new generation and compares it row by row
/// with the generation that was live.
async fn assert_live_equals_rebuild(store: &Store) {
    for p in emporium_projections::all() {
        if p.tables().is_empty() {
            // The notifications outbox is one table for all generations: a rebuild must
            // write nothing new into it (nothing would be sent twice).
            let outbox = || async {
                let sql = format!(
                    "SELECT COUNT(*) FROM {}",
                    emporium_projections::notifications::OUTBOX
                );
                let n: i64 = emporium_event_store::on_db!(store.db(), pool => {
                    sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap()
                });
                n
            };
            let before = outbox().await;
            assert!(before > 0, "{} has rows", p.name());
            rebuild(store, p.as_ref(), |_, _| {}).await.unwrap();
            assert_eq!(
                outbox().await,
                before,
                "{}: a rebuild adds no rows",
                p.name()
            );
            continue;
        }
        let (live_gen, _) = runner::state(store.db(), p.name()).await.unwrap();
        let live = dump(store.db(), p.as_ref(), live_gen).await.unwrap();
        let new_gen = rebuild(store, p.as_ref(), |_, _| {}).await.unwrap();
        assert_ne!(new_gen, live_gen);
        let rebuilt = dump(store.db(), p.as_ref(), new_gen).await.unwrap();
        assert!(!live.is_empty(), "{} has rows", p.name());
        assert_eq!(live.len(), rebuilt.len(), "{}: row counts", p.name());
        for (a, b) in live.iter().zip(&rebuilt) {
            assert_eq!(a, b, "{}: live and rebuilt rows differ", p.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_survive_five_runner_crashes_and_equal_a_rebuild() {
    let db = TestDatabase::create().await;
    let store = db.store(16).await;
    emporium_gateway::migrate::all(&store).await.unwrap();
    for p in emporium_projections::all() {
        runner::ensure(store.db(), p.as_ref()).await.unwrap();
    }
    let mut script = busy_shop(20_000, 7);
    let total = script.events.len();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut from = 0;
            while from < total {
                let to = (from + 100).min(total);
                script.append(store.db(), from, to).await;
                from = to;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut rng = StdRng::seed_from_u64(11);
    let mut runners = spawn_runners(&store);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..900))).await;
        for r in runners.drain(..) {
            r.abort();
            let _ = r.await;
        }
        runners = spawn_runners(&store);
    }
    writer.await.unwrap();
    assert!(store.event_count().await.unwrap() >= 20_000);
    caught_up(&store).await;
    for r in runners {
        r.abort();
    }
    assert_live_equals_rebuild(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_under_writes_matches_the_live_projection_and_reads_never_fail() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let store = app.store.clone();
    let mut script = busy_shop(6_000, 3);
    let n = script.events.len();
    script.append(store.db(), 0, n / 2).await;
    caught_up(&store).await;

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut from = n / 2;
            while from < n {
                let to = (from + 50).min(n);
                script.append(store.db(), from, to).await;
                from = to;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let reads = {
        let (client, base) = (app.client.clone(), app.base.clone());
        tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..400 {
                let r = client
                    .get(format!("{base}/v1/catalog/products?q=product&limit=5"))
                    .bearer_auth(emporium_tests::ADMIN_KEY)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "reads keep working during the rebuild");
                ok += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ok
        })
    };
    let catalog = emporium_projections::by_name("catalog").unwrap();
    let (before, _) = runner::state(store.db(), "catalog").await.unwrap();
    let gen = rebuild(&store, catalog.as_ref(), |_, _| {}).await.unwrap();
    assert_eq!(runner::state(store.db(), "catalog").await.unwrap().0, gen);
    assert_ne!(gen, before);
    writer.await.unwrap();
    assert_eq!(reads.await.unwrap(), 400);
    caught_up(&store).await;
    // The swapped-in generation, now kept live by the runner, equals a fresh rebuild.
    let live = dump(store.db(), catalog.as_ref(), gen).await.unwrap();
    let again = rebuild(&store, catalog.as_ref(), |_, _| {}).await.unwrap();
    assert_eq!(
        live,
        dump(store.db(), catalog.as_ref(), again).await.unwrap()
    );
}

async fn catalog_search_finds_typos_and_facets_agree(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut sc = Script::default();
    let mut rng = StdRng::seed_from_u64(5);
    let categories = ["audio", "kitchen", "books", "outdoor", "garden"];
    let mut products = Vec::new();
    sc.product("HEAD-1", "Wireless Headphones", "audio", 7999, "EUR", t0());
    sc.receive("w1", "HEAD-1", 3, t0());
    products.push(("HEAD-1".to_string(), "audio", 7999_i64, 3_i64));
    for p in 0..300 {
        let sku = format!("S-{p}");
        let category = categories[rng.random_range(0..5)];
        let price = rng.random_range(100..80_000);
        let stock = if rng.random_bool(0.6) {
            rng.random_range(1..20)
        } else {
            0
        };
        sc.product(
            &sku,
            &format!("Thing number {p}"),
            category,
            price,
            "EUR",
            t0(),
        );
        if stock > 0 {
            sc.receive("w1", &sku, stock, t0());
        }
        products.push((sku, category, price, stock));
    }
    sc.append_all(app.store.db()).await;
    caught_up(&app.store).await;
    app.search_caught_up().await;

    let found = app.get("/v1/catalog/products?q=wireles%20hedphones").await;
    assert_eq!(found.status, 200, "{:?}", found.body);
    assert_eq!(
        found.body["items"][0]["sku"], "HEAD-1",
        "typos are tolerated: {:?}",
        found.body
    );
    assert_eq!(found.body["items"][0]["warehouses"][0]["available"], 3);
    let none = app.get("/v1/catalog/products?q=espresso%20machine").await;
    assert_eq!(none.body["total"], 0);

    // Filters and facets against a brute-force count over the same data.
    for (category, min, max, in_stock) in [
        (None, None, None, false),
        (Some("audio"), None, None, false),
        (None, Some(1000), Some(20_000), false),
        (Some("books"), Some(5000), None, true),
        (None, None, Some(9_999), true),
    ] {
        let mut url = String::from("/v1/catalog/products?limit=1000");
        if let Some(c) = category {
            url.push_str(&format!("&category={c}"));
        }
        if let Some(m) = min {
            url.push_str(&format!("&min_price={m}"));
        }
        if let Some(m) = max {
            url.push_str(&format!("&max_price={m}"));
        }
        if in_stock {
            url.push_str("&in_stock=true");
        }
        let r = app.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {:?}", r.body);
        let expect: Vec<&(String, &str, i64, i64)> = products
            .iter()
            .filter(|p| category.is_none_or(|c| p.1 == c))
            .filter(|p| min.is_none_or(|m| p.2 >= m) && max.is_none_or(|m| p.2 <= m))
            .filter(|p| !in_stock || p.3 > 0)
            .collect();
        assert_eq!(r.body["total"], expect.len(), "{url}");
        assert_eq!(
            r.body["items"].as_array().unwrap().len(),
            expect.len(),
            "{url}"
        );
        let mut by_category: BTreeMap<String, i64> = BTreeMap::new();
        for p in &expect {
            *by_category.entry(p.1.to_string()).or_default() += 1;
        }
        let facet: BTreeMap<String, i64> =
            serde_json::from_value(r.body["facets"]["category"].clone()).unwrap();
        assert_eq!(facet, by_category, "{url}: category facet");
        for band in r.body["facets"]["price"].as_array().unwrap() {
            let lo = band["min_minor"].as_i64().unwrap();
            let hi = band["max_minor"].as_i64();
            let n = expect
                .iter()
                .filter(|p| p.2 >= lo && hi.is_none_or(|h| p.2 < h))
                .count();
            assert_eq!(band["count"], n, "{url}: price band from {lo}");
        }
    }
    // Sorting and paging: two pages of the price order concatenate to the full order.
    let p1 = app
        .get("/v1/catalog/products?sort=price_asc&limit=100")
        .await;
    let cursor = p1.body["next_cursor"].as_str().unwrap().to_string();
    let p2 = app
        .get(&format!(
            "/v1/catalog/products?sort=price_asc&limit=100&cursor={cursor}"
        ))
        .await;
    let prices: Vec<i64> = [p1, p2]
        .iter()
        .flat_map(|p| p.body["items"].as_array().unwrap().clone())
        .map(|i| i["price_minor"].as_i64().unwrap())
        .collect();
    assert_eq!(prices.len(), 200);
    assert!(prices.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog_search_finds_typos_and_facets_agree() {
    catalog_search_finds_typos_and_facets_agree(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catalog_search_finds_typos_and_facets_agree() {
    catalog_search_finds_typos_and_facets_agree(Backend::Sqlite).await;
}

async fn analytics_of_a_scripted_day_match_the_raw_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut sc = Script::default();
    let mut rng = StdRng::seed_from_u64(42);
    let day = t0();
    for p in 0..10 {
        sc.product(&format!("P{p}"), &format!("P {p}"), "c", 1000, "EUR", day);
        for w in ["w1", "w2"] {
            sc.receive(w, &format!("P{p}"), 1000, day);
        }
    }
    let start = sc.events.len();
    for n in 0..120 {
        let at = day + chrono::Duration::minutes(n * 11 + 7);
        let currency = if n % 5 == 0 { "USD" } else { "EUR" };
        let sku = format!("P{}", rng.random_range(0..10));
        let qty = rng.random_range(1..5);
        let price = rng.random_range(100..10_000);
        let (id, total) = sc.order("c", &[(&sku, qty, price)], currency, at);
        match rng.random_range(0..6) {
            0 => sc.reject(&id, at),
            1 => {
                sc.confirm(&id, &[(&sku, "w1", qty)], total, currency, at);
                sc.cancel(&id, "confirmed", at);
            }
            2 => {}
            _ => {
                let w = if rng.random_bool(0.7) { "w1" } else { "w2" };
                sc.confirm(&id, &[(&sku, w, qty)], total, currency, at);
            }
        }
    }
    // An order the next day, outside the range.
    let (late, late_total) = sc.order(
        "c",
        &[("P1", 1, 999)],
        "EUR",
        day + chrono::Duration::days(1),
    );
    sc.confirm(
        &late,
        &[("P1", "w1", 1)],
        late_total,
        "EUR",
        day + chrono::Duration::days(1),
    );
    let raw: Vec<_> = sc.events[start..].to_vec();
    sc.append_all(app.store.db()).await;
    caught_up(&app.store).await;

    // Independently, from the raw events: final status, totals and lines per order.
    #[derive(Default, Clone)]
    struct O {
        status: String,
        total: i64,
        currency: String,
        at: DateTime<Utc>,
        lines: Vec<(String, i64, i64)>,
        alloc: Vec<(String, i64)>,
        ever_confirmed: bool,
    }
    let mut orders: BTreeMap<String, O> = BTreeMap::new();
    for e in &raw {
        let (kind, b) = e.payload.as_object().unwrap().iter().next().unwrap();
        let o = orders.entry(e.aggregate_id.clone()).or_default();
        match kind.as_str() {
            "OrderPlaced" => {
                o.status = "pending".into();
                o.total = b["total"]["amount_minor"].as_i64().unwrap();
                o.currency = b["total"]["currency"].as_str().unwrap().into();
                o.at = e.at;
                for l in b["lines"].as_array().unwrap() {
                    o.lines.push((
                        l["sku"].as_str().unwrap().into(),
                        l["qty"].as_i64().unwrap(),
                        l["line_total"]["amount_minor"].as_i64().unwrap(),
                    ));
                }
            }
            "OrderConfirmed" => {
                o.status = "confirmed".into();
                o.ever_confirmed = true;
                for a in b["allocation"].as_array().unwrap() {
                    o.alloc.push((
                        a["warehouse_id"].as_str().unwrap().into(),
                        a["qty"].as_i64().unwrap(),
                    ));
                }
            }
            "OrderRejected" => o.status = "rejected".into(),
            "OrderCancelled" => o.status = "cancelled".into(),
            _ => {}
        }
    }
    let in_day: Vec<&O> = orders
        .values()
        .filter(|o| o.at < day + chrono::Duration::days(1))
        .collect();
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    let mut revenue: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut hourly: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut units: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut wh_lines: BTreeMap<String, i64> = BTreeMap::new();
    for o in &in_day {
        *by_status.entry(o.status.clone()).or_default() += 1;
        if o.status == "confirmed" {
            let r = revenue.entry(o.currency.clone()).or_default();
            r.0 += o.total;
            r.1 += 1;
            *hourly
                .entry((o.at.timestamp() / 3600, o.currency.clone()))
                .or_default() += o.total;
            for (sku, q, _) in &o.lines {
                *units.entry((sku.clone(), o.currency.clone())).or_default() += q;
            }
            for (w, _) in &o.alloc {
                *wh_lines.entry(w.clone()).or_default() += 1;
            }
        }
    }
    let range = "from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z";
    let s = app.get(&format!("/v1/analytics/summary?{range}")).await;
    assert_eq!(s.status, 200, "{:?}", s.body);
    let got: BTreeMap<String, i64> =
        serde_json::from_value(s.body["orders_by_status"].clone()).unwrap();
    assert_eq!(got, by_status);
    assert_eq!(s.body["orders"], in_day.len());
    for (cur, (sum, n)) in &revenue {
        assert_eq!(s.body["revenue_by_currency"][cur], *sum, "revenue {cur}");
        assert_eq!(
            s.body["average_order_value"][cur],
            (2 * sum + n) / (2 * n),
            "AOV {cur}"
        );
    }
    let hours: BTreeMap<(i64, String), i64> = s.body["revenue_by_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let start: DateTime<Utc> = serde_json::from_value(b["start"].clone()).unwrap();
            (
                (
                    start.timestamp() / 3600,
                    b["currency"].as_str().unwrap().to_string(),
                ),
                b["revenue_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(hours, hourly);

    let f = app.get(&format!("/v1/analytics/funnel?{range}")).await;
    assert_eq!(f.body["placed"], in_day.len());
    assert_eq!(
        f.body["confirmed"],
        by_status.get("confirmed").copied().unwrap_or(0)
    );
    assert_eq!(
        f.body["cancelled"],
        by_status.get("cancelled").copied().unwrap_or(0)
    );
    assert_eq!(
        f.body["rejected"],
        by_status.get("rejected").copied().unwrap_or(0)
    );

    let top = app
        .get(&format!("/v1/analytics/top-products?{range}&limit=100"))
        .await;
    let got_units: BTreeMap<(String, String), i64> = top
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                (
                    t["sku"].as_str().unwrap().to_string(),
                    t["currency"].as_str().unwrap().to_string(),
                ),
                t["units"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got_units, units);
    let first = top.body[0]["units"].as_i64().unwrap();
    assert_eq!(first, *units.values().max().unwrap(), "ranked by units");

    let w = app.get(&format!("/v1/analytics/warehouses?{range}")).await;
    let total_lines: i64 = wh_lines.values().sum();
    for row in w.body.as_array().unwrap() {
        let id = row["warehouse_id"].as_str().unwrap();
        let lines = wh_lines.get(id).copied().unwrap_or(0);
        assert_eq!(row["lines_shipped"], lines, "{id}");
        let share = row["share_of_lines"].as_f64().unwrap();
        assert!((share - lines as f64 / total_lines as f64).abs() < 1e-9);
    }
    let all_time: Value = app.get("/v1/analytics/funnel").await.body;
    assert_eq!(
        all_time["placed"],
        in_day.len() + 1,
        "the next day's order counts all-time"
    );

    // The console overview's own reads answer what the range routes answer.
    use emporium_projections::analytics;
    let db = app.store.db();
    let (gen, _) = emporium_projections::runner::state(db, "analytics")
        .await
        .unwrap();
    let from: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
    let ranged =
        analytics::top_products(db, gen, analytics::Range::new(Some(from), None), false, 100)
            .await
            .unwrap();
    let since = analytics::top_products_since(db, gen, from.timestamp_millis(), 100)
        .await
        .unwrap();
    assert!(!since.is_empty());
    assert_eq!(since, ranged);
    let glance = analytics::glance(db, gen, from.timestamp_millis())
        .await
        .unwrap();
    let summary = app.get("/v1/analytics/summary").await.body;
    assert_eq!(glance.orders, summary["orders"].as_i64().unwrap());
    let revenue: BTreeMap<String, i64> =
        serde_json::from_value(summary["revenue_by_currency"].clone()).unwrap();
    assert_eq!(glance.revenue_by_currency, revenue);
    let funnel = analytics::funnel(db, gen, analytics::Range::new(Some(from), None))
        .await
        .unwrap();
    assert_eq!(
        glance.ever_confirmed,
        (funnel.confirmation_rate * funnel.placed as f64).round() as i64
    );
    assert_eq!(
        glance.by_status.get("confirmed").copied().unwrap_or(0),
        funnel.confirmed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_analytics_of_a_scripted_day_match_the_raw_events() {
    analytics_of_a_scripted_day_match_the_raw_events(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_analytics_of_a_scripted_day_match_the_raw_events() {
    analytics_of_a_scripted_day_match_the_raw_events(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runner_crash_and_rebuild_agree() {
    let dir = TestDataDir::create();
    let store = dir.store(8).await;
    emporium_gateway::migrate::all(&store).await.unwrap();
    let mut script = busy_shop(3_000, 9);
    let runners = spawn_runners(&store);
    script.append_all(store.db()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for r in runners {
        r.abort();
    }
    let runners = spawn_runners(&store);
    caught_up(&store).await;
    for r in runners {
        r.abort();
    }
    assert_live_equals_rebuild(&store).await;
    let _unused: Option<Arc<dyn Projection>> = None;
}
