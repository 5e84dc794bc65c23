//! The scheduler under many schedules: 10,000 stored, of which 10 are due every second
//! (`* * * * * *`) and the rest daily at a time that does not come during the run. Starts a
//! `redis-server` of its own (so INFO counts only this), runs `WORKERS` scheduler loops
//! in-process for `SECONDS`, then prints how late the ticks were enqueued (job `created_at`
//! − tick, p50/p99/max), and Redis's commands per second and CPU seconds per second.
//!
//! The definitions are written straight into the hash, as a version without the next-fire
//! index left them: the first pass indexes them (the migration path).
//!
//! `cargo run --release -p workers --example schedules_load` (`SCHEDULES`, `DUE`, `WORKERS`,
//! `SECONDS` override 10000, 10, 1, 30).

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark: fail loudly, print figures"
)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::schedule::{Schedule, ScheduleStore, Source};
use jobs::{Keys, Store};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn info(conn: &mut redis::aio::MultiplexedConnection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await.unwrap();
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_owned(), v.trim().to_owned())).collect()
}

/// Total calls over every command, and CPU seconds (user + sys) of the server.
async fn cost(conn: &mut redis::aio::MultiplexedConnection) -> (u64, f64, HashMap<String, u64>) {
    let stats = info(conn, "commandstats").await;
    let per: HashMap<String, u64> = stats
        .iter()
        .filter_map(|(k, v)| {
            let calls = v.split(',').find_map(|f| f.strip_prefix("calls="))?.parse().ok()?;
            Some((k.trim_start_matches("cmdstat_").to_owned(), calls))
        })
        .collect();
    let cpu = info(conn, "cpu").await;
    let seconds = ["used_cpu_user", "used_cpu_sys"].iter().map(|k| cpu[*k].parse::<f64>().unwrap()).sum();
    (per.values().sum(), seconds, per)
}

fn definition(name: &str, cron: &str) -> String {
    let body = serde_json::json!({"name": name, "cron": cron,
        "job": {"kind": "webhook", "payload": {"url": "https://example.com/hooks/x", "event": "reminder.due", "data": {"user": 7}}}});
    let (schedule, _) = Schedule::parse(body, "", Source::Api, &format!("p{}", name.len() % 7), Utc::now()).unwrap();
    serde_json::to_string(&schedule).unwrap()
}

#[tokio::main]
async fn main() {
    let (total, due, workers, seconds) =
        (setting("SCHEDULES", 10_000), setting("DUE", 10), setting("WORKERS", 1), setting("SECONDS", 30));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut admin = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();

    // A daily tick that does not come during the run: 12 hours from now.
    let later = Utc::now() + chrono::Duration::hours(12);
    let daily = later.format("%S %M %H * * *").to_string();
    let defs = "bench:{schedules}:defs";
    for start in (0..total).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1000).min(total) {
            let cron = if i < due { "* * * * * *" } else { daily.as_str() };
            pipe.hset(defs, format!("s{i:05}"), definition(&format!("s{i:05}"), cron)).ignore();
        }
        let () = pipe.query_async(&mut admin).await.unwrap();
    }
    println!("{total} schedules stored, {due} due every second; {workers} scheduler(s) for {seconds} s");

    let conn = jobs::redis_conn::connect_url(&url, Duration::from_secs(5)).unwrap();
    let mut loops = Vec::new();
    for _ in 0..workers {
        let schedules = ScheduleStore::new(conn.clone(), "bench");
        let queue = Store::new(conn.clone(), Keys::new("bench"), Duration::from_hours(24), Duration::from_secs(5));
        loops.push(tokio::spawn(workers::scheduler::run(schedules, queue)));
    }
    // Let the first pass index the definitions, then measure a steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (calls0, cpu0, per0) = cost(&mut admin).await;
    let started = Utc::now();
    tokio::time::sleep(Duration::from_secs(u64::try_from(seconds).unwrap())).await;
    let (calls1, cpu1, per1) = cost(&mut admin).await;
    let elapsed = (Utc::now() - started).as_seconds_f64();
    for running in &loops {
        running.abort();
    }

    let ids: Vec<String> =
        redis::cmd("LRANGE").arg("bench:{webhook}:ready").arg(0).arg(-1).query_async(&mut admin).await.unwrap();
    let mut late = Vec::new();
    for id in &ids {
        let raw: Vec<u8> =
            redis::cmd("GET").arg(format!("bench:{{webhook}}:job:{id}")).query_async(&mut admin).await.unwrap();
        let record = jobs::record::JobRecord::decode(&raw).unwrap();
        let (key, created) = (record.idempotency_key.unwrap_or_default(), record.created_at);
        // `schedule:<name>:<tick>`; these names hold no colon.
        let tick: DateTime<Utc> = key.splitn(3, ':').nth(2).unwrap().parse().unwrap();
        if tick >= started {
            late.push(created - tick.timestamp_millis());
        }
    }
    late.sort_unstable();
    let pick = |q: f64| late[((late.len() as f64 - 1.0) * q).round() as usize];
    let expected = due as f64 * elapsed;
    println!(
        "ticks fired in the window: {} (expected about {expected:.0}); lateness (created_at − tick) p50 {} ms, p99 {} ms, max {} ms",
        late.len(),
        pick(0.5),
        pick(0.99),
        late.last().unwrap()
    );
    println!(
        "Redis: {:.1} commands/s, {:.4} CPU s/s ({:.2}% of a core)",
        (calls1 - calls0) as f64 / elapsed,
        (cpu1 - cpu0) / elapsed,
        100.0 * (cpu1 - cpu0) / elapsed
    );
    let mut per: Vec<(String, f64)> = per1
        .iter()
        .map(|(k, v)| (k.clone(), (v - per0.get(k).copied().unwrap_or(0)) as f64 / elapsed))
        .filter(|(_, rate)| *rate > 0.0)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("per command (calls/s, including those inside scripts): {per:?}");
    let _ = server.kill();
    let _ = server.wait();
}
