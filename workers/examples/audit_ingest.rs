//! Audit-log ingestion, end to end (run by `bench/audit.sh`; never part of the tests).
//!
//! Starts the release `producer-api` and `worker` binaries on a database and a Redis namespace of
//! their own, posts N events (default 100,000) through `POST /v1/jobs/batch` (1000 a request,
//! 4 requests in flight) and times from the first request until every row is in PostgreSQL.
//! Two worker set-ups, alternated over the runs, on the same machine in the same run:
//! - `batched`: the defaults (`AUDIT_BATCH_SIZE=1000`, `AUDIT_FLUSH_MS=200`, `AUDIT_WRITERS=2`);
//! - `one insert per event`: `AUDIT_BATCH_SIZE=1` with `AUDIT_WRITERS=8`, so each event is one
//!   statement and eight statements run at once: the per-event baseline, given the same
//!   parallelism a connection pool would give it.
//!
//! - `writer alone` (no queue): the same rows, built in this process, written by the worker's own
//!   write path (`write_batch`: binary `COPY` into a staging table, then one statement into
//!   `audit_event_ids` and `audit_logs`) in batches of 1000, two at once;
//! - `ceiling` (PostgreSQL only): the same rows by the fastest path there is, binary `COPY`
//!   straight into `audit_logs` and `audit_event_ids`, two connections at once, no
//!   deduplication statement, no queue.
//!
//! The one-insert-per-event set-up runs only with `BENCH_BASELINE=1` (it takes ~35 s a run).
//!
//! Prints each run, with the CPU time per event of each process involved (producer-api, the
//! worker, Redis, and PostgreSQL: the run's own backends plus the shared WAL writer,
//! checkpointer and background writer), the median of each set-up, and their ratio.

#![expect(clippy::cast_precision_loss, reason = "rates for a report")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

const KEY: &str = "bench-secret-0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User + system CPU time of a process (all its threads), in µs; 0 once it is gone.
fn cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // After the command name: state is field 3 of stat(5), utime 14 and stime 15.
    [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum::<u64>() * 10_000 // USER_HZ 100
}

/// The PostgreSQL processes working for `database`: its backends (their titles name it) and
/// the shared writers every commit goes through.
fn postgres_pids(database: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|title| {
                title.starts_with("postgres:")
                    && [database, "walwriter", "checkpointer", "background writer"].iter().any(|w| title.contains(w))
            })
        })
        .collect()
}

/// CPU µs of each process of a run: producer-api, worker and Redis (`pids`), then PostgreSQL.
fn cpu_by_role(pids: [u32; 3], database: &str) -> Vec<(String, u64)> {
    let postgres = postgres_pids(database).into_iter().map(cpu_us).sum();
    ["producer-api", "worker", "redis"]
        .into_iter()
        .zip(pids)
        .map(|(role, pid)| (role.to_owned(), cpu_us(pid)))
        .chain([("postgres".to_owned(), postgres)])
        .collect()
}

async fn redis_pid(url: &str) -> anyhow::Result<u32> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
    Ok(info.lines().find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok()).unwrap_or(0))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(18_080, |a| a.port())
}

