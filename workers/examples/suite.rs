//! Jobplane's side of `bench/run` (never part of the tests), and the receiver both sides deliver to.
//!
//! ```text
//! suite receiver                        POST /hook answers 200 at once; prints its address, then serves
//! suite process --jobs N --receiver URL fills a webhook queue with N jobs, starts the release worker,
//!                                       times first delivery → queue empty
//! suite latency --rate R --seconds S --receiver URL
//!                                       enqueues R jobs/s for S s into a running worker and reports
//!                                       enqueue → start latencies
//! ```
//!
//! Each run prints one JSON line on stdout, which `bench/run` reads. The receiver is a process of
//! its own so Jobplane's worker and BullMQ's (`bench/peers/worker.js`) deliver to the same far
//! side, which costs each of them the same. It keeps, per request, the arrival time and, when the
//! body carries `"t_us":<µs since the epoch>` (the moment the job was enqueued), the difference:
//! the same clock and the same measuring point for both systems.

#![expect(clippy::cast_precision_loss, reason = "rates and means for a report")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use clap::{Parser, Subcommand};
use jobs::dead::DeadLetters;
use jobs::{Keys, Kind, NewJob, Store};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the receiver on 127.0.0.1 (port 0: any free port) and print `http://ADDR`.
    Receiver {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Drain N queued webhook jobs with one worker process.
    Process {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// Record CPU profiles with `perf record` into this folder: `worker.perf.data`, and
        /// `<name>.perf.data` for each process of `--cpu-pids`.
        #[arg(long)]
        perf_dir: Option<PathBuf>,
        /// Print the Redis commands the run cost (`INFO commandstats`, before and after).
        #[arg(long)]
        commandstats: bool,
    },
    /// Enqueue at a steady rate into a running worker; report enqueue → start latencies.
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// The receiver's base URL (`suite receiver` printed it).
    #[arg(long)]
    receiver: String,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, env = "WORKER_BIN", default_value = "target/release/worker")]
    worker_bin: PathBuf,
    /// Jobs run at once by the worker (`WORKER_CONCURRENCY_WEBHOOK`).
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Processes whose CPU time the run reports per job, as `name=pid,...` (Redis, the receiver).
    #[arg(long, env = "BENCH_CPU_PIDS", default_value = "")]
    cpu_pids: String,
    /// Redis namespace of the run (default: `bench-<uuid>`); every key under it is deleted at the end.
    #[arg(long)]
    namespace: Option<String>,
}

impl Common {
    fn namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| format!("bench-{}", uuid::Uuid::now_v7().simple()))
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Seen {
    count: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

impl Seen {
    fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::new()),
        }
    }
}

/// The number after `"t_us":` in a JSON body, without parsing the rest of it.
fn enqueued_at_us(body: &[u8]) -> Option<u64> {
    const TAG: &[u8] = b"\"t_us\":";
    let at = body.windows(TAG.len()).position(|w| w == TAG)? + TAG.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits]).ok()?.parse().ok()
}

async fn hook(State(seen): State<Arc<Seen>>, body: Bytes) -> &'static str {
    let now = now_us();
    seen.count.fetch_add(1, Ordering::Relaxed);
    seen.first_us.fetch_min(now, Ordering::Relaxed);
    seen.last_us.fetch_max(now, Ordering::Relaxed);
    if let Some(t) = enqueued_at_us(&body) {
        seen.latencies_us.lock().expect("not poisoned").push(now.saturating_sub(t));
    }
    ""
}

async fn stats(State(seen): State<Arc<Seen>>) -> Json<Value> {
    let first = seen.first_us.load(Ordering::Relaxed);
    Json(json!({
        "count": seen.count.load(Ordering::Relaxed),
        "first_us": if first == u64::MAX { 0 } else { first },
        "last_us": seen.last_us.load(Ordering::Relaxed),
    }))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "an index into the slice")]
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn latency(State(seen): State<Arc<Seen>>) -> Json<Value> {
    let mut v = seen.latencies_us.lock().expect("not poisoned").clone();
    v.sort_unstable();
    Json(json!({"n": v.len(), "p50_us": percentile(&v, 50.0), "p99_us": percentile(&v, 99.0),
        "max_us": v.last().copied().unwrap_or(0)}))
}

