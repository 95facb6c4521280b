//! `Idempotency-Key` for every command route.
//!
//! The first request with a key claims it (a row with no response yet), runs, and stores its
//! status and body in the same database as the events. A retry with the same key and body
//! gets the stored status and body again and changes nothing; a retry that races the first
//! request waits for it; the same key with another body gets 422. Keys are scoped to the API
//! key that sent them and expire after a configurable time (default 24 h).
//!
//! Exactly once: the key travels in the metadata of the events the command writes. A 5xx is
//! not stored; the claim is marked abandoned so the client can retry at once. If a process
//! dies between running a command and storing its response, the claim is taken over after
//! the lease (`ApiConfig::idempotency_lease`). Either way the retry runs with
//! [`Mark::verify`] set: before applying, the command looks for an event of its aggregate
//! carrying this actor's key, and if there is one it applies nothing and answers from the
//! current state. `POST /v1/orders` derives the order id from the key, so a re-run finds
//! the order already placed. Waiting for a racing request happens before a command slot is
//! taken, so a stuck key holds no slot.

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use emporium_event_store::{on_db, Db};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::keys::Actor;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
/// How long a racing retry waits for the first request before giving up with 409.
const WAIT: Duration = Duration::from_secs(15);

/// Namespace of order ids derived from idempotency keys.
const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x5d1e_0c8a_8f7e_4f4e_9b1a_6a61_6d70_6f72);

/// The order id for a `POST /v1/orders` carrying an idempotency key: the same key from the
/// same API key always names the same order.
pub fn order_id_for(actor: &Actor, key: &str) -> Uuid {
    Uuid::new_v5(
        &ORDER_NAMESPACE,
        format!("{}\n{key}", actor.key_id).as_bytes(),
    )
}

/// The idempotency key of a request, if it has a well-formed one.
pub fn key_of(request: &axum::http::HeaderMap) -> Option<&str> {
    request
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|k| valid_key(k))
}

