-- Appends stamp their feed position at insert (docs/adr/0011-feed-position-at-insert.md).
--
-- Under the sequencer's advisory lock (the same key the horizon sequencer of ADR 0002 uses),
-- the batch takes the positions after the highest one stamped. The lock is held until the
-- transaction ends and released only after its commit is visible, so the next holder's
-- positions are higher and become visible later: positions are dense and in commit order,
-- and no event row is written twice. The function is VOLATILE, so the INSERT's snapshot is
-- taken after the lock is granted and sees the previous holder's rows.
--
-- Rows written another way (COPY seeding, snapshot persists of postgres-es, rows of older
-- engine versions) still arrive with no position and are stamped by the horizon sequencer,
-- which takes the same lock.
CREATE OR REPLACE FUNCTION emporium_append(
    p_types     text[],
    p_ids       text[],
    p_sequences bigint[],
    p_etypes    text[],
    p_versions  text[],
    p_payloads  jsonb[],
    p_metadata  jsonb[],
    p_event_ids uuid[]
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    last_position bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4993735863436924209);
    SELECT COALESCE(MAX(feed_position), 0) INTO last_position FROM events;
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload, metadata, event_id, feed_position)
    SELECT u.t, u.i, u.s, u.et, u.v, u.p, u.m, u.e, last_position + u.n
      FROM UNNEST(p_types, p_ids, p_sequences, p_etypes, p_versions, p_payloads, p_metadata,
                  p_event_ids) WITH ORDINALITY AS u(t, i, s, et, v, p, m, e, n);
END
$$;
