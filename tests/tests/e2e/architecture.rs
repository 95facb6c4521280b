//! The backbone's rules, checked on the source: consumers match on domain enums (no event
//! type compared as a string, no payload read by key) and only event-store writes SQL on the
//! `events` table.

use std::path::{Path, PathBuf};

use emporium_domain::{
    CheckoutEvent, EventSchema, OrderEvent, PaymentEvent, ProductEvent, StockItemEvent,
    WarehouseEvent,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` and `.sql` file under `dir` (recursively).
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("rs" | "sql")) {
            out.push(p);
        }
    }
    out
}

fn event_types() -> Vec<&'static str> {
    [
        ProductEvent::EVENTS,
        WarehouseEvent::EVENTS,
        StockItemEvent::EVENTS,
        OrderEvent::EVENTS,
        PaymentEvent::EVENTS,
        CheckoutEvent::EVENTS,
    ]
    .iter()
    .flat_map(|e| e.iter().map(|(t, _)| *t))
    .collect()
}

#[test]
fn consumers_never_name_an_event_type_or_read_a_payload_by_key() {
    let types = event_types();
    assert!(types.len() >= 25, "{types:?}");
    let mut found = Vec::new();
    for krate in ["projections", "sagas", "gateway"] {
        for file in sources(&workspace().join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for t in &types {
                    if line.contains(&format!("\"{t}\"")) {
                        found.push(format!("{}:{}: {line}", file.display(), n + 1));
                    }
                }
                for lookup in [
                    "\"payload\"]",
                    ".get(\"",
                    "contains_key(\"",
                    "[\"payload\"]",
                ] {
                    // HTTP header lookups (`.get("x-request-id")`) are not payload reads.
                    if line.contains(lookup) && !line.contains(".get(\"x-") {
                        found.push(format!("{}:{}: {line}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn only_event_store_writes_sql_on_the_events_table() {
    let root = workspace();
    let mut found = Vec::new();
    for krate in ["domain", "projections", "sagas", "gateway", "bench"] {
        for file in sources(&root.join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap().to_lowercase();
            for (n, line) in text.lines().enumerate() {
                for pat in [
                    "from events",
                    "into events",
                    "join events",
                    "update events",
                    "like events",
                    "table events",
                ] {
                    let hit = line.match_indices(pat).any(|(i, _)| {
                        !line[i + pat.len()..]
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_alphanumeric() || c == '_')
                    });
                    if hit {
                        found.push(format!("{}:{}: {line}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Postgres transactions are opened through `store::begin_postgres`, which a cancelled
/// caller cannot leave half-open; the pool no longer rolls back every released connection.
#[test]
fn postgres_transactions_are_opened_only_through_begin_postgres() {
    let root = workspace();
    let mut found = Vec::new();
    for krate in ["event-store", "projections", "sagas", "gateway"] {
        for file in sources(&root.join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            let is_store = file.ends_with("event-store/src/store.rs");
            let is_feed = file.ends_with("event-store/src/feed.rs");
            for (n, line) in text.lines().enumerate() {
                let raw_begin = line.contains("\"BEGIN") && !line.contains("BEGIN IMMEDIATE");
                let pool_begin = line.contains(".begin().await")
                    // The SQLite arm, and the sequencer's step, which runs on its own task.
                    && !line.contains("Db::Sqlite")
                    && !is_store
                    && !is_feed;
                if raw_begin || pool_begin {
                    found.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn projections_and_sagas_depend_on_the_domain() {
    for krate in ["projections", "sagas"] {
        let manifest = std::fs::read_to_string(workspace().join(krate).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("emporium-domain"),
            "{krate} does not depend on the domain"
        );
    }
}
