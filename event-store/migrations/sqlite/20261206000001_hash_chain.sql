-- Tamper evidence (docs/audit.md, docs/adr/0014-tamper-evident-log.md): every event is
-- sealed at append with a hash chained per stream. SQLite has no SHA-256, so the engine's
-- append computes the seal and the feed position itself, inside its write transaction;
-- the trigger now stamps only rows that arrive without a position (written around the
-- engine, and then also without a seal, which `emporium verify` reports).
ALTER TABLE events ADD COLUMN chain_hash BLOB;

DROP TRIGGER IF EXISTS events_feed_position;
CREATE TRIGGER events_feed_position
    AFTER INSERT ON events
    WHEN NEW.feed_position IS NULL
BEGIN
    UPDATE events
       SET feed_position = (SELECT COALESCE(MAX(feed_position), 0) + 1 FROM events)
     WHERE rowid = NEW.rowid;
END;

-- Present while the events written before this migration still wait for their seals; the
-- store seals them right after migrating and drops it.
CREATE TABLE audit_backfill (pending integer NOT NULL) STRICT;

-- Signed digests: the Merkle root over the seals of positions 1..position, signed with the
-- engine's Ed25519 key (kept in a file, never here).
CREATE TABLE IF NOT EXISTS audit_digests
(
    position      integer PRIMARY KEY,
    root          blob    NOT NULL,
    created_at_ms integer NOT NULL,
    public_key    blob    NOT NULL,
    signature     blob    NOT NULL
) STRICT;

-- Per-customer keys for personal data (crypto-shredding, docs/audit.md section 5).
CREATE TABLE IF NOT EXISTS customer_keys
(
    key_id        text    PRIMARY KEY,
    customer_id   text    NOT NULL,
    key           blob,
    created_at_ms integer NOT NULL,
    erased_at_ms  integer
) STRICT;
CREATE INDEX IF NOT EXISTS customer_keys_by_customer ON customer_keys (customer_id);
