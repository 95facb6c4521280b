//! Marketplace commerce (issue 16): promotion codes whose usage limits hold under a
//! thousand concurrent orders, discounts that add up exactly, and fraud review (hold,
//! approve, reject, time out) with the saga giving back stock and payment.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use emporium_event_store::{on_db, Db};
use emporium_sagas::{CheckoutConfig, FraudConfig};
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use serde_json::{json, Value};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(emporium_tests::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(emporium_tests::Backend::Sqlite).await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_code_limited_to_100_uses_is_used_exactly_100_times_by_1000_concurrent_orders,
    discounts_split_exactly_show_on_the_order_and_refuse_what_does_not_apply,
    a_held_order_waits_for_review_and_approval_confirms_it,
    rejection_and_the_review_timeout_release_stock_and_void_payment,
    the_rules_screen_scores_each_signal_from_a_long_history,
);

async fn stocked(app: &TestApp, products: &[(&str, i64, &str)]) {
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    for (sku, price, category) in products {
        let r = app
            .post(
                "/v1/products",
                json!({"sku": sku, "title": format!("Product {sku}"), "description": "",
                       "category": category, "price": {"amount_minor": price, "currency": "EUR"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(app.receive("wh-a", sku, 100_000).await.status, 200);
    }
}

fn order(customer: &str, lines: &[(&str, i64)], codes: &[&str]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(s, q)| json!({"sku": s, "qty": q}))
        .collect();
    json!({"customer_id": customer, "lines": lines, "shipping": {"region": "eu-west"},
           "payment": {"token": "tok_ok"}, "promo_codes": codes})
}

async fn redeemed_events(db: &Db, code: &str) -> i64 {
    let sql = db.sql(
        "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Promotion' AND aggregate_id = $1 \
         AND event_type = 'PromotionRedeemed'",
    );
    on_db!(db, pool => {
        sqlx::query_scalar::<_, i64>(&sql).bind(code).fetch_one(pool).await.unwrap()
    })
}

/// Sends `orders` from 32 concurrent clients; the replies' statuses and bodies.
async fn place_all(app: &TestApp, orders: Vec<Value>) -> Vec<(u16, Value)> {
    let orders = std::sync::Arc::new(tokio::sync::Mutex::new(orders));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (client, base, orders) = (app.client.clone(), app.base.clone(), orders.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let Some(body) = orders.lock().await.pop() else {
                        return out;
                    };
                    let r = client
                        .post(format!("{base}/v1/orders"))
                        .bearer_auth(ADMIN_KEY)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    out.push((status, r.json::<Value>().await.unwrap_or(Value::Null)));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    all
}

async fn a_code_limited_to_100_uses_is_used_exactly_100_times_by_1000_concurrent_orders(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    stocked(&app, &[("SKU-1", 1000, "audio")]).await;
    let made = app
        .post(
            "/v1/promotions",
            json!({"code": "hundred", "percent_off": 10, "max_uses": 100}),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["code"], "HUNDRED");

    let started = Instant::now();
    let replies = place_all(
        &app,
        (0..1000)
            .map(|i| order(&format!("c{i}"), &[("SKU-1", 1)], &["HUNDRED"]))
            .collect(),
    )
    .await;
    let placed: Vec<&Value> = replies
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    let mut refused: HashMap<String, usize> = HashMap::new();
    for (s, b) in &replies {
        if *s != 202 {
            *refused
                .entry(format!("{s} {}", b["code"].as_str().unwrap_or("?")))
                .or_default() += 1;
        }
    }
    println!(
        "1000 orders with a 100-use code in {:.1} s: {} placed, refused {refused:?}",
        started.elapsed().as_secs_f64(),
        placed.len()
    );
    assert_eq!(placed.len(), 100, "refused: {refused:?}");
    assert_eq!(
        refused.get("409 promotion_exhausted"),
        Some(&900),
        "{refused:?}"
    );
    // Every placed order carries the discount; the code counts exactly 100 uses.
    for p in &placed {
        let id = p["order_id"].as_str().unwrap();
        let o = app.get(&format!("/v1/orders/{id}")).await.body;
        assert_eq!(o["discount"]["amount_minor"], 100, "{o}");
        assert_eq!(o["total"]["amount_minor"], 900, "{o}");
        assert_eq!(o["promo_codes"], json!(["HUNDRED"]));
    }
    assert_eq!(redeemed_events(app.store.db(), "HUNDRED").await, 100);
    assert_eq!(app.get("/v1/promotions/hundred").await.body["uses"], 100);

    // Per customer: 10 customers each send 20 orders at once with a once-per-customer code;
    // exactly one each gets it.
    let made = app
        .post(
            "/v1/promotions",
            json!({"code": "ONCE-EACH", "amount_off": {"amount_minor": 50, "currency": "EUR"},
                   "max_uses_per_customer": 1}),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let replies = place_all(
        &app,
        (0..200)
            .map(|i| order(&format!("k{}", i % 10), &[("SKU-1", 1)], &["once-each"]))
            .collect(),
    )
    .await;
    let mut per_customer: HashMap<String, usize> = HashMap::new();
    for (s, b) in &replies {
        match s {
            202 => {
                let id = b["order_id"].as_str().unwrap();
                let o = app.get(&format!("/v1/orders/{id}")).await.body;
                assert_eq!(o["discount"]["amount_minor"], 50, "{o}");
                *per_customer
                    .entry(o["customer_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            409 => assert_eq!(b["code"], "promotion_customer_limit", "{b}"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(per_customer.len(), 10, "{per_customer:?}");
    assert!(per_customer.values().all(|n| *n == 1), "{per_customer:?}");
    assert_eq!(redeemed_events(app.store.db(), "ONCE-EACH").await, 10);
}

async fn discounts_split_exactly_show_on_the_order_and_refuse_what_does_not_apply(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    stocked(
        &app,
        &[
            ("A-1", 333, "audio"),
            ("B-1", 333, "audio"),
            ("C-1", 334, "books"),
        ],
    )
    .await;
    for body in [
        json!({"code": "TEN", "percent_off": 10}),
        json!({"code": "AUDIO5", "amount_off": {"amount_minor": 5, "currency": "EUR"},
               "scope": {"categories": ["audio"]}}),
        json!({"code": "BIGSPEND", "percent_off": 50,
               "min_order": {"amount_minor": 100000, "currency": "EUR"}}),
        json!({"code": "LATER", "percent_off": 5, "starts_at": "2999-01-01T00:00:00Z"}),
        json!({"code": "DOLLARS", "amount_off": {"amount_minor": 5, "currency": "USD"}}),
    ] {
        let r = app.post("/v1/promotions", body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    // 10 % of 1000 = 100 over 333/333/334 → 33/33/34; then 5 off the audio lines (266+266
    // left) → 3/2 (largest remainder, ties to the earlier line).
    let r = app
        .post(
            "/v1/orders",
            order(
                "c1",
                &[("A-1", 1), ("B-1", 1), ("C-1", 1)],
                &["ten", "AUDIO5"],
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["order_id"].as_str().unwrap();
    let o = app.get(&format!("/v1/orders/{id}")).await.body;
    let discounts: Vec<i64> = o["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["discount"]["amount_minor"].as_i64().unwrap())
        .collect();
    assert_eq!(discounts, [33 + 3, 33 + 2, 34], "{o}");
    assert_eq!(o["subtotal"]["amount_minor"], 1000);
    assert_eq!(o["discount"]["amount_minor"], 105);
    assert_eq!(o["total"]["amount_minor"], 895);
    assert_eq!(o["promo_codes"], json!(["TEN", "AUDIO5"]));

    // What does not apply refuses the order and leaves no order and no use behind.
    let before = app.event_count().await;
    for (codes, want) in [
        (vec!["BIGSPEND"], (409, "promotion_minimum")),
        (vec!["LATER"], (409, "promotion_not_active")),
        (vec!["DOLLARS"], (409, "promotion_wrong_currency")),
        (vec!["NO-SUCH"], (404, "?")),
        // The first code is given back when the second refuses.
        (vec!["TEN", "BIGSPEND"], (409, "promotion_minimum")),
    ] {
        let r = app
            .post("/v1/orders", order("c2", &[("A-1", 1)], &codes))
            .await;
        assert_eq!(
            (r.status, r.body["code"].as_str().unwrap_or("?")),
            want,
            "{codes:?}: {:?}",
            r.body
        );
    }
    assert_eq!(app.get("/v1/promotions/TEN").await.body["uses"], 1);
    let audio_only = app
        .post("/v1/orders", order("c3", &[("C-1", 1)], &["AUDIO5"]))
        .await;
    assert_eq!(audio_only.status, 409);
    assert_eq!(audio_only.body["code"], "promotion_not_applicable");
    // Only the TEN redemption and its release were written.
    assert_eq!(app.event_count().await, before + 2);

    // Bounds: codes are checked at the edge and nothing is written.
    let before = app.event_count().await;
    for bad in [
        json!(["A"]),
        json!(["x".repeat(33)]),
        json!(["has space"]),
        json!(["A1", "A2", "A3", "A4", "A5", "A6"]),
    ] {
        let mut body = order("c4", &[("A-1", 1)], &[]);
        body["promo_codes"] = bad.clone();
        let r = app.post("/v1/orders", body).await;
        assert_eq!(r.status, 422, "{bad}: {:?}", r.body);
    }
    for bad in [
        json!({"code": "BOTH", "percent_off": 5, "amount_off": {"amount_minor": 5, "currency": "EUR"}}),
        json!({"code": "NONE"}),
        json!({"code": "PCT", "percent_off": 101}),
        json!({"code": "PCT", "percent_off": 0}),
        json!({"code": "USES", "percent_off": 5, "max_uses": 0}),
        json!({"code": "USES", "percent_off": 5, "max_uses": 100_000_001}),
        json!({"code": "SCOPE", "percent_off": 5, "scope": {"skus": vec!["S"; 101]}}),
        json!({"code": "SCOPE", "percent_off": 5, "scope": {"merchants": vec!["m"; 101]}}),
        json!({"code": "SCOPE", "percent_off": 5, "scope": {"merchants": ["Not A Merchant!"]}}),
        json!({"code": "WHEN", "percent_off": 5, "starts_at": "yesterday"}),
        json!({"code": "EXTRA", "percent_off": 5, "surprise": true}),
    ] {
        let r = app.post("/v1/promotions", bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {:?}", r.body);
    }
    let r = app
        .post(
            "/v1/promotions",
            json!({"code": "NOBODYS", "percent_off": 5, "scope": {"merchants": ["nobody"]}}),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = app
        .post(
            "/v1/promotions",
            json!({"code": "ZERO", "amount_off": {"amount_minor": 0, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (409, json!("promotion_terms"))
    );
    let r = app
        .post(
            "/v1/promotions",
            json!({"code": "BACKWARDS", "percent_off": 5, "starts_at": "2030-01-02T00:00:00Z",
                   "ends_at": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (409, json!("promotion_terms"))
    );
    let r = app
        .post("/v1/promotions", json!({"code": "ten", "percent_off": 20}))
        .await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (409, json!("promotion_exists"))
    );
    assert_eq!(app.event_count().await, before);
}

fn review_config(threshold: u8, review_timeout: Duration) -> CheckoutConfig {
    CheckoutConfig {
        payment_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_millis(500),
        sweep_interval: Duration::from_millis(300),
        fraud: FraudConfig {
            threshold: Some(threshold),
            review_timeout,
            ..FraudConfig::default()
        },
        ..CheckoutConfig::default()
    }
}

async fn reserved(app: &TestApp, sku: &str) -> i64 {
    app.get(&format!("/v1/inventory/{sku}")).await.body["total"]["reserved"]
        .as_i64()
        .unwrap()
}

async fn sandbox(db: &Db, order: &str) -> Vec<String> {
    let sql = db.sql("SELECT outcome FROM sandbox_payments WHERE idempotency_key = $1");
    on_db!(db, pool => {
        sqlx::query_scalar(&sql).bind(order).fetch_all(pool).await.unwrap()
    })
}

async fn place(app: &TestApp, customer: &str, sku: &str) -> String {
    let r = app
        .post("/v1/orders", order(customer, &[(sku, 1)], &[]))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    r.body["order_id"].as_str().unwrap().to_string()
}

/// Waits until the order's checkout has finished (compensations included).
async fn checkout_finished(app: &TestApp, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (checkout, _) = app
            .store
            .load::<emporium_sagas::Checkout>(id)
            .await
            .unwrap();
        if checkout.finished().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "checkout of {id} never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_held_order_waits_for_review_and_approval_confirms_it(backend: Backend) {
    // A high value (40 points) from a new customer (15) reaches 50; a cheap first order (15)
    // does not.
    let app =
        TestApp::with_checkout(backend, review_config(50, Duration::from_secs(600)), None).await;
    stocked(&app, &[("TV-1", 600_000, "tv"), ("CABLE-1", 500, "tv")]).await;
    let cheap = place(&app, "c-cheap", "CABLE-1").await;
    app.wait_for_status(&cheap, "confirmed", Duration::from_secs(20))
        .await;

    let big = place(&app, "c-big", "TV-1").await;
    let o = app
        .wait_for_status(&big, "under_review", Duration::from_secs(20))
        .await;
    assert_eq!(o["review"]["score"], 55, "{o}");
    assert_eq!(o["review"]["decision"], "pending");
    assert_eq!(o["review"]["reasons"].as_array().unwrap().len(), 2, "{o}");
    assert_eq!(reserved(&app, "TV-1").await, 1, "stock stays reserved");
    assert!(
        sandbox(app.store.db(), &big).await.is_empty(),
        "no payment is asked for while under review"
    );
    // Sweeps come and go; the order keeps waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.get(&format!("/v1/orders/{big}")).await.body["status"],
        "under_review"
    );

    // A client cannot decide; an operator can, once.
    let client = app
        .key(emporium_gateway::keys::Role::Client, Some("c-big"))
        .await;
    let operator = app.key(emporium_gateway::keys::Role::Operator, None).await;
    let review = format!("/v1/orders/{big}/review");
    let r = app
        .send_as(
            Some(&client),
            reqwest::Method::POST,
            &review,
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .send_as(
            Some(&operator),
            reqwest::Method::POST,
            &review,
            Some(json!({"decision": "approve", "note": "called the customer"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let o = app
        .wait_for_status(&big, "confirmed", Duration::from_secs(20))
        .await;
    assert_eq!(o["review"]["decision"], "approved");
    assert_eq!(sandbox(app.store.db(), &big).await, ["approved"]);
    let again = app
        .send_as(
            Some(&operator),
            reqwest::Method::POST,
            &review,
            Some(json!({"decision": "reject"})),
        )
        .await;
    assert_eq!(
        (again.status, again.body["code"].clone()),
        (409, json!("illegal_transition"))
    );
    let bad = app
        .send_as(
            Some(&operator),
            reqwest::Method::POST,
            &review,
            Some(json!({"decision": "maybe"})),
        )
        .await;
    assert_eq!(bad.status, 422);

    // The decision is in the timeline with the reviewer's key as actor.
    let events = &app
        .timeline_with(&big, "OrderConfirmed", Duration::from_secs(20))
        .await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    let held = types
        .iter()
        .position(|t| *t == "OrderHeldForReview")
        .unwrap();
    let approved = types
        .iter()
        .position(|t| *t == "OrderReviewApproved")
        .unwrap();
    let confirmed = types.iter().position(|t| *t == "OrderConfirmed").unwrap();
    assert!(held < approved && approved < confirmed, "{types:?}");
    let actor = events[approved]["metadata"]["actor"]
        .as_str()
        .unwrap()
        .to_string();
    let keys = app.get("/v1/keys").await.body;
    let operator_id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "operator")
        .map(|k| k["key_id"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(actor, operator_id, "{:?}", events[approved]);
    assert_eq!(
        events[approved]["payload"]["OrderReviewApproved"]["note"],
        "called the customer"
    );
}

async fn rejection_and_the_review_timeout_release_stock_and_void_payment(backend: Backend) {
    let app =
        TestApp::with_checkout(backend, review_config(50, Duration::from_secs(3)), None).await;
    stocked(&app, &[("TV-1", 600_000, "tv")]).await;
    let promo = app
        .post(
            "/v1/promotions",
            json!({"code": "TV10", "percent_off": 10, "max_uses": 5}),
        )
        .await;
    assert_eq!(promo.status, 201);

    // Rejected by a reviewer.
    let r = app
        .post("/v1/orders", order("c-rej", &[("TV-1", 2)], &["TV10"]))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let rejected = r.body["order_id"].as_str().unwrap().to_string();
    app.wait_for_status(&rejected, "under_review", Duration::from_secs(20))
        .await;
    assert_eq!(reserved(&app, "TV-1").await, 2);
    assert_eq!(app.get("/v1/promotions/TV10").await.body["uses"], 1);
    let r = app
        .post(
            &format!("/v1/orders/{rejected}/review"),
            json!({"decision": "reject", "note": "card reported stolen"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "rejected");
    assert_eq!(
        r.body["reject_reason"],
        "rejected in fraud review: card reported stolen"
    );
    checkout_finished(&app, &rejected).await;
    assert_eq!(reserved(&app, "TV-1").await, 0, "stock given back");
    assert!(
        !sandbox(app.store.db(), &rejected)
            .await
            .contains(&"approved".to_string()),
        "no standing authorization"
    );
    assert_eq!(
        app.get("/v1/promotions/TV10").await.body["uses"],
        0,
        "the code's use is given back"
    );

    // Not decided in time: rejected by the saga's sweep.
    let started = Instant::now();
    let late = place(&app, "c-late", "TV-1").await;
    app.wait_for_status(&late, "under_review", Duration::from_secs(20))
        .await;
    assert_eq!(reserved(&app, "TV-1").await, 1);
    let o = app
        .wait_for_status(&late, "rejected", Duration::from_secs(30))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the review timeout was awaited"
    );
    assert_eq!(
        o["reject_reason"],
        "rejected in fraud review: the review was not decided in time"
    );
    checkout_finished(&app, &late).await;
    assert_eq!(reserved(&app, "TV-1").await, 0);
    assert!(sandbox(app.store.db(), &late).await.is_empty());
    let rejection = app
        .timeline_with(&late, "OrderRejected", Duration::from_secs(20))
        .await
        .iter()
        .find(|e| e["event_type"] == "OrderRejected")
        .cloned()
        .unwrap();
    assert_eq!(
        rejection["metadata"]["actor"], "system:fraud-review",
        "{rejection}"
    );
}

/// Each of the rules screen's signals, for a customer with a long history: a new customer,
/// none for a repeat customer in a region used before, a region never used (after 60
/// orders elsewhere), more than five orders in the window; and a re-screen of an order
/// answers as its first screen did.
async fn the_rules_screen_scores_each_signal_from_a_long_history(backend: Backend) {
    use emporium_domain::values::{CustomerId, Money, OrderId, Region};
    use emporium_sagas::fraud::ScreenFacts;
    use emporium_sagas::{FraudRules, FraudScreen, RulesScreen};
    let app = TestApp::spawn(backend).await;
    let screen = RulesScreen::new(
        app.store.db().clone(),
        FraudRules {
            // Orders older than the window are seeded below; only the last ones count.
            velocity_window: Duration::from_secs(600),
            ..FraudRules::default()
        },
    );
    let facts = |customer: &str, region: &str, order: OrderId| ScreenFacts {
        order_id: order,
        customer_id: CustomerId::parse(customer).unwrap(),
        total: Money::new(
            1_000,
            emporium_domain::values::Currency::parse("EUR").unwrap(),
        )
        .unwrap(),
        shipping_region: Region::parse(region).unwrap(),
    };
    let first = OrderId::new();
    let s = screen
        .screen(&facts("c-long", "eu-west", first))
        .await
        .unwrap();
    assert_eq!((s.score, s.reasons.len()), (15, 1), "{s:?}");
    assert!(s.reasons[0].contains("new customer"), "{s:?}");
    // 60 earlier orders in eu-west, placed long before the window.
    let sql = app.store.db().sql(
        "INSERT INTO fraud_screenings (order_id, customer_id, region, placed_at, score) \
         VALUES ($1, 'c-long', 'eu-west', $2, 0)",
    );
    for i in 0..60 {
        let id = OrderId::new().to_string();
        on_db!(app.store.db(), pool => {
            sqlx::query(&sql).bind(&id).bind(1_000 + i).execute(pool).await.unwrap().rows_affected()
        });
    }
    let s = screen
        .screen(&facts("c-long", "eu-west", OrderId::new()))
        .await
        .unwrap();
    assert_eq!(s.score, 0, "{s:?}");
    let s = screen
        .screen(&facts("c-long", "us-east", OrderId::new()))
        .await
        .unwrap();
    assert_eq!(s.score, 25, "{s:?}");
    assert!(s.reasons[0].contains("us-east"), "{s:?}");
    // In the window now: the first, the two above; two more keep it at five or fewer
    // earlier ones, the next is the sixth.
    for _ in 0..2 {
        let s = screen
            .screen(&facts("c-long", "eu-west", OrderId::new()))
            .await
            .unwrap();
        assert_eq!(s.score, 0, "{s:?}");
    }
    let sixth = OrderId::new();
    let s = screen
        .screen(&facts("c-long", "eu-west", sixth))
        .await
        .unwrap();
    assert_eq!(s.score, 30, "{s:?}");
    assert!(s.reasons[0].contains("5 or more orders"), "{s:?}");
    let again = screen
        .screen(&facts("c-long", "eu-west", sixth))
        .await
        .unwrap();
    assert_eq!(again, s, "a re-screen answers as the first did");
    // Another customer is new whatever c-long did.
    let s = screen
        .screen(&facts("c-other", "us-east", OrderId::new()))
        .await
        .unwrap();
    assert_eq!(s.score, 15, "{s:?}");
}

/// A merchant's webhook endpoint that refuses the first three deliveries of every
/// notification, recording every request it gets.
#[derive(Clone, Default)]
struct Endpoint {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

async fn endpoint(
    axum::extract::State(e): axum::extract::State<Endpoint>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = header("emporium-notification-id");
    let mut seen = e.seen.lock().unwrap();
    let tries = seen.iter().filter(|(i, _, _)| *i == id).count();
    seen.push((id, header("emporium-signature"), body));
    if tries < 3 {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        axum::http::StatusCode::NO_CONTENT
    }
}

/// `t=<secs>,v1=<hex>` checked with an HMAC computed here, independently of the engine.
fn signed_by(secret: &str, header: &str, body: &str) -> bool {
    use hmac::Mac;
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::decode(v1).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_that_fail_three_times_get_every_notification_signed_and_nats_gets_them_too() {
    let nats = emporium_event_store::testing::TestNats::connect().await;
    let names = emporium_event_store::nats::NatsNames::new(&nats.prefix);
    // Subscribed before anything happens: every notification is seen.
    let mut on_nats = nats
        .client
        .subscribe(names.notifications_wildcard())
        .await
        .unwrap();
    let hook = Endpoint::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/emporium", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/hooks/emporium", axum::routing::post(endpoint))
        .with_state(hook.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let fast = emporium_gateway::notify::NotifyConfig {
        base_backoff: Duration::from_millis(50),
        poll: Duration::from_millis(50),
        ..Default::default()
    };
    let app = TestApp::start(Backend::Postgres, |b| {
        b.checkout(review_config(101, Duration::from_secs(600)))
            .nats_client(nats.client.clone(), nats.prefix.clone())
            .notify(Some(fast))
    })
    .await;
    let made = app
        .post(
            "/v1/merchants",
            json!({"id": "acme", "name": "Acme Audio", "commission_bps": 1500, "webhook_url": url}),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let secret = made.body["webhook_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert!(app
        .get("/v1/merchants/acme")
        .await
        .body
        .get("webhook_secret")
        .is_none());
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    for (sku, merchant) in [("ACME-1", Some("acme")), ("HOUSE-1", None)] {
        let mut body = json!({"sku": sku, "title": "Thing", "description": "", "category": "audio",
                              "price": {"amount_minor": 1000, "currency": "EUR"}});
        if let Some(m) = merchant {
            body["merchant_id"] = json!(m);
        }
        let r = app.post("/v1/products", body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["merchant_id"], merchant.unwrap_or("house"));
        assert_eq!(app.receive("wh-a", sku, 100).await.status, 200);
    }
    let unknown = app
        .post(
            "/v1/products",
            json!({"sku": "X-1", "title": "T", "description": "", "category": "c",
                   "price": {"amount_minor": 1, "currency": "EUR"}, "merchant_id": "nobody"}),
        )
        .await;
    assert_eq!(unknown.status, 404);

    // Three Acme orders (one cancelled after confirmation) and one house-only order.
    let mut acme = Vec::new();
    for i in 0..3 {
        let id = place(&app, &format!("c{i}"), "ACME-1").await;
        app.wait_for_status(&id, "confirmed", Duration::from_secs(20))
            .await;
        acme.push(id);
    }
    let r = app
        .post(&format!("/v1/orders/{}/cancel", acme[2]), json!({}))
        .await;
    assert_eq!(r.status, 200);
    let house = place(&app, "c9", "HOUSE-1").await;
    app.wait_for_status(&house, "confirmed", Duration::from_secs(20))
        .await;

    // Acme's webhook: pending + confirmed for each order, cancelled for one: 7, each
    // delivered after three refusals, every request signed.
    let expected = 7;
    let deadline = Instant::now() + Duration::from_secs(60);
    let accepted = loop {
        let seen = hook.seen.lock().unwrap().clone();
        let mut tries: HashMap<String, usize> = HashMap::new();
        for (id, _, _) in &seen {
            *tries.entry(id.clone()).or_default() += 1;
        }
        if tries.len() == expected && tries.values().all(|n| *n >= 4) {
            break seen;
        }
        assert!(Instant::now() < deadline, "webhook got {tries:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (id, signature, body) in &accepted {
        assert!(signed_by(&secret, signature, body), "{id}: {signature}");
        assert!(!signed_by("whsec_wrong", signature, body));
    }
    let mut statuses: Vec<(String, String)> = accepted
        .iter()
        .map(|(_, _, b)| {
            let v: Value = serde_json::from_str(b).unwrap();
            (
                v["order_id"].as_str().unwrap().to_string(),
                v["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    statuses.sort();
    statuses.dedup();
    assert_eq!(statuses.len(), expected, "{statuses:?}");
    assert!(
        statuses.iter().all(|(o, _)| acme.contains(o)),
        "only Acme's orders: {statuses:?}"
    );
    assert!(statuses.contains(&(acme[2].clone(), "cancelled".to_string())));

    // NATS: every status change of every order (4 orders × pending, confirmed; 1 cancel),
    // on `<prefix>.notifications.order.<status>`.
    let mut got: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 9 && Instant::now() < deadline {
        use futures::StreamExt;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), on_nats.next()).await
        {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(
                m.subject.as_str(),
                names.notification_subject(&format!("order.{}", v["status"].as_str().unwrap()))
            );
            got.push((
                v["order_id"].as_str().unwrap().to_string(),
                v["status"].as_str().unwrap().to_string(),
            ));
        }
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 9, "{got:?}");
    assert!(got.contains(&(house.clone(), "confirmed".to_string())));
}

/// Acceptance 1 of issue 16: merchant B's key, sent at every route of the API aimed at
/// merchant A's products, stock, orders and merchant record, is refused (403 or 404) and
/// changes nothing; on an order with both, each merchant sees only its own lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merchant_key_never_reaches_another_merchants_products_stock_orders_or_lines() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    for m in ["m-a", "m-b"] {
        let r = app
            .post(
                "/v1/merchants",
                json!({"id": m, "name": format!("Merchant {m}"), "commission_bps": 1000}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    for (sku, merchant, price) in [
        ("A-1", Some("m-a"), 1000),
        ("B-1", Some("m-b"), 300),
        ("H-1", None, 50),
    ] {
        let mut body = json!({"sku": sku, "title": "Thing", "description": "", "category": "c",
                              "price": {"amount_minor": price, "currency": "EUR"}});
        if let Some(m) = merchant {
            body["merchant_id"] = json!(m);
        }
        assert_eq!(app.post("/v1/products", body).await.status, 201);
        assert_eq!(app.receive("wh-a", sku, 50).await.status, 200);
    }
    let place = |lines: Vec<(&'static str, i64)>| {
        let app = &app;
        async move {
            let r = app.post("/v1/orders", order("cust-1", &lines, &[])).await;
            assert_eq!(r.status, 202, "{:?}", r.body);
            r.body["order_id"].as_str().unwrap().to_string()
        }
    };
    let order_a = place(vec![("A-1", 1)]).await;
    let order_ab = place(vec![("A-1", 2), ("B-1", 1)]).await;
    let order_h = place(vec![("H-1", 1)]).await;
    let ka = app.merchant_key("m-a").await;
    let kb = app.merchant_key("m-b").await;

    // B at every route, aimed at A's things.
    let before = app.event_count().await;
    let mut allowed_for_b = 0;
    for route in app.routes.clone() {
        if route.access == emporium_gateway::auth::Access::Public {
            continue;
        }
        let mut path = route.path.clone();
        let id = if path.starts_with("/v1/orders") {
            order_a.as_str()
        } else if path.starts_with("/v1/merchants") {
            "m-a"
        } else if path.starts_with("/v1/warehouses") {
            "wh-a"
        } else {
            "x"
        };
        for (param, value) in [
            ("{sku}", "A-1"),
            ("{warehouse_id}", "wh-a"),
            ("{id}", id),
            ("{code}", "SOME-CODE"),
            ("{key_id}", "0123456789abcdef"),
        ] {
            path = path.replace(param, value);
        }
        let body = match (route.method.as_str(), route.path.as_str()) {
            ("POST", "/v1/products") => Some(json!({"sku": "A-2", "title": "T", "description": "",
                "category": "c", "price": {"amount_minor": 1, "currency": "EUR"}, "merchant_id": "m-a"})),
            ("PUT", "/v1/products/{sku}") => {
                Some(json!({"title": "Taken", "description": "", "category": "c"}))
            }
            ("PUT", "/v1/products/{sku}/price") => {
                Some(json!({"price": {"amount_minor": 1, "currency": "EUR"}}))
            }
            ("POST", "/v1/inventory/{warehouse_id}/{sku}/receive") => Some(json!({"qty": 5})),
            ("POST", "/v1/inventory/{warehouse_id}/{sku}/adjust") => {
                Some(json!({"delta": -5, "reason": "taken"}))
            }
            ("POST", "/v1/orders/{id}/cancel") => Some(json!({})),
            ("POST", "/v1/orders/{id}/review") => Some(json!({"decision": "reject"})),
            ("POST", "/v1/orders/{id}/shipments") => {
                Some(json!({"warehouse_id": "wh-a", "lines": [{"sku": "A-1", "qty": 1}]}))
            }
            (m, _) if m != "GET" => Some(json!({})),
            _ => None,
        };
        if route.access.allows(emporium_gateway::keys::Role::Merchant) {
            allowed_for_b += 1;
        }
        let r = if path.ends_with("/stream") {
            let resp = app
                .client
                .get(format!("{}{path}", app.base))
                .bearer_auth(&kb)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        } else {
            app.send_as(Some(&kb), route.method.clone(), &path, body)
                .await
                .status
        };
        assert!(
            r == 403 || r == 404,
            "{} {path} as merchant B: {r}",
            route.method
        );
    }
    assert!(
        allowed_for_b >= 9,
        "the walk reaches the routes merchants may use"
    );
    assert_eq!(
        app.event_count().await,
        before,
        "merchant B changed nothing"
    );
    let b_orders_h = app
        .send_as(
            Some(&kb),
            reqwest::Method::GET,
            &format!("/v1/orders/{order_h}"),
            None,
        )
        .await;
    assert_eq!(b_orders_h.status, 404);

    // Each merchant sees its own lines of the shared order, with its part's sums.
    let seen_by = |key: String| {
        let app = &app;
        let order_ab = order_ab.clone();
        async move {
            app.send_as(
                Some(&key),
                reqwest::Method::GET,
                &format!("/v1/orders/{order_ab}"),
                None,
            )
            .await
        }
    };
    let a = seen_by(ka.clone()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["lines"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["lines"][0]["sku"], "A-1");
    assert_eq!(a.body["total"]["amount_minor"], 2000);
    assert!(a.body["personal"].is_null());
    let b = seen_by(kb.clone()).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.body["lines"].as_array().unwrap().len(), 1);
    assert_eq!(b.body["lines"][0]["sku"], "B-1");
    assert_eq!(b.body["total"]["amount_minor"], 300);
    let full = app.get(&format!("/v1/orders/{order_ab}")).await;
    assert_eq!(full.body["total"]["amount_minor"], 2300);

    // A on its own things: allowed, and B's products stay out of reach.
    for (method, path, body, want) in [
        (
            reqwest::Method::GET,
            "/v1/products/A-1".to_string(),
            None,
            200,
        ),
        (
            reqwest::Method::PUT,
            "/v1/products/A-1/price".to_string(),
            Some(json!({"price": {"amount_minor": 1100, "currency": "EUR"}})),
            200,
        ),
        (
            reqwest::Method::POST,
            "/v1/inventory/wh-a/A-1/receive".to_string(),
            Some(json!({"qty": 5})),
            200,
        ),
        (
            reqwest::Method::GET,
            "/v1/inventory/A-1".to_string(),
            None,
            200,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/orders/{order_a}"),
            None,
            200,
        ),
        (
            reqwest::Method::GET,
            "/v1/merchants/m-a".to_string(),
            None,
            200,
        ),
        (
            reqwest::Method::POST,
            "/v1/products".to_string(),
            Some(json!({"sku": "A-2", "title": "T",
            "description": "", "category": "c", "price": {"amount_minor": 1, "currency": "EUR"}})),
            201,
        ),
        (
            reqwest::Method::GET,
            "/v1/products/B-1".to_string(),
            None,
            404,
        ),
        (
            reqwest::Method::GET,
            "/v1/products/H-1".to_string(),
            None,
            404,
        ),
        (
            reqwest::Method::GET,
            "/v1/catalog/products?q=thing".to_string(),
            None,
            403,
        ),
    ] {
        let r = app.send_as(Some(&ka), method.clone(), &path, body).await;
        assert_eq!(
            r.status, want,
            "{method} {path} as merchant A: {:?}",
            r.body
        );
    }
    assert_eq!(app.get("/v1/products/A-2").await.body["merchant_id"], "m-a");

    // Merchant keys over the API: bound to a registered merchant, and only merchant keys.
    for (body, want) in [
        (
            json!({"role": "merchant", "merchant_id": "m-a", "label": "shop"}),
            201,
        ),
        (json!({"role": "merchant", "merchant_id": "nobody"}), 404),
        (json!({"role": "merchant"}), 422),
        (json!({"role": "operator", "merchant_id": "m-a"}), 422),
    ] {
        let r = app.post("/v1/keys", body.clone()).await;
        assert_eq!(r.status, want, "{body}: {:?}", r.body);
        if want == 201 {
            assert_eq!(r.body["merchant_id"], "m-a");
            let key = r.body["key"].as_str().unwrap().to_string();
            let own = app
                .send_as(Some(&key), reqwest::Method::GET, "/v1/products/A-1", None)
                .await;
            assert_eq!(own.status, 200);
            let signin = app.console_sign_in(&key, None).await;
            assert_eq!(
                signin.status().as_u16(),
                403,
                "merchant keys cannot sign in to the console"
            );
        }
    }
}

/// Acceptance 2 of issue 16: an order with lines of two merchants has two fulfilment parts,
/// each shipped and captured on its own (a shipment never mixes them), and the per-merchant
/// analytics equal what the raw events say.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_merchants_in_one_order_ship_and_capture_their_own_parts_and_analytics_match_the_events(
) {
    let app = TestApp::with_checkout(
        Backend::Postgres,
        review_config(101, Duration::from_secs(600)),
        None,
    )
    .await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    for (m, bps) in [("m-a", 1_250), ("m-b", 333)] {
        let r = app
            .post(
                "/v1/merchants",
                json!({"id": m, "name": m, "commission_bps": bps}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    for (sku, merchant, price) in [
        ("A-1", Some("m-a"), 1_999),
        ("B-1", Some("m-b"), 777),
        ("H-1", None, 250),
    ] {
        let mut body = json!({"sku": sku, "title": "Thing", "description": "", "category": "c",
                              "price": {"amount_minor": price, "currency": "EUR"}});
        if let Some(m) = merchant {
            body["merchant_id"] = json!(m);
        }
        assert_eq!(app.post("/v1/products", body).await.status, 201);
        assert_eq!(app.receive("wh-a", sku, 500).await.status, 200);
    }
    let promo = app
        .post("/v1/promotions", json!({"code": "SEVEN", "percent_off": 7}))
        .await;
    assert_eq!(promo.status, 201);
    // Paid for by merchant A: only its lines, though the scope names no product.
    let promo = app
        .post(
            "/v1/promotions",
            json!({"code": "A-TWENTY", "percent_off": 20, "scope": {"merchants": ["m-a"]}}),
        )
        .await;
    assert_eq!(promo.status, 201, "{:?}", promo.body);
    assert_eq!(promo.body["scope"]["merchants"], json!(["m-a"]));

    let r = app
        .post(
            "/v1/orders",
            order("c1", &[("A-1", 3), ("B-1", 2)], &["SEVEN"]),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = r.body["order_id"].as_str().unwrap().to_string();
    let o = app
        .wait_for_status(&id, "confirmed", Duration::from_secs(20))
        .await;
    let parts = o["parts"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 2, "{o}");
    assert_eq!(
        (
            parts[0]["merchant_id"].clone(),
            parts[1]["merchant_id"].clone()
        ),
        (json!("m-a"), json!("m-b"))
    );
    let part_total = |i: usize| parts[i]["total"]["amount_minor"].as_i64().unwrap();
    assert_eq!(
        part_total(0) + part_total(1),
        o["total"]["amount_minor"].as_i64().unwrap()
    );

    // One shipment may not mix the parts.
    let mixed = app
        .post(
            &format!("/v1/orders/{id}/shipments"),
            json!({"warehouse_id": "wh-a", "lines": [{"sku": "A-1", "qty": 1}, {"sku": "B-1", "qty": 1}]}),
        )
        .await;
    assert_eq!(
        (mixed.status, mixed.body["code"].clone()),
        (409, json!("mixed_parts"))
    );
    // B's part ships first, alone: only it is captured and shown shipped.
    let b = app
        .post(
            &format!("/v1/orders/{id}/shipments"),
            json!({"warehouse_id": "wh-a", "lines": [{"sku": "B-1", "qty": 2}]}),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);
    let o = app.get(&format!("/v1/orders/{id}")).await.body;
    assert_eq!(o["parts"][1]["status"], "shipped", "{o}");
    assert_eq!(o["parts"][0]["status"], "confirmed");
    assert_eq!(
        o["parts"][1]["captured"]["amount_minor"].as_i64().unwrap(),
        part_total(1)
    );
    assert_eq!(o["parts"][0]["captured"]["amount_minor"], 0);
    let (c, p) = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = app.get(&format!("/v1/orders/{id}/payment")).await.body;
            let c = p["captured"]["amount_minor"].as_i64().unwrap_or(0);
            if c > 0 || Instant::now() > deadline {
                break (c, p);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(c, part_total(1), "B's part captured alone: {p}");
    // Then A's part, in two shipments.
    for qty in [1, 2] {
        let r = app
            .post(
                &format!("/v1/orders/{id}/shipments"),
                json!({"warehouse_id": "wh-a", "lines": [{"sku": "A-1", "qty": qty}]}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = app.get(&format!("/v1/orders/{id}/payment")).await.body;
        if p["captured"]["amount_minor"].as_i64() == o["total"]["amount_minor"].as_i64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "whole order captured: {p} vs {o}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = app.get(&format!("/v1/orders/{id}")).await.body;
    assert_eq!(o["status"], "shipped");
    assert_eq!(o["parts"][0]["status"], "shipped");
    assert_eq!(
        o["parts"][0]["captured"]["amount_minor"].as_i64().unwrap(),
        part_total(0)
    );

    // More orders: a house-only one, a cancelled one, a mixed one with the house.
    let house = app
        .post(
            "/v1/orders",
            order("c2", &[("H-1", 4), ("A-1", 1)], &["A-TWENTY"]),
        )
        .await;
    assert_eq!(house.status, 202, "{:?}", house.body);
    let shown = app
        .get(&format!(
            "/v1/orders/{}",
            house.body["order_id"].as_str().unwrap()
        ))
        .await
        .body;
    let line_discounts: Vec<(String, i64)> = shown["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_string(),
                l["discount"]["amount_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    // 20 % of A's 1999, rounded down; the house's line keeps its price.
    assert_eq!(
        line_discounts,
        [("H-1".to_string(), 0), ("A-1".to_string(), 399)],
        "{shown}"
    );
    let b_only = app
        .post("/v1/orders", order("c9", &[("B-1", 1)], &["A-TWENTY"]))
        .await;
    assert_eq!(
        (b_only.status, b_only.body["code"].clone()),
        (409, json!("promotion_not_applicable"))
    );
    let cancelled = app
        .post("/v1/orders", order("c3", &[("B-1", 5)], &[]))
        .await;
    for r in [&house, &cancelled] {
        assert_eq!(r.status, 202);
        app.wait_for_status(
            r.body["order_id"].as_str().unwrap(),
            "confirmed",
            Duration::from_secs(20),
        )
        .await;
    }
    let cid = cancelled.body["order_id"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/v1/orders/{cid}/cancel"), json!({}))
            .await
            .status,
        200
    );

    // From the raw events: per merchant, over confirmed and not cancelled orders, the lines
    // less discounts, and ⌊part × rate / 10,000⌋ per order.
    let mut rates: HashMap<String, i64> = HashMap::new();
    let mut parts_of: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut status: HashMap<String, &str> = HashMap::new();
    // Every stored event, once the cancellation's compensation has settled and the feed
    // covers them all (it trails open transactions).
    let stored = app.settled_event_count().await;
    let all = app.feed_until(stored).await;
    assert_eq!(all.len() as i64, stored);
    for e in &all {
        let p = &e["payload"];
        match e["event_type"].as_str().unwrap() {
            "MerchantRegistered" => {
                let m = &p["MerchantRegistered"];
                rates.insert(
                    m["merchant_id"].as_str().unwrap().into(),
                    m["commission_bps"].as_i64().unwrap(),
                );
            }
            "OrderPlaced" => {
                let o = &p["OrderPlaced"];
                let mut per: HashMap<String, i64> = HashMap::new();
                for l in o["lines"].as_array().unwrap() {
                    let m = l["merchant_id"].as_str().unwrap_or("house").to_string();
                    let net = l["line_total"]["amount_minor"].as_i64().unwrap()
                        - l["discount"]["amount_minor"].as_i64().unwrap_or(0);
                    *per.entry(m).or_default() += net;
                }
                parts_of.insert(e["aggregate_id"].as_str().unwrap().into(), per);
            }
            "OrderConfirmed" => {
                status.insert(e["aggregate_id"].as_str().unwrap().into(), "confirmed");
            }
            "OrderCancelled" | "OrderRejected" => {
                status.insert(e["aggregate_id"].as_str().unwrap().into(), "gone");
            }
            _ => {}
        }
    }
    let mut expected: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for (order, per) in &parts_of {
        if status.get(order) != Some(&"confirmed") {
            continue;
        }
        for (m, gross) in per {
            let commission = gross * rates.get(m).copied().unwrap_or(0) / 10_000;
            let e = expected.entry(m.clone()).or_default();
            e.0 += 1;
            e.1 += gross;
            e.2 += commission;
        }
    }
    assert_eq!(expected.len(), 3, "{expected:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let figures = app.get("/v1/analytics/merchants").await.body;
        let got: HashMap<String, (i64, i64, i64)> = figures
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(
                    f["net_payable_minor"].as_i64().unwrap(),
                    f["gross_sales_minor"].as_i64().unwrap()
                        - f["commission_minor"].as_i64().unwrap()
                );
                (
                    f["merchant_id"].as_str().unwrap().to_string(),
                    (
                        f["orders"].as_i64().unwrap(),
                        f["gross_sales_minor"].as_i64().unwrap(),
                        f["commission_minor"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "analytics {got:?} vs events {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