fn valid_key(k: &str) -> bool {
    (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

enum Claim {
    Mine,
    Done {
        hash: Vec<u8>,
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    InProgress {
        hash: Vec<u8>,
        since: i64,
    },
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn claim(
    db: &Db,
    actor: &str,
    key: &str,
    hash: &[u8],
    ttl: Duration,
) -> Result<Claim, sqlx::Error> {
    let now = now_ms();
    let expires = now + ttl.as_millis() as i64;
    // An expired record is as good as none.
    let purge = db
        .sql("DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2 AND expires_at < $3");
    let insert = db.sql(
        "INSERT INTO idempotency_keys (actor, idem_key, request_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (actor, idem_key) DO NOTHING",
    );
    let select = db.sql(
        "SELECT request_hash, status, content_type, response_body, created_at \
         FROM idempotency_keys WHERE actor = $1 AND idem_key = $2",
    );
    type Row = (Vec<u8>, Option<i32>, Option<String>, Option<Vec<u8>>, i64);
    let (inserted, row): (u64, Option<Row>) = on_db!(db, pool => {
        sqlx::query(&purge).bind(actor).bind(key).bind(now).execute(pool).await?.rows_affected();
        let n = sqlx::query(&insert)
            .bind(actor).bind(key).bind(hash).bind(now).bind(expires)
            .execute(pool).await?.rows_affected();
        if n == 1 {
            (n, None)
        } else {
            (n, sqlx::query_as::<_, Row>(&select).bind(actor).bind(key).fetch_optional(pool).await?)
        }
    });
    if inserted == 1 {
        return Ok(Claim::Mine);
    }
    Ok(match row {
        // Deleted between our insert and select (released after a 5xx): try again.
        None => Claim::InProgress {
            hash: hash.to_vec(),
            since: now,
        },
        Some((h, Some(status), ct, body, _)) => Claim::Done {
            hash: h,
            status: status as u16,
            content_type: ct,
            body: body.unwrap_or_default(),
        },
        Some((h, None, _, _, since)) => Claim::InProgress { hash: h, since },
    })
}

/// Takes over an abandoned claim; true if this request now owns it.
async fn take_over(db: &Db, actor: &str, key: &str, since: i64) -> Result<bool, sqlx::Error> {
    let sql = db.sql(
        "UPDATE idempotency_keys SET created_at = $1 \
         WHERE actor = $2 AND idem_key = $3 AND status IS NULL AND created_at = $4",
    );
    let n = on_db!(db, pool => {
        sqlx::query(&sql).bind(now_ms()).bind(actor).bind(key).bind(since)
            .execute(pool).await?.rows_affected()
    });
    Ok(n == 1)
}

async fn complete(
    db: &Db,
    actor: &str,
    key: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    let sql = db.sql(
        "UPDATE idempotency_keys SET status = $1, content_type = $2, response_body = $3 \
         WHERE actor = $4 AND idem_key = $5",
    );
    on_db!(db, pool => {
        sqlx::query(&sql).bind(i32::from(status)).bind(content_type).bind(body)
            .bind(actor).bind(key).execute(pool).await?.rows_affected()
    });
    Ok(())
}

/// Marks a claim abandoned (its lease long over), so the next retry takes it over at once
/// and verifies whether the command was applied, instead of starting afresh.
async fn abandon(db: &Db, actor: &str, key: &str) -> Result<(), sqlx::Error> {
    let sql = db.sql(
        "UPDATE idempotency_keys SET created_at = 0 \
         WHERE actor = $1 AND idem_key = $2 AND status IS NULL",
    );
    on_db!(db, pool => {
        sqlx::query(&sql).bind(actor).bind(key).execute(pool).await?.rows_affected()
    });
    Ok(())
}

/// Deletes expired records; returns how many.
pub async fn purge_expired(db: &Db) -> Result<u64, sqlx::Error> {
    let sql = db.sql("DELETE FROM idempotency_keys WHERE expires_at < $1");
    let n = on_db!(db, pool => {
        sqlx::query(&sql).bind(now_ms()).execute(pool).await?.rows_affected()
    });
    Ok(n)
}

fn replay(status: u16, content_type: Option<String>, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
    }
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

/// What the handler learns about the request's idempotency key (a request extension).
#[derive(Debug, Clone)]
pub struct Mark {
    /// The client's key, recorded in the metadata of the events the command writes.
    pub key: String,
    /// This run took over a claim whose command may already have been applied.
    pub verify: bool,
}

/// Set on a response that carries a secret (a new API key): its body is never stored.
/// A retry with the same key gets a 409 problem with this detail instead of the secret.
#[derive(Debug, Clone)]
pub struct Withheld(pub String);

/// Route middleware; runs after authorisation, so the actor is known.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let Some(raw) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let Some(key) = raw
        .to_str()
        .ok()
        .filter(|k| valid_key(k))
        .map(str::to_string)
    else {
        return ApiError::field(
            "header/Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )
        .into_response();
    };
    let Some(actor) = request.extensions().get::<Actor>().cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, crate::app::BODY_LIMIT).await else {
        return ApiError::PayloadTooLarge(format!(
            "the body exceeds the limit of {} bytes",
            crate::app::BODY_LIMIT
        ))
        .into_response();
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update(b" ");
    h.update(parts.uri.path().as_bytes());
    h.update(b"\n");
    h.update(&bytes);
    let hash = h.finalize().to_vec();
    let db = state.store.db();
    let deadline = tokio::time::Instant::now() + WAIT;
    let lease = state.config.idempotency_lease.as_millis() as i64;
    let mut verify = false;
    loop {
        let claimed =
            match claim(db, &actor.key_id, &key, &hash, state.config.idempotency_ttl).await {
                Ok(c) => c,
                Err(e) => return ApiError::Unavailable(e.to_string()).into_response(),
            };
        let mine = match claimed {
            Claim::Mine => true,
            Claim::Done { hash: h, .. } | Claim::InProgress { hash: h, .. } if h != hash => {
                return ApiError::unprocessable(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                )
                .into_response();
            }
            Claim::Done {
                status,
                content_type,
                body,
                ..
            } => return replay(status, content_type, body),
            Claim::InProgress { since, .. } => {
                if now_ms() - since > lease {
                    verify = matches!(take_over(db, &actor.key_id, &key, since).await, Ok(true));
                    verify
                } else {
                    false
                }
            }
        };
        if mine {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let mut r = ApiError::conflict(
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still being processed",
            )
            .into_response();
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Mark {
        key: key.clone(),
        verify,
    });
    let response = next.run(request).await;
    if state
        .faults
        .lose_response_after_commit
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        return ApiError::Internal("fault point: response lost after commit".into())
            .into_response();
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, usize::MAX).await else {
        let _ = abandon(db, &actor.key_id, &key).await;
        return ApiError::Internal("response body could not be buffered".into()).into_response();
    };
    let status = parts.status.as_u16();
    if status >= 500 {
        // The command may or may not have been applied: the retry verifies.
        let _ = abandon(db, &actor.key_id, &key).await;
    } else if let Some(Withheld(detail)) = parts.extensions.get::<Withheld>() {
        let stand_in = ApiError::conflict("idempotent_response_withheld", detail).into_response();
        let ct = stand_in
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let stand_in_status = stand_in.status().as_u16();
        let stand_in_body = to_bytes(stand_in.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        if let Err(e) = complete(
            db,
            &actor.key_id,
            &key,
            stand_in_status,
            ct.as_deref(),
            &stand_in_body,
        )
        .await
        {
            tracing::warn!(error = %e, "could not store an idempotent response");
        }
    } else {
        let ct = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = complete(db, &actor.key_id, &key, status, ct, &body).await {
            tracing::warn!(error = %e, "could not store an idempotent response");
        }
    }
    Response::from_parts(parts, Body::from(body))
}
