-- Gateway state kept beside the events: API keys (only a SHA-256 of each key is stored) and
-- idempotency records. Times are epoch milliseconds, identical on both backends.
CREATE TABLE IF NOT EXISTS api_keys
(
    key_id      text    PRIMARY KEY,
    role        text    NOT NULL,
    customer_id text,
    label       text    NOT NULL DEFAULT '',
    key_hash    blob    NOT NULL,
    created_at  integer NOT NULL,
    revoked_at  integer
) STRICT;

CREATE TABLE IF NOT EXISTS idempotency_keys
(
    actor         text    NOT NULL,
    idem_key      text    NOT NULL,
    request_hash  blob    NOT NULL,
    status        integer,
    content_type  text,
    response_body blob,
    created_at    integer NOT NULL,
    expires_at    integer NOT NULL,
    PRIMARY KEY (actor, idem_key)
) STRICT;
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
