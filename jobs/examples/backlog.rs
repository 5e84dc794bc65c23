//! Measures the Redis layout at scale (run by `bench/backlog.sh`; never part of the tests):
//! enqueues a backlog through `Store::enqueue` (the producer's path, 1000 jobs a call), then
//! drains it with a batched pop over the same layout, reporting the drain rate for each tenth
//! of the backlog so a cliff at any backlog size would show.
//!
//! The drain script below is a measurement of the layout's pop cost (pop a batch from the
//! ready list, lease it in the active set, read its record, then acknowledge and delete),
//! not the worker: the worker runtime adds retries, dead letters and recovery on top.

#![expect(clippy::cast_precision_loss, reason = "rates and sizes for a report")]

use std::time::{Duration, Instant};

use chrono::Utc;
use jobs::{Keys, Kind, NewJob, Store};
use redis::Script;

const DRAIN: &str = r"
local ids = redis.call('RPOP', KEYS[1], ARGV[1])
if not ids then return 0 end
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  redis.call('GET', ARGV[3] .. ':' .. id)
end
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('DEL', ARGV[3] .. ':' .. id)
end
return #ids
";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap_or_default();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let total = arg("--jobs", 1_000_000);
    let batch = arg("--batch", 1000);
    let fetch = arg("--fetch", 100);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let keys = Keys::new(&namespace);
    let store = Store::new(
        jobs::redis_conn::connect_url(&url, Duration::from_secs(30))?,
        keys.clone(),
        Duration::from_hours(24),
        Duration::from_secs(30),
    );
    let mut conn = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
    let queue = keys.queue(Kind::Webhook);
    let payload = r#"{"url":"https://example.org/hook","event":"bench.ping","data":{"n":1}}"#;
    let memory_before = used_memory(&mut conn).await;

    let started = Instant::now();
    let mut written = 0;
    while written < total {
        let now = Utc::now();
        let jobs: Vec<NewJob> = (0..batch.min(total - written))
            .map(|_| NewJob {
                id: uuid::Uuid::now_v7(),
                kind: Kind::Webhook,
                payload: payload.to_owned(),
                created_at: now,
                run_at: None,
                max_attempts: 10,
                producer: "bench".into(),
                idempotency: None,
                traceparent: None,
                priority: jobs::Priority::Normal,
                group: None,
            })
            .collect();
        written += store.enqueue(&jobs).await?.len();
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    let backlog: usize = redis::cmd("LLEN").arg(queue.ready()).query_async(&mut conn).await?;
    let memory_full = used_memory(&mut conn).await;
    println!(
        "enqueued {written} jobs in {enqueue_secs:.1} s: {:.0} jobs/s (batches of {batch}, one script call each)",
        written as f64 / enqueue_secs
    );
    println!(
        "ready list length {backlog}; Redis memory +{:.0} MiB ({:.0} bytes/job)",
        (memory_full - memory_before) as f64 / 1_048_576.0,
        (memory_full - memory_before) as f64 / written as f64
    );

    let drain = Script::new(DRAIN);
    let slice = (total / 10).max(1);
    let mut drained = 0;
    let mut slice_started = Instant::now();
    let drain_started = Instant::now();
    let mut rates = Vec::new();
    loop {
        let lease = Utc::now().timestamp_millis() + 60_000;
        let n: usize = drain
            .key(queue.ready())
            .key(queue.active())
            .arg(fetch)
            .arg(lease)
            .arg(queue.job_prefix())
            .invoke_async(&mut conn)
            .await?;
        if n == 0 {
            break;
        }
        drained += n;
        if drained % slice == 0 || drained == total {
            let rate = slice as f64 / slice_started.elapsed().as_secs_f64();
            println!("  drained {drained:>8} (backlog {:>8} left): {rate:.0} jobs/s", total - drained);
            rates.push(rate);
            slice_started = Instant::now();
        }
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    rates.sort_by(f64::total_cmp);
    println!(
        "drained {drained} jobs in {drain_secs:.1} s: {:.0} jobs/s overall, per-slice median {:.0}, min {:.0}, max {:.0} (fetch {fetch})",
        drained as f64 / drain_secs,
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
    let memory_after = used_memory(&mut conn).await;
    println!(
        "Redis memory after drain: {:+.1} MiB against the start",
        (memory_after as f64 - memory_before as f64) / 1_048_576.0
    );
    let _: () = redis::cmd("DEL").arg(queue.ready()).arg(queue.active()).query_async(&mut conn).await?;
    Ok(())
}
