//! Delivers the notifications outbox (`emporium_projections::notifications`): each order
//! status change to NATS (`<prefix>.notifications.order.<status>`, in the stream
//! `<PREFIX>_NOTIFICATIONS`, deduplicated by `Nats-Msg-Id` = the event id) and to the
//! webhook of each merchant in the order, signed:
//!
//! `Emporium-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!
//! At least once: a row is claimed for `claim` (another engine skips it meanwhile), sent,
//! and marked delivered only after a 2xx (or the JetStream ack); a failure is retried with
//! exponential backoff, an engine that dies mid-delivery leaves the claim to lapse. The
//! checkout saga never waits for any of this.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use emporium_event_store::{on_db, Db, Store};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

/// How the worker paces itself.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Wait before the first retry; doubled after each failure up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a claimed row is left to the engine that took it.
    pub claim: Duration,
    /// Pause when nothing is due.
    pub poll: Duration,
    /// One webhook request.
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            claim: Duration::from_secs(30),
            poll: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A claimed outbox row.
#[derive(Debug, sqlx::FromRow)]
struct Due {
    id: String,
    target: String,
    subject: String,
    body: String,
    attempts: i32,
}

/// The signature header's value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The NATS side: the client and the subject prefix.
pub struct NatsTarget {
    pub client: async_nats::Client,
    pub prefix: String,
}

const BATCH: i64 = 100;

/// The notifications stream (docs/events.md).
fn stream_config(
    names: &emporium_event_store::nats::NatsNames,
) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: names.notifications_stream(),
        subjects: vec![names.notifications_wildcard()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    }
}

async fn claim(db: &Db, config: &NotifyConfig) -> Result<Vec<Due>, sqlx::Error> {
    let now = chrono::Utc::now().timestamp_millis();
    let until = now + config.claim.as_millis() as i64;
    let t = emporium_projections::notifications::OUTBOX;
    Ok(match db {
        Db::Postgres(pool) => {
            sqlx::query_as(&format!(
                "UPDATE {t} o SET next_attempt_at = $2
                 FROM (SELECT id, target FROM {t} WHERE delivered_at IS NULL AND next_attempt_at <= $1
                       ORDER BY position LIMIT {BATCH} FOR UPDATE SKIP LOCKED) d
                 WHERE o.id = d.id AND o.target = d.target
                 RETURNING o.id, o.target, o.subject, o.body, o.attempts"
            ))
            .bind(now)
            .bind(until)
            .fetch_all(pool)
            .await?
        }
        Db::Sqlite(pool) => {
            sqlx::query_as(&format!(
                "UPDATE {t} SET next_attempt_at = ?2
                 WHERE rowid IN (SELECT rowid FROM {t} WHERE delivered_at IS NULL AND next_attempt_at <= ?1
                                 ORDER BY position LIMIT {BATCH})
                 RETURNING id, target, subject, body, attempts"
            ))
            .bind(now)
            .bind(until)
            .fetch_all(pool)
            .await?
        }
    })
}

/// Records the outcome of a batch: the delivered rows in one statement (on Postgres), each
/// failure with its next attempt.
async fn settle(db: &Db, outcomes: &[(Due, Result<(), String>)], config: &NotifyConfig) {
    let now = chrono::Utc::now().timestamp_millis();
    let t = emporium_projections::notifications::OUTBOX;
    let (ok, failed): (Vec<_>, Vec<_>) = outcomes.iter().partition(|(_, o)| o.is_ok());
    let ok: Vec<&Due> = ok.into_iter().map(|(d, _)| d).collect();
    let delivered = match db {
        Db::Postgres(pool) if !ok.is_empty() => {
            let (ids, targets): (Vec<&str>, Vec<&str>) = ok
                .iter()
                .map(|d| (d.id.as_str(), d.target.as_str()))
                .unzip();
            sqlx::query(&format!(
                "UPDATE {t} o SET delivered_at = $1, attempts = o.attempts + 1, last_error = NULL
                 FROM UNNEST($2::text[], $3::text[]) AS d(id, target)
                 WHERE o.id = d.id AND o.target = d.target"
            ))
            .bind(now)
            .bind(ids)
            .bind(targets)
            .execute(pool)
            .await
            .map(|_| ())
        }
        Db::Sqlite(pool) => {
            let mut result = Ok(());
            for d in &ok {
                result = sqlx::query(&format!(
                    "UPDATE {t} SET delivered_at = ?1, attempts = attempts + 1, last_error = NULL \
                     WHERE id = ?2 AND target = ?3"
                ))
                .bind(now)
                .bind(&d.id)
                .bind(&d.target)
                .execute(pool)
                .await
                .map(|_| ());
                if result.is_err() {
                    break;
                }
            }
            result
        }
        Db::Postgres(_) => Ok(()),
    };
    if let Err(e) = delivered {
        // The claims lapse and the rows are sent again: at least once.
        tracing::warn!(error = %e, "cannot record notification deliveries");
    }
    for (due, outcome) in failed {
        let e = outcome.as_ref().err().cloned().unwrap_or_default();
        let shift = u32::try_from(due.attempts.clamp(0, 20)).unwrap_or(20);
        let wait = config
            .base_backoff
            .saturating_mul(1u32 << shift)
            .min(config.max_backoff);
        tracing::info!(id = %due.id, target = %due.target, attempts = due.attempts + 1, error = %e, "notification not delivered; retrying");
        let text = format!(
            "UPDATE {t} SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 \
             WHERE id = $3 AND target = $4"
        );
        let sql = db.sql(&text);
        let error: String = e.chars().take(500).collect();
        let result = on_db!(db, pool => sqlx::query(&sql).bind(now + wait.as_millis() as i64).bind(error)
            .bind(&due.id).bind(&due.target).execute(pool).await.map(|r| r.rows_affected()));
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record a notification's failure");
        }
    }
}

