-- The screen asks whether a customer ever shipped to a region: without this index that
-- question read every earlier screening of a customer whose answer is no.
CREATE INDEX IF NOT EXISTS fraud_screenings_region ON fraud_screenings (customer_id, region);
