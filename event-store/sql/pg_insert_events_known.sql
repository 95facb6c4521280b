-- pg_insert_events.sql when the engine knows every predecessor's seal: one INSERT seals
-- and writes the batch (migration 20261206000003).
SELECT emporium_append_known($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                             $6::jsonb[], $7::jsonb[], $8::uuid[], $9::bytea[],
                             $10::timestamptz, $11::bytea[])
