-- The append of ADR 0011, now also sealing each event (docs/audit.md).
--
-- The engine hashes each event's canonical bytes (p_contents) and picks the time
-- (p_recorded_at) before calling; the previous seals are read before the sequencer lock (a
-- command's sequence - 1 was committed before the command was decided; a stream's earlier
-- event in this same batch is chained below). Under the lock only positions are taken and
-- 72 bytes per event hashed.
--
-- Usually every stream appears once in a batch: then one INSERT writes it. Otherwise the
-- events are chained one by one in stream order (type, id, sequence). Positions stay in the
-- caller's order either way. The eight-argument version of ADR 0011 stays, unsealed, for
-- `emporium-bench commands` to measure what sealing costs.
--
-- plan_cache_mode = force_generic_plan: the statements here are planned once per connection
-- instead of on every call.
CREATE OR REPLACE FUNCTION emporium_append(
    p_types       text[],
    p_ids         text[],
    p_sequences   bigint[],
    p_etypes      text[],
    p_versions    text[],
    p_payloads    jsonb[],
    p_metadata    jsonb[],
    p_event_ids   uuid[],
    p_contents    bytea[],
    p_recorded_at timestamptz
) RETURNS void
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    last_position bigint;
    prevs         bytea[];
    hashes        bytea[];
    streams       bigint;
    prev          bytea;
    prev_t        text;
    prev_i        text;
    prev_s        bigint;
    prev_h        bytea;
    r             record;
BEGIN
    SELECT array_agg(prev.chain_hash ORDER BY u.n), count(DISTINCT (u.t, u.i))
      INTO prevs, streams
      FROM UNNEST(p_types, p_ids, p_sequences) WITH ORDINALITY AS u(t, i, s, n)
      LEFT JOIN events prev
        ON prev.aggregate_type = u.t AND prev.aggregate_id = u.i AND prev.sequence = u.s - 1;

    PERFORM pg_advisory_xact_lock(4993735863436924209);
    SELECT COALESCE(MAX(feed_position), 0) INTO last_position FROM events;
    IF streams = cardinality(p_types) THEN
        INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata, event_id, recorded_at, feed_position, chain_hash)
        SELECT u.t, u.i, u.s, u.et, u.v, u.p, u.m, u.e, p_recorded_at, last_position + u.n,
               emporium_seal(prevs[u.n], last_position + u.n, u.c)
          FROM UNNEST(p_types, p_ids, p_sequences, p_etypes, p_versions, p_payloads,
                      p_metadata, p_event_ids, p_contents)
               WITH ORDINALITY AS u(t, i, s, et, v, p, m, e, c, n);
        RETURN;
    END IF;
    FOR r IN
        SELECT u.t, u.i, u.s, u.c, u.n
          FROM UNNEST(p_types, p_ids, p_sequences, p_contents) WITH ORDINALITY AS u(t, i, s, c, n)
         ORDER BY u.t, u.i, u.s
    LOOP
        IF r.t = prev_t AND r.i = prev_i AND r.s = prev_s + 1 THEN
            prev := prev_h;
        ELSE
            prev := prevs[r.n];
        END IF;
        prev_h := emporium_seal(prev, last_position + r.n, r.c);
        hashes[r.n] := prev_h;
        prev_t := r.t;
        prev_i := r.i;
        prev_s := r.s;
    END LOOP;
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload, metadata, event_id, recorded_at, feed_position, chain_hash)
    SELECT u.t, u.i, u.s, u.et, u.v, u.p, u.m, u.e, p_recorded_at, last_position + u.n,
           hashes[u.n]
      FROM UNNEST(p_types, p_ids, p_sequences, p_etypes, p_versions, p_payloads, p_metadata,
                  p_event_ids) WITH ORDINALITY AS u(t, i, s, et, v, p, m, e, n);
END
$$;
