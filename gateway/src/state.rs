//! Shared state handed to every handler, and the API's tunables.

use std::sync::Arc;
use std::time::Duration;

use emporium_event_store::Store;

use crate::auth::{rate_limiter, KeyedLimiter};
use crate::keys::KeyStore;

/// Tunables of the HTTP API (CLI flags / environment, see `cli.rs`).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long an idempotency record is kept.
    pub idempotency_ttl: Duration,
    /// After this long without a stored response, an idempotency claim is presumed
    /// abandoned (its process died) and a retry may take it over.
    pub idempotency_lease: Duration,
    /// Commands handled at once; more are shed with 503 + Retry-After.
    pub max_inflight_commands: usize,
    /// Sustained requests per second per API key (0 = unlimited).
    pub rate_limit_per_sec: u32,
    /// Burst allowance per API key.
    pub rate_limit_burst: u32,
    /// Longest a request may take before 504.
    pub request_timeout: Duration,
    /// Serve `/metrics` to non-loopback peers too.
    pub metrics_public: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_lease: Duration::from_secs(60),
            max_inflight_commands: 256,
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
            request_timeout: Duration::from_secs(30),
            metrics_public: false,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub keys: Arc<KeyStore>,
    pub config: Arc<ApiConfig>,
    pub limiter: Option<Arc<KeyedLimiter>>,
    /// The NATS connection and the relay's status, when `NATS_URL` is set.
    pub bus: Option<BusState>,
    /// Projection runners in this process, by name.
    pub projections: Vec<(&'static str, Arc<emporium_projections::RunnerStatus>)>,
    /// The checkout saga: its worker runs when the engine starts it; its compensation
    /// serves cancels.
    pub checkout: Arc<emporium_sagas::CheckoutSaga>,
    /// Fault points tests switch on to stand in for a crash at an exact moment.
    pub faults: Arc<Faults>,
    /// Digests, proofs and verification of the log (tamper evidence).
    pub auditor: Arc<emporium_event_store::audit::Auditor>,
    /// The public half of the engine's digest signing key (`--audit-key`), trusted by
    /// verification when set.
    pub audit_public_key: Option<ed25519_dalek::VerifyingKey>,
    /// Customers' keys: seals personal data on placement, shows or erases it on reads.
    pub keyring: Arc<emporium_event_store::personal::KeyRing>,
    /// Catalog search: this process's full-text index, kept current from the feed while the
    /// engine runs its projections (`None` outside a running engine).
    pub search: Option<Arc<emporium_projections::search::CatalogSearch>>,
    /// The console overview's figures, shared by every viewer and live stream.
    pub overview: Arc<crate::console::overview::FiguresCache>,
}

/// Fault points for tests; all off in a running engine.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next command with an `Idempotency-Key` loses its response after it was applied,
    /// as if the process died right after the commit: no response is stored, the claim
    /// stays in progress, and the client gets a 500.
    pub lose_response_after_commit: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
pub struct BusState {
    pub client: async_nats::Client,
    pub relay: Arc<emporium_event_store::relay::RelayStatus>,
}

impl AppState {
    pub fn new(store: Store, bootstrap_admin_key: Option<&str>, config: ApiConfig) -> Self {
        let keys = Arc::new(KeyStore::new(store.db().clone(), bootstrap_admin_key));
        let limiter = rate_limiter(config.rate_limit_per_sec, config.rate_limit_burst);
        Self {
            store: store.clone(),
            keys,
            config: Arc::new(config),
            limiter,
            bus: None,
            projections: Vec::new(),
            checkout: emporium_sagas::CheckoutSaga::new(
                store.clone(),
                Arc::new(emporium_sagas::Sandbox::new(store.db().clone())),
                emporium_sagas::CheckoutConfig::default(),
            ),
            faults: Arc::default(),
            auditor: Arc::new(emporium_event_store::audit::Auditor::new(
                store.db().clone(),
            )),
            audit_public_key: None,
            keyring: Arc::new(emporium_event_store::personal::KeyRing::new(
                store.db().clone(),
            )),
            search: None,
            overview: Arc::default(),
        }
    }

    /// Uses `saga` (another payment provider or timeouts) for checkouts and cancels.
    #[must_use]
    pub fn with_saga(mut self, saga: Arc<emporium_sagas::CheckoutSaga>) -> Self {
        self.checkout = saga;
        self
    }
}
