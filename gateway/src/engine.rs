//! The composition root. [`Engine::builder`] opens the store (migrating every crate's
//! tables) and starts, under one shutdown signal, what a running engine is made of: the relay
//! to NATS JetStream and the bus the saga consumes, the projection runners, the checkout
//! saga with its payment provider, the upkeep task and the HTTP server. `emporium serve`,
//! the end-to-end tests and the benchmarks all start the engine here; nothing else wires
//! these parts together.
//!
//! Ports are injected here: the payment provider ([`EngineBuilder::payment_provider`]) and
//! the upcasters of stored events ([`EngineBuilder::upcasters`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use emporium_event_store::nats::NatsNames;
use emporium_event_store::relay::{Relay, RelayConfig};
use emporium_event_store::{Store, StoreConfig, Upcasters};
use emporium_sagas::{CheckoutConfig, CheckoutSaga, PaymentProvider, Sandbox};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::RouteSpec;
use crate::keys::Role;
use crate::state::{ApiConfig, AppState, BusState};

/// Where the engine's store comes from.
enum StoreSource {
    Open(StoreConfig),
    Given(Store),
}

/// NATS JetStream: an address to connect to, or a client already connected.
enum NatsSource {
    Url(String),
    Client(async_nats::Client),
}

struct NatsOptions {
    source: NatsSource,
    prefix: String,
    duplicate_window: Duration,
}

/// Builds and starts an [`Engine`]. Every part is on by default except NATS (the in-process
/// bus serves the saga then) and the demo data.
pub struct EngineBuilder {
    store: StoreSource,
    api: ApiConfig,
    admin_key: Option<String>,
    listen: String,
    nats: Option<NatsOptions>,
    checkout: CheckoutConfig,
    run_checkout: bool,
    run_projections: bool,
    payment: Option<Arc<dyn PaymentProvider>>,
    upcasters: Option<Upcasters>,
    demo: bool,
    audit: Option<AuditOptions>,
    search_dir: Option<std::path::PathBuf>,
    notify: Option<crate::notify::NotifyConfig>,
}

/// Signed digests of the log (docs/audit.md): the key, how often, and where to publish them
/// besides the database (a directory; the NATS subject `<prefix>.audit.digest` when NATS is on).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub key_path: std::path::PathBuf,
    pub interval: Duration,
    pub dir: Option<std::path::PathBuf>,
}

/// A running engine. Dropping it cancels its tasks; [`Engine::stop`] also waits for them.
pub struct Engine {
    /// What handlers see: store, keys, the saga, bus and projection status.
    pub state: AppState,
    /// The address the HTTP server listens on.
    pub addr: SocketAddr,
    /// Every registered route with its access rule.
    pub routes: Vec<RouteSpec>,
    /// An admin key created because none existed (shown once by `serve`).
    pub created_admin_key: Option<String>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = &self.server {
            s.abort();
        }
    }
}

impl Engine {
    /// An engine on the store `config` describes (opened and migrated at start).
    pub fn builder(config: StoreConfig) -> EngineBuilder {
        EngineBuilder::new(StoreSource::Open(config))
    }

