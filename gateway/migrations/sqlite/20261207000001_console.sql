-- Console sign-ins: a session per signed-in API key. Only a SHA-256 of the cookie's token is
-- stored; the key is re-checked on every request, so revoking it ends its sessions. Times are
-- epoch milliseconds.
CREATE TABLE IF NOT EXISTS console_sessions
(
    token_hash blob    PRIMARY KEY,
    key_id     text    NOT NULL,
    role       text    NOT NULL,
    csrf       text    NOT NULL,
    created_at integer NOT NULL,
    expires_at integer NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_at);
