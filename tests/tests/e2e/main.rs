//! Every end-to-end test in one binary (one link instead of one per file), a module per
//! area; shared helpers live in the `emporium-tests` library (`tests/src`).

mod api;
mod architecture;
mod audit;
mod backbone;
mod checkout;
mod checkout_safety;
mod concurrency;
mod contract;
mod deploy;
mod events_export;
mod fulfilment;
mod fuzz;
mod hostile;
mod idempotency;
mod openapi;
mod overload;
mod personal;
mod projections;
mod relay_outage;
mod roles;
mod slow_readers;
