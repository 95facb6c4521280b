//! Throwaway databases for tests: each test gets its own Postgres database or SQLite
//! directory, so tests run in parallel and leave nothing behind.
//!
//! A test that cannot reach Postgres panics with the address it tried: tests must fail,
//! never skip, when a service is missing.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

use crate::store::{connect_postgres, open_sqlite, Db};
use crate::Store;

/// The server tests create their databases on: `EMPORIUM_TEST_DATABASE_URL`, else
/// `DATABASE_URL`, else the local default.
pub fn admin_database_url() -> String {
    std::env::var("EMPORIUM_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A fresh Postgres database, dropped (with its connections) when this value is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `emporium_test_<random>` on the test server.
    pub async fn create() -> Self {
        let admin_url = admin_database_url();
        let name = format!("emporium_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("tests need PostgreSQL at {admin_url} (set EMPORIUM_TEST_DATABASE_URL): {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE for a test");
        let _ = conn.close().await;
        let url = PgConnectOptions::from_str(&admin_url)
            .expect("test database url")
            .database(&name)
            .to_url_lossy()
            .to_string();
        Self {
            name,
            url,
            admin_url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A migrated store on this database.
    pub async fn store(&self, max_connections: u32) -> Store {
        let pool = connect_postgres(&self.url, max_connections)
            .await
            .expect("connect to the test database");
        let store = Store::from_db(Db::Postgres(pool));
        store.migrate().await.expect("migrate the test database");
        store
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async context; a private runtime on its own thread avoids
        // blocking (or nesting) the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database");
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh directory for an embedded store, removed when dropped.
pub struct TestDataDir {
    path: PathBuf,
}

impl TestDataDir {
    pub fn create() -> Self {
        let path = std::env::temp_dir().join(format!("emporium-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create a test data directory");
        Self { path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A migrated embedded store in this directory.
    pub async fn store(&self, max_connections: u32) -> Store {
        let pool = open_sqlite(&self.path, max_connections)
            .await
            .expect("open the test SQLite store");
        let store = Store::from_db(Db::Sqlite(pool));
        store
            .migrate()
            .await
            .expect("migrate the test SQLite store");
        store
    }
}

impl Drop for TestDataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The NATS server tests use: `NATS_URL`, else the local default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// A unique subject prefix on the shared test NATS server; its streams are deleted on drop.
pub struct TestNats {
    pub client: async_nats::Client,
    pub prefix: String,
}

impl TestNats {
    pub async fn connect() -> Self {
        let url = nats_url();
        let client = async_nats::connect(&url).await.unwrap_or_else(|e| {
            panic!("tests need NATS with JetStream at {url} (set NATS_URL): {e}")
        });
        Self {
            client,
            prefix: format!("t{}", &Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    pub fn names(&self) -> crate::nats::NatsNames {
        crate::nats::NatsNames::new(&self.prefix)
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let client = self.client.clone();
        let names = self.names();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for cleaning up a test stream");
            rt.block_on(async move {
                let js = async_nats::jetstream::new(client);
                let _ = js.delete_stream(names.stream()).await;
                let _ = js.delete_stream(names.dlq_stream()).await;
                let _ = js.delete_stream(names.notifications_stream()).await;
            });
        })
        .join();
    }
}

/// A private nats-server process (JetStream on, file store in a temp dir) that a test can
/// stop and restart on the same port with the same data.
pub struct NatsServer {
    pub port: u16,
    dir: TestDataDir,
    child: Option<std::process::Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut server = Self {
            port,
            dir: TestDataDir::create(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tests need the nats-server binary on PATH");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("nats-server did not start on port {}", self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The aggregate type of the events [`append_raw`] writes: a real domain type (every reader
/// decodes what it reads, and an unknown type is an error), which the tests that use it
/// never produce through commands (they do not run the checkout saga).
pub const RAW_AGGREGATE_TYPE: &str = "Checkout";
/// The event type of the events [`append_raw`] writes.
pub const RAW_EVENT_TYPE: &str = "CheckoutCompleted";

/// The payload of every event [`append_raw`] writes: a valid `CheckoutCompleted`.
pub fn raw_payload() -> serde_json::Value {
    serde_json::json!({"CheckoutCompleted": {"order_id": "0190f6a2-7c3e-7d41-9a51-1c2b3d4e5f60"}})
}

/// Appends `n` events for one aggregate straight into the events table in one transaction,
/// bypassing aggregates (for feed and relay tests that need volume). Returns their ids.
pub async fn append_raw(db: &Db, aggregate_id: &str, first_seq: i64, n: i64) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let payload = raw_payload().to_string();
    let metadata = serde_json::to_string(&crate::EventMetadata::system("test").to_map())
        .expect("metadata json");
    let mut sql = String::from(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, event_id) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        let b = i * 4;
        match db {
            Db::Postgres(_) => sql.push_str(&format!(
                "('{RAW_AGGREGATE_TYPE}', ${}, ${}, '{RAW_EVENT_TYPE}', '1.0', ${}::jsonb, '{}'::jsonb, ${})",
                b + 1,
                b + 2,
                b + 3,
                metadata.replace('\'', "''"),
                b + 4
            )),
            Db::Sqlite(_) => sql.push_str(&format!(
                "('{RAW_AGGREGATE_TYPE}', ?{}, ?{}, '{RAW_EVENT_TYPE}', '1.0', ?{}, '{}', ?{})",
                b + 1,
                b + 2,
                b + 3,
                metadata.replace('\'', "''"),
                b + 4
            )),
        }
    }
    match db {
        Db::Postgres(pool) => {
            let mut q = sqlx::query(&sql);
            for (i, id) in ids.iter().enumerate() {
                q = q
                    .bind(aggregate_id)
                    .bind(first_seq + i as i64)
                    .bind(&payload)
                    .bind(*id);
            }
            q.execute(pool).await.expect("append raw events");
        }
        Db::Sqlite(pool) => {
            let mut q = sqlx::query(&sql);
            for (i, id) in ids.iter().enumerate() {
                q = q
                    .bind(aggregate_id)
                    .bind(first_seq + i as i64)
                    .bind(&payload)
                    .bind(id.to_string());
            }
            q.execute(pool).await.expect("append raw events");
        }
    }
    ids
}

/// Waits until the stream holds `expected` messages (or 90 s pass).
pub async fn wait_for_count(
    js: &async_nats::jetstream::Context,
    names: &crate::nats::NatsNames,
    expected: u64,
) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let n = match js.get_stream(names.stream()).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if n >= expected || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Reads every message of the stream and checks: exactly the store's events, no
/// duplicates, and per subject in feed-position order.
pub async fn assert_stream_matches_store(
    js: &async_nats::jetstream::Context,
    names: &crate::nats::NatsNames,
    store: &Store,
) {
    let expected = store.event_count().await.unwrap() as u64;
    let count = wait_for_count(js, names, expected).await;
    // A little longer, so a late duplicate would show up in the count.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut stream = js.get_stream(names.stream()).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(count, expected);
    assert_eq!(
        info.state.messages, expected,
        "exactly one message per event"
    );

    let mut seen_ids = std::collections::HashSet::new();
    let mut last_position: std::collections::HashMap<String, i64> =
        std::collections::HashMap::new();
    for m in stream_messages(js, names, expected).await {
        let e: crate::FeedEvent = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            m.subject.as_str(),
            names.subject(&e.aggregate_type, &e.aggregate_id)
        );
        let headers = m.headers.as_ref().unwrap();
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            e.event_id.to_string()
        );
        assert_eq!(
            headers.get("Emporium-Position").unwrap().as_str(),
            e.position.to_string()
        );
        assert!(seen_ids.insert(e.event_id), "duplicate {}", e.event_id);
        let prev = last_position
            .insert(m.subject.to_string(), e.position)
            .unwrap_or(0);
        assert!(e.position > prev, "{} out of order", m.subject);
    }
    assert_eq!(seen_ids.len() as u64, expected);
}

/// The first `n` messages of the events stream, read from its start.
pub async fn stream_messages(
    js: &async_nats::jetstream::Context,
    names: &crate::nats::NatsNames,
    n: u64,
) -> Vec<async_nats::jetstream::Message> {
    let stream = js.get_stream(names.stream()).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut read = Vec::new();
    for _ in 0..n {
        let m = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            futures::StreamExt::next(&mut messages),
        )
        .await
        .expect("every message can be read")
        .unwrap()
        .unwrap();
        read.push(m);
    }
    read
}

/// Stores one event exactly as given (any JSON, any version), bypassing aggregates and
/// upcasters: how a test puts an event of an older shape in the log.
#[allow(clippy::too_many_arguments)]
pub async fn append_stored(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: &serde_json::Value,
    metadata: &crate::EventMetadata,
) -> Uuid {
    let id = Uuid::now_v7();
    let meta = serde_json::to_string(&metadata.to_map()).expect("metadata json");
    let sql = db.sql(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    );
    match db {
        Db::Postgres(pool) => {
            let sql = sql.replace("$6", "$6::jsonb").replace("$7", "$7::jsonb");
            sqlx::query(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .bind(event_type)
                .bind(event_version)
                .bind(payload.to_string())
                .bind(meta)
                .bind(id)
                .execute(pool)
                .await
                .expect("store an event");
        }
        Db::Sqlite(pool) => {
            sqlx::query(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .bind(event_type)
                .bind(event_version)
                .bind(payload.to_string())
                .bind(meta)
                .bind(id.to_string())
                .execute(pool)
                .await
                .expect("store an event");
        }
    }
    id
}

/// Rewrites every stored `event_type` event: its payload through `f` and its version to
/// `version`. How a test makes the log look as if an older release had written it.
pub async fn rewrite_stored(
    db: &Db,
    event_type: &str,
    version: &str,
    f: impl Fn(serde_json::Value) -> serde_json::Value,
) -> usize {
    let select = db.sql("SELECT event_id, payload FROM events WHERE event_type = $1");
    let rows: Vec<(String, String)> = match db {
        Db::Postgres(pool) => sqlx::query_as::<_, (Uuid, String)>(
            "SELECT event_id, payload::text FROM events WHERE event_type = $1",
        )
        .bind(event_type)
        .fetch_all(pool)
        .await
        .expect("read events")
        .into_iter()
        .map(|(id, p)| (id.to_string(), p))
        .collect(),
        Db::Sqlite(pool) => sqlx::query_as(&select)
            .bind(event_type)
            .fetch_all(pool)
            .await
            .expect("read events"),
    };
    for (id, payload) in &rows {
        let value: serde_json::Value = serde_json::from_str(payload).expect("stored json");
        let new = f(value).to_string();
        match db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "UPDATE events SET payload = $1::jsonb, event_version = $2 WHERE event_id = $3::uuid",
                )
                .bind(new)
                .bind(version)
                .bind(id)
                .execute(pool)
                .await
                .expect("rewrite an event");
            }
            Db::Sqlite(pool) => {
                sqlx::query(
                    "UPDATE events SET payload = ?1, event_version = ?2 WHERE event_id = ?3",
                )
                .bind(new)
                .bind(version)
                .bind(id)
                .execute(pool)
                .await
                .expect("rewrite an event");
            }
        }
    }
    rows.len()
}
