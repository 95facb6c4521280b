INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                          payload, metadata, event_id)
VALUES ('StockItem', $1, $2, 'StockReserved', '1.0',
        '{"StockReserved":{"qty":1,"on_hand":1000000,"reserved":1,"available":999999}}',
        '{"actor":"system:bench","request_id":"r","correlation_id":"r","causation_id":"r"}',
        gen_random_uuid())
