//! Process managers. The checkout saga takes a placed order across warehouses: allocate,
//! reserve, authorize payment, confirm, or compensate and reject.
//!
//! # Layout
//! - [`allocation`]: the pure allocation strategy (unit and property tested).
//! - the saga's durable state is the domain's `Checkout` aggregate (one per order).
//! - [`lease`]: one run per checkout at a time across engine processes.
//! - [`payment`]: the `PaymentProvider` port and the built-in sandbox provider.
//! - [`fraud`]: the `FraudScreen` port and the built-in rules screen.
//! - [`worker`]: the saga itself, consuming `OrderPlaced` through the bus.
//! - [`fulfilment`]: settling shipments and returns (stock out or back, capture, refund).
//!
//! Architecture invariant: every command the saga sends is idempotent per order (reservations
//! keyed by order id, payments by an idempotency key, order transitions guarded), so a
//! redelivery or resume can never reserve or authorize twice.

pub mod allocation;
pub mod fraud;
pub mod fulfilment;
pub mod lease;
pub mod payment;
pub mod worker;

pub use emporium_domain::Checkout;
pub use fraud::{FraudRules, FraudScreen, RulesScreen};
pub use payment::{PaymentProvider, Sandbox};
pub use worker::{CheckoutConfig, CheckoutSaga, FraudConfig, Outcome};

/// Creates this crate's tables (the sandbox payment provider's log) on `db`.
pub async fn migrate(
    db: &emporium_event_store::Db,
) -> Result<(), emporium_event_store::StoreError> {
    emporium_event_store::store::apply_migrations(
        db,
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
    .await
}
