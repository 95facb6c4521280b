//! Erasable personal data (issue 13, acceptance 6): a customer's name, e-mail and address
//! reach the log only encrypted; after `DELETE /v1/customers/{id}/personal-data` no route,
//! export format, projection table or NATS message holds them, and the log still verifies.

use std::time::Duration;

use emporium_event_store::testing::TestNats;
use emporium_event_store::Db;
use emporium_gateway::keys::Role;
use emporium_sagas::CheckoutConfig;
use emporium_tests::{Backend, Reply, TestApp};
use serde_json::{json, Value};

const NAME: &str = "Zelda Quixote-Marlowe";
const EMAIL: &str = "zelda.qm@example.org";
const STREET: &str = "17 Wisteria Lane";
const TOWN: &str = "Fairview 90210";
const SECRETS: [&str; 4] = [NAME, EMAIL, STREET, TOWN];

async fn place_with_personal_data(app: &TestApp, customer: &str, name: &str) -> String {
    // Another customer's e-mail and address, so that only the erased one's are searched for.
    let (email, street, town) = if name == NAME {
        (EMAIL, STREET, TOWN)
    } else {
        ("kept@example.org", "1 Other Road", "Elsewhere 1")
    };
    let placed = app
        .post(
            "/v1/orders",
            json!({
                "customer_id": customer,
                "customer": {"name": name, "email": email},
                "lines": [{"sku": "LAMP-1", "qty": 1}],
                "shipping": {"region": "eu-west", "address_lines": [street, town]},
                "payment": {"token": "tok_ok"}
            }),
        )
        .await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    placed.body["order_id"].as_str().unwrap().to_string()
}

/// Every representation a client, analyst or auditor can read, by name.
async fn everything_served(app: &TestApp, order_id: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for path in [
        format!("/v1/orders/{order_id}"),
        format!("/v1/orders/{order_id}/payment"),
        format!("/v1/orders/{order_id}/timeline"),
        "/v1/events?limit=1000".to_string(),
        "/v1/events?event_type=OrderPlaced&limit=1000".to_string(),
        "/v1/analytics/summary".to_string(),
        "/v1/analytics/top-products".to_string(),
        "/v1/analytics/funnel".to_string(),
        "/v1/analytics/warehouses".to_string(),
        "/v1/analytics/fulfilment".to_string(),
        "/v1/catalog/products?q=lamp".to_string(),
        "/v1/inventory/LAMP-1".to_string(),
    ] {
        // Right after the engine starts, a read model may still be created: 503 means
        // "retry later" (API.md), and a client does.
        let mut r: Reply = app.get(&path).await;
        for _ in 0..50 {
            if r.status != 503 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            r = app.get(&path).await;
        }
        assert!(r.status < 300, "{path}: {} {:?}", r.status, r.body);
        all.push((path, r.body.to_string()));
    }
    for format in ["ndjson", "csv"] {
        let body = export(app, format).await.text().await.unwrap();
        assert!(body.contains("OrderPlaced"), "{format} export is empty");
        all.push((format!("the {format} export"), body));
    }
    all.push(("the Parquet export".into(), parquet_text(app).await));
    all
}

/// The whole feed in `format`, as an admin downloads it.
async fn export(app: &TestApp, format: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/events?format={format}", app.base))
        .bearer_auth(emporium_tests::ADMIN_KEY)
        .send()
        .await
        .unwrap()
}

/// Every string value of the Parquet export.
async fn parquet_text(app: &TestApp) -> String {
    let bytes = export(app, "parquet").await.bytes().await.unwrap();
    let mut text = String::new();
    for row in crate::parquet_string_rows(bytes) {
        for value in row.values() {
            text.push_str(value);
            text.push('\n');
        }
    }
    assert!(text.contains("OrderPlaced"), "the Parquet export is empty");
    text
}

