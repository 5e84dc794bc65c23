-- Audit-log events, written by workers in batches and read newest first per tenant.
-- Partitioned by month on occurred_at so old months can be detached or dropped whole.

CREATE TABLE audit_logs (
    event_id      uuid        NOT NULL,
    tenant_id     text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 128),
    actor         text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 256),
    action        text        NOT NULL CHECK (length(action) BETWEEN 1 AND 128),
    resource_type text        NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 128),
    resource_id   text                 CHECK (length(resource_id) <= 256),
    ip            inet,
    user_agent    text                 CHECK (length(user_agent) <= 1024),
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    job_id        uuid,
    -- A unique index on a partitioned table must hold the partition key. event_id and
    -- occurred_at are both fixed at enqueue and travel in the job, so every redelivery of
    -- one event carries the same pair and is stored once.
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

-- Events whose month has no partition (far past or future) land here, never refused.
CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT;

-- GET /v1/audit-logs?tenant_id=&from=&to= newest first, keyset-paginated on (occurred_at, event_id).
CREATE INDEX audit_logs_tenant_time ON audit_logs (tenant_id, occurred_at DESC, event_id DESC);
-- ... and narrowed by action or actor.
CREATE INDEX audit_logs_tenant_action_time ON audit_logs (tenant_id, action, occurred_at DESC);
CREATE INDEX audit_logs_tenant_actor_time ON audit_logs (tenant_id, actor, occurred_at DESC);

-- A repeated event_id is stored once, whatever its occurred_at: the primary key above can
-- only hold (event_id, occurred_at), so writers first claim the event_id here and insert into
-- audit_logs only the events they claimed, in the same transaction:
--   WITH claimed AS (INSERT INTO audit_event_ids (event_id) SELECT ... ON CONFLICT DO NOTHING RETURNING event_id)
--   INSERT INTO audit_logs ... WHERE event_id IN (SELECT event_id FROM claimed)
CREATE TABLE audit_event_ids (
    event_id    uuid        PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Creates the monthly partitions (UTC months) from this month to `months_ahead` months
-- ahead, if missing. Workers call it at start and daily, possibly several at once: an
-- advisory lock makes the calls take turns. Rows already in the default partition for a new
-- month are moved into it, since PostgreSQL refuses a partition that overlaps default rows.
-- Bounds are timestamptz values at UTC midnight, so the session's TimeZone cannot shift them.
CREATE FUNCTION jobplane_ensure_audit_partitions(months_ahead integer DEFAULT 2)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first_month timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_start timestamptz;
    month_end timestamptz;
    name text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('jobplane_ensure_audit_partitions'));
    FOR i IN 0..months_ahead LOOP
        month_start := ((first_month AT TIME ZONE 'UTC') + make_interval(months => i)) AT TIME ZONE 'UTC';
        month_end := ((first_month AT TIME ZONE 'UTC') + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
        name := format('audit_logs_%s', to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'));
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        CREATE TEMP TABLE moving ON COMMIT DROP AS
            SELECT * FROM audit_logs_default WHERE occurred_at >= month_start AND occurred_at < month_end;
        DELETE FROM audit_logs_default WHERE occurred_at >= month_start AND occurred_at < month_end;
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                       name, month_start, month_end);
        INSERT INTO audit_logs SELECT * FROM moving;
        DROP TABLE moving;
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

SELECT jobplane_ensure_audit_partitions(2);