    /// An engine on a store that is already open; its tables are migrated at start.
    pub fn on_store(store: Store) -> EngineBuilder {
        EngineBuilder::new(StoreSource::Given(store))
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The signal every part of this engine stops on.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until `signal` resolves, then drains in-flight requests and stops every task.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            token.cancel();
        });
        if let Some(server) = self.server.take() {
            server.await.context("HTTP server task")??;
        }
        self.stop().await;
        Ok(())
    }

    /// Stops every task and waits for them (the relay saves its checkpoint, runners finish
    /// their step).
    pub async fn stop(mut self) {
        self.halt().await;
    }

    /// [`Engine::stop`] for an engine still borrowed: its state (store, auditor) stays
    /// usable while nothing in the background appends any more.
    pub async fn halt(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl EngineBuilder {
    fn new(store: StoreSource) -> Self {
        Self {
            store,
            api: ApiConfig::default(),
            admin_key: None,
            listen: "127.0.0.1:0".into(),
            nats: None,
            checkout: CheckoutConfig::default(),
            run_checkout: true,
            run_projections: true,
            payment: None,
            upcasters: None,
            demo: false,
            audit: None,
            search_dir: None,
            notify: Some(crate::notify::NotifyConfig::default()),
        }
    }

    /// Tunables of the HTTP API.
    #[must_use]
    pub fn api(mut self, config: ApiConfig) -> Self {
        self.api = config;
        self
    }

    /// A bootstrap admin key kept in memory only. Without one, and without an admin key in
    /// the database, one is created at start ([`Engine::created_admin_key`]).
    #[must_use]
    pub fn admin_key(mut self, key: Option<String>) -> Self {
        self.admin_key = key.filter(|k| !k.is_empty());
        self
    }

    /// Where the HTTP server listens (`127.0.0.1:0`, a free loopback port, by default).
    #[must_use]
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Relay the feed to NATS JetStream at `url` under subject `prefix`, and run the saga on
    /// a durable JetStream consumer. Without it the saga uses the in-process bus.
    #[must_use]
    pub fn nats_url(mut self, url: impl Into<String>, prefix: impl Into<String>) -> Self {
        self.nats = Some(NatsOptions {
            source: NatsSource::Url(url.into()),
            prefix: prefix.into(),
            duplicate_window: Duration::from_secs(600),
        });
        self
    }

    /// Like [`EngineBuilder::nats_url`] with a client already connected.
    #[must_use]
    pub fn nats_client(mut self, client: async_nats::Client, prefix: impl Into<String>) -> Self {
        self.nats = Some(NatsOptions {
            source: NatsSource::Client(client),
            prefix: prefix.into(),
            duplicate_window: Duration::from_secs(600),
        });
        self
    }

    /// The events stream's duplicate window (see docs/adr/0005-relay.md).
    #[must_use]
    pub fn nats_duplicate_window(mut self, window: Duration) -> Self {
        if let Some(n) = &mut self.nats {
            n.duplicate_window = window;
        }
        self
    }

    /// The checkout saga's settings.
    #[must_use]
    pub fn checkout(mut self, config: CheckoutConfig) -> Self {
        self.checkout = config;
        self
    }

    /// Whether the saga's worker consumes placed orders (on by default). Off, orders stay
    /// pending; cancels still give back what an order holds.
    #[must_use]
    pub fn run_checkout(mut self, on: bool) -> Self {
        self.run_checkout = on;
        self
    }

    /// Whether projection runners keep the read models live (on by default).
    #[must_use]
    pub fn run_projections(mut self, on: bool) -> Self {
        self.run_projections = on;
        self
    }

    /// The payment provider the saga authorizes and voids with (the sandbox by default).
    #[must_use]
    pub fn payment_provider(mut self, provider: Arc<dyn PaymentProvider>) -> Self {
        self.payment = Some(provider);
        self
    }

    /// Upcasters for stored events of older versions (the engine's own by default).
    #[must_use]
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Some(upcasters);
        self
    }

    /// Sign digests of the log periodically with the key at `options.key_path`.
    #[must_use]
    pub fn audit(mut self, options: AuditOptions) -> Self {
        self.audit = Some(options);
        self
    }

    /// Seed demo warehouses, products and stock into an empty store.
    #[must_use]
    pub fn demo(mut self, on: bool) -> Self {
        self.demo = on;
        self
    }

    /// Keeps the catalog search index in this directory (it then survives restarts and
    /// continues from its last commit) instead of in memory. One directory per process.
    #[must_use]
    pub fn search_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.search_dir = dir;
        self
    }

    /// How order notifications are delivered (NATS and merchant webhooks); `None` delivers
    /// none (the outbox still fills, for another engine to send).
    #[must_use]
    pub fn notify(mut self, config: Option<crate::notify::NotifyConfig>) -> Self {
        self.notify = config;
        self
    }

    /// Opens and migrates the store, then starts every part.
    pub async fn start(self) -> anyhow::Result<Engine> {
        let store = match self.store {
            StoreSource::Open(config) => Store::open(&config)
                .await
                .context("opening the event store")?,
            StoreSource::Given(store) => store,
        };
        let store = match self.upcasters {
            Some(u) => store.with_upcasters(u),
            None => store,
        };
        crate::migrate::all(&store)
            .await
            .context("migrating the database")?;
        if self.demo {
            crate::demo::seed(&store)
                .await
                .context("seeding demo data")?;
        }
        let provider = self
            .payment
            .unwrap_or_else(|| Arc::new(Sandbox::new(store.db().clone())));
        let mut state = AppState::new(store.clone(), self.admin_key.as_deref(), self.api)
            .with_saga(CheckoutSaga::new(store.clone(), provider, self.checkout));
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let mut saga_bus = None;
        let mut digest_bus = None;
        let mut notify_bus = None;
        if let Some(nats) = self.nats {
            let client = match nats.source {
                // Start even while NATS is down: the relay catches up when it comes back.
                NatsSource::Url(url) => async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(&url)
                    .await
                    .with_context(|| format!("connecting to NATS at {url}"))?,
                NatsSource::Client(c) => c,
            };
            let mut relay_config = RelayConfig::new(&nats.prefix);
            relay_config.duplicate_window = nats.duplicate_window;
            let relay = Relay::new(store.clone(), client.clone(), relay_config);
            state.bus = Some(BusState {
                client: client.clone(),
                relay: relay.status(),
            });
            digest_bus = Some((client.clone(), format!("{}.audit.digest", nats.prefix)));
            notify_bus = Some(crate::notify::NatsTarget {
                client: client.clone(),
                prefix: nats.prefix.clone(),
            });
            saga_bus = Some((client, NatsNames::new(&nats.prefix), nats.duplicate_window));
            let token = shutdown.clone();
            tasks.push(tokio::spawn(
                relay.run(async move { token.cancelled().await }),
            ));
            tracing::info!(prefix = %nats.prefix, "relay to NATS JetStream enabled");
        }

        let mut created_admin_key = None;
        if self.admin_key.is_none() && !state.keys.has_admin().await? {
            let created = state
                .keys
                .create(Role::Admin, None, "created on first start")
                .await?;
            created_admin_key = Some(created.key);
        }

        if let Some(audit) = self.audit {
            let key = emporium_event_store::audit::load_or_create_signing_key(&audit.key_path)
                .context("loading the audit signing key")?;
            state.audit_public_key = Some(key.verifying_key());
            tracing::info!(
                public_key = %hex::encode(key.verifying_key().to_bytes()),
                every_secs = audit.interval.as_secs(),
                "signing digests of the log"
            );
            let (auditor, token) = (state.auditor.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    () = digests(auditor, key, audit, digest_bus) => {}
                    () = token.cancelled() => {}
                }
            }));
        }
        if self.run_projections {
            tasks.extend(spawn_projections(&mut state, &shutdown));
            let search = emporium_projections::search::CatalogSearch::open(self.search_dir)
                .context("opening the catalog search index")?;
            state.search = Some(search.clone());
            let (store, token) = (store.clone(), shutdown.clone());
            tasks.push(tokio::spawn(
                search.follow(store, async move { token.cancelled().await }),
            ));
        }
        if let Some(config) = self.notify {
            tasks.push(tokio::spawn(crate::notify::run(
                store.clone(),
                notify_bus,
                config,
                shutdown.clone(),
            )));
        }
        if self.run_checkout {
            tasks.push(
                spawn_checkout(&state, saga_bus, &shutdown)
                    .await
                    .context("starting the checkout saga")?,
            );
        }
        let upkeep = {
            let (state, token) = (state.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = crate::app::upkeep(state) => {}
                    () = token.cancelled() => {}
                }
            })
        };
        tasks.push(upkeep);

        let listener = tokio::net::TcpListener::bind(&self.listen)
            .await
            .with_context(|| format!("binding {}", self.listen))?;
        let addr = listener.local_addr()?;
        let built = crate::app::build(state.clone());
        let token = shutdown.clone();
        let server = tokio::spawn(crate::app::serve_router(
            listener,
            built.router,
            async move { token.cancelled().await },
        ));
        Ok(Engine {
            state,
            addr,
            routes: built.routes,
            created_admin_key,
            shutdown,
            tasks,
            server: Some(server),
        })
    }
}