/// Every row of every table of the database, as text.
async fn every_table(db: &Db) -> String {
    match db {
        Db::Postgres(pool) => {
            let tables = emporium_tests::user_tables(pool).await;
            assert!(tables.len() > 10, "{tables:?}");
            let mut all = String::new();
            for (schema, table) in tables {
                let rows: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT string_agg(t::text, E'\\n') FROM \"{schema}\".\"{table}\" t"
                ))
                .fetch_one(pool)
                .await
                .unwrap();
                all.push_str(&rows.unwrap_or_default());
            }
            all
        }
        Db::Sqlite(_) => unreachable!("the table sweep runs on Postgres"),
    }
}

fn assert_absent(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} still holds {secret:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_erasure_no_route_export_table_or_message_holds_the_personal_data() {
    let nats = TestNats::connect().await;
    let app =
        TestApp::with_checkout(Backend::Postgres, CheckoutConfig::default(), Some(&nats)).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("LAMP-1", "Lamp", 250).await.status, 201);
    assert_eq!(app.receive("wh-a", "LAMP-1", 10).await.status, 200);
    let order = place_with_personal_data(&app, "c-erase", NAME).await;
    let kept = place_with_personal_data(&app, "c-keep", "Kept Person").await;
    app.wait_for_status(&order, "confirmed", Duration::from_secs(20))
        .await;
    app.wait_for_status(&kept, "confirmed", Duration::from_secs(20))
        .await;

    // Before: shown to those who may see the order, and never stored in clear.
    let seen = app.get(&format!("/v1/orders/{order}")).await;
    assert_eq!(seen.body["personal"]["name"], NAME, "{:?}", seen.body);
    assert_eq!(seen.body["personal"]["email"], EMAIL);
    assert_eq!(
        seen.body["personal"]["address_lines"],
        json!([STREET, TOWN])
    );
    assert_eq!(seen.body["personal"]["erased"], false);
    // Each place that shows the order's events shows its personal data (so the search
    // after the erasure can find it if it is still there).
    for (what, text) in everything_served(&app, &order).await {
        if what.contains("/timeline")
            || what.contains("events")
            || what.contains("export")
            || what.ends_with(&order)
        {
            for secret in SECRETS {
                assert!(text.contains(secret), "{what} does not show {secret:?}");
            }
        }
    }
    let db = app.store.db().clone();
    let stored = every_table(&db).await;
    assert_absent("the database before erasure", &stored);
    assert!(
        !stored.contains("tok_ok\""),
        "a payment token is stored in clear"
    );

    // Erasure: admins only, idempotent.
    let client = app.key(Role::Client, Some("c-erase")).await;
    let refused = app
        .send_as(
            Some(&client),
            reqwest::Method::DELETE,
            "/v1/customers/c-erase/personal-data",
            None,
        )
        .await;
    assert_eq!(refused.status, 403);
    let erased = app
        .send(
            reqwest::Method::DELETE,
            "/v1/customers/c-erase/personal-data",
            None,
        )
        .await;
    assert_eq!(erased.status, 200, "{:?}", erased.body);
    assert_eq!(erased.body["keys_destroyed"], 1);
    assert_eq!(erased.body["erased"], true);
    let again = app
        .send(
            reqwest::Method::DELETE,
            "/v1/customers/c-erase/personal-data",
            None,
        )
        .await;
    assert_eq!(again.body["keys_destroyed"], 0);
    assert_eq!(again.body["erased"], true);

    // After: `[erased]` wherever it was shown, in no table, no export, no message.
    let shown = app.get(&format!("/v1/orders/{order}")).await;
    assert_eq!(
        shown.body["personal"],
        json!({"name": "[erased]", "email": "[erased]", "address_lines": ["[erased]"], "erased": true})
    );
    let timeline = app.get(&format!("/v1/orders/{order}/timeline")).await;
    let placed = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "OrderPlaced")
        .unwrap();
    assert_eq!(
        placed["payload"]["OrderPlaced"]["personal"]["name"], "[erased]",
        "{placed}"
    );
    // Events appended after the erasure are published too, and checked below.
    let r = app
        .post(&format!("/v1/orders/{order}/cancel"), Value::Null)
        .await;
    assert!(r.status < 300, "{:?}", r.body);
    app.wait_for_status(&order, "cancelled", Duration::from_secs(20))
        .await;
    for (what, text) in everything_served(&app, &order).await {
        assert_absent(&what, &text);
    }
    // The other customer is untouched.
    let other = app.get(&format!("/v1/orders/{kept}")).await;
    assert_eq!(other.body["personal"]["name"], "Kept Person");
    assert_absent("the database after erasure", &every_table(&db).await);

    let js = async_nats::jetstream::new(nats.client.clone());
    let names = nats.names();
    emporium_event_store::testing::assert_stream_matches_store(&js, &names, &app.store).await;
    let mut stream = js.get_stream(names.stream()).await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let published: String = emporium_event_store::testing::stream_messages(&js, &names, total)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert!(published.contains("OrderCancelled"));
    assert_absent("the NATS stream", &published);

    // Seals are over the ciphertext: the log still verifies.
    app.assert_log_verifies().await;
}

