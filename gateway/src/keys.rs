//! API keys: creation, listing, revocation and authentication.
//!
//! A key looks like `emp_<key id>_<secret>`: the id (16 hex digits) finds the row, the
//! secret (256 random bits) proves possession. Only SHA-256 of the whole key is stored, so
//! the database alone cannot recover a key; a fast hash is enough because the secret has
//! full entropy (argon2 per request would cost ~1 s in debug builds). Comparisons are
//! constant-time. `EMPORIUM_ADMIN_KEY` adds a bootstrap admin key that lives only in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use emporium_domain::values::{CustomerId, MerchantId};
use emporium_event_store::{on_db, Db, StoreError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

/// How long an authenticated key is trusted without asking the database again. Revocation
/// through this process takes effect at once; through another process within this time.
const CACHE_TTL: Duration = Duration::from_secs(1);

/// What a key may do (see API.md). `Admin` may do everything.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Client,
    Analyst,
    Auditor,
    /// A seller: its own products, their stock, and its lines of the orders that have them.
    Merchant,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Operator,
        Role::Client,
        Role::Analyst,
        Role::Auditor,
        Role::Merchant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Client => "client",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
            Role::Merchant => "merchant",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Recorded as the `actor` of every event the request writes.
    pub key_id: String,
    pub role: Role,
    /// Set for `client` keys: the only customer whose orders the key may touch.
    pub customer_id: Option<CustomerId>,
    /// Set for `merchant` keys: the only merchant whose products, stock and order lines the
    /// key may touch.
    pub merchant_id: Option<MerchantId>,
}

/// A key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub key_id: String,
    pub role: Role,
    pub customer_id: Option<String>,
    pub merchant_id: Option<String>,
    pub label: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A freshly created key: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The bearer token. Store it now: it cannot be recovered.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a client key needs a customer id")]
    ClientWithoutCustomer,
    #[error("only client keys are bound to a customer")]
    CustomerOnNonClient,
    #[error("a merchant key needs a merchant id")]
    MerchantWithoutId,
    #[error("only merchant keys are bound to a merchant")]
    MerchantOnNonMerchant,
    #[error("label must be at most 200 characters without control characters")]
    BadLabel,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Store(StoreError::Database(e))
    }
}

struct Cached {
    actor: Actor,
    digest: [u8; 32],
    at: Instant,
}

/// Keys in the database plus the optional in-memory bootstrap admin key.
pub struct KeyStore {
    db: Db,
    bootstrap: Option<[u8; 32]>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Keys revoked through this process: never served from, nor put back into, the cache
    /// (a lookup that read the row just before the revoke commits would otherwise re-cache
    /// it). Small: one entry per revocation since start.
    revoked: Mutex<std::collections::HashSet<String>>,
}

