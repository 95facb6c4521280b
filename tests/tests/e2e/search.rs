//! Catalog search (issue 14): the same relevance on both backends, filters and facets
//! against brute force, keyset pages, and changes showing up in search.

use std::collections::BTreeSet;

use emporium_tests::{Backend, TestApp};
use serde_json::Value;

/// A query over the demo catalog and what must come first.
struct Case {
    query: &'static str,
    /// The first result is one of these.
    top: &'static [&'static str],
}

const fn case(query: &'static str, top: &'static [&'static str]) -> Case {
    Case { query, top }
}

/// The demo catalog (gateway/src/demo.rs): AUD-001.. audio, COM-011.. computing,
/// KIT-021.. kitchen, OUT-031.. outdoor, BOO-041.. books.
const CASES: &[Case] = &[
    case("q=hedphones", &["AUD-001", "AUD-004"]),
    case("q=earbud", &["AUD-002"]),
    case("q=earbuds", &["AUD-002"]),
    case("q=wireles%20hedphones", &["AUD-001"]),
    case("q=wireless%20headphones", &["AUD-001"]),
    case("q=KIT-021", &["KIT-021"]),
    case("q=kit-021", &["KIT-021"]),
    case("q=head", &["AUD-001", "AUD-004", "AUD-009", "OUT-035"]),
    case("q=headp", &["AUD-001", "AUD-004", "AUD-009"]),
    case("q=espresso", &["KIT-021"]),
    case("q=espreso", &["KIT-021"]),
    case("q=keybord", &["COM-011"]),
    case("q=mechanical%20keyboard", &["COM-011"]),
    case("q=blutooth%20speaker", &["AUD-003"]),
    case("q=speakers", &["AUD-003", "AUD-010"]),
    case("q=microphone", &["AUD-008"]),
    case("q=mic", &["AUD-008"]),
    case("q=coffee%20grinder", &["KIT-027"]),
    case("q=cofee", &["KIT-027"]),
    case("q=rust%20programming", &["BOO-042", "BOO-047"]),
    case("q=domain%20driven", &["BOO-043"]),
    case("q=databse", &["BOO-046"]),
    case("q=tent", &["OUT-032"]),
    case("q=sleeping%20bag", &["OUT-033"]),
    case("q=backpak", &["OUT-031"]),
    case("q=lamp", &["COM-020"]),
    case("q=ergonomic%20chair", &["COM-019"]),
    case("q=kettle", &["KIT-024"]),
    case("q=portable", &["AUD-005"]),
    case(
        "q=headphones&category=audio&sort=price_asc",
        &["AUD-001", "AUD-004", "AUD-009"],
    ),
    case("category=books&sort=title", &["BOO-046"]),
    case("q=camping%20stove", &["OUT-037"]),
];

fn skus(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["sku"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn demo_app(backend: Backend) -> TestApp {
    let app = TestApp::start(backend, |b| b.demo(true).run_checkout(false)).await;
    app.search_caught_up().await;
    app
}

/// Every case on one backend: (query, skus of the first page, total).
async fn run_cases(app: &TestApp) -> Vec<(String, Vec<String>, i64)> {
    let mut out = Vec::new();
    for c in CASES {
        let r = app.get(&format!("/v1/catalog/products?{}", c.query)).await;
        assert_eq!(r.status, 200, "{}: {:?}", c.query, r.body);
        let found = skus(&r.body);
        assert!(
            found.first().is_some_and(|s| c.top.contains(&s.as_str())),
            "{}: expected one of {:?} first, got {found:?}",
            c.query,
            c.top
        );
        out.push((
            c.query.to_string(),
            found,
            r.body["total"].as_i64().unwrap_or(-1),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relevance_is_the_same_on_both_backends() {
    let lite = demo_app(Backend::Sqlite).await;
    let on_sqlite = run_cases(&lite).await;
    drop(lite);
    let pg = demo_app(Backend::Postgres).await;
    let on_postgres = run_cases(&pg).await;
    assert!(CASES.len() >= 30);
    for (a, b) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(a, b, "the backends disagree");
    }
    // Nonsense finds nothing, and a typo'd word needs its edits: "hdphns" is 3 away.
    for q in ["xyzzy", "hdphns"] {
        let r = pg.get(&format!("/v1/catalog/products?q={q}")).await;
        assert_eq!(r.body["total"], 0, "{q}: {:?}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_facets_and_keyset_pages_agree_with_brute_force() {
    let app = demo_app(Backend::Sqlite).await;
    // Every listed product with its stock, from the inventory API (the source of truth).
    let all = app.get("/v1/catalog/products?limit=1000").await;
    assert_eq!(all.body["total"], 50);
    let items = all.body["items"].as_array().unwrap().clone();
    let in_dublin: BTreeSet<String> =
        items
            .iter()
            .filter(|i| {
                i["warehouses"].as_array().unwrap().iter().any(|w| {
                    w["warehouse_id"] == "wh-dublin" && w["available"].as_i64().unwrap() > 0
                })
            })
            .map(|i| i["sku"].as_str().unwrap().to_string())
            .collect();
    let r = app
        .get("/v1/catalog/products?warehouse=wh-dublin&limit=1000")
        .await;
    assert_eq!(
        skus(&r.body).into_iter().collect::<BTreeSet<_>>(),
        in_dublin
    );
    // The demo stocks product n in Dublin unless n % 3 == 2: 33 of 50.
    assert_eq!(in_dublin.len(), 33);

    // Pages of every sort concatenate to the whole order, without repeats or gaps.
    for sort in ["relevance", "price_asc", "price_desc", "newest", "title"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("/v1/catalog/products?sort={sort}&limit=7");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let r = app.get(&url).await;
            assert_eq!(r.status, 200, "{url}: {:?}", r.body);
            seen.extend(r.body["items"].as_array().unwrap().clone());
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let order: Vec<String> = seen
            .iter()
            .map(|i| i["sku"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(order.len(), 50, "{sort}: {order:?}");
        assert_eq!(order.iter().collect::<BTreeSet<_>>().len(), 50, "{sort}");
        let prices: Vec<i64> = seen
            .iter()
            .map(|i| i["price_minor"].as_i64().unwrap())
            .collect();
        let titles: Vec<String> = seen
            .iter()
            .map(|i| i["title"].as_str().unwrap().to_lowercase())
            .collect();
        match sort {
            "price_asc" => assert!(prices.windows(2).all(|w| w[0] <= w[1])),
            "price_desc" => assert!(prices.windows(2).all(|w| w[0] >= w[1])),
            "title" => assert!(titles.windows(2).all(|w| w[0] <= w[1])),
            // The demo creates BOO-050 last.
            "newest" => assert_eq!(order[0], "BOO-050"),
            _ => {}
        }
    }

    // A cursor of another sort, or not from this API, is refused.
    let r = app.get("/v1/catalog/products?sort=price_asc&limit=5").await;
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let wrong = app
        .get(&format!("/v1/catalog/products?sort=title&cursor={cursor}"))
        .await;
    assert_eq!(wrong.status, 422, "{:?}", wrong.body);
    let long = format!("/v1/catalog/products?warehouse={}", "w".repeat(101));
    assert_eq!(app.get(&long).await.status, 422);
    let long = format!("/v1/catalog/products?category={}", "c".repeat(101));
    assert_eq!(app.get(&long).await.status, 422);
}
