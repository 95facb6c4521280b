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
