-- Mitake joins the providers, and each row gains what the provider reported after the send
-- (its delivery report, through producer-api's /v1/callbacks/*): the final status, when it
-- happened, and the provider's code or words (redacted as the job's delivery detail).

ALTER TABLE sms_deliveries DROP CONSTRAINT sms_deliveries_provider_check;
ALTER TABLE sms_deliveries ADD CONSTRAINT sms_deliveries_provider_check
    CHECK (provider IN ('twilio', 'mitake', 'http', 'log'));

ALTER TABLE sms_deliveries
    ADD COLUMN delivery_status text CHECK (delivery_status IN ('delivered', 'undelivered', 'bounced', 'complained')),
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN delivery_detail text CHECK (length(delivery_detail) <= 256),
    ADD CONSTRAINT sms_deliveries_delivery_reported CHECK ((delivery_status IS NULL) = (delivered_at IS NULL));
