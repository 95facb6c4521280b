-- Several events of one command in a single statement: atomic without BEGIN/COMMIT.
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, event_id)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                     $6::jsonb[], $7::jsonb[], $8::uuid[])
