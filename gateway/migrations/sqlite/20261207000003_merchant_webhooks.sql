-- Each merchant webhook's signing secret, kept outside the event log (the log is exported
-- and published; a secret in it would be shown to every analyst and NATS consumer).
CREATE TABLE IF NOT EXISTS merchant_webhook_secrets
(
    merchant_id text   PRIMARY KEY,
    secret      text   NOT NULL,
    created_at  bigint NOT NULL
);
