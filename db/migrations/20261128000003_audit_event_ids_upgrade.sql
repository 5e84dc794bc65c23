-- Follow-up to 20261128000002 for databases that already held audit logs (issue 17 review).
--
-- 1. A worker from before 20261128000002 still running during a rolling upgrade inserts into
--    audit_event_ids without `month`. A plain NOT NULL violation is SQLSTATE class 23, which the
--    audit writer (old and new) takes for a poison row: every event it wrote would be dead-lettered.
--    The default refuses it with 55000 instead, which the writer treats like PostgreSQL being
--    unavailable: the batch is retried and its jobs wait for an upgraded worker. The current
--    writer always gives `month`, so the default is never evaluated for it.
CREATE FUNCTION jobplane_audit_month_required() RETURNS date LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'audit_event_ids.month is required: this audit writer predates migration 20261128000002, upgrade the worker'
        USING ERRCODE = '55000';
END $$;
ALTER TABLE audit_event_ids ALTER COLUMN month SET DEFAULT jobplane_audit_month_required();

-- 2. 20261128000002 created partitions of audit_event_ids only from the current month on, so the
--    ids of every earlier month that has a partition of audit_logs landed in the default
--    partition, where retention could only DELETE them. Each such month gets its partition of
--    audit_event_ids, its ids moved out of the default.
DO $$
DECLARE
    part record;
    month_start date;
BEGIN
    LOCK TABLE audit_event_ids IN ACCESS EXCLUSIVE MODE;
    FOR part IN
        SELECT right(c.relname::text, 7) AS suffix
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_logs'::regclass AND c.relname ~ '^audit_logs_\d{4}_\d{2}$'
        ORDER BY 1
    LOOP
        IF to_regclass('audit_event_ids_' || part.suffix) IS NULL THEN
            month_start := to_date(part.suffix, 'YYYY_MM');
            CREATE TEMP TABLE moving_ids ON COMMIT DROP AS
                SELECT * FROM audit_event_ids_default WHERE month = month_start;
            DELETE FROM audit_event_ids_default WHERE month = month_start;
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_event_ids FOR VALUES FROM (%L) TO (%L)',
                           'audit_event_ids_' || part.suffix, month_start, (month_start + interval '1 month')::date);
            INSERT INTO audit_event_ids SELECT * FROM moving_ids;
            DROP TABLE moving_ids;
        END IF;
    END LOOP;
END $$;

-- 3. jobplane_drop_audit_partitions, reordered: the DELETEs from the default partitions (a scan,
--    as long as the default partition is big) now run before the DETACHes, so the ACCESS
--    EXCLUSIVE lock that DETACH takes on audit_logs and audit_event_ids (held to the commit, every
--    audit write and read waits on it) is no longer held across them; and a DETACH waits at most
--    2 s for a lock (55P03, the upkeep retries later) instead of queueing every write behind a long
--    reader for the whole statement timeout.
CREATE OR REPLACE FUNCTION jobplane_drop_audit_partitions(keep_months integer, at timestamptz DEFAULT now())
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    horizon date := jobplane_audit_month(at) - make_interval(months => keep_months);
    part record;
BEGIN
    IF keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1, not %', keep_months;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('jobplane_ensure_audit_partitions'));
    DELETE FROM audit_logs_default WHERE occurred_at < horizon::timestamp AT TIME ZONE 'UTC';
    DELETE FROM audit_event_ids_default WHERE month < horizon;
    PERFORM set_config('lock_timeout', '2s', true);
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
END $$;

-- 4. jobplane_ensure_audit_partitions moved a new month's rows out of the default partitions with
--    a SELECT and then a DELETE, two statements with two snapshots: a row written to the default
--    partition between them was deleted without being moved (lost). The rows are now moved by one
--    DELETE ... RETURNING, so exactly what is deleted is reinserted; a row written after it makes
--    the CREATE ... PARTITION OF fail (the upkeep retries), never vanishes.
CREATE OR REPLACE FUNCTION jobplane_ensure_audit_partitions(months_ahead integer DEFAULT 2, at timestamptz DEFAULT now())
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
            CREATE TEMP TABLE moving (LIKE audit_logs) ON COMMIT DROP;
            WITH moved AS (
                DELETE FROM audit_logs_default
                WHERE occurred_at >= month_start::timestamp AT TIME ZONE 'UTC'
                  AND occurred_at < month_end::timestamp AT TIME ZONE 'UTC'
                RETURNING *
            )
            INSERT INTO moving SELECT * FROM moved;
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                           'audit_logs_' || suffix,
                           month_start::timestamp AT TIME ZONE 'UTC', month_end::timestamp AT TIME ZONE 'UTC');
            INSERT INTO audit_logs SELECT * FROM moving;
            DROP TABLE moving;
            created := created + 1;
        END IF;
        IF to_regclass('audit_event_ids_' || suffix) IS NULL THEN
            CREATE TEMP TABLE moving_ids (LIKE audit_event_ids) ON COMMIT DROP;
            WITH moved AS (
                DELETE FROM audit_event_ids_default WHERE month >= month_start AND month < month_end RETURNING *
            )
            INSERT INTO moving_ids SELECT * FROM moved;
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_event_ids FOR VALUES FROM (%L) TO (%L)',
                           'audit_event_ids_' || suffix, month_start, month_end);
            INSERT INTO audit_event_ids SELECT * FROM moving_ids;
            DROP TABLE moving_ids;
        END IF;
    END LOOP;
    RETURN created;
END $$;
