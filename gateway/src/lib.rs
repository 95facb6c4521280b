//! Emporium's gateway: the HTTP API (axum) and the `emporium` command line.
//!
//! # Layout
//! - [`app`]: the router and `serve`.
//! - [`routes`]: one module per resource; request bodies become domain commands through
//!   `TryFrom`, never by deserialising straight into a command.
//! - [`error`]: `ApiError`, rendered as problem+json; database text never reaches a client.
//! - [`extract`]: JSON/path/query extractors with problem+json rejections, and the request
//!   context (actor, request id) that becomes event metadata.
//! - [`export`]: the NDJSON and CSV encoders of `GET /v1/events`; [`parquet`]: its Parquet one.
//! - [`auth`], [`keys`]: API keys, roles and per-route access; [`idempotency`]:
//!   `Idempotency-Key` for commands; [`metrics`]: Prometheus.
//! - [`engine`]: the composition root that starts every part (serve, tests, benchmarks).
//! - [`migrate`]: every crate's migrations, in order.
//! - [`schema`]: OpenAPI schemas of request fields, mirroring the domain's value rules.
//! - [`cli`], [`demo`]: the binary's subcommands.
//!
//! Architecture invariant: the gateway validates at the edge and holds no business rules;
//! every state change goes through an aggregate in `emporium-domain` via the event store.

pub mod app;
pub mod auth;
pub mod cli;
pub mod console;
pub mod demo;
pub mod engine;
pub mod error;
pub mod export;
pub mod extract;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod migrate;
pub mod notify;
pub mod parquet;
pub mod routes;
pub mod schema;
pub mod state;

pub use app::{app, serve};
pub use engine::{AuditOptions, Engine, EngineBuilder};
pub use state::{ApiConfig, AppState};
