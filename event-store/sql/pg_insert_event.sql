INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
