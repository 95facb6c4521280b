-- The append as it was before seals (ADR 0011), kept for `emporium-bench commands` to
-- measure what sealing costs. Never used by a running engine.
SELECT emporium_append($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                       $6::jsonb[], $7::jsonb[], $8::uuid[])