/// Signs a digest of the log every `options.interval` when it grew, and publishes each to
/// the directory and the NATS subject. Several engines may sign: the database keeps the
/// first digest of each position.
async fn digests(
    auditor: Arc<emporium_event_store::audit::Auditor>,
    key: ed25519_dalek::SigningKey,
    options: AuditOptions,
    bus: Option<(async_nats::Client, String)>,
) {
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let digest = match auditor.digest(&key).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "signing a digest failed; retrying next time");
                continue;
            }
        };
        let Ok(json) = serde_json::to_vec_pretty(&digest) else {
            continue;
        };
        if let Some(dir) = &options.dir {
            let file = dir.join(format!("digest-{:020}.json", digest.position));
            let tmp = dir.join(format!(".digest-{}.tmp", digest.position));
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&tmp, &json))
                .and_then(|()| std::fs::rename(&tmp, &file));
            if let Err(e) = written {
                tracing::warn!(error = %e, dir = %dir.display(), "writing a digest file failed");
            }
        }
        if let Some((client, subject)) = &bus {
            if let Err(e) = client.publish(subject.clone(), json.into()).await {
                tracing::warn!(error = %e, "publishing a digest to NATS failed");
            }
        }
        tracing::info!(position = digest.position, root = %digest.root, "signed a digest of the log");
    }
}

