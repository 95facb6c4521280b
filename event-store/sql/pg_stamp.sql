-- Stamp gap-free feed positions, in commit order, on events whose transactions have all
-- finished. Rows with tx_id below the snapshot's xmin can no longer change: every
-- transaction that could still add one has ended. Within that horizon, (tx_id,
-- global_position) orders transactions by when they took their id, and events within one
-- transaction by insert. Callers hold the sequencer's advisory lock, so MAX() is stable.
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
),
base AS (
    SELECT COALESCE(MAX(feed_position), 0) AS last FROM events
),
todo AS (
    SELECT e.global_position,
           row_number() OVER (ORDER BY e.tx_id, e.global_position) AS n
      FROM events e, horizon h
     WHERE e.feed_position IS NULL
       AND e.tx_id < h.xmin
     ORDER BY e.tx_id, e.global_position
     LIMIT $1
)
UPDATE events e
   SET feed_position = base.last + todo.n
  FROM todo, base
 WHERE e.global_position = todo.global_position
