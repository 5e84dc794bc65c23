use chrono::{Datelike, Months, Utc};
use sqlx::Row;

use crate::support::OwnDatabase;

#[tokio::test]
async fn migrations_create_partitioned_audit_logs() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    db::migrate_url(&db.url).await.unwrap(); // applying twice is harmless
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let month = Utc::now().date_naive().with_day(1).unwrap();
    let mut expected: Vec<String> =
        (0..3).map(|i| format!("audit_logs_{}", (month + Months::new(i)).format("%Y_%m"))).collect();
    expected.push("audit_logs_default".into());
    expected.sort();
    assert_eq!(partitions, expected);

    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = 'audit_logs' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        indexes,
        ["audit_logs_pkey", "audit_logs_tenant_action_time", "audit_logs_tenant_actor_time", "audit_logs_tenant_time"]
    );

    let created: i32 = sqlx::query_scalar("SELECT jobplane_ensure_audit_partitions(2)").fetch_one(&pool).await.unwrap();
    assert_eq!(created, 0);
    pool.close().await;
    db.drop().await;
}

#[tokio::test]
async fn an_event_is_stored_once_and_no_date_is_refused() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let insert = "INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, occurred_at)
                  VALUES ($1, 't1', 'u1', 'login', 'session', $2) ON CONFLICT DO NOTHING";
    let event = uuid::Uuid::now_v7();
    let now = Utc::now();
    for _ in 0..2 {
        sqlx::query(insert).bind(event).bind(now).execute(&pool).await.unwrap();
    }
    let far = "2040-05-01T00:00:00Z".parse::<chrono::DateTime<Utc>>().unwrap();
    sqlx::query(insert).bind(uuid::Uuid::now_v7()).bind(far).execute(&pool).await.unwrap();
    let rows =
        sqlx::query("SELECT tableoid::regclass::text AS part, count(*) AS n FROM audit_logs GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let rows: Vec<(String, i64)> = rows.iter().map(|r| (r.get("part"), r.get("n"))).collect();
    assert_eq!(rows, [(format!("audit_logs_{}", now.format("%Y_%m")), 1), ("audit_logs_default".to_owned(), 1)]);

    // A constraint carries the rule the API enforces.
    let blank = sqlx::query("INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, occurred_at) VALUES ($1, '', 'u', 'a', 'r', now())")
        .bind(uuid::Uuid::now_v7())
        .execute(&pool)
        .await;
    assert!(blank.unwrap_err().to_string().contains("check constraint"));
    pool.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_new_month_partition_adopts_rows_from_the_default() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let insert = "INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, occurred_at)
                  VALUES ($1, 't1', 'u1', 'login', 'session', $2)";
    // Four months ahead: no partition yet, so the row waits in the default one.
    let ahead = Utc::now() + Months::new(4);
    sqlx::query(insert).bind(uuid::Uuid::now_v7()).bind(ahead).execute(&pool).await.unwrap();
    let created: i32 = sqlx::query_scalar("SELECT jobplane_ensure_audit_partitions(4)").fetch_one(&pool).await.unwrap();
    assert_eq!(created, 2);
    let part: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_logs").fetch_one(&pool).await.unwrap();
    assert_eq!(part, format!("audit_logs_{}", ahead.format("%Y_%m")));
    pool.close().await;
    db.drop().await;
}

#[tokio::test]
async fn partition_bounds_are_utc_months_whatever_the_session_time_zone() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    for zone in ["Asia/Taipei", "America/Los_Angeles"] {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query(&format!("SET TimeZone = '{zone}'")).execute(&mut *conn).await.unwrap();
        let created: i32 =
            sqlx::query_scalar("SELECT jobplane_ensure_audit_partitions(5)").fetch_one(&mut *conn).await.unwrap();
        assert!(created <= 3, "{zone}: {created}");
    }
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET TimeZone = 'UTC'").execute(&mut *conn).await.unwrap();
    let bounds: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'audit_logs'::regclass AND c.relname <> 'audit_logs_default' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert_eq!(bounds.len(), 6);
    for bound in &bounds {
        // pg_get_expr renders in the session zone, UTC here: every bound is a month's first midnight.
        assert_eq!(bound.matches("-01 00:00:00+00").count(), 2, "{bound}");
    }
    pool.close().await;
    db.drop().await;
}

