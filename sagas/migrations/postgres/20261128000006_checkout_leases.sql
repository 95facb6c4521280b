-- One run per checkout at a time, across engine processes: a lease per order, held by one
-- engine (its holder id) until it expires. Holders renew their leases every few seconds,
-- so a killed engine's leases lapse within seconds and another engine takes them over.
CREATE TABLE IF NOT EXISTS checkout_leases
(
    order_id   text   PRIMARY KEY,
    holder     text   NOT NULL,
    expires_at bigint NOT NULL
);
