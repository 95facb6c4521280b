-- Merchant keys are bound to their merchant, as client keys are to their customer.
ALTER TABLE api_keys ADD COLUMN merchant_id text;
