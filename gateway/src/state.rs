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
    /// The checkout saga: its worker runs when spawned; its compensation serves cancels.
    pub checkout: Arc<emporium_sagas::CheckoutSaga>,
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
        }
    }

    /// Replaces the saga (other provider or timeouts); call before spawning it.
    pub fn with_checkout(mut self, config: emporium_sagas::CheckoutConfig) -> Self {
        self.checkout = emporium_sagas::CheckoutSaga::new(
            self.store.clone(),
            Arc::new(emporium_sagas::Sandbox::new(self.store.db().clone())),
            config,
        );
        self
    }

    /// Starts the checkout saga on the in-process bus (embedded) or on NATS.
    pub async fn spawn_checkout(
        &self,
        nats: Option<(async_nats::Client, emporium_event_store::nats::NatsNames)>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, emporium_event_store::bus::BusError> {
        use emporium_event_store::bus::{
            LocalSubscriber, NatsSubscriber, Subscriber, SubscriberConfig,
        };
        // The worker acks as soon as the checkout has started, so a delivery stays unacked
        // only when its worker died: redeliver it soon.
        let config = SubscriberConfig {
            aggregate_type: Some("Order".into()),
            ack_wait: std::time::Duration::from_secs(10),
            ..SubscriberConfig::new("checkout")
        };
        let subscriber: Box<dyn Subscriber> = match nats {
            Some((client, names)) => {
                Box::new(NatsSubscriber::connect(client, names, config).await?)
            }
            None => Box::new(LocalSubscriber::open(self.store.clone(), config).await?),
        };
        let saga = self.checkout.clone();
        Ok(tokio::spawn(saga.run(subscriber, async move {
            shutdown.cancelled().await
        })))
    }

    /// Starts a runner for every projection; they stop when `shutdown` is cancelled.
    pub fn spawn_projections(
        &mut self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        for p in emporium_projections::all() {
            let runner = emporium_projections::Runner::new(self.store.clone(), p);
            self.projections.push((runner.name(), runner.status()));
            let token = shutdown.clone();
            handles.push(tokio::spawn(
                runner.run(async move { token.cancelled().await }),
            ));
        }
        handles
    }
}
