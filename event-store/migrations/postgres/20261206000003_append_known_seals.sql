-- The sealing append of the previous migration, changed to take the reading of previous
-- seals off the hot path (measured with `emporium-bench commands`, docs/performance.md):
--
-- * p_prevs: the seal of each event's predecessor in its stream, when the engine knows it
--   (it keeps the seals it wrote or read last per stream; 32 zero bytes for a stream's
--   first event), or NULL. A seal the engine passes is one it saw committed: the event it
--   seals can no longer change, and if another process appended to the stream meanwhile,
--   this append's sequence fails the primary key anyway.
-- * When every predecessor is known (the usual case on a busy engine), the engine calls
--   emporium_append_known: no seal is read, and the batch is sealed and written by one
--   INSERT under the lock. (No stream can then have two events in the batch: the engine
--   cannot know the seal of an event not yet written.) Otherwise emporium_append reads the
--   missing seals before the lock and chains the events one by one in stream order.
-- * Both return the position before the batch (the batch holds the next ones, in the
--   caller's order), from which the engine works out the seals to remember.
--
-- Each statement of a plpgsql function costs about as much as sealing a whole batch, and
-- everything under the lock is paid once per batch by every engine: hence two functions
-- rather than one with a branch, and no more statements than needed. Both plan their
-- statements once per connection (plan_cache_mode = force_generic_plan): without it the
-- server re-plans the INSERT on every call, which cost emporium_append_known a sixth of
-- its throughput at 16 clients. Returning the seals
-- themselves (a bytea[]) cost about a tenth of `bench commands` throughput; a bigint
-- costs nothing measurable.
--
-- The ten-argument version is dropped; the eight-argument unsealed one stays, for the
-- benchmark that measures what sealing costs.
DROP FUNCTION IF EXISTS emporium_append(text[], text[], bigint[], text[], text[], jsonb[],
                                        jsonb[], uuid[], bytea[], timestamptz);

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
    p_recorded_at timestamptz,
    p_prevs       bytea[]
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    last_position bigint;
    prevs         bytea[];
    hashes        bytea[];
    prev          bytea;
    prev_t        text;
    prev_i        text;
    prev_s        bigint;
    prev_h        bytea;
    r             record;
BEGIN
    -- The missing seals are read (before the lock) and the events chained one by one in
    -- stream order, a stream's later events on its earlier ones in this batch.
    SELECT array_agg(COALESCE(u.p, prev.chain_hash) ORDER BY u.n)
      INTO prevs
      FROM UNNEST(p_types, p_ids, p_sequences, p_prevs) WITH ORDINALITY AS u(t, i, s, p, n)
      LEFT JOIN events prev
        ON prev.aggregate_type = u.t AND prev.aggregate_id = u.i AND prev.sequence = u.s - 1;
    PERFORM pg_advisory_xact_lock(4993735863436924209);
    SELECT COALESCE(MAX(feed_position), 0) INTO last_position FROM events;
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
    RETURN last_position;
END
$$;

CREATE OR REPLACE FUNCTION emporium_append_known(
    p_types       text[],
    p_ids         text[],
    p_sequences   bigint[],
    p_etypes      text[],
    p_versions    text[],
    p_payloads    jsonb[],
    p_metadata    jsonb[],
    p_event_ids   uuid[],
    p_contents    bytea[],
    p_recorded_at timestamptz,
    p_prevs       bytea[]
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    last_position bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4993735863436924209);
    SELECT COALESCE(MAX(feed_position), 0) INTO last_position FROM events;
    -- No COALESCE here: a missing predecessor leaves the row unsealed, which `verify`
    -- reports, rather than chained on zeros.
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload, metadata, event_id, recorded_at, feed_position, chain_hash)
    SELECT u.t, u.i, u.s, u.et, u.v, u.p, u.m, u.e, p_recorded_at, last_position + u.n,
           sha256(u.pr || int8send(last_position + u.n) || u.c)
      FROM UNNEST(p_types, p_ids, p_sequences, p_etypes, p_versions, p_payloads,
                  p_metadata, p_event_ids, p_contents, p_prevs)
           WITH ORDINALITY AS u(t, i, s, et, v, p, m, e, c, pr, n);
    RETURN last_position;
END
$$;
