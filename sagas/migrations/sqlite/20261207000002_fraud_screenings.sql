-- The built-in fraud screen's memory: one row per screened order, so it can tell a new
-- customer, many orders in a short window, and a shipping region the customer never used.
CREATE TABLE IF NOT EXISTS fraud_screenings
(
    order_id    text    PRIMARY KEY,
    customer_id text    NOT NULL,
    region      text    NOT NULL,
    placed_at   bigint  NOT NULL,
    score       integer NOT NULL
);

CREATE INDEX IF NOT EXISTS fraud_screenings_customer ON fraud_screenings (customer_id, placed_at);