/// The embedded store shows and erases the same way, and an order still pending when its
/// customer is erased cannot be paid any more: it is rejected, its stock given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_erases_too_and_a_pending_order_cannot_be_paid_after() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("LAMP-1", "Lamp", 250).await.status, 201);
    assert_eq!(app.receive("wh-a", "LAMP-1", 10).await.status, 200);
    // No saga runs in this app: the order stays pending until one runs below.
    let order = place_with_personal_data(&app, "c-erase", NAME).await;
    let seen = app.get(&format!("/v1/orders/{order}")).await;
    assert_eq!(seen.body["personal"]["name"], NAME);
    let erased = app
        .send(
            reqwest::Method::DELETE,
            "/v1/customers/c-erase/personal-data",
            None,
        )
        .await;
    assert_eq!(erased.status, 200);
    for (what, text) in everything_served(&app, &order).await {
        assert_absent(&what, &text);
    }

    let saga = emporium_sagas::CheckoutSaga::new(
        app.store.clone(),
        std::sync::Arc::new(emporium_sagas::Sandbox::new(app.store.db().clone())),
        CheckoutConfig::default(),
    );
    let oid = emporium_domain::values::OrderId::parse(&order).unwrap();
    saga.start(oid, &emporium_event_store::EventMetadata::system("test"))
        .await
        .unwrap();
    saga.process(&oid).await.unwrap();
    let rejected = app
        .wait_for_status(&order, "rejected", Duration::from_secs(20))
        .await;
    assert_eq!(
        rejected["reject_reason"], "payment declined: the payment details were erased",
        "{rejected:?}"
    );
}

#[tokio::test]
async fn personal_fields_are_bounded_and_refused_with_their_pointer() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(app.create_warehouse("wh-a", "eu-west", 1).await.status, 201);
    assert_eq!(app.create_product("LAMP-1", "Lamp", 250).await.status, 201);
    let long = "x".repeat(201);
    let region = json!({"region": "eu-west"});
    let named = |v: Value| (json!({ "name": v }), region.clone(), "/customer/name");
    let mailed = |v: Value| (json!({ "email": v }), region.clone(), "/customer/email");
    let addressed = |lines: Value, pointer| {
        let shipping = json!({"region": "eu-west", "address_lines": lines});
        (json!({}), shipping, pointer)
    };
    for (customer, shipping, pointer) in [
        named(json!(long)),
        named(json!(" ")),
        named(json!("a\nb")),
        mailed(json!("no-at-sign")),
        mailed(json!("a@b@c")),
        mailed(json!(format!("{}@example.org", "x".repeat(250)))),
        addressed(
            json!(["a", "b", "c", "d", "e", "f"]),
            "/shipping/address_lines",
        ),
        addressed(json!(["ok", long]), "/shipping/address_lines/1"),
    ] {
        let r = app
            .post(
                "/v1/orders",
                json!({"customer_id": "c-1", "customer": customer, "shipping": shipping,
                       "lines": [{"sku": "LAMP-1", "qty": 1}], "payment": {"token": "tok_ok"}}),
            )
            .await;
        assert_eq!(r.status, 422, "{customer} {shipping}: {:?}", r.body);
        assert!(
            r.body.to_string().contains(pointer),
            "{pointer}: {:?}",
            r.body
        );
    }
    assert_eq!(app.event_count().await, 2, "a refused order wrote nothing");
}
