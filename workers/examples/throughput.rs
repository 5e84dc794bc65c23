//! Worker throughput at a backlog (run by `bench/worker.sh`; never part of the tests).
//!
//! Fills a webhook queue with N jobs (default 10k, 100k, 1M in turn) through the producer's
//! enqueue path, then starts the release `worker` binary against it and times the drain to an
//! in-process receiver that answers 200 at once: full semantics (lease, signed delivery,
//! outcome recorded, retention), no-op-fast far side.

#![expect(clippy::cast_precision_loss, reason = "rates for a report")]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use chrono::Utc;
use jobs::{Keys, Kind, NewJob, Store};

/// The webhook jobs not finished yet (retries included); 0 when Redis does not answer.
async fn depth(letters: &jobs::dead::DeadLetters) -> u64 {
    letters.depths(Kind::Webhook).await.map(|d| d.unfinished()).unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![10_000, 100_000, 1_000_000] } else { sizes };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let worker_bin = std::env::var("WORKER_BIN").unwrap_or_else(|_| "target/release/worker".into());

    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    for total in sizes {
        let namespace = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let keys = Keys::new(&namespace);
        let store = Store::new(
            jobs::redis_conn::connect_url(&url, Duration::from_secs(30))?,
            keys.clone(),
            Duration::from_hours(1),
            Duration::from_secs(30),
        );
        let payload = serde_json::json!({"url": hook, "event": "bench.ping", "data": {"n": 1}}).to_string();
        let mut written = 0;
        while written < total {
            let now = Utc::now();
            let jobs: Vec<NewJob> = (0..1000.min(total - written))
                .map(|_| NewJob {
                    id: uuid::Uuid::now_v7(),
                    kind: Kind::Webhook,
                    payload: payload.clone(),
                    created_at: now,
                    run_at: None,
                    max_attempts: 10,
                    producer: "bench".into(),
                    idempotency: None,
                    traceparent: None,
                })
                .collect();
            written += store.enqueue(&jobs).await?.len();
        }
        let before = received.load(Ordering::Relaxed);
        let mut conn = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
        let letters =
            jobs::dead::DeadLetters::new(jobs::redis_conn::connect_url(&url, Duration::from_secs(30))?, keys.clone());
        let started = Instant::now();
        let mut worker = Command::new(&worker_bin)
            .env("REDIS_URL", &url)
            .env("REDIS_NAMESPACE", &namespace)
            .env("WORKER_KINDS", "webhook")
            .env("WORKER_METRICS_ADDR", "0")
            .env("WORKER_CONCURRENCY_WEBHOOK", std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "200".into()))
            // One receiver: the per-destination limit at the concurrency, available but unused.
            .env(
                "WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION",
                std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "200".into()),
            )
            .env("WORKER_BATCH", "100")
            .env("JOB_RETENTION_SECONDS", "60")
            .env("WEBHOOK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        while depth(&letters).await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let delivered = received.load(Ordering::Relaxed) - before;
        println!(
            "backlog {total:>9}: drained in {secs:>7.2} s = {:>8.0} jobs/s (delivered {delivered}, duplicates {})",
            total as f64 / secs,
            delivered.saturating_sub(total as u64)
        );
        let _ = worker.kill();
        let _ = worker.wait();
        let pattern = format!("{namespace}:*");
        let stale: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap_or_default();
        for chunk in stale.chunks(1000) {
            let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await.unwrap_or(());
        }
    }
    Ok(())
}