#[tokio::test]
async fn concurrent_partition_calls_take_turns() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let calls =
        (0..4).map(|_| sqlx::query_scalar::<_, i32>("SELECT jobplane_ensure_audit_partitions(8)").fetch_one(&pool));
    let created: Vec<i32> = futures::future::try_join_all(calls).await.unwrap();
    assert_eq!(created.iter().sum::<i32>(), 6, "each partition created once: {created:?}");
    pool.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_repeated_event_id_is_stored_once_within_its_month() {
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let insert = "WITH claimed AS (INSERT INTO audit_event_ids (event_id, month) VALUES ($1, jobplane_audit_month($2))
                                   ON CONFLICT DO NOTHING RETURNING event_id)
                  INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, occurred_at)
                  SELECT event_id, 't1', 'u1', 'login', 'session', $2 FROM claimed";
    let event = uuid::Uuid::now_v7();
    let month = Utc::now().with_day(1).unwrap().date_naive().and_hms_opt(12, 0, 0).unwrap().and_utc();
    // The same event_id at another time of the same month (a producer's repeat), then its
    // redelivery: one row. A month boundary in UTC, whatever the session's time zone.
    for at in [month + chrono::Duration::days(3), month + chrono::Duration::days(9), month + chrono::Duration::days(3)]
    {
        sqlx::query(insert).bind(event).bind(at).execute(&pool).await.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE event_id = $1")
        .bind(event)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let months: Vec<String> =
        sqlx::query_scalar("SELECT to_char(jobplane_audit_month(t), 'YYYY-MM-DD') FROM unnest($1::timestamptz[]) AS t")
            .bind(vec![
                "2026-11-30T23:30:00-05:00".parse::<chrono::DateTime<Utc>>().unwrap(),
                "2026-12-01T00:30:00+02:00".parse().unwrap(),
            ])
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(months, ["2026-12-01", "2026-11-01"]);
    pool.close().await;
    db.drop().await;
}

/// `AUDIT_RETENTION_MONTHS`: the worker's upkeep, run with an injected clock, rolls months out
/// of both tables (rows, ids and partitions) and keeps the horizon's months whole.
#[tokio::test]
async fn a_month_past_the_retention_horizon_is_dropped() {
    use workers::deliver::audit::maintain_partitions;
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let at = |s: &str| s.parse::<chrono::DateTime<Utc>>().unwrap();
    // Rows in June, July and August 2030 (the upkeep without retention run in each month), and
    // one in 2020 (the default partitions).
    let insert = "WITH claimed AS (INSERT INTO audit_event_ids (event_id, month) VALUES ($1, jobplane_audit_month($2))
                                   ON CONFLICT DO NOTHING RETURNING event_id)
                  INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, occurred_at)
                  SELECT event_id, 't1', 'u1', 'login', 'session', $2 FROM claimed";
    for month in ["2030-06-15T10:00:00Z", "2030-07-15T10:00:00Z", "2030-08-15T10:00:00Z", "2020-01-15T10:00:00Z"] {
        let upkeep = maintain_partitions(&pool, None, at(month)).await.unwrap();
        assert!(upkeep.dropped.is_empty(), "{month}: {upkeep:?}");
        sqlx::query(insert).bind(uuid::Uuid::now_v7()).bind(at(month)).execute(&pool).await.unwrap();
    }
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}")).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!((count("audit_logs").await, count("audit_event_ids").await), (4, 4));
    // Without a retention setting nothing is dropped, however late it is.
    let upkeep = maintain_partitions(&pool, None, at("2031-01-01T00:00:00Z")).await.unwrap();
    assert!(upkeep.dropped.is_empty());
    assert_eq!(count("audit_logs").await, 4);
    // 1 September 2030, keeping one month: August stays whole, July rolls out (and June, and
    // 2020's row in the default partitions).
    let upkeep = maintain_partitions(&pool, Some(1), at("2030-09-01T00:00:00Z")).await.unwrap();
    let dropped: Vec<&str> = upkeep.dropped.iter().map(String::as_str).collect();
    assert!(dropped.contains(&"audit_logs_2030_07") && dropped.contains(&"audit_event_ids_2030_07"), "{dropped:?}");
    assert!(dropped.contains(&"audit_logs_2030_06") && !dropped.iter().any(|p| p.ends_with("2030_08")), "{dropped:?}");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') FROM audit_logs")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, ["2030-08"]);
    assert_eq!(count("audit_event_ids").await, 1);
    let gone: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('audit_logs_2030_07')::text").fetch_one(&pool).await.unwrap();
    assert_eq!(gone, None);
    // A second pass in the same month drops nothing more.
    let again = maintain_partitions(&pool, Some(1), at("2030-09-20T00:00:00Z")).await.unwrap();
    assert!(again.dropped.is_empty(), "{again:?}");
    pool.close().await;
    db.drop().await;
}

