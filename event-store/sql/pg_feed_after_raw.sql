-- The relay's read: the payload as text, so it can be forwarded without being parsed.
SELECT feed_position, event_id, aggregate_type, aggregate_id, sequence, event_type,
       event_version, payload::text AS payload, metadata, recorded_at
  FROM events
 WHERE feed_position > $1
 ORDER BY feed_position
 LIMIT $2
