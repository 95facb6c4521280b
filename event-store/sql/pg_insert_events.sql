-- A batch of events (one command's, or a group commit's) in a single autocommit statement:
-- atomic without BEGIN/COMMIT, with feed positions stamped and seals made at insert, some
-- predecessors' seals read by the append; it answers the position before the batch (see
-- the migrations that define emporium_append).
SELECT emporium_append($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                       $6::jsonb[], $7::jsonb[], $8::uuid[], $9::bytea[], $10::timestamptz,
                       $11::bytea[])
