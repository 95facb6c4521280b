-- A batch of events (one command's, or a group commit's) in a single autocommit statement:
-- atomic without BEGIN/COMMIT, with feed positions stamped at insert (see the migration
-- that defines emporium_append).
SELECT emporium_append($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                       $6::jsonb[], $7::jsonb[], $8::uuid[])
