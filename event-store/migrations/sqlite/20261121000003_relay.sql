-- Progress of the NATS relay (per stream) and of in-process subscribers (per consumer name):
-- the last feed position each has handled. Times are epoch milliseconds.
CREATE TABLE IF NOT EXISTS relay_checkpoints
(
    name       text   PRIMARY KEY,
    position   integer NOT NULL,
    updated_at integer NOT NULL
);

CREATE TABLE IF NOT EXISTS consumer_checkpoints
(
    name       text   PRIMARY KEY,
    position   integer NOT NULL,
    updated_at integer NOT NULL
);

-- Events an in-process subscriber gave up on after its maximum deliveries.
CREATE TABLE IF NOT EXISTS dead_letters
(
    consumer   text   NOT NULL,
    position   integer NOT NULL,
    event_id   text   NOT NULL,
    attempts   integer NOT NULL,
    reason     text   NOT NULL,
    created_at integer NOT NULL,
    PRIMARY KEY (consumer, position)
);
