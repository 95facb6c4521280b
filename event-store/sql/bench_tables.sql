-- Tables for `emporium bench commands` baselines, in the throwaway benchmark database.
CREATE TABLE bench_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY);
ALTER TABLE bench_events ADD PRIMARY KEY (aggregate_type, aggregate_id, sequence);
ALTER TABLE bench_events ADD UNIQUE (event_id);
ALTER TABLE bench_events ADD UNIQUE (global_position);
-- postgres-es's own schema (json columns) for the plain cqrs-es path.
CREATE TABLE plain_events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE plain_snapshots (
    aggregate_type   text NOT NULL,
    aggregate_id     text NOT NULL,
    last_sequence    bigint NOT NULL,
    current_snapshot bigint NOT NULL,
    payload          json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
