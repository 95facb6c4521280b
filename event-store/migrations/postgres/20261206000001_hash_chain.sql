-- Tamper evidence (docs/audit.md, docs/adr/0014-tamper-evident-log.md).
--
-- Every event is sealed when it is appended: chain_hash = SHA-256(the chain hash of the
-- previous event of the same stream, or 32 zero bytes for a stream's first event ‖ the
-- event's feed position ‖ SHA-256(its canonical bytes)), so a row moved to another position
-- no longer matches its seal. The seal is made in the append statement itself
-- (emporium_append, redefined by the next migration), not by a trigger: a row written around the engine (a plain INSERT, a
-- COPY) carries no seal, and `emporium verify` reports it.
ALTER TABLE events ADD COLUMN IF NOT EXISTS chain_hash bytea;

-- An event's seal: SHA-256(previous seal ‖ feed position as 8 bytes big-endian ‖
-- SHA-256(canonical bytes)). The engine computes the last part (docs/audit.md spells out
-- the canonical bytes); the append chains it.
CREATE OR REPLACE FUNCTION emporium_seal(p_prev bytea, p_position bigint, p_content bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(COALESCE(p_prev, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
                  || int8send(p_position) || p_content)
$$;

-- Present while the events written before this migration still wait for their seals; the
-- store seals them right after migrating and drops it.
CREATE TABLE IF NOT EXISTS audit_backfill (pending integer);

-- Signed digests: the Merkle root over the seals of positions 1..position, signed with the
-- engine's Ed25519 key (kept in a file, never here). Several engines may publish the same
-- position; the first one's stays.
CREATE TABLE IF NOT EXISTS audit_digests
(
    position      bigint PRIMARY KEY,
    root          bytea  NOT NULL,
    created_at_ms bigint NOT NULL,
    public_key    bytea  NOT NULL,
    signature     bytea  NOT NULL
);

-- Per-customer keys for personal data (crypto-shredding, docs/audit.md section 5). Erasing
-- a customer's personal data clears `key` and stamps `erased_at_ms`; the row stays so that
-- reads can tell an erased key from an unknown one.
CREATE TABLE IF NOT EXISTS customer_keys
(
    key_id        text   PRIMARY KEY,
    customer_id   text   NOT NULL,
    key           bytea,
    created_at_ms bigint NOT NULL,
    erased_at_ms  bigint
);
CREATE INDEX IF NOT EXISTS customer_keys_by_customer ON customer_keys (customer_id);
