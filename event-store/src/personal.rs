//! Erasable personal data (crypto-shredding, docs/audit.md section 5).
//!
//! An order's personal data (customer name, e-mail, shipping address lines) and its payment
//! token are sealed with ChaCha20-Poly1305 under a key of their customer before they reach an
//! event; the event keeps only the key id, the nonce and the ciphertext. Keys live in
//! `customer_keys`. Erasing a customer destroys their keys: every stored copy of their data
//! (events, exports, NATS messages, backups) becomes unreadable at once, and no sealed row is
//! touched, so the log still verifies.
//!
//! [`KeyRing::present`] is how every reader that shows events turns a stored `OrderPlaced`
//! into what people see: the personal fields in clear, or `[erased]`, and never the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use emporium_domain::values::SealedData;
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::export::ExportPage;
use crate::{Db, RawFeedEvent, StoreError};

/// What erased fields show.
pub const ERASED: &str = "[erased]";
/// How long a key read from the database is used without reading it again: how late another
/// engine's erasure can take effect here.
const KEY_TTL: Duration = Duration::from_secs(1);
/// Keys held in memory at most.
const MAX_CACHED_KEYS: usize = 10_000;

/// What an order carries about its customer, in clear (only ever in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_lines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_token: Option<String>,
}

/// The personal fields as shown to people: in clear, or `[erased]` once the key is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownPersonal {
    pub name: Option<String>,
    pub email: Option<String>,
    pub address_lines: Vec<String>,
    pub erased: bool,
}

impl ShownPersonal {
    fn of(data: Option<&PersonalData>) -> Self {
        match data {
            Some(d) => Self {
                name: d.name.clone(),
                email: d.email.clone(),
                address_lines: d.address_lines.clone(),
                erased: false,
            },
            None => Self {
                name: Some(ERASED.into()),
                email: Some(ERASED.into()),
                address_lines: vec![ERASED.into()],
                erased: true,
            },
        }
    }
}

/// `fp_` and 32 hex characters of SHA-256 of the token: what an event keeps in the token's
/// place, so the same card can be recognised without being stored.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("fp_{}", hex::encode(&digest[..16]))
}

type CachedKey = (Option<[u8; 32]>, Instant);
/// A customer's live key id, the key, and when it was read.
type LiveKey = (String, [u8; 32], Instant);

/// The customers' keys: seals, opens and erases.
pub struct KeyRing {
    db: Db,
    /// Key id → the key (`None` once erased) and when it was read.
    cache: Mutex<HashMap<String, CachedKey>>,
    /// Customer id → their live key (id and key) and when it was read: placing orders
    /// does not read the key table each time.
    live: Mutex<HashMap<String, LiveKey>>,
}

