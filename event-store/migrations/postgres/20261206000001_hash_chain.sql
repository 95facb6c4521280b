-- Tamper evidence (docs/audit.md, docs/adr/0014-tamper-evident-log.md).
--
-- Every event is sealed when it is appended: chain_hash = SHA-256(the chain hash of the
-- previous event of the same stream, or 32 zero bytes for a stream's first event ‖ the
-- event's canonical bytes). The canonical bytes name the event's feed position, so a row
-- moved to another position no longer matches its seal. The hash is computed in the append
-- statement itself (emporium_append, redefined by the next migration), not by a trigger: a row written around the engine (a plain INSERT, a
-- COPY) carries no seal, and `emporium verify` reports it.
ALTER TABLE events ADD COLUMN IF NOT EXISTS chain_hash bytea;

-- The canonical bytes of one event, as docs/audit.md spells them out for auditors: fields
-- joined by newlines, the time in microseconds since the Unix epoch, payload and metadata
-- as the database renders them as text. The Rust verifier builds the same bytes.
CREATE OR REPLACE FUNCTION emporium_event_canonical(
    p_type        text,
    p_id          text,
    p_sequence    bigint,
    p_etype       text,
    p_version     text,
    p_event_id    uuid,
    p_recorded_at timestamptz,
    p_payload     jsonb,
    p_metadata    jsonb
) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT convert_to(concat_ws(E'\n',
        'emporium-event-v1',
        p_type,
        p_id,
        p_sequence::text,
        p_etype,
        p_version,
        p_event_id::text,
        (extract(epoch FROM p_recorded_at) * 1000000)::bigint::text,
        p_payload::text,
        p_metadata::text), 'UTF8')
$$;

-- An event's seal: SHA-256(previous seal ‖ feed position as 8 bytes big-endian ‖
-- SHA-256(canonical bytes)).
CREATE OR REPLACE FUNCTION emporium_seal(p_prev bytea, p_position bigint, p_content bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(COALESCE(p_prev, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
                  || int8send(p_position) || p_content)
$$;

-- Seals the events written before this migration, in feed order (a stream's earlier event
-- always has the lower position, so its seal is ready when the next one needs it).
DO $$
DECLARE
    r    record;
    prev bytea;
BEGIN
    FOR r IN SELECT * FROM events
              WHERE chain_hash IS NULL AND feed_position IS NOT NULL
              ORDER BY feed_position
    LOOP
        prev := NULL;
        SELECT chain_hash INTO prev FROM events
         WHERE aggregate_type = r.aggregate_type AND aggregate_id = r.aggregate_id
           AND sequence = r.sequence - 1;
        UPDATE events
           SET chain_hash = emporium_seal(prev, r.feed_position,
                   sha256(emporium_event_canonical(r.aggregate_type, r.aggregate_id, r.sequence,
                       r.event_type, r.event_version, r.event_id, r.recorded_at, r.payload,
                       r.metadata)))
         WHERE feed_position = r.feed_position;
    END LOOP;
END
$$;

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
