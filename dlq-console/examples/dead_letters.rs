//! How long the console's operations take on 100,000 dead letters (run by `bench/console.sh`;
//! never part of the tests). Makes the letters through the worker's own scripts on a namespace
//! of its own, then times: the first page unfiltered, a text search over all of them (total
//! included), a bulk replay of every letter (pacing lifted), and a purge of a second batch.

#![expect(clippy::cast_precision_loss, reason = "rates for a report")]

use std::time::{Duration, Instant};

use chrono::Utc;
use jobs::dead::{DeadFilter, DeadLetters};
use jobs::queue::{Finished, Outcome, Queue, Retention};
use jobs::{Keys, Kind, NewJob, Store};

async fn make_dead(store: &Store, queue: &Queue, n: usize, error: &str) -> anyhow::Result<()> {
    let mut left = n;
    let mut i = 0usize;
    while left > 0 {
        let now = Utc::now();
        let jobs: Vec<NewJob> = (0..left.min(1000))
            .map(|_| {
                i += 1;
                NewJob {
                    id: uuid::Uuid::now_v7(),
                    kind: Kind::Webhook,
                    payload: serde_json::json!({"url": "https://hooks.example.org/orders", "event": "order.created",
                        "data": {"order": format!("ord_{i:07}")}})
                    .to_string(),
                    created_at: now,
                    run_at: None,
                    max_attempts: 1,
                    producer: "bench".into(),
                    idempotency: None,
                    traceparent: None,
                    priority: jobs::Priority::Normal,
                    group: None,
                }
            })
            .collect();
        store.enqueue(&jobs).await?;
        let leased = queue.fetch(Duration::from_mins(1), jobs.len(), 0).await?;
        let done: Vec<Finished> = leased
            .into_iter()
            .map(|(job, _)| Finished {
                job,
                outcome: Outcome::Dead(jobs::record::DeadReason::Permanent),
                error: Some(error.to_owned()),
                provider_id: None,
                started_at: now,
                finished_at: Utc::now(),
            })
            .collect();
        for chunk in done.chunks(250) {
            // A cap above the bench's count: nothing is evicted.
            queue.finish(chunk, Utc::now(), &Retention { dead_cap: 10_000_000, ..Retention::default() }).await?;
        }
        left -= jobs.len();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_LETTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let conn = jobs::redis_conn::connect_url(&url, Duration::from_mins(1))?;
    let keys = Keys::new(&namespace);
    let store = Store::new(conn.clone(), keys.clone(), Duration::from_hours(1), Duration::from_mins(1));
    let queue = Queue::new(conn.clone(), &keys, Kind::Webhook, "bench");
    let started = Instant::now();
    make_dead(&store, &queue, n, "HTTP 400 bad request").await?;
    println!("made {n} dead letters in {:.1} s", started.elapsed().as_secs_f64());
    let dead = DeadLetters::new(conn.clone(), keys.clone());
    let console = dlq_console::actions::Console {
        control: jobs::control::Control::new(
            conn.clone(),
            keys.clone(),
            std::collections::BTreeMap::new(),
            Duration::from_mins(1),
        ),
        dead: dead.clone(),
        store: store.clone(),
        replay_rate: u32::MAX,
        templates: jobs::sms_templates::SmsTemplates::default(),
        pauses: jobs::pause::Pauses::new(conn.clone(), keys.clone()),
        rates: jobs::rate::RateLimits::new(conn.clone(), keys.clone()),
        fleet: jobs::fleet::Fleet::new(conn.clone(), keys.clone()),
        destinations: jobs::destinations::Destinations::new(conn.clone(), &keys),
        suppressions: jobs::suppression::Suppressions::new(conn.clone(), &keys, 1),
    };

    let t = Instant::now();
    let page = dead.list(&DeadFilter::default(), 50, None).await?;
    println!("list, first page of 50 (total {}): {:.1} ms", page.total, t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let next = dead.list(&DeadFilter::default(), 50, page.next_cursor.as_deref()).await?;
    println!("list, second page by cursor ({} items): {:.1} ms", next.items.len(), t.elapsed().as_secs_f64() * 1000.0);
    let search = DeadFilter { q: Some("ord_0054321".into()), ..DeadFilter::default() };
    let t = Instant::now();
    let found = dead.list(&search, 50, None).await?;
    println!("search payloads for one order (found {}, all {n} read): {:.2} s", found.total, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let ids: Vec<String> = console
        .matching(&DeadFilter::default())
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let matched = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = console
        .replay_many("bench", &ids, serde_json::json!({"all": true}), |_| {})
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "bulk replay of all {} (matching took {matched:.2} s): {secs:.1} s = {:.0} letters/s",
        report.replayed,
        report.replayed as f64 / secs
    );
    make_dead(&store, &queue, n, "HTTP 400 bad request").await?;
    let t = Instant::now();
    let deleted = console.purge("bench", &DeadFilter::default(), |_| {}).await.map_err(|e| anyhow::anyhow!(e))?;
    println!("purge of {deleted}: {:.2} s", t.elapsed().as_secs_f64());

    let mut c = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
    let stale: Vec<String> = redis::cmd("KEYS").arg(format!("{namespace}:*")).query_async(&mut c).await?;
    for chunk in stale.chunks(1000) {
        let () = redis::cmd("UNLINK").arg(chunk).query_async(&mut c).await?;
    }
    Ok(())
}
