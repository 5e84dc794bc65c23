//! Priorities and per-tenant fairness under load (run by `bench/lanes.sh`; never part of the
//! tests). Starts the release `worker` binary against webhook jobs delivered to an in-process
//! receiver that answers 200 at once, and reads each measured job's start from its record
//! (`sa` − `ca`: Redis's clock at the lease against the enqueue's, one machine).
//!
//! 1. priority: a backlog of `LANES_BACKLOG` (100,000) normal jobs, being drained, then
//!    `LANES_HIGH` (100) high jobs, one every 10 ms: p50/p99/max start latency of the high jobs.
//! 2. fairness: group A enqueues `LANES_FLOOD` (200,000) jobs; once the worker drains it, group
//!    B enqueues `LANES_B` (100) jobs at `LANES_B_RATE` (10) per second: B's start latency, and
//!    A's throughput over those seconds against the same window of a run without B.

#![expect(clippy::cast_precision_loss, reason = "rates for a report")]

#[path = "support/mod.rs"]
mod support;

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use jobs::record::JobRecord;
use jobs::{Keys, Kind, NewJob, Priority, Store};

struct Bench {
    url: String,
    hook: String,
    received: Arc<AtomicU64>,
}

struct Run {
    namespace: String,
    keys: Keys,
    store: Store,
    worker: Option<Child>,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Bench {
    fn job(&self, priority: Priority, group: Option<&str>) -> NewJob {
        NewJob {
            id: uuid::Uuid::now_v7(),
            kind: Kind::Webhook,
            payload: serde_json::json!({"url": self.hook, "event": "bench.ping", "data": {"n": 1}}).to_string(),
            created_at: Utc::now(),
            run_at: None,
            max_attempts: 10,
            producer: "bench".into(),
            idempotency: None,
            traceparent: None,
            priority,
            group: group.map(str::to_owned),
        }
    }

    fn run(&self) -> anyhow::Result<Run> {
        let namespace = format!("bench-lanes-{}", uuid::Uuid::now_v7().simple());
        let keys = Keys::new(&namespace);
        let store = Store::new(
            jobs::redis_conn::connect_url(&self.url, Duration::from_secs(30))?,
            keys.clone(),
            Duration::from_hours(1),
            Duration::from_secs(30),
        );
        Ok(Run { namespace, keys, store, worker: None })
    }

    async fn fill(&self, run: &Run, total: usize, priority: Priority, group: Option<&str>) -> anyhow::Result<()> {
        let mut written = 0;
        while written < total {
            let jobs: Vec<NewJob> = (0..1000.min(total - written)).map(|_| self.job(priority, group)).collect();
            written += run.store.enqueue(&jobs).await?.len();
        }
        Ok(())
    }

    fn start_worker(&self, run: &mut Run) -> anyhow::Result<()> {
        let worker_bin = std::env::var("WORKER_BIN").unwrap_or_else(|_| "target/release/worker".into());
        run.worker = Some(support::worker(&worker_bin, &self.url, &run.namespace, 600)?);
        Ok(())
    }

    /// Waits until the receiver got `n` more deliveries than `from`.
    async fn wait_received(&self, from: u64, n: u64) {
        while self.received.load(Ordering::Relaxed) < from + n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Start latencies (ms) of `ids`, once every one of them has started.
    async fn latencies(&self, run: &Run, ids: &[String]) -> anyhow::Result<Vec<i64>> {
        let mut conn = redis::Client::open(self.url.as_str())?.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = ids.iter().map(|id| run.keys.queue(Kind::Webhook).job(id)).collect();
        loop {
            let raws: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            let records: Vec<JobRecord> =
                raws.into_iter().flatten().filter_map(|raw| JobRecord::decode(&raw).ok()).collect();
            let started: Vec<i64> = records.iter().filter_map(|r| r.started_at.map(|sa| sa - r.created_at)).collect();
            if started.len() == ids.len() {
                return Ok(started);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(&self, mut run: Run) -> anyhow::Result<()> {
        if let Some(mut worker) = run.worker.take() {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        let mut conn = redis::Client::open(self.url.as_str())?.get_multiplexed_async_connection().await?;
        let stale: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", run.namespace)).query_async(&mut conn).await.unwrap_or_default();
        for chunk in stale.chunks(1000) {
            let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await.unwrap_or(());
        }
        Ok(())
    }
}

fn percentiles(mut ms: Vec<i64>) -> String {
    ms.sort_unstable();
    let at = |permille: usize| ms[(permille * ms.len()).div_ceil(1000).clamp(1, ms.len()) - 1];
    format!("p50 {} ms, p99 {} ms, max {} ms (n {})", at(500), at(990), at(1000), ms.len())
}

async fn priority(bench: &Bench) -> anyhow::Result<()> {
    let (backlog, high) = (env_usize("LANES_BACKLOG", 100_000), env_usize("LANES_HIGH", 100));
    let mut run = bench.run()?;
    bench.fill(&run, backlog, Priority::Normal, None).await?;
    let from = bench.received.load(Ordering::Relaxed);
    bench.start_worker(&mut run)?;
    bench.wait_received(from, 1000).await;
    let mut ids = Vec::new();
    for _ in 0..high {
        let job = bench.job(Priority::High, None);
        ids.push(job.id.to_string());
        run.store.enqueue(&[job]).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let latencies = bench.latencies(&run, &ids).await?;
    let left = jobs::dead::DeadLetters::new(
        jobs::redis_conn::connect_url(&bench.url, Duration::from_secs(30))?,
        run.keys.clone(),
    )
    .depths(Kind::Webhook)
    .await?
    .queued;
    println!(
        "priority: {high} high jobs behind {backlog} normal ones ({left} still queued when the last high one started): {}",
        percentiles(latencies)
    );
    bench.finish(run).await
}

/// A's deliveries per second over the window B's jobs arrive in (or the same window without B),
/// and B's latencies.
async fn flood(bench: &Bench, with_b: bool) -> anyhow::Result<(f64, Option<Vec<i64>>)> {
    let (flood, b_jobs, b_rate) =
        (env_usize("LANES_FLOOD", 200_000), env_usize("LANES_B", 100), env_usize("LANES_B_RATE", 10));
    let mut run = bench.run()?;
    bench.fill(&run, flood, Priority::Normal, Some("A")).await?;
    let from = bench.received.load(Ordering::Relaxed);
    bench.start_worker(&mut run)?;
    bench.wait_received(from, 1000).await;
    let window_start = bench.received.load(Ordering::Relaxed);
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / b_rate as f64);
    let mut ids = Vec::new();
    for i in 0..b_jobs {
        if with_b {
            let job = bench.job(Priority::Normal, Some("B"));
            ids.push(job.id.to_string());
            run.store.enqueue(&[job]).await?;
        }
        tokio::time::sleep((gap * u32::try_from(i + 1).unwrap_or(u32::MAX)).saturating_sub(started.elapsed())).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let delivered = bench.received.load(Ordering::Relaxed) - window_start;
    let latencies = if with_b { Some(bench.latencies(&run, &ids).await?) } else { None };
    let a_rate = (delivered as f64 - ids.len() as f64) / secs;
    bench.finish(run).await?;
    Ok((a_rate, latencies))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (hook, received) = support::receiver().await?;
    let bench = Bench { url, hook, received };

    priority(&bench).await?;
    let (alone, _) = flood(&bench, false).await?;
    let (shared, b) = flood(&bench, true).await?;
    println!("fairness: group B's jobs behind group A's flood: {}", percentiles(b.unwrap_or_default()));
    println!(
        "fairness: group A's throughput {alone:.0} jobs/s alone, {shared:.0} jobs/s while B enqueues ({:+.1} %)",
        (shared / alone - 1.0) * 100.0
    );
    Ok(())
}