impl KeyRing {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Seals `data` under `customer_id`'s key, creating the key on first use.
    pub async fn seal(
        &self,
        customer_id: &str,
        data: &PersonalData,
    ) -> Result<SealedData, StoreError> {
        let (key_id, key) = self.customer_key(customer_id).await?;
        let nonce: [u8; 12] = rand::random();
        let plain = serde_json::to_vec(data).map_err(|e| StoreError::Decode(e.to_string()))?;
        let ciphertext = cipher(&key)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: customer_id.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Decode("sealing personal data failed".into()))?;
        Ok(SealedData {
            key_id,
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        })
    }

    /// Opens what was sealed for `customer_id`: `None` once their key was erased (or when the
    /// ciphertext was altered, which the log's seals report anyway).
    pub async fn open(
        &self,
        customer_id: &str,
        sealed: &SealedData,
    ) -> Result<Option<PersonalData>, StoreError> {
        let Some(key) = self.key(&sealed.key_id).await? else {
            return Ok(None);
        };
        let (Ok(nonce), Ok(ciphertext)) =
            (hex::decode(&sealed.nonce), hex::decode(&sealed.ciphertext))
        else {
            return Ok(None);
        };
        let Ok(nonce) = <[u8; 12]>::try_from(nonce.as_slice()) else {
            return Ok(None);
        };
        let plain = cipher(&key).decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &ciphertext,
                aad: customer_id.as_bytes(),
            },
        );
        Ok(plain.ok().and_then(|p| serde_json::from_slice(&p).ok()))
    }

    /// Destroys every key of `customer_id`. Returns how many were destroyed (0 when already
    /// erased or never created).
    pub async fn erase(&self, customer_id: &str) -> Result<u64, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let destroyed = crate::on_db!(&self.db, pool => sqlx::query(&self.db.sql(
            "UPDATE customer_keys SET key = NULL, erased_at_ms = $1 \
              WHERE customer_id = $2 AND key IS NOT NULL",
        ))
        .bind(now)
        .bind(customer_id)
        .execute(pool)
        .await?
        .rows_affected());
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        if let Ok(mut live) = self.live.lock() {
            live.clear();
        }
        Ok(destroyed)
    }

    /// Whether `customer_id` had keys and all of them were erased.
    pub async fn is_erased(&self, customer_id: &str) -> Result<bool, StoreError> {
        let (erased, live): (i64, i64) = crate::on_db!(&self.db, pool => sqlx::query_as(&self.db.sql(
            "SELECT COALESCE(SUM(CASE WHEN key IS NULL THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN key IS NULL THEN 0 ELSE 1 END), 0) \
               FROM customer_keys WHERE customer_id = $1",
        ))
        .bind(customer_id)
        .fetch_one(pool)
        .await?);
        Ok(erased > 0 && live == 0)
    }

    /// The personal fields of an order as people see them.
    pub async fn show(
        &self,
        customer_id: &str,
        sealed: &SealedData,
    ) -> Result<ShownPersonal, StoreError> {
        Ok(ShownPersonal::of(
            self.open(customer_id, sealed).await?.as_ref(),
        ))
    }

    /// Rewrites a stored event's payload for display: an `OrderPlaced` with sealed personal
    /// data gets `personal` in clear (or `[erased]`), never its ciphertext or token. Other
    /// payloads are left alone. Returns whether it changed anything.
    pub async fn present(&self, event_type: &str, payload: &mut Value) -> Result<bool, StoreError> {
        if event_type != "OrderPlaced" {
            return Ok(false);
        }
        #[derive(Deserialize)]
        struct Placed {
            customer_id: String,
            personal: SealedData,
        }
        // Stored payloads are the domain's enum, tagged by variant: {"OrderPlaced": {...}}.
        let Some(Value::Object(placed)) = payload.get_mut(event_type) else {
            return Ok(false);
        };
        let Ok(sealed) = serde_json::from_value::<Placed>(Value::Object(placed.clone())) else {
            return Ok(false);
        };
        let shown = self.show(&sealed.customer_id, &sealed.personal).await?;
        placed.insert(
            "personal".into(),
            serde_json::to_value(shown).map_err(|e| StoreError::Decode(e.to_string()))?,
        );
        Ok(true)
    }

    /// [`KeyRing::present`] over a payload kept as JSON text (exports): parsed only when it
    /// holds sealed personal data.
    pub async fn present_text(
        &self,
        event_type: &str,
        payload: &mut String,
    ) -> Result<(), StoreError> {
        if event_type != "OrderPlaced" || !payload.contains("\"ciphertext\"") {
            return Ok(());
        }
        let Ok(mut value) = serde_json::from_str::<Value>(payload) else {
            return Ok(());
        };
        if self.present(event_type, &mut value).await? {
            *payload = value.to_string();
        }
        Ok(())
    }

    /// The live key of `customer_id`, created when they have none.
    async fn customer_key(&self, customer_id: &str) -> Result<(String, [u8; 32]), StoreError> {
        if let Ok(live) = self.live.lock() {
            if let Some((id, key, at)) = live.get(customer_id) {
                if at.elapsed() < KEY_TTL {
                    return Ok((id.clone(), *key));
                }
            }
        }
        let (id, key) = self.read_or_create_key(customer_id).await?;
        if let Ok(mut live) = self.live.lock() {
            if live.len() >= MAX_CACHED_KEYS {
                live.clear();
            }
            live.insert(customer_id.to_string(), (id.clone(), key, Instant::now()));
        }
        Ok((id, key))
    }

    async fn read_or_create_key(
        &self,
        customer_id: &str,
    ) -> Result<(String, [u8; 32]), StoreError> {
        let found: Option<(String, Vec<u8>)> = crate::on_db!(&self.db, pool => sqlx::query_as(&self.db.sql(
            "SELECT key_id, key FROM customer_keys \
              WHERE customer_id = $1 AND key IS NOT NULL ORDER BY created_at_ms, key_id LIMIT 1",
        ))
        .bind(customer_id)
        .fetch_optional(pool)
        .await?);
        if let Some((id, key)) = found {
            if let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) {
                return Ok((id, key));
            }
        }
        // Two first orders of one customer at once may each create a key: both are the
        // customer's, and an erasure destroys both.
        let key: [u8; 32] = rand::random();
        let key_id = uuid::Uuid::now_v7().to_string();
        crate::on_db!(&self.db, pool => sqlx::query(&self.db.sql(
            "INSERT INTO customer_keys (key_id, customer_id, key, created_at_ms) \
             VALUES ($1, $2, $3, $4)",
        ))
        .bind(&key_id)
        .bind(customer_id)
        .bind(key.to_vec())
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(pool)
        .await
        .map(|_| ())?);
        Ok((key_id, key))
    }

    /// A key by id, from memory when read less than [`KEY_TTL`] ago.
    async fn key(&self, key_id: &str) -> Result<Option<[u8; 32]>, StoreError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((key, at)) = cache.get(key_id) {
                if at.elapsed() < KEY_TTL {
                    return Ok(*key);
                }
            }
        }
        let key: Option<Option<Vec<u8>>> = crate::on_db!(&self.db, pool => sqlx::query_scalar(&self.db.sql(
            "SELECT key FROM customer_keys WHERE key_id = $1",
        ))
        .bind(key_id)
        .fetch_optional(pool)
        .await?);
        let key = key
            .flatten()
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok());
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED_KEYS {
                cache.clear();
            }
            cache.insert(key_id.to_string(), (key, Instant::now()));
        }
        Ok(key)
    }
}