/// A merchant's webhook as the worker sends to it: URL and signing secret, or `None` when
/// it has none (rows for it are settled without a request).
type Endpoint = Option<(String, String)>;

/// How long the worker trusts what it read of a merchant's webhook.
const ENDPOINT_TTL: Duration = Duration::from_secs(10);

/// Most requests in flight at once: a batch of 100 rows must not take 100 pool
/// connections and sockets from the engine beside it.
const CONCURRENCY: usize = 16;

struct Worker {
    store: Store,
    nats: Option<(
        async_nats::jetstream::Context,
        emporium_event_store::nats::NatsNames,
    )>,
    http: reqwest::Client,
    config: NotifyConfig,
    endpoints: std::sync::Mutex<HashMap<String, (Instant, Endpoint)>>,
}

impl Worker {
    /// Where `merchant`'s notifications go, read at most once per [`ENDPOINT_TTL`].
    async fn endpoint(&self, merchant: &str) -> Result<Endpoint, String> {
        if let Some((at, e)) = self
            .endpoints
            .lock()
            .map_err(|_| "endpoint cache poisoned".to_string())?
            .get(merchant)
        {
            if at.elapsed() < ENDPOINT_TTL {
                return Ok(e.clone());
            }
        }
        let (m, _) = self
            .store
            .load_cached::<emporium_domain::Merchant>(merchant)
            .await
            .map_err(|e| e.to_string())?;
        let endpoint = match m.webhook_url() {
            None => None,
            Some(url) => {
                let secret = crate::routes::merchants::webhook_secret(self.store.db(), merchant)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the webhook has no secret")?;
                Some((url.to_string(), secret))
            }
        };
        self.endpoints
            .lock()
            .map_err(|_| "endpoint cache poisoned".to_string())?
            .insert(merchant.to_string(), (Instant::now(), endpoint.clone()));
        Ok(endpoint)
    }

    async fn deliver(&self, due: &Due) -> Result<(), String> {
        if due.target == "nats" {
            let Some((js, names)) = &self.nats else {
                // No bus configured: nothing to publish to.
                return Ok(());
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", due.id.as_str());
            let sent = async {
                js.publish_with_headers(
                    names.notification_subject(&due.subject),
                    headers,
                    due.body.clone().into(),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = sent {
                // The stream may be missing (NATS was down when this engine started):
                // create it, and the retry publishes.
                let _ = js.get_or_create_stream(stream_config(names)).await;
                return Err(e);
            }
            return Ok(());
        }
        let Some(merchant) = due.target.strip_prefix("webhook:") else {
            return Err(format!("unknown target {}", due.target));
        };
        let Some((url, secret)) = self.endpoint(merchant).await? else {
            return Ok(());
        };
        let t = chrono::Utc::now().timestamp();
        let response = self
            .http
            .post(url)
            .timeout(self.config.timeout)
            .header("content-type", "application/json")
            .header("Emporium-Notification-Id", &due.id)
            .header("Emporium-Signature", signature(&secret, t, &due.body))
            .body(due.body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", response.status()))
        }
    }
}

/// Delivers due notifications until `shutdown`.
pub async fn run(
    store: Store,
    nats: Option<NatsTarget>,
    config: NotifyConfig,
    shutdown: CancellationToken,
) {
    let nats = match nats {
        Some(n) => {
            let js = async_nats::jetstream::new(n.client);
            let names = emporium_event_store::nats::NatsNames::new(&n.prefix);
            // Created again after a failed publish: a NATS that is down now is caught up
            // with later.
            if let Err(e) = js.get_or_create_stream(stream_config(&names)).await {
                tracing::warn!(error = %e, "cannot create the notifications stream yet");
            }
            Some((js, names))
        }
        None => None,
    };
    let worker = std::sync::Arc::new(Worker {
        store,
        nats,
        http: reqwest::Client::new(),
        config,
        endpoints: std::sync::Mutex::default(),
    });
    let db = worker.store.db().clone();
    loop {
        let due = tokio::select! {
            () = shutdown.cancelled() => return,
            due = claim(&db, &worker.config) => due,
        };
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                // Also before the projection created the outbox.
                tracing::debug!(error = %e, "notifications: nothing to claim");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(worker.config.poll) => {}
            }
            continue;
        }
        let outcomes: Vec<(Due, Result<(), String>)> =
            futures::stream::iter(due.into_iter().map(|d| {
                let worker = worker.clone();
                async move {
                    let outcome = worker.deliver(&d).await;
                    (d, outcome)
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        settle(&db, &outcomes, &worker.config).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_hmac_sha256_over_time_and_body() {
        // RFC 4231 test case 2 key and data, framed as "<t>.<body>".
        let s = super::signature("Jefe", 0, "what do ya want for nothing?");
        assert!(s.starts_with("t=0,v1="));
        assert_eq!(s.len(), "t=0,v1=".len() + 64);
        assert_ne!(
            s,
            super::signature("Jefe", 1, "what do ya want for nothing?")
        );
    }
}
