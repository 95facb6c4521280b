-- The sandbox payment provider's own log: one row per idempotency key (order id), so a
-- second authorization request for the same key can never authorize twice.
CREATE TABLE IF NOT EXISTS sandbox_payments
(
    idempotency_key text   PRIMARY KEY,
    token           text   NOT NULL,
    amount_minor    bigint NOT NULL,
    currency        text   NOT NULL,
    outcome         text   NOT NULL,
    created_at      bigint NOT NULL
);

-- Keys for which `tok_error` already failed once.
CREATE TABLE IF NOT EXISTS sandbox_errors
(
    idempotency_key text   PRIMARY KEY,
    created_at      bigint NOT NULL
);
