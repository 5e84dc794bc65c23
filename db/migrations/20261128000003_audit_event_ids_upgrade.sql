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