/// Starts a runner for every projection, recording their status in `state`.
fn spawn_projections(state: &mut AppState, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    for p in emporium_projections::all() {
        let runner = emporium_projections::Runner::new(state.store.clone(), p);
        state.projections.push((runner.name(), runner.status()));
        let token = shutdown.clone();
        handles.push(tokio::spawn(
            runner.run(async move { token.cancelled().await }),
        ));
    }
    handles
}

/// Starts the checkout saga's worker on NATS (a durable consumer) or the in-process bus.
async fn spawn_checkout(
    state: &AppState,
    nats: Option<(async_nats::Client, NatsNames, Duration)>,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<()>, emporium_event_store::bus::BusError> {
    use cqrs_es::Aggregate;
    use emporium_event_store::bus::{
        LocalSubscriber, NatsSubscriber, Subscriber, SubscriberConfig,
    };
    // The worker acks as soon as the checkout has started, so a delivery stays unacked
    // only when its worker died: redeliver it soon. Handling is idempotent (claims,
    // leases, the checkout's own state), so acks need no confirmation round trip.
    let config = SubscriberConfig {
        aggregate_type: Some(emporium_domain::Order::TYPE.into()),
        ack_wait: Duration::from_secs(10),
        confirm_acks: false,
        ..SubscriberConfig::new("checkout")
    };
    let subscriber: Box<dyn Subscriber> = match nats {
        Some((client, names, duplicate_window)) => Box::new(
            NatsSubscriber::connect(
                client,
                names,
                SubscriberConfig {
                    duplicate_window,
                    ..config
                },
            )
            .await?,
        ),
        None => Box::new(LocalSubscriber::open(state.store.clone(), config).await?),
    };
    let token = shutdown.clone();
    Ok(tokio::spawn(
        state
            .checkout
            .clone()
            .run(subscriber, async move { token.cancelled().await }),
    ))
}
