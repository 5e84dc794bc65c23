//! What the worker benchmarks share (`#[path = "support/mod.rs"] mod support;`): a receiver
//! that answers 200 at once and counts, and the release worker started against a namespace.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::post;

/// Starts a webhook receiver on a free port: its URL and the count of deliveries it answered.
pub async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
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
    Ok((hook, received))
}

/// Starts `worker_bin` on the webhook queue of `namespace` (concurrency `BENCH_CONCURRENCY`,
/// 200; batch 100), keeping succeeded jobs `retention_seconds`; quiet, no PostgreSQL.
pub fn worker(worker_bin: &str, url: &str, namespace: &str, retention_seconds: u64) -> anyhow::Result<Child> {
    Ok(Command::new(worker_bin)
        .env("REDIS_URL", url)
        .env("REDIS_NAMESPACE", namespace)
        .env("WORKER_KINDS", "webhook")
        .env("WORKER_METRICS_ADDR", "0")
        .env("WORKER_CONCURRENCY_WEBHOOK", std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "200".into()))
        // One receiver: the per-destination limit at the concurrency, available but unused.
        .env(
            "WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION",
            std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "200".into()),
        )
        .env("WORKER_BATCH", "100")
        .env("JOB_RETENTION_SECONDS", retention_seconds.to_string())
        .env("WEBHOOK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}