/// The writer's binary `COPY` carries every column type exactly: NULLs, IPv4 and IPv6,
/// non-ASCII text, nested metadata, microseconds; a repeated event id in a batch is written once.
#[tokio::test]
async fn the_writers_binary_copy_round_trips_every_column() {
    use workers::deliver::audit::{Row, write_batch};
    type Written = (
        uuid::Uuid,
        String,
        Option<String>,
        Option<String>,
        serde_json::Value,
        chrono::DateTime<Utc>,
        Option<uuid::Uuid>,
    );
    let db = OwnDatabase::create().await;
    db::migrate_url(&db.url).await.unwrap();
    let pool = db::pool(&db.url, 1).unwrap();
    let at = "2026-11-28T03:04:05.123456Z".parse::<chrono::DateTime<Utc>>().unwrap();
    let row = |ip: Option<&str>, id: uuid::Uuid| Row {
        event_id: id,
        tenant_id: "t-é".into(),
        actor: "user:7".into(),
        action: "invoice.paid".into(),
        resource_type: "invoice".into(),
        resource_id: ip.map(|_| "inv_1".into()),
        ip: ip.map(|ip| ip.parse().unwrap()),
        user_agent: ip.map(|_| "curl/8 \"quoted\"\ttab".into()),
        metadata: serde_json::json!({"n": 1, "nested": {"a": [1, "two", null]}, "ü": "✓"}),
        occurred_at: at,
        job_id: ip.map(|_| uuid::Uuid::nil()),
    };
    let (a, b, c) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let batch = [row(Some("203.0.113.9"), a), row(Some("2001:db8::1"), b), row(None, c), row(None, a)];
    write_batch(&pool, &batch).await.unwrap();
    write_batch(&pool, &batch[1..]).await.unwrap(); // a redelivery writes nothing more
    let got: Vec<Written> =
        sqlx::query_as(
            "SELECT event_id, tenant_id, host(ip), user_agent, metadata, occurred_at, job_id FROM audit_logs ORDER BY event_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].2.as_deref(), Some("203.0.113.9"));
    assert_eq!(got[1].2.as_deref(), Some("2001:db8::1"));
    assert_eq!((got[2].2.as_deref(), got[2].3.as_deref(), got[2].6), (None, None, None));
    assert_eq!(got[0].3.as_deref(), Some("curl/8 \"quoted\"\ttab"));
    assert_eq!(got[0].6, Some(uuid::Uuid::nil()));
    for (id, tenant, _, _, metadata, occurred_at, _) in &got {
        assert!([a, b, c].contains(id));
        assert_eq!((tenant.as_str(), occurred_at), ("t-é", &at));
        assert_eq!(metadata, &batch[0].metadata);
    }
    let ids: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event_ids").fetch_one(&pool).await.unwrap();
    assert_eq!(ids, 3);
    pool.close().await;
    db.drop().await;
}

/// Issue 17's migration on a database that already holds audit logs: every old id keeps its
/// row's month, a month that already had a partition of `audit_logs` gets its partition of
/// `audit_event_ids` (not the default), a redelivery after the upgrade writes nothing, and a
/// worker still running the old statement during a rolling upgrade is refused as unavailable
/// (retried), never as a poison row (dead-lettered).
#[tokio::test]
async fn the_retention_migration_upgrades_a_database_with_audit_data() {
    use workers::deliver::audit::{Row, write_batch};
    let db = OwnDatabase::create().await;
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            db::MIGRATOR.migrations.iter().filter(|m| m.version < 20_261_128_000_002).cloned().collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    let pool = db::pool(&db.url, 2).unwrap();
    before.run(&pool).await.unwrap();
    // A month that had its partition when it was current (2025-03), a row in the default
    // partition (2020), one this month, and one id whose row is gone.
    sqlx::query(
        "CREATE TABLE audit_logs_2025_03 PARTITION OF audit_logs FOR VALUES FROM ('2025-03-01 00:00+00') TO ('2025-04-01 00:00+00')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The statement of the writer before issue 17 (60c70c5's INSERT_BATCH, one row).
    let old_insert =
        "WITH claimed AS (INSERT INTO audit_event_ids (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING event_id)
                      INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, occurred_at)
                      SELECT event_id, 't1', 'u1', 'login', 'session', $2 FROM claimed";
    let at = |s: &str| s.parse::<chrono::DateTime<Utc>>().unwrap();
    let events = [
        (uuid::Uuid::now_v7(), at("2025-03-31T23:59:59Z")),
        (uuid::Uuid::now_v7(), at("2020-01-15T10:00:00Z")),
        (uuid::Uuid::now_v7(), Utc::now()),
    ];
    for (id, when) in events {
        sqlx::query(old_insert).bind(id).bind(when).execute(&pool).await.unwrap();
    }
    sqlx::query("INSERT INTO audit_event_ids (event_id) VALUES ($1)")
        .bind(uuid::Uuid::now_v7())
        .execute(&pool)
        .await
        .unwrap();

    db::migrate(&pool).await.unwrap();
    db::migrate(&pool).await.unwrap(); // applying again is harmless

    let ids: Vec<(String, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, event_id, to_char(month, 'YYYY-MM') FROM audit_event_ids ORDER BY month",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let this_month = Utc::now().format("%Y_%m").to_string();
    assert_eq!(
        ids,
        [
            ("audit_event_ids_default".to_owned(), events[1].0, "2020-01".to_owned()),
            ("audit_event_ids_2025_03".to_owned(), events[0].0, "2025-03".to_owned()),
            (format!("audit_event_ids_{this_month}"), events[2].0, this_month.replace('_', "-")),
        ]
    );
    // Redeliveries of the old events after the upgrade: nothing more is written.
    let rows: Vec<Row> = events
        .iter()
        .map(|&(event_id, occurred_at)| Row {
            event_id,
            tenant_id: "t1".into(),
            actor: "u1".into(),
            action: "login".into(),
            resource_type: "session".into(),
            resource_id: None,
            ip: None,
            user_agent: None,
            metadata: serde_json::json!({}),
            occurred_at,
            job_id: None,
        })
        .collect();
    write_batch(&pool, &rows).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 3);
    // An old worker's statement: refused with a SQLSTATE outside classes 22 and 23, which the
    // writer (old and new) treats as PostgreSQL unavailable, so its events wait and are retried.
    let err = sqlx::query(old_insert).bind(uuid::Uuid::now_v7()).bind(Utc::now()).execute(&pool).await.unwrap_err();
    let code = err
        .as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .map(std::borrow::Cow::into_owned)
        .unwrap_or_default();
    assert!(!code.starts_with("22") && !code.starts_with("23") && !code.is_empty(), "{code}: {err}");
    // The drop function deletes from the default partitions before it detaches, and bounds its lock waits.
    let src: String = sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE proname = 'jobplane_drop_audit_partitions'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(src.contains("lock_timeout") && src.find("DELETE") < src.find("DETACH"), "{src}");
    // A new month's rows leave the default partitions by one DELETE ... RETURNING (none lost between two snapshots).
    let ensure: String =
        sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE proname = 'jobplane_ensure_audit_partitions'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(ensure.matches("RETURNING *").count() == 2, "{ensure}");
    // Retention after the upgrade drops the old month from both tables.
    let upkeep = workers::deliver::audit::maintain_partitions(&pool, Some(1), Utc::now()).await.unwrap();
    assert!(upkeep.dropped.contains(&"audit_event_ids_2025_03".to_owned()), "{upkeep:?}");
    assert!(upkeep.dropped.contains(&"audit_logs_2025_03".to_owned()), "{upkeep:?}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event_ids").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 1);
    pool.close().await;
    db.drop().await;
}
