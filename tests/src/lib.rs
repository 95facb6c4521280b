//! Shared helpers for end-to-end tests: `TestApp` runs the real router on a loopback port
//! over a fresh Postgres database or embedded SQLite store, with a typed HTTP client.
//!
//! Set `TEST_LOG=1` to see the server's logs.

pub mod script;

use emporium_event_store::testing::{TestDataDir, TestDatabase};
use emporium_event_store::Store;
use emporium_gateway::app::RouteSpec;
use emporium_gateway::keys::Role;
use emporium_gateway::{ApiConfig, AppState, Engine, EngineBuilder};
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "test-admin-key";

/// Which event store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

enum Holder {
    Postgres(#[allow(dead_code)] TestDatabase),
    Sqlite(#[allow(dead_code)] TestDataDir),
}

/// A running server on its own port and its own database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub state: AppState,
    /// Every registered route with its access rule.
    pub routes: Vec<RouteSpec>,
    /// The running engine (stopped when the app is dropped).
    pub engine: Engine,
    _holder: Holder,
}

/// A response's status and body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl TestApp {
    /// Verifies the whole log (seals, no digest key) and asserts it is clean.
    pub async fn assert_log_verifies(&self) -> emporium_event_store::audit::VerifyReport {
        let report = self
            .state
            .auditor
            .verify(None, None, None, &|_| {})
            .await
            .expect("verify runs");
        assert!(report.ok, "{:?}", report.problems);
        report
    }

    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, ApiConfig::default()).await
    }

    pub async fn spawn_with(backend: Backend, config: ApiConfig) -> Self {
        Self::start(backend, |b| b.api(config).run_checkout(false)).await
    }

    /// With the checkout saga running (on the in-process bus, or on NATS with its relay when
    /// `nats` names a test prefix).
    pub async fn with_checkout(
        backend: Backend,
        checkout: emporium_sagas::CheckoutConfig,
        nats: Option<&emporium_event_store::testing::TestNats>,
    ) -> Self {
        Self::start(backend, |b| {
            let b = b.checkout(checkout);
            match nats {
                Some(n) => b.nats_client(n.client.clone(), n.prefix.clone()),
                None => b,
            }
        })
        .await
    }

    /// The engine, as `emporium serve` starts it, on a fresh database or embedded store and
    /// a loopback port; `configure` adjusts the builder (payment provider, NATS, ...).
    pub async fn start(
        backend: Backend,
        configure: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber_init();
        }
        let (store, holder) = match backend {
            Backend::Postgres => {
                let db = TestDatabase::create().await;
                (db.store(16).await, Holder::Postgres(db))
            }
            Backend::Sqlite => {
                let dir = TestDataDir::create();
                (dir.store(8).await, Holder::Sqlite(dir))
            }
        };
        let builder = Engine::on_store(store).admin_key(Some(ADMIN_KEY.to_string()));
        let engine = configure(builder).start().await.expect("start the engine");
        Self {
            base: engine.url(),
            client: reqwest::Client::new(),
            store: engine.state.store.clone(),
            state: engine.state.clone(),
            routes: engine.routes.clone(),
            engine,
            _holder: holder,
        }
    }

    /// Waits until this engine's catalog search index covers every stored event (searches
    /// answer from it; it trails the feed by its commit interval).
    pub async fn search_caught_up(&self) {
        let index = self
            .state
            .search
            .clone()
            .expect("the engine runs catalog search");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let head = self.store.feed().head().await.expect("feed head");
            let stored = self.store.event_count().await.expect("event count");
            if head >= stored && index.position() >= head && index.is_ready() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the search index did not catch up ({} of {head})",
                index.position()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Creates an API key with `role` (client keys are bound to `customer`).
    pub async fn key(&self, role: Role, customer: Option<&str>) -> String {
        let customer = customer
            .map(|c| emporium_domain::values::CustomerId::parse(c).expect("valid customer id"));
        self.state
            .keys
            .create(role, customer, "test")
            .await
            .expect("create a key")
            .key
    }

    /// A key of the `merchant` role bound to `merchant` (registered already).
    pub async fn merchant_key(&self, merchant: &str) -> String {
        self.state
            .keys
            .create_bound(
                Role::Merchant,
                None,
                Some(
                    emporium_domain::values::MerchantId::parse(merchant)
                        .expect("valid merchant id"),
                ),
                "test",
            )
            .await
            .expect("create a merchant key")
            .key
    }

    /// Posts the console's sign-in form with `key` (and `header`, such as an `Origin`), as a
    /// browser does; the answer is not followed, so its `Set-Cookie` can be read.
    pub async fn console_sign_in(
        &self,
        key: &str,
        header: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let mut request = client.post(format!("{}/console/login", self.base));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request
            .form(&[("key", key)])
            .send()
            .await
            .expect("the sign-in answers")
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        self.send_as(Some(ADMIN_KEY), method, path, body).await
    }

    /// Sends a request with `key` (or none).
    pub async fn send_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.expect("request reaches the server")).await
    }

    pub async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn create_warehouse(&self, id: &str, region: &str, priority: i64) -> Reply {
        self.post(
            "/v1/warehouses",
            json!({"id": id, "name": format!("Warehouse {id}"), "region": region, "priority": priority}),
        )
        .await
    }

    pub async fn create_product(&self, sku: &str, title: &str, amount_minor: i64) -> Reply {
        self.post(
            "/v1/products",
            json!({
                "sku": sku, "title": title, "description": format!("{title} for tests"),
                "category": "test", "price": {"amount_minor": amount_minor, "currency": "EUR"}
            }),
        )
        .await
    }

    pub async fn receive(&self, warehouse: &str, sku: &str, qty: i64) -> Reply {
        self.post(
            &format!("/v1/inventory/{warehouse}/{sku}/receive"),
            json!({"qty": qty}),
        )
        .await
    }

    pub async fn place_order(&self, customer: &str, lines: &[(&str, i64)]) -> Reply {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
            .collect();
        self.post(
            "/v1/orders",
            json!({"customer_id": customer, "lines": lines,
                   "shipping": {"region": "eu-west"}, "payment": {"token": "tok_ok"}}),
        )
        .await
    }

    /// `GET /v1/events` until it lists `expected` events (the Postgres feed trails commits
    /// by the server's oldest open write transaction) or 20 s pass.
    pub async fn feed_until(&self, expected: i64) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let page = self.get("/v1/events?limit=1000").await;
            let events = page.body["events"].as_array().cloned().unwrap_or_default();
            if events.len() as i64 >= expected || std::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `GET /v1/orders/{id}` until its status is `want` (panics after `within`); the order.
    pub async fn wait_for_status(
        &self,
        order_id: &str,
        want: &str,
        within: std::time::Duration,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let o = self.get(&format!("/v1/orders/{order_id}")).await;
            if o.body["status"] == want {
                return o.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "order {order_id} never became {want}: {:?}",
                o.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The order's timeline once it holds an event of `event_type`: the timeline is a read
    /// model fed from the feed, so it can trail the live order read by a moment.
    pub async fn timeline_with(
        &self,
        order_id: &str,
        event_type: &str,
        within: std::time::Duration,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let t = self.get(&format!("/v1/orders/{order_id}/timeline")).await;
            let events = t.body["events"].as_array().cloned().unwrap_or_default();
            if events.iter().any(|e| e["event_type"] == event_type) {
                return events;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the timeline of {order_id} never held {event_type}: {:?}",
                t.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The event count once it has stayed the same for a second: background work (a cancelled
    /// order's compensation, captures) has settled. Panics after 30 s.
    pub async fn settled_event_count(&self) -> i64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut last = self.event_count().await;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = self.event_count().await;
            if now == last {
                return now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "events kept coming: {now}"
            );
            last = now;
        }
    }

    pub async fn event_count(&self) -> i64 {
        self.store.event_count().await.expect("count events")
    }
}

fn tracing_subscriber_init() -> Result<(), ()> {
    tracing_subscriber::fmt()
        .with_env_filter("info,tower_http=debug")
        .with_test_writer()
        .try_init()
        .map_err(|_| ())
}

/// Every table of the database outside the system schemas, as (schema, table): what a test
/// sweeps when something must be stored nowhere.
pub async fn user_tables(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' \
           AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .expect("list the tables")
}