async fn reset(State(seen): State<Arc<Seen>>) -> &'static str {
    seen.count.store(0, Ordering::Relaxed);
    seen.first_us.store(u64::MAX, Ordering::Relaxed);
    seen.last_us.store(0, Ordering::Relaxed);
    seen.latencies_us.lock().expect("not poisoned").clear();
    ""
}

async fn receiver(port: u16) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/stats", get(stats))
        .route("/latency", get(latency))
        .route("/reset", post(reset))
        .with_state(Arc::new(Seen::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Talks to a running receiver.
struct Far {
    http: reqwest::Client,
    base: String,
}

impl Far {
    fn new(base: &str) -> Self {
        Self { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned() }
    }

    async fn reset(&self) -> anyhow::Result<()> {
        self.http.post(format!("{}/reset", self.base)).send().await?.error_for_status()?;
        Ok(())
    }

    async fn get(&self, what: &str) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}/{what}", self.base)).send().await?.error_for_status()?.json().await?)
    }

    async fn count(&self) -> anyhow::Result<u64> {
        Ok(self.get("stats").await?["count"].as_u64().unwrap_or(0))
    }

    /// Waits until the receiver has seen `n` requests (or `limit` passed).
    async fn wait_for(&self, n: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.count().await? < n {
            if Instant::now() > deadline {
                bail!("the receiver saw {} of {n} deliveries within {limit:?}", self.count().await?);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time per process, from /proc
// ---------------------------------------------------------------------------------------------

/// User + system CPU time of a process (all its threads), in µs.
fn cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3 of stat(5), utime 14 and stime 15.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks * 10_000 // USER_HZ is 100 on Linux
}

fn parse_pids(spec: &str) -> Vec<(String, u32)> {
    spec.split(',')
        .filter_map(|p| p.split_once('='))
        .filter_map(|(n, pid)| Some((n.to_owned(), pid.parse().ok()?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Jobplane's side
// ---------------------------------------------------------------------------------------------

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(common: &Common, namespace: &str) -> anyhow::Result<Worker> {
    let child = Command::new(&common.worker_bin)
        .env("REDIS_URL", &common.redis_url)
        .env("REDIS_NAMESPACE", namespace)
        .env("WORKER_KINDS", "webhook")
        .env("WORKER_METRICS_ADDR", "0")
        .env("WORKER_CONCURRENCY_WEBHOOK", common.concurrency.to_string())
        // One receiver: the per-destination limit at the concurrency, available but unused.
        .env("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", common.concurrency.to_string())
        .env("WORKER_BATCH", "100")
        .env("JOB_RETENTION_SECONDS", "60")
        .env("WEBHOOK_SIGNING_SECRET", SECRET)
        .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", common.worker_bin.display()))?;
    Ok(Worker(child))
}

fn new_job(payload: String) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7(),
        kind: Kind::Webhook,
        payload,
        created_at: Utc::now(),
        run_at: None,
        max_attempts: 10,
        producer: "bench".into(),
        idempotency: None,
        traceparent: None,
        priority: jobs::Priority::Normal,
        group: None,
    }
}

async fn open(common: &Common, namespace: &str) -> anyhow::Result<(Store, redis::aio::MultiplexedConnection)> {
    let store = Store::new(
        jobs::redis_conn::connect_url(&common.redis_url, Duration::from_secs(30))?,
        Keys::new(namespace),
        Duration::from_hours(1),
        Duration::from_secs(30),
    );
    let conn = redis::Client::open(common.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    Ok((store, conn))
}

/// The webhook jobs of the namespace not finished yet (retries included).
async fn depth(letters: &DeadLetters) -> anyhow::Result<u64> {
    Ok(letters.depths(Kind::Webhook).await?.unfinished())
}

fn letters(common: &Common, keys: &Keys) -> anyhow::Result<DeadLetters> {
    Ok(DeadLetters::new(jobs::redis_conn::connect_url(&common.redis_url, Duration::from_secs(30))?, keys.clone()))
}

async fn delete_namespace(conn: &mut redis::aio::MultiplexedConnection, namespace: &str) -> anyhow::Result<()> {
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let () = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `INFO commandstats` as command → (calls, µs).
async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    Ok(info
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let field = |k: &str| rest.split(',').find_map(|kv| kv.strip_prefix(k)?.parse::<u64>().ok());
            Some((name.to_owned(), field("calls=")?, field("usec=")?))
        })
        .collect())
}

fn stats_delta(before: &[(String, u64, u64)], after: &[(String, u64, u64)], jobs: usize) -> Value {
    let mut rows: Vec<(String, u64, u64)> = after
        .iter()
        .map(|(name, calls, usec)| {
            let (c0, u0) = before.iter().find(|b| &b.0 == name).map_or((0, 0), |b| (b.1, b.2));
            (name.clone(), calls - c0, usec - u0)
        })
        .filter(|r| r.1 > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    Value::Array(
        rows.into_iter()
            .take(8)
            .map(|(name, calls, usec)| {
                json!({"command": name, "calls": calls, "usec": usec,
                    "usec_per_call": usec as f64 / calls as f64, "usec_per_job": usec as f64 / jobs as f64})
            })
            .collect(),
    )
}

async fn fill(store: &Store, payload: &str, total: usize) -> anyhow::Result<()> {
    let mut written = 0;
    while written < total {
        let jobs: Vec<NewJob> = (0..1000.min(total - written)).map(|_| new_job(payload.to_owned())).collect();
        written += store.enqueue(&jobs).await?.len();
    }
    Ok(())
}

fn start_perf(pid: u32, out: &std::path::Path) -> anyhow::Result<Child> {
    Ok(Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "1999", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn stop_perf(mut perf: Child) -> anyhow::Result<()> {
    Command::new("kill").args(["-INT", &perf.id().to_string()]).status()?;
    perf.wait()?;
    Ok(())
}

async fn process(
    common: &Common,
    total: usize,
    perf_dir: Option<&std::path::Path>,
    with_commandstats: bool,
) -> anyhow::Result<Value> {
    let namespace = common.namespace();
    let keys = Keys::new(&namespace);
    let letters = letters(common, &keys)?;
    let far = Far::new(&common.receiver);
    let (store, mut conn) = open(common, &namespace).await?;
    let payload = json!({"url": format!("{}/hook", far.base), "event": "bench.ping", "data": {"n": 1}}).to_string();
    let result = async {
        fill(&store, &payload, total).await?;
        far.reset().await?;
        let others = parse_pids(&common.cpu_pids);
        let others_before: Vec<u64> = others.iter().map(|(_, pid)| cpu_us(*pid)).collect();
        let stats_before = if with_commandstats { commandstats(&mut conn).await? } else { Vec::new() };
        let spawned = now_us();
        let worker = start_worker(common, &namespace)?;
        let pid = worker.0.id();
        let mut perfs = Vec::new();
        if let Some(dir) = perf_dir {
            perfs.push(start_perf(pid, &dir.join("worker.perf.data"))?);
            for (name, other) in &others {
                perfs.push(start_perf(*other, &dir.join(format!("{name}.perf.data")))?);
            }
        }
        let deadline = Instant::now() + Duration::from_mins(10);
        while depth(&letters).await? > 0 {
            anyhow::ensure!(Instant::now() < deadline, "the queue did not drain within 600 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let emptied = now_us();
        let worker_cpu = cpu_us(pid);
        let others_cpu: Vec<u64> = others.iter().zip(&others_before).map(|((_, pid), b)| cpu_us(*pid) - b).collect();
        let stats_after = if with_commandstats { commandstats(&mut conn).await? } else { Vec::new() };
        for perf in perfs {
            stop_perf(perf)?;
        }
        drop(worker);
        let seen = far.get("stats").await?;
        let first = seen["first_us"].as_u64().unwrap_or(0);
        let delivered = seen["count"].as_u64().unwrap_or(0);
        let secs = emptied.saturating_sub(first) as f64 / 1e6;
        let mut cpu = serde_json::Map::new();
        cpu.insert("worker".into(), json!(worker_cpu as f64 / total as f64));
        for ((name, _), used) in others.iter().zip(others_cpu) {
            cpu.insert(name.clone(), json!(used as f64 / total as f64));
        }
        let mut out = json!({
            "system": "jobplane", "jobs": total, "concurrency": common.concurrency, "processes": 1,
            "secs": secs, "jobs_per_s": total as f64 / secs,
            "start_to_first_ms": first.saturating_sub(spawned) as f64 / 1e3,
            "delivered": delivered, "cpu_us_per_job": cpu,
        });
        if with_commandstats {
            out["commandstats"] = stats_delta(&stats_before, &stats_after, total);
        }
        anyhow::Ok(out)
    }
    .await;
    delete_namespace(&mut conn, &namespace).await?;
    result
}

async fn latency_run(common: &Common, rate: u64, seconds: u64) -> anyhow::Result<Value> {
    let namespace = common.namespace();
    let keys = Keys::new(&namespace);
    let letters = letters(common, &keys)?;
    let far = Far::new(&common.receiver);
    let (store, mut conn) = open(common, &namespace).await?;
    let hook = format!("{}/hook", far.base);
    let result = async {
        let worker = start_worker(common, &namespace)?;
        // Warm-up, not counted: the worker is up, its connections are open.
        far.reset().await?;
        fill(&store, &json!({"url": hook, "event": "bench.ping", "data": {"n": 0}}).to_string(), 200).await?;
        far.wait_for(200, Duration::from_secs(30)).await?;
        while depth(&letters).await? > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        far.reset().await?;
        let total = rate * seconds;
        let gap = Duration::from_secs_f64(1.0 / rate as f64);
        let store = Arc::new(store);
        let started = tokio::time::Instant::now();
        let mut writes = Vec::with_capacity(usize::try_from(total)?);
        for i in 0..total {
            tokio::time::sleep_until(started + gap * u32::try_from(i)?).await;
            let store = store.clone();
            let job =
                new_job(json!({"url": hook, "event": "bench.ping", "data": {"n": i, "t_us": now_us()}}).to_string());
            writes.push(tokio::spawn(async move {
                let id = job.id.to_string();
                store.enqueue(&[job]).await.map(|_| id)
            }));
        }
        let sent_secs = started.elapsed().as_secs_f64();
        let mut ids = Vec::with_capacity(writes.len());
        for w in writes {
            ids.push(w.await??);
        }
        far.wait_for(total, Duration::from_mins(1)).await?;
        drop(worker);
        // Enqueue → lease, on Redis's clock (ms): the job's created_at and the started_at fetch.lua
        // wrote when it leased the job, immediately before the handler runs.
        let q = keys.queue(Kind::Webhook);
        let mut leased_ms = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.get(q.job(id));
            }
            let rows: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
            leased_ms.extend(rows.into_iter().filter_map(|raw| {
                let record = jobs::record::JobRecord::decode(&raw?).ok()?;
                u64::try_from(record.started_at? - record.created_at).ok()
            }));
        }
        leased_ms.sort_unstable();
        let at_receiver = far.get("latency").await?;
        anyhow::Ok(json!({
            "system": "jobplane", "rate": rate, "jobs": total, "sent_per_s": total as f64 / sent_secs,
            "concurrency": common.concurrency,
            "start_ms": {"n": leased_ms.len(), "p50": percentile(&leased_ms, 50.0), "p99": percentile(&leased_ms, 99.0),
                "max": leased_ms.last().copied().unwrap_or(0), "clock": "redis TIME, ms: job started_at - created_at"},
            "receiver_us": at_receiver,
        }))
    }
    .await;
    delete_namespace(&mut conn, &namespace).await?;
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = match cli.command {
        Cmd::Receiver { port } => return receiver(port).await,
        Cmd::Process { common, jobs, perf_dir, commandstats } => {
            process(&common, jobs, perf_dir.as_deref(), commandstats).await?
        }
        Cmd::Latency { common, rate, seconds } => latency_run(&common, rate, seconds).await?,
    };
    println!("{out}");
    Ok(())
}
