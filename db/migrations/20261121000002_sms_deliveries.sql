-- One row per OTP SMS delivery attempt, written by workers off the job's path (a PostgreSQL
-- outage never fails or repeats an SMS). Never the code, never the full number.

CREATE TABLE sms_deliveries (
    job_id              uuid        NOT NULL,
    -- The job's attempt number, from 1: a retried write of the same attempt is stored once.
    attempt             integer     NOT NULL CHECK (attempt >= 1),
    -- The recipient masked as the logs show it (+886*******78).
    to_masked           text        NOT NULL CHECK (length(to_masked) BETWEEN 1 AND 32),
    provider            text        NOT NULL CHECK (provider IN ('twilio', 'http', 'log')),
    -- Twilio's message sid, or the gateway's message_id.
    provider_message_id text                 CHECK (length(provider_message_id) BETWEEN 1 AND 128),
    status              text        NOT NULL CHECK (status IN ('sent', 'failed')),
    -- Why the attempt failed, redacted as the job's last_error.
    error               text                 CHECK (length(error) <= 1024),
    -- As the provider states it (Twilio: price and price_unit, such as "-0.00750 USD").
    cost                text                 CHECK (length(cost) <= 32),
    -- When the provider answered, on the worker's clock (not when the row was written).
    created_at          timestamptz NOT NULL,
    PRIMARY KEY (job_id, attempt),
    CHECK ((status = 'sent') = (error IS NULL))
);

-- Recent deliveries first, and one provider's messages by their id (a delivery receipt names it).
CREATE INDEX sms_deliveries_created_at ON sms_deliveries (created_at DESC);
CREATE INDEX sms_deliveries_provider_message ON sms_deliveries (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
