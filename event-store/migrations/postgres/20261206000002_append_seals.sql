-- The append of ADR 0011, now also sealing each event. Events are hashed in stream order
-- (type, id, sequence) so that a stream's previous hash is either the row before in this
-- batch or one index lookup of sequence - 1; positions stay in the caller's order.
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
    now_ts        timestamptz;
    hashes        bytea[];
    prev          bytea;
    prev_t        text;
    prev_i        text;
    prev_s        bigint;
    prev_h        bytea;
    r             record;
BEGIN
    PERFORM pg_advisory_xact_lock(4993735863436924209);
    now_ts := clock_timestamp();
    SELECT COALESCE(MAX(feed_position), 0) INTO last_position FROM events;
    FOR r IN
        SELECT u.t, u.i, u.s, u.et, u.v, u.p, u.m, u.e, u.n
          FROM UNNEST(p_types, p_ids, p_sequences, p_etypes, p_versions, p_payloads,
                      p_metadata, p_event_ids) WITH ORDINALITY AS u(t, i, s, et, v, p, m, e, n)
         ORDER BY u.t, u.i, u.s
    LOOP
        IF r.t = prev_t AND r.i = prev_i AND r.s = prev_s + 1 THEN
            prev := prev_h;
        ELSE
            prev := NULL;
            SELECT chain_hash INTO prev FROM events
             WHERE aggregate_type = r.t AND aggregate_id = r.i AND sequence = r.s - 1;
        END IF;
        prev_h := sha256(COALESCE(prev, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
                         || emporium_event_canonical(last_position + r.n, r.t, r.i, r.s, r.et,
                                                     r.v, r.e, now_ts, r.p, r.m));
        hashes[r.n] := prev_h;
        prev_t := r.t;
        prev_i := r.i;
        prev_s := r.s;
    END LOOP;
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload, metadata, event_id, recorded_at, feed_position, chain_hash)
    SELECT u.t, u.i, u.s, u.et, u.v, u.p, u.m, u.e, now_ts, last_position + u.n, hashes[u.n]
      FROM UNNEST(p_types, p_ids, p_sequences, p_etypes, p_versions, p_payloads, p_metadata,
                  p_event_ids) WITH ORDINALITY AS u(t, i, s, et, v, p, m, e, n);
END
$$;
