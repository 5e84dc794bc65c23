//! A rate limit shared by a fleet (run by `bench/ratelimit.sh`; never part of the tests).
//!
//! Queues BENCH_JOBS (3,000) webhook jobs, starts BENCH_WORKERS (3) release `worker` processes
//! with `RATE_LIMIT_WEBHOOK=BENCH_LIMIT` (50/s) against them, and records when each delivery
//! reaches an in-process receiver: the most deliveries in any one second (sliding), and the
//! run's duration, first delivery to last (the target: jobs / rate, e.g. 60 s ± 5 %).

#![expect(clippy::cast_precision_loss, reason = "rates for a report")]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use chrono::Utc;
use jobs::{Keys, Kind, NewJob, Priority, Store};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn worker(bin: &str, url: &str, namespace: &str, limit: &str) -> std::io::Result<Child> {
    Command::new(bin)
        .env("REDIS_URL", url)
        .env("REDIS_NAMESPACE", namespace)
        .env("WORKER_KINDS", "webhook")
        .env("WORKER_METRICS_ADDR", "0")
        .env("WORKER_SCHEDULER", "false")
        .env("RATE_LIMIT_WEBHOOK", limit)
        .env("JOB_RETENTION_SECONDS", "900")
        .env("WEBHOOK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// The most of `times` (ms) within any one second.
fn busiest_second(times: &[i64]) -> usize {
    let mut at = times.to_vec();
    at.sort_unstable();
    (0..at.len()).map(|i| at[i..].iter().take_while(|t| **t - at[i] < 1000).count()).max().unwrap_or(0)
}

/// When each job was leased (its record's start, Redis's clock, ms).
async fn leased_at(redis: &mut redis::aio::MultiplexedConnection, keys: &Keys, jobs: &[NewJob]) -> Vec<i64> {
    let mut at = Vec::with_capacity(jobs.len());
    for job in jobs {
        let key = keys.queue(Kind::Webhook).job(&job.id.to_string());
        let raw: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(redis).await.unwrap_or(None);
        if let Some(started) = raw.and_then(|raw| jobs::record::JobRecord::decode(&raw).ok()).and_then(|r| r.started_at)
        {
            at.push(started);
        }
    }
    at
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = setting("BENCH_JOBS", "3000").parse()?;
    let workers: usize = setting("BENCH_WORKERS", "3").parse()?;
    let limit = setting("BENCH_LIMIT", "50/s");
    let rate: jobs::rate::RateLimit = limit.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let url = setting("REDIS_URL", "redis://127.0.0.1:6379");
    let bin = setting("WORKER_BIN", "target/release/worker");

    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let seen = arrivals.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Instant::now());
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let namespace = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let conn = jobs::redis_conn::connect_url(&url, Duration::from_secs(30))?;
    let store = Store::new(conn, Keys::new(&namespace), Duration::from_hours(1), Duration::from_secs(30));
    let payload = serde_json::json!({"url": hook, "event": "bench.ping", "data": {"n": 1}}).to_string();
    let mut children = Vec::new();
    // The workers first: each writes the limit at start, so the jobs meet it from the first fetch.
    for _ in 0..workers {
        children.push(worker(&bin, &url, &namespace, &limit)?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs: Vec<NewJob> = (0..total)
        .map(|_| NewJob {
            id: uuid::Uuid::now_v7(),
            kind: Kind::Webhook,
            payload: payload.clone(),
            created_at: Utc::now(),
            run_at: None,
            max_attempts: 10,
            producer: "bench".into(),
            idempotency: None,
            traceparent: None,
            priority: Priority::Normal,
            group: None,
        })
        .collect();
    for chunk in jobs.chunks(1000) {
        store.enqueue(chunk).await?;
    }
    let deadline =
        Instant::now() + Duration::from_secs(30) + Duration::from_secs((total as u64) / u64::from(rate.per_second) * 2);
    while arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() < total && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut at = arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    at.sort();
    let arrived: Vec<i64> =
        at.iter().map(|t| i64::try_from(t.duration_since(at[0]).as_millis()).unwrap_or(i64::MAX)).collect();
    let span = arrived.last().copied().unwrap_or_default() as f64 / 1000.0;
    let mut redis = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
    let leased = leased_at(&mut redis, &Keys::new(&namespace), &jobs).await;
    let expected = (total as f64 - f64::from(rate.burst)) / f64::from(rate.per_second);
    println!(
        "ratelimit: {workers} workers, {limit} (burst {}), {total} jobs: delivered {}, busiest second {} leased ({} records read), \
         {} at the receiver (bound rate + burst = {}), first to last delivery {span:.2} s (expected {expected:.2} s: the burst at \
         once, then the rate; {:+.1} %)",
        rate.burst,
        at.len(),
        busiest_second(&leased),
        leased.len(),
        busiest_second(&arrived),
        rate.per_second + rate.burst,
        (span / expected - 1.0) * 100.0
    );
    let stale: Vec<String> =
        redis::cmd("KEYS").arg(format!("{namespace}:*")).query_async(&mut redis).await.unwrap_or_default();
    for chunk in stale.chunks(1000) {
        let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut redis).await.unwrap_or(());
    }
    Ok(())
}
