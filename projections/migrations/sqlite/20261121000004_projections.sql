-- Projection registry: which generation of a projection's tables is live and the feed
-- position it has applied. The live runner and a rebuild both lock the row before
-- touching position or generation, so they never interleave. Times are epoch ms.
CREATE TABLE IF NOT EXISTS projections
(
    name            text   PRIMARY KEY,
    generation      integer NOT NULL,
    position        integer NOT NULL,
    next_generation integer NOT NULL,
    updated_at      integer NOT NULL
);
