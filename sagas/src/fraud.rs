//! The fraud screen port and the built-in rules screen. The checkout saga asks the screen
//! for a score (0–100) once stock is reserved and before the payment is authorized; at or
//! above the configured threshold the order waits `under_review` for a person (or the
//! review timeout, which rejects it).
//!
//! The rules screen keeps its own memory (`fraud_screenings`, one row per screened order in
//! the engine's database) and scores four signals, each worth configurable points: a high
//! order value, a new customer (no order screened before), many orders from one customer in
//! a short window, and a shipping region the customer has never used before.

use std::time::Duration;

use emporium_domain::values::{CustomerId, Money, OrderId, Region};
use emporium_event_store::{on_db, Db};

/// What the screen is told about an order.
#[derive(Debug, Clone)]
pub struct ScreenFacts {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub shipping_region: Region,
}

/// The screen's verdict: a score and the signals behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screening {
    pub score: u8,
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("fraud screen unavailable: {0}")]
pub struct ScreenError(pub String);

/// What the checkout saga needs from a fraud screen. Asking twice for one order must give
/// the same kind of answer (the saga may resume after a crash).
#[async_trait::async_trait]
pub trait FraudScreen: Send + Sync + 'static {
    async fn screen(&self, facts: &ScreenFacts) -> Result<Screening, ScreenError>;
}

/// The built-in rules and their weights.
#[derive(Debug, Clone)]
pub struct FraudRules {
    /// An order total at or above this (minor units, any currency) is a high value.
    pub high_value_minor: i64,
    pub high_value_points: u8,
    pub new_customer_points: u8,
    /// More than `velocity_max` earlier orders from the customer within `velocity_window`.
    pub velocity_window: Duration,
    pub velocity_max: u32,
    pub velocity_points: u8,
    /// The customer ordered before, never to this shipping region.
    pub region_mismatch_points: u8,
}

impl Default for FraudRules {
    fn default() -> Self {
        Self {
            high_value_minor: 500_000,
            high_value_points: 40,
            new_customer_points: 15,
            velocity_window: Duration::from_secs(600),
            velocity_max: 5,
            velocity_points: 30,
            region_mismatch_points: 25,
        }
    }
}

/// The built-in rules screen.
pub struct RulesScreen {
    db: Db,
    rules: FraudRules,
}

impl RulesScreen {
    pub fn new(db: Db, rules: FraudRules) -> Self {
        Self { db, rules }
    }
}

fn err(e: sqlx::Error) -> ScreenError {
    ScreenError(e.to_string())
}

#[async_trait::async_trait]
impl FraudScreen for RulesScreen {
    async fn screen(&self, f: &ScreenFacts) -> Result<Screening, ScreenError> {
        let db = &self.db;
        let r = &self.rules;
        let now = chrono::Utc::now().timestamp_millis();
        let since = now - r.velocity_window.as_millis() as i64;
        let (oid, customer, region) = (
            f.order_id.to_string(),
            f.customer_id.as_str(),
            f.shipping_region.as_str(),
        );
        // The order itself is left out, so a resumed checkout scores it as the first run did.
        // Each question reads at most what it needs (the first earlier order, the first in
        // the region, up to `velocity_max` recent ones), never a customer's whole history.
        let sql = db.sql(
            "SELECT \
               EXISTS (SELECT 1 FROM fraud_screenings WHERE customer_id = $1 AND order_id <> $2), \
               (SELECT COUNT(*) FROM (SELECT 1 FROM fraud_screenings \
                  WHERE customer_id = $1 AND order_id <> $2 AND placed_at >= $3 LIMIT $5) AS r), \
               EXISTS (SELECT 1 FROM fraud_screenings \
                  WHERE customer_id = $1 AND order_id <> $2 AND region = $4)",
        );
        let (earlier, recent, same_region): (bool, i64, bool) = on_db!(db, pool => {
            sqlx::query_as(&sql).bind(customer).bind(&oid).bind(since).bind(region)
                .bind(i64::from(r.velocity_max)).fetch_one(pool).await.map_err(err)?
        });
        let mut score: u32 = 0;
        let mut reasons = Vec::new();
        if f.total.amount_minor() >= r.high_value_minor {
            score += u32::from(r.high_value_points);
            reasons.push(format!(
                "order value {} {} at or above {}",
                f.total.amount_minor(),
                f.total.currency(),
                r.high_value_minor
            ));
        }
        if !earlier {
            score += u32::from(r.new_customer_points);
            reasons.push("new customer".to_string());
        }
        if recent >= i64::from(r.velocity_max) {
            score += u32::from(r.velocity_points);
            reasons.push(format!(
                "{recent} or more orders from this customer in the last {} s",
                r.velocity_window.as_secs()
            ));
        }
        if earlier && !same_region {
            score += u32::from(r.region_mismatch_points);
            reasons.push(format!(
                "shipping region {region} not used by this customer before"
            ));
        }
        let score = u8::try_from(score.min(100)).unwrap_or(100);
        let sql = db.sql(
            "INSERT INTO fraud_screenings (order_id, customer_id, region, placed_at, score) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
        );
        on_db!(db, pool => {
            sqlx::query(&sql).bind(&oid).bind(customer).bind(region).bind(now)
                .bind(i32::from(score)).execute(pool).await.map_err(err)?.rows_affected()
        });
        Ok(Screening { score, reasons })
    }
}