/// Events as stored, turned into what people see ([`KeyRing::present`]) as they stream by:
/// what every export serves.
pub fn present_stream(
    keys: Arc<KeyRing>,
    events: BoxStream<'static, Result<RawFeedEvent, StoreError>>,
) -> BoxStream<'static, Result<RawFeedEvent, StoreError>> {
    events
        .then(move |r| {
            let keys = keys.clone();
            async move {
                let e = r?;
                if e.event_type == "OrderPlaced" && e.payload.get().contains("\"ciphertext\"") {
                    return present_event(&keys, e).await;
                }
                Ok(e)
            }
        })
        .boxed()
}

/// [`present_stream`] for an export read a page at a time: an event that carries sealed
/// personal data is taken out of its page, presented and put back; the rest stay as read.
pub fn present_pages(
    keys: Arc<KeyRing>,
    pages: BoxStream<'static, Result<ExportPage, StoreError>>,
) -> BoxStream<'static, Result<ExportPage, StoreError>> {
    pages
        .then(move |page| {
            let keys = keys.clone();
            async move {
                let mut page = page?;
                for i in 0..page.len() {
                    let sealed = page.event_type(i)? == "OrderPlaced"
                        && page.view(i)?.payload.contains("\"ciphertext\"");
                    if sealed {
                        let e = present_event(&keys, page.event(i)?).await?;
                        page.replace(i, e);
                    }
                }
                Ok(page)
            }
        })
        .boxed()
}

/// `e` with its sealed personal data presented ([`KeyRing::present_text`]).
async fn present_event(keys: &KeyRing, mut e: RawFeedEvent) -> Result<RawFeedEvent, StoreError> {
    let mut text = e.payload.get().to_string();
    keys.present_text(&e.event_type, &mut text).await?;
    e.payload = RawValue::from_string(text).map_err(|err| StoreError::Decode(err.to_string()))?;
    Ok(e)
}

fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&(*key).into())
}
