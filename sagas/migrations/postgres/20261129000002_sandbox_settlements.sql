-- The sandbox provider's captures and refunds: one row per idempotency key
-- (`<order>:capture:<shipment>` or `<order>:refund:<return>`), so a repeated request moves
-- money once.
CREATE TABLE IF NOT EXISTS sandbox_settlements
(
    idempotency_key text   PRIMARY KEY,
    authorization_key text NOT NULL,
    kind            text   NOT NULL,
    amount_minor    bigint NOT NULL,
    currency        text   NOT NULL,
    created_at      bigint NOT NULL
);
