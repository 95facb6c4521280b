-- Projection registry: which generation of a projection's tables is live and the feed
-- position it has applied. The live runner and a rebuild both lock the row before
-- touching position or generation, so they never interleave. Times are epoch ms.
CREATE TABLE IF NOT EXISTS projections
(
    name            text   PRIMARY KEY,
    generation      bigint NOT NULL,
    position        bigint NOT NULL,
    next_generation bigint NOT NULL,
    updated_at      bigint NOT NULL
);
CREATE EXTENSION IF NOT EXISTS pg_trgm;