/// A key's row as authentication reads it: role, customer, hash, merchant.
type KeyRow = (String, Option<String>, Vec<u8>, Option<String>);

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl KeyStore {
    pub fn new(db: Db, bootstrap_admin_key: Option<&str>) -> Self {
        Self {
            db,
            bootstrap: bootstrap_admin_key.filter(|k| !k.is_empty()).map(digest),
            cache: Mutex::new(HashMap::new()),
            revoked: Mutex::default(),
        }
    }

    /// Creates a key and returns it with its secret (shown once).
    pub async fn create(
        &self,
        role: Role,
        customer_id: Option<CustomerId>,
        label: &str,
    ) -> Result<CreatedKey, KeyError> {
        self.create_bound(role, customer_id, None, label).await
    }

    /// [`KeyStore::create`], for merchant keys with their merchant.
    pub async fn create_bound(
        &self,
        role: Role,
        customer_id: Option<CustomerId>,
        merchant_id: Option<MerchantId>,
        label: &str,
    ) -> Result<CreatedKey, KeyError> {
        match (role, &customer_id) {
            (Role::Client, None) => return Err(KeyError::ClientWithoutCustomer),
            (r, Some(_)) if r != Role::Client => return Err(KeyError::CustomerOnNonClient),
            _ => {}
        }
        match (role, &merchant_id) {
            (Role::Merchant, None) => return Err(KeyError::MerchantWithoutId),
            (r, Some(_)) if r != Role::Merchant => return Err(KeyError::MerchantOnNonMerchant),
            _ => {}
        }
        if label.chars().count() > crate::schema::MAX_LABEL_LEN
            || label.chars().any(char::is_control)
        {
            return Err(KeyError::BadLabel);
        }
        // ThreadRng is not Send: draw everything before the first await.
        let (id_bytes, secret): ([u8; 8], [u8; 32]) = {
            let mut rng = rand::rng();
            (rng.random(), rng.random())
        };
        let key_id = hex::encode(id_bytes);
        let key = format!("emp_{key_id}_{}", hex::encode(secret));
        let created_at = now_ms();
        let sql = self.db.sql(
            "INSERT INTO api_keys (key_id, role, customer_id, label, key_hash, created_at, merchant_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        );
        let customer = customer_id.as_ref().map(|c| c.as_str().to_string());
        let merchant = merchant_id.as_ref().map(|m| m.as_str().to_string());
        on_db!(&self.db, pool => {
            sqlx::query(&sql)
                .bind(&key_id)
                .bind(role.as_str())
                .bind(&customer)
                .bind(label)
                .bind(digest(&key).to_vec())
                .bind(created_at)
                .bind(&merchant)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(CreatedKey {
            key,
            info: KeyInfo {
                key_id,
                role,
                customer_id: customer,
                merchant_id: merchant,
                label: label.to_string(),
                created_at,
                revoked_at: None,
            },
        })
    }

    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let sql = "SELECT key_id, role, customer_id, merchant_id, label, created_at, revoked_at \
                   FROM api_keys ORDER BY created_at, key_id";
        let keys = on_db!(&self.db, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    let role: String = r.try_get("role")?;
                    Ok(KeyInfo {
                        key_id: r.try_get("key_id")?,
                        role: Role::parse(&role).unwrap_or(Role::Auditor),
                        customer_id: r.try_get("customer_id")?,
                        merchant_id: r.try_get("merchant_id")?,
                        label: r.try_get("label")?,
                        created_at: r.try_get("created_at")?,
                        revoked_at: r.try_get("revoked_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(keys)
    }

    /// Revokes a key. Returns false if there is no such (unrevoked) key.
    pub async fn revoke(&self, key_id: &str) -> Result<bool, KeyError> {
        let sql = self
            .db
            .sql("UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL");
        if let Ok(mut revoked) = self.revoked.lock() {
            revoked.insert(key_id.to_string());
        }
        let n = on_db!(&self.db, pool => {
            sqlx::query(&sql).bind(now_ms()).bind(key_id).execute(pool).await?.rows_affected()
        });
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(key_id);
        }
        Ok(n == 1)
    }

    /// Whether an in-memory bootstrap admin key (`EMPORIUM_ADMIN_KEY`) is configured: the
    /// key id `admin` exists only then.
    pub fn has_bootstrap(&self) -> bool {
        self.bootstrap.is_some()
    }

    /// Whether any unrevoked admin key exists in the database.
    pub async fn has_admin(&self) -> Result<bool, KeyError> {
        let sql = "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL";
        let n: i64 = on_db!(&self.db, pool => {
            sqlx::query_scalar(sql).fetch_one(pool).await?
        });
        Ok(n > 0)
    }

    /// The caller behind a presented bearer token, if it is a valid, unrevoked key.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Actor>, KeyError> {
        let d = digest(presented);
        if let Some(b) = &self.bootstrap {
            if bool::from(d.ct_eq(b)) {
                return Ok(Some(Actor {
                    key_id: "admin".to_string(),
                    role: Role::Admin,
                    customer_id: None,
                    merchant_id: None,
                }));
            }
        }
        let Some(key_id) = presented
            .strip_prefix("emp_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Ok(None);
        };
        if self
            .revoked
            .lock()
            .map(|r| r.contains(key_id))
            .unwrap_or(true)
        {
            return Ok(None);
        }
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.get(key_id) {
                if c.at.elapsed() < CACHE_TTL {
                    return Ok(bool::from(d.ct_eq(&c.digest)).then(|| c.actor.clone()));
                }
            }
        }
        // Taken before the read: an entry never outlives a revoke on another engine by more
        // than CACHE_TTL, however long the read took.
        let read_at = Instant::now();
        let sql = self.db.sql(
            "SELECT role, customer_id, key_hash, merchant_id FROM api_keys \
             WHERE key_id = $1 AND revoked_at IS NULL",
        );
        let row: Option<KeyRow> = on_db!(&self.db, pool => {
            sqlx::query_as(&sql).bind(key_id).fetch_optional(pool).await?
        });
        let Some((role, customer, hash, merchant)) = row else {
            return Ok(None);
        };
        let (Some(role), Ok(stored)) = (Role::parse(&role), <[u8; 32]>::try_from(hash)) else {
            return Ok(None);
        };
        let actor = Actor {
            key_id: key_id.to_string(),
            role,
            customer_id: customer.and_then(|c| CustomerId::parse(&c).ok()),
            merchant_id: merchant.and_then(|m| MerchantId::parse(&m).ok()),
        };
        let revoked_meanwhile = self
            .revoked
            .lock()
            .map(|r| r.contains(key_id))
            .unwrap_or(true);
        if revoked_meanwhile {
            return Ok(None);
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                key_id.to_string(),
                Cached {
                    actor: actor.clone(),
                    digest: stored,
                    at: read_at,
                },
            );
        }
        Ok(bool::from(d.ct_eq(&stored)).then_some(actor))
    }
}
