-- Retention for audit logs (issue 17).
--
-- `audit_event_ids`, which stores a repeated event_id once, grew without bound. It is now
-- partitioned by the UTC month of the event's occurred_at, like the rows it guards, so it is
-- bounded by the same horizon and its months are dropped with theirs. An event_id is stored
-- once per month of occurred_at: every redelivery, retry and replay of an event carries the
-- same occurred_at (fixed at enqueue), and a producer's repeat is caught unless it moves the
-- event into another month.

ALTER TABLE audit_event_ids RENAME TO audit_event_ids_unbounded;
ALTER TABLE audit_event_ids_unbounded RENAME CONSTRAINT audit_event_ids_pkey TO audit_event_ids_unbounded_pkey;

CREATE TABLE audit_event_ids (
    event_id    uuid        NOT NULL,
    -- The first day of the UTC month of the event's occurred_at: jobplane_audit_month(occurred_at).
    month       date        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, month)
) PARTITION BY RANGE (month);

CREATE TABLE audit_event_ids_default PARTITION OF audit_event_ids DEFAULT;

-- The partition month of an instant, in UTC whatever the session's TimeZone.
CREATE FUNCTION jobplane_audit_month(at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT date_trunc('month', at AT TIME ZONE 'UTC')::date $$;

INSERT INTO audit_event_ids (event_id, month, recorded_at)
SELECT u.event_id, jobplane_audit_month(l.occurred_at), u.recorded_at
FROM audit_event_ids_unbounded u JOIN audit_logs l USING (event_id)
ON CONFLICT DO NOTHING;
DROP TABLE audit_event_ids_unbounded;

DROP FUNCTION jobplane_ensure_audit_partitions(integer);

-- Creates the monthly partitions (UTC months) of audit_logs and audit_event_ids from the month
-- of `at` to `months_ahead` months ahead, if missing; returns how many months it created
-- (counted on audit_logs). Workers call it at start and daily, possibly several at once: an
-- advisory lock makes the calls take turns. Rows already in a default partition for a new
-- month are moved into it, since PostgreSQL refuses a partition that overlaps default rows.
-- `at` is the clock, a parameter so tests can roll months without waiting.
CREATE FUNCTION jobplane_ensure_audit_partitions(months_ahead integer DEFAULT 2, at timestamptz DEFAULT now())
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first_month date := jobplane_audit_month(at);
    month_start date;
    month_end date;
    suffix text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('jobplane_ensure_audit_partitions'));
    FOR i IN 0..months_ahead LOOP
        month_start := first_month + make_interval(months => i);
        month_end := first_month + make_interval(months => i + 1);
        suffix := to_char(month_start, 'YYYY_MM');
        IF to_regclass('audit_logs_' || suffix) IS NULL THEN
            -- Bounds are timestamptz values at UTC midnight, so the session's TimeZone cannot shift them.
            CREATE TEMP TABLE moving ON COMMIT DROP AS
                SELECT * FROM audit_logs_default
                WHERE occurred_at >= month_start::timestamp AT TIME ZONE 'UTC'
                  AND occurred_at < month_end::timestamp AT TIME ZONE 'UTC';
            DELETE FROM audit_logs_default
            WHERE occurred_at >= month_start::timestamp AT TIME ZONE 'UTC'
              AND occurred_at < month_end::timestamp AT TIME ZONE 'UTC';
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                           'audit_logs_' || suffix,
                           month_start::timestamp AT TIME ZONE 'UTC', month_end::timestamp AT TIME ZONE 'UTC');
            INSERT INTO audit_logs SELECT * FROM moving;
            DROP TABLE moving;
            created := created + 1;
        END IF;
        IF to_regclass('audit_event_ids_' || suffix) IS NULL THEN
            CREATE TEMP TABLE moving_ids ON COMMIT DROP AS
                SELECT * FROM audit_event_ids_default WHERE month >= month_start AND month < month_end;
            DELETE FROM audit_event_ids_default WHERE month >= month_start AND month < month_end;
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_event_ids FOR VALUES FROM (%L) TO (%L)',
                           'audit_event_ids_' || suffix, month_start, month_end);
            INSERT INTO audit_event_ids SELECT * FROM moving_ids;
            DROP TABLE moving_ids;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Detaches and drops the monthly partitions of audit_logs and audit_event_ids whose whole
-- month ended more than `keep_months` months before the month of `at` (so rows are kept at
-- least `keep_months` full months, at most one more), and deletes the rows of those months
-- from the default partitions. Returns the names of the partitions dropped, for the log and
-- the metric. Takes the same advisory lock as jobplane_ensure_audit_partitions.
CREATE FUNCTION jobplane_drop_audit_partitions(keep_months integer, at timestamptz DEFAULT now())
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    horizon date := jobplane_audit_month(at) - make_interval(months => keep_months);
    part record;
BEGIN
    IF keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1, not %', keep_months;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('jobplane_ensure_audit_partitions'));
    FOR part IN
        SELECT c.relname::text AS name, p.relname::text AS parent
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.oid IN (to_regclass('audit_logs'), to_regclass('audit_event_ids'))
          AND c.relname ~ '_\d{4}_\d{2}$'
          AND to_date(right(c.relname, 7), 'YYYY_MM') + interval '1 month' <= horizon
        ORDER BY 1
    LOOP
        EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', part.parent, part.name);
        EXECUTE format('DROP TABLE %I', part.name);
        RETURN NEXT part.name;
    END LOOP;
    DELETE FROM audit_logs_default WHERE occurred_at < horizon::timestamp AT TIME ZONE 'UTC';
    DELETE FROM audit_event_ids_default WHERE month < horizon;
END $$;

SELECT jobplane_ensure_audit_partitions(2);
