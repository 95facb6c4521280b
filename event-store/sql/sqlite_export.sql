-- The analysts' export on the embedded store (src/export.rs): one statement stepped row by
-- row over the UNIQUE index on feed_position, in one read snapshot. Metadata fields are
-- picked out here, like the row decoder (`decode::pg_event_columns`): a missing or non-string field is ''.
-- ?3..?6 are optional filters (NULL = no filter): aggregate_type, event_type,
-- recorded_at >= ?5, recorded_at < ?6 (both bounds in the column's own fixed format,
-- 'YYYY-MM-DDTHH:MM:SS.sssZ', so text order is time order). ?7 caps the row count
-- (-1 = no cap).
SELECT feed_position,
       event_id,
       aggregate_type,
       aggregate_id,
       sequence,
       event_type,
       event_version,
       payload,
       CASE WHEN json_type(metadata, '$.actor') = 'text'
            THEN json_extract(metadata, '$.actor') ELSE '' END AS actor,
       CASE WHEN json_type(metadata, '$.request_id') = 'text'
            THEN json_extract(metadata, '$.request_id') ELSE '' END AS request_id,
       CASE WHEN json_type(metadata, '$.correlation_id') = 'text'
            THEN json_extract(metadata, '$.correlation_id') ELSE '' END AS correlation_id,
       CASE WHEN json_type(metadata, '$.causation_id') = 'text'
            THEN json_extract(metadata, '$.causation_id') ELSE '' END AS causation_id,
       recorded_at
  FROM events
 WHERE feed_position > ?1
   AND feed_position <= ?2
   AND (?3 IS NULL OR aggregate_type = ?3)
   AND (?4 IS NULL OR event_type = ?4)
   AND (?5 IS NULL OR recorded_at >= ?5)
   AND (?6 IS NULL OR recorded_at < ?6)
 ORDER BY feed_position
 LIMIT ?7
