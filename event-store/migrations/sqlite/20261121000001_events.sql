-- The embedded event log: sqlite-es's columns plus Emporium's. The primary key must stay
-- (aggregate_type, aggregate_id, sequence): sqlite-es maps only its violation (code 1555)
-- to an optimistic-lock conflict.
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    event_id       text                          NOT NULL UNIQUE,
    recorded_at    text                          NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- gap-free and in commit order: SQLite has one writer at a time, and the trigger below
    -- runs under its write lock, so max + 1 is taken in commit order and a rollback undoes it.
    -- Not rowid: VACUUM may renumber rowids.
    feed_position  integer UNIQUE,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE TRIGGER IF NOT EXISTS events_feed_position
    AFTER INSERT ON events
BEGIN
    UPDATE events
       SET feed_position = (SELECT COALESCE(MAX(feed_position), 0) + 1 FROM events)
     WHERE rowid = NEW.rowid;
END;

CREATE TABLE IF NOT EXISTS snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;
