//! The payment port and the built-in sandbox provider.
//!
//! Providers are called with an idempotency key (the order id): asking twice authorizes once.
//! The sandbox decides by token (API.md): `tok_ok` authorizes, `tok_decline` is declined,
//! `tok_timeout` never answers, `tok_error` fails with a transient error on the first try for
//! a key and succeeds on the next. Its log (`sandbox_payments`, in the engine's database) is
//! what tests read to prove one authorization per order.

use std::time::Duration;

use emporium_event_store::{on_db, Db};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Approved { authorization_id: String },
    Declined { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying (network trouble, provider hiccup).
    #[error("transient payment provider error: {0}")]
    Transient(String),
}

/// What the saga needs from a payment provider.
#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    async fn authorize(
        &self,
        idempotency_key: &str,
        token: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Authorization, ProviderError>;
    /// Releases an authorization; a no-op for unknown or already voided keys. After partial
    /// captures it releases what was not captured.
    async fn void(&self, idempotency_key: &str) -> Result<(), ProviderError>;
    /// Takes `amount_minor` of authorization `authorization_key`; idempotent per `key`.
    async fn capture(
        &self,
        authorization_key: &str,
        key: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(), ProviderError>;
    /// Gives back `amount_minor` of what was captured; idempotent per `key`.
    async fn refund(
        &self,
        authorization_key: &str,
        key: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(), ProviderError>;
}

/// The sandbox provider, keeping its log in the engine's database.
pub struct Sandbox {
    db: Db,
}

impl Sandbox {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Authorizations in the log (approved, not necessarily still standing).
    pub async fn approved_count(&self, idempotency_key: &str) -> Result<i64, sqlx::Error> {
        let sql = self
            .db
            .sql("SELECT COUNT(*) FROM sandbox_payments WHERE idempotency_key = $1 AND outcome IN ('approved', 'voided')");
        Ok(on_db!(&self.db, pool => {
            sqlx::query_scalar(&sql).bind(idempotency_key).fetch_one(pool).await?
        }))
    }
}

fn err(e: sqlx::Error) -> ProviderError {
    ProviderError::Transient(e.to_string())
}

#[async_trait::async_trait]
impl PaymentProvider for Sandbox {
    async fn authorize(
        &self,
        key: &str,
        token: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Authorization, ProviderError> {
        let db = &self.db;
        let now = chrono::Utc::now().timestamp_millis();
        if let Some(outcome) = plain_outcome(token) {
            // One round trip: record the decision, or read the one recorded first for this
            // key (a repeat gets the same answer).
            let sql = db.sql(
                "INSERT INTO sandbox_payments (idempotency_key, token, amount_minor, currency, outcome, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) \
                 DO UPDATE SET outcome = sandbox_payments.outcome RETURNING outcome",
            );
            let recorded: String = on_db!(db, pool => {
                sqlx::query_scalar(&sql).bind(key).bind(token).bind(amount_minor).bind(currency)
                    .bind(outcome).bind(now).fetch_one(pool).await.map_err(err)?
            });
            return Ok(decision(&recorded, key));
        }
        // Idempotency: a key already decided gets the same decision.
        let sql = db.sql("SELECT outcome FROM sandbox_payments WHERE idempotency_key = $1");
        let known: Option<String> = on_db!(db, pool => {
            sqlx::query_scalar(&sql).bind(key).fetch_optional(pool).await.map_err(err)?
        });
        match known.as_deref() {
            Some("approved") | Some("voided") => {
                return Ok(Authorization::Approved {
                    authorization_id: format!("auth_{key}"),
                })
            }
            Some("declined") => {
                return Ok(Authorization::Declined {
                    reason: "card declined".into(),
                })
            }
            _ => {}
        }
        let outcome = match token {
            "tok_timeout" => {
                // Never answers: the caller's timeout and the saga's deadline must act.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Err(ProviderError::Transient("no answer".into()));
            }
            "tok_error" => {
                let sql = db.sql(
                    "INSERT INTO sandbox_errors (idempotency_key, created_at) VALUES ($1, $2) \
                     ON CONFLICT (idempotency_key) DO NOTHING",
                );
                let first = on_db!(db, pool => {
                    sqlx::query(&sql).bind(key).bind(now).execute(pool).await.map_err(err)?.rows_affected()
                });
                if first == 1 {
                    return Err(ProviderError::Transient("sandbox: simulated outage".into()));
                }
                "approved"
            }
            "tok_decline" => "declined",
            _ => "approved",
        };
        let sql = db.sql(
            "INSERT INTO sandbox_payments (idempotency_key, token, amount_minor, currency, outcome, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING",
        );
        on_db!(db, pool => {
            sqlx::query(&sql).bind(key).bind(token).bind(amount_minor).bind(currency).bind(outcome).bind(now)
                .execute(pool).await.map_err(err)?.rows_affected()
        });
        // Whatever was recorded first (a racing duplicate) is the answer.
        Box::pin(self.authorize_known(key)).await
    }

    async fn capture(
        &self,
        authorization_key: &str,
        key: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(), ProviderError> {
        self.settle("capture", authorization_key, key, amount_minor, currency)
            .await
    }

    async fn refund(
        &self,
        authorization_key: &str,
        key: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(), ProviderError> {
        self.settle("refund", authorization_key, key, amount_minor, currency)
            .await
    }

    async fn void(&self, key: &str) -> Result<(), ProviderError> {
        let sql = self
            .db
            .sql("UPDATE sandbox_payments SET outcome = 'voided' WHERE idempotency_key = $1 AND outcome = 'approved'");
        on_db!(&self.db, pool => {
            sqlx::query(&sql).bind(key).execute(pool).await.map_err(err)?.rows_affected()
        });
        Ok(())
    }
}

/// The sandbox's decision for tokens that need no simulated trouble.
fn plain_outcome(token: &str) -> Option<&'static str> {
    match token {
        "tok_timeout" | "tok_error" => None,
        "tok_decline" => Some("declined"),
        _ => Some("approved"),
    }
}

/// The answer for an outcome in the log (a voided authorization was approved once).
fn decision(outcome: &str, key: &str) -> Authorization {
    match outcome {
        "declined" => Authorization::Declined {
            reason: "card declined".into(),
        },
        _ => Authorization::Approved {
            authorization_id: format!("auth_{key}"),
        },
    }
}

impl Sandbox {
    async fn settle(
        &self,
        kind: &str,
        authorization_key: &str,
        key: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(), ProviderError> {
        let sql = self.db.sql(
            "INSERT INTO sandbox_settlements (idempotency_key, authorization_key, kind, amount_minor, currency, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING",
        );
        let now = chrono::Utc::now().timestamp_millis();
        on_db!(&self.db, pool => {
            sqlx::query(&sql).bind(key).bind(authorization_key).bind(kind).bind(amount_minor)
                .bind(currency).bind(now).execute(pool).await.map_err(err)?.rows_affected()
        });
        Ok(())
    }

    /// `(captures, captured minor units, refunds, refunded minor units)` in the sandbox's
    /// books for authorization `authorization_key`.
    pub async fn settlements(
        &self,
        authorization_key: &str,
    ) -> Result<(i64, i64, i64, i64), sqlx::Error> {
        let sql = self.db.sql(
            "SELECT kind, COUNT(*), CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM sandbox_settlements \
             WHERE authorization_key = $1 GROUP BY kind",
        );
        let rows: Vec<(String, i64, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(&sql).bind(authorization_key).fetch_all(pool).await?
        });
        let mut out = (0, 0, 0, 0);
        for (kind, n, sum) in rows {
            if kind == "capture" {
                out.0 = n;
                out.1 = sum;
            } else {
                out.2 = n;
                out.3 = sum;
            }
        }
        Ok(out)
    }

    async fn authorize_known(&self, key: &str) -> Result<Authorization, ProviderError> {
        let sql = self
            .db
            .sql("SELECT outcome FROM sandbox_payments WHERE idempotency_key = $1");
        let outcome: String = on_db!(&self.db, pool => {
            sqlx::query_scalar(&sql).bind(key).fetch_one(pool).await.map_err(err)?
        });
        Ok(decision(&outcome, key))
    }
}
