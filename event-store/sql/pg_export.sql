-- The analysts' export (src/export.rs): one statement whose rows are streamed, in feed
-- order, over the events_feed_position_key unique index (a range scan between $1 and $2,
-- never a sort). The payload goes out as text (no jsonb tree built on either side); the
-- metadata fields are picked out here, like the row decoder's columns (a missing or
-- non-string field is '').
-- $3..$6 are optional filters (NULL = no filter): aggregate_type, event_type,
-- recorded_at >= $5, recorded_at < $6. $7 caps the row count (NULL = no cap).
SELECT feed_position,
       event_id,
       aggregate_type,
       aggregate_id,
       sequence,
       event_type,
       event_version,
       payload::text AS payload,
       CASE WHEN jsonb_typeof(metadata -> 'actor') = 'string'
            THEN metadata ->> 'actor' ELSE '' END AS actor,
       CASE WHEN jsonb_typeof(metadata -> 'request_id') = 'string'
            THEN metadata ->> 'request_id' ELSE '' END AS request_id,
       CASE WHEN jsonb_typeof(metadata -> 'correlation_id') = 'string'
            THEN metadata ->> 'correlation_id' ELSE '' END AS correlation_id,
       CASE WHEN jsonb_typeof(metadata -> 'causation_id') = 'string'
            THEN metadata ->> 'causation_id' ELSE '' END AS causation_id,
       recorded_at
  FROM events
 WHERE feed_position > $1
   AND feed_position <= $2
   AND ($3::text IS NULL OR aggregate_type = $3::text)
   AND ($4::text IS NULL OR event_type = $4::text)
   AND ($5::timestamptz IS NULL OR recorded_at >= $5::timestamptz)
   AND ($6::timestamptz IS NULL OR recorded_at < $6::timestamptz)
 ORDER BY feed_position
 LIMIT $7