/// Rows per second end to end, the seconds the enqueue alone took, and CPU µs per event by process.
async fn run_once(
    events: usize,
    baseline: bool,
    bin: &std::path::Path,
) -> anyhow::Result<(f64, f64, Vec<(String, f64)>)> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let server = std::env::var("BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let (database, namespace) = (format!("bench_audit_{suffix}"), format!("bench-{suffix}"));
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await?;
    let db_url = format!("{server}/{database}");
    db::migrate(&db::pool(&db_url, 1)?).await?;
    let addr = format!("127.0.0.1:{}", free_port());
    let api = Killed(
        Command::new(bin.join("producer-api"))
            .env("PRODUCER_API_KEYS", format!("bench:{KEY}"))
            .env("PRODUCER_ADDR", &addr)
            .env("REDIS_URL", &redis_url)
            .env("REDIS_NAMESPACE", &namespace)
            .env("DATABASE_URL", &db_url)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let (batch, writers, concurrency) = if baseline { ("1", "8", "200") } else { ("1000", "2", "2000") };
    let worker = Killed(
        Command::new(bin.join("worker"))
            .env("REDIS_URL", &redis_url)
            .env("REDIS_NAMESPACE", &namespace)
            .env("DATABASE_URL", &db_url)
            .env("WORKER_KINDS", "audit_log")
            .env("WORKER_METRICS_ADDR", "0")
            .env("AUDIT_BATCH_SIZE", batch)
            .env("AUDIT_WRITERS", writers)
            .env("WORKER_CONCURRENCY_AUDIT_LOG", concurrency)
            .env("JOB_RETENTION_SECONDS", "60")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let http = reqwest::Client::new();
    let ready = format!("http://{addr}/readyz");
    while !http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = db::pool(&db_url, 1)?;
    let now = chrono::Utc::now();
    let bodies: Vec<serde_json::Value> = (0..events)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|chunk| {
            let jobs: Vec<_> = chunk
                .iter()
                .map(|i| {
                    json!({"kind": "audit_log", "payload": {"tenant_id": format!("t{}", i % 50),
                    "actor": "user:7", "action": "invoice.paid", "resource_type": "invoice",
                    "resource_id": format!("inv_{i}"), "metadata": {"n": i}, "occurred_at": now}})
                })
                .collect();
            json!({ "jobs": jobs })
        })
        .collect();
    let redis_pid = redis_pid(&redis_url).await?;
    let pids = [api.0.id(), worker.0.id(), redis_pid];
    let before = cpu_by_role(pids, &database);
    let started = Instant::now();
    let url = format!("http://{addr}/v1/jobs/batch");
    let mut posts = futures::stream::iter(bodies.iter().map(|body| http.post(&url).bearer_auth(KEY).json(body).send()))
        .buffer_unordered(4);
    while let Some(response) = posts.next().await {
        anyhow::ensure!(response?.status() == 202, "enqueue refused");
    }
    let enqueued = started.elapsed().as_secs_f64();
    let target = i64::try_from(events)?;
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs").fetch_one(&pool).await?;
        if rows >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    // Backends that started during the run count from zero.
    let after = cpu_by_role(pids, &database);
    let cpu = after
        .iter()
        .zip(&before)
        .map(|((role, a), (_, b))| (role.clone(), a.saturating_sub(*b) as f64 / events as f64))
        .collect();
    drop((worker, api));
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)")).execute(&admin).await?;
    let mut conn = redis::Client::open(redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let stale: Vec<String> = redis::cmd("KEYS").arg(format!("{namespace}:*")).query_async(&mut conn).await?;
    for chunk in stale.chunks(1000) {
        let () = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await?;
    }
    Ok((rate, enqueued, cpu))
}

/// The rows the end-to-end run posts, as the worker writes them.
fn rows(events: usize, now: chrono::DateTime<chrono::Utc>) -> Vec<workers::deliver::audit::Row> {
    (0..events)
        .map(|i| workers::deliver::audit::Row {
            event_id: uuid::Uuid::now_v7(),
            tenant_id: format!("t{}", i % 50),
            actor: "user:7".into(),
            action: "invoice.paid".into(),
            resource_type: "invoice".into(),
            resource_id: Some(format!("inv_{i}")),
            ip: None,
            user_agent: None,
            metadata: json!({"n": i}),
            occurred_at: now,
            job_id: Some(uuid::Uuid::now_v7()),
        })
        .collect()
}

/// `audit_event_ids` rows (event_id, month) in binary `COPY` format.
fn ids_copy(rows: &[workers::deliver::audit::Row]) -> Vec<u8> {
    use chrono::Datelike;
    let mut out = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
    for row in rows {
        let month = row.occurred_at.date_naive().with_day(1).unwrap_or_default();
        let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
        let days = i32::try_from((month - epoch).num_days()).unwrap_or_default();
        out.extend_from_slice(&2_i16.to_be_bytes());
        out.extend_from_slice(&16_i32.to_be_bytes());
        out.extend_from_slice(row.event_id.as_bytes());
        out.extend_from_slice(&4_i32.to_be_bytes());
        out.extend_from_slice(&days.to_be_bytes());
    }
    out.extend_from_slice(&(-1_i16).to_be_bytes());
    out
}

/// PostgreSQL alone: the rows of a run written without a queue, by the worker's write path
/// (`ceiling` false) or by binary `COPY` straight into the tables (`ceiling` true). Rows per
/// second and PostgreSQL's CPU µs per event.
async fn postgres_only(events: usize, ceiling: bool) -> anyhow::Result<(f64, f64)> {
    use workers::deliver::audit::{Columns, binary_copy, write_batch};
    let server = std::env::var("BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let database = format!("bench_audit_{}", uuid::Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await?;
    let db_url = format!("{server}/{database}");
    db::migrate(&db::pool(&db_url, 1)?).await?;
    let pool = db::pool(&db_url, 2)?;
    // Connect both before the clock starts.
    let warm = futures::future::try_join(pool.acquire(), pool.acquire()).await?;
    drop(warm);
    let rows = rows(events, chrono::Utc::now());
    let before: u64 = postgres_pids(&database).into_iter().map(cpu_us).sum();
    let started = Instant::now();
    let chunk = if ceiling { events.div_ceil(2).max(1) } else { 1000 };
    let writes = futures::stream::iter(rows.chunks(chunk).map(|rows| {
        let pool = pool.clone();
        async move {
            if !ceiling {
                return write_batch(&pool, rows).await;
            }
            let mut conn = pool.acquire().await?;
            let mut copy = conn
                .copy_in_raw(
                    "COPY audit_logs (event_id, tenant_id, actor, action, resource_type, resource_id, ip, \
                              user_agent, metadata, occurred_at, job_id) FROM STDIN (FORMAT binary)",
                )
                .await?;
            copy.send(binary_copy(rows, Columns::AuditLogs)).await?;
            copy.finish().await?;
            let mut copy =
                conn.copy_in_raw("COPY audit_event_ids (event_id, month) FROM STDIN (FORMAT binary)").await?;
            copy.send(ids_copy(rows)).await?;
            copy.finish().await.map(|_| ())
        }
    }))
    .buffer_unordered(2);
    let results: Vec<Result<(), sqlx::Error>> = writes.collect().await;
    results.into_iter().collect::<Result<(), _>>()?;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let after: u64 = postgres_pids(&database).into_iter().map(cpu_us).sum();
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs").fetch_one(&pool).await?;
    anyhow::ensure!(written == i64::try_from(events)?, "{written} rows written of {events}");
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)")).execute(&admin).await?;
    Ok((rate, after.saturating_sub(before) as f64 / events as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let bin = std::path::PathBuf::from(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into()));
    let baseline_too = std::env::var("BENCH_BASELINE").is_ok_and(|v| v == "1");
    let (mut batched, mut single, mut alone, mut ceiling) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let (rate, postgres) = postgres_only(events, true).await?;
        println!(
            "run {run}: ceiling (binary COPY)    {events} rows, PostgreSQL only: {rate:>9.0} rows/s (CPU µs per event: postgres {postgres:.1})"
        );
        ceiling.push(rate);
        let (rate, postgres) = postgres_only(events, false).await?;
        println!(
            "run {run}: writer alone (no queue) {events} rows, PostgreSQL only: {rate:>9.0} rows/s (CPU µs per event: postgres {postgres:.1})"
        );
        alone.push(rate);
        for baseline in [false, true] {
            if baseline && !baseline_too {
                continue;
            }
            let (rate, enqueued, cpu) = run_once(events, baseline, &bin).await?;
            let name = if baseline { "one insert per event" } else { "batched" };
            let cpu: Vec<String> = cpu.iter().map(|(role, us)| format!("{role} {us:.1}")).collect();
            println!(
                "run {run}: {name:<21} {events} events end to end: {rate:>9.0} rows/s (enqueue took {enqueued:.2} s; CPU µs per event: {})",
                cpu.join(", ")
            );
            if baseline { &mut single } else { &mut batched }.push(rate);
        }
    }
    let range = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.0}–{hi:.0}")
    };
    let (b, c) = (median(batched.clone()), median(ceiling.clone()));
    println!("median end to end (batched): {b:>9.0} rows/s (min–max {})", range(&batched));
    println!("median writer alone:         {:>9.0} rows/s (min–max {})", median(alone.clone()), range(&alone));
    println!("median ceiling (binary COPY):{c:>9.0} rows/s (min–max {})", range(&ceiling));
    println!("end to end / ceiling: {:.0} %", 100.0 * b / c);
    if baseline_too {
        let s = median(single.clone());
        println!("median one insert per event: {s:>9.0} rows/s (min–max {})", range(&single));
        println!("ratio batched / one insert per event: {:.1}×", b / s);
    }
    Ok(())
}
