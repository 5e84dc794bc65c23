//! Jobplane's side of `bench/run`'s `bullmq` and `cost` sections (never part of the tests).
//!
//! ```text
//! scenarios queue-add          [--via library|http]   1,000 single adds after 1,000 warm-up adds
//! scenarios queue-add-bulk     [--via library|http]   10,000 jobs in bulks of 50 after 1,000 warm-up
//! scenarios worker-generic                            1,000 no-op jobs after 1,000 warm-up, concurrency 1
//! scenarios worker-concurrent                         10,000 no-op jobs after 1,000 warm-up, concurrency 100
//! scenarios cost --jobs N                             Redis CPU, script time and bytes per small email job
//! ```
//!
//! The four scenarios are those of BullMQ's own benchmark suite (`taskforcesh/bullmq-bench`,
//! `src/bullmq-suite.ts`), with its sizes and payloads, written again for Jobplane; their BullMQ
//! twin is `bench/peers/scenarios.js`. An add is `Store::enqueue` (the call `producer-api` makes)
//! or, with `--via http`, `POST /v1/jobs` (single) and `POST /v1/jobs/batch` (bulk) to a running
//! `producer-api`. A worker scenario fills the queue first, then leases and acknowledges the jobs
//! as the worker does (`Queue::fetch` of up to the free slots, at most `WORKER_BATCH`; outcomes
//! written by one batcher task in `Queue::finish` calls of up to 256, each job's slot freed once
//! its outcome is in Redis), with a handler that does nothing.
//!
//! Each run prints one JSON line. Throughput is measured jobs / measured seconds, warm-up left
//! out (bullmq-bench prints warm-up + measured jobs over the measured time instead: 2× our
//! figure for `queue-add` and `worker-generic`, 1.1× for the others). CPU time is that of the
//! whole process (all threads), read from `/proc/<pid>/task/*/schedstat` (the scheduler's run
//! time in ns, the same time as utime + stime, not rounded to 10 ms ticks): Redis's, this
//! process's (the client), and with `--server-pid` that of `producer-api`.
//!
//! Every call into `jobs` that a change of its API may reshape sits in [`seam`].

#![expect(clippy::cast_precision_loss, reason = "rates and sizes for a report")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use jobs::Kind;
use jobs::queue::Queue;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[arg(long, global = true, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Redis namespace of the run (default: `bench-<uuid>`); every key under it is deleted at the end.
    #[arg(long, global = true)]
    namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// bullmq-bench's `queue-add`: single adds of a nested object 10 wide and 10 deep.
    QueueAdd(AddArgs),
    /// bullmq-bench's `queue-add-bulk`: bulks of 50 jobs with a tiny payload.
    QueueAddBulk(AddArgs),
    /// bullmq-bench's `worker-generic`: no-op jobs, concurrency 1.
    WorkerGeneric(WorkArgs),
    /// bullmq-bench's `worker-concurrent`: no-op jobs, concurrency 100.
    WorkerConcurrent(WorkArgs),
    /// Redis CPU and script time per email job (enqueue, then fetch + finish), and Redis bytes
    /// per queued and per finished job.
    Cost(CostArgs),
}

#[derive(clap::Args, Debug)]
struct AddArgs {
    #[arg(long, value_enum, default_value_t = Via::Library)]
    via: Via,
    /// `producer-api`'s base URL (with `--via http`); the key is `BENCH_API_KEY`.
    #[arg(long)]
    api: Option<String>,
    /// `producer-api`'s pid, whose CPU time is reported per job.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Via {
    Library,
    Http,
}

#[derive(clap::Args, Debug)]
struct WorkArgs {
    /// Most jobs leased per fetch (the worker's `WORKER_BATCH`, default 100).
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

#[derive(clap::Args, Debug)]
struct CostArgs {
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,
    /// Enqueue calls in flight (one job each), as `producer-api` under concurrent requests.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Jobs per call in the bulk enqueue phase (`POST /v1/jobs/batch`).
    #[arg(long, default_value_t = 100)]
    bulk: usize,
    /// Jobs run at once while draining (the worker's default `WORKER_CONCURRENCY_EMAIL`).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

/// Sizes of bullmq-bench's suite (`src/bullmq-suite.ts`).
struct Scenario {
    name: &'static str,
    warmup: usize,
    measured: usize,
    /// `generateSampleJobData`: an object this wide, each member nested this deep.
    data: (usize, usize),
}

const QUEUE_ADD: Scenario = Scenario { name: "queue-add", warmup: 1000, measured: 1000, data: (10, 10) };
const QUEUE_ADD_BULK: Scenario = Scenario { name: "queue-add-bulk", warmup: 1000, measured: 10_000, data: (1, 1) };
const WORKER_GENERIC: Scenario = Scenario { name: "worker-generic", warmup: 1000, measured: 1000, data: (1, 1) };
const WORKER_CONCURRENT: Scenario =
    Scenario { name: "worker-concurrent", warmup: 1000, measured: 10_000, data: (1, 1) };
/// bullmq-bench's bulk size in `queue-add-bulk`, and the one its worker scenarios fill the queue with.
const ADD_BULK: usize = 50;
const FILL_BULK: usize = 100;

// ---------------------------------------------------------------------------------------------
// The seam: every call into `jobs` that the benchmark makes
// ---------------------------------------------------------------------------------------------

mod seam {
    use std::time::Duration;

    use chrono::Utc;
    use jobs::queue::{FinishReport, Finished, Leased, Outcome, Queue, Retention};
    use jobs::{EnqueueOutcome, JobStatus, Keys, Kind, NewJob, Store, ValidJob};

    /// The worker's defaults (`WORKER_LEASE_SECONDS`, `promote_limit`, `JOB_RETENTION_SECONDS`...).
    const LEASE: Duration = Duration::from_secs(30);
    const PROMOTE_LIMIT: usize = 1000;

    pub fn conn(url: &str) -> anyhow::Result<jobs::redis_conn::Conn> {
        Ok(jobs::redis_conn::connect_url(url, Duration::from_secs(30))?)
    }

    /// As `producer-api` opens it (`IDEMPOTENCY_TTL_SECONDS`, a 30 s call timeout).
    pub fn store(url: &str, namespace: &str) -> anyhow::Result<Store> {
        Ok(Store::new(conn(url)?, Keys::new(namespace), Duration::from_hours(24), Duration::from_secs(30)))
    }

    pub fn queue(url: &str, namespace: &str, kind: Kind) -> anyhow::Result<Queue> {
        Ok(Queue::new(conn(url)?, &Keys::new(namespace), kind, format!("bench-{}", std::process::id())))
    }

    /// A job as `producer-api` hands it to the store, for a payload already in its normal form.
    pub fn new_job(kind: Kind, payload: String) -> NewJob {
        NewJob {
            id: uuid::Uuid::now_v7(),
            kind,
            payload,
            created_at: Utc::now(),
            run_at: None,
            max_attempts: kind.default_max_attempts(),
            producer: "bench".into(),
            idempotency: None,
            traceparent: None,
            priority: jobs::Priority::Normal,
            group: None,
        }
    }

    /// The normal form `producer-api` stores for this request's payload.
    pub fn normal_payload(request: serde_json::Value) -> anyhow::Result<String> {
        let now = Utc::now();
        let job = ValidJob::parse(request, "", now).map_err(|e| anyhow::anyhow!("not a valid job: {e:?}"))?;
        Ok(job.into_new("bench", now).payload)
    }

    /// Enqueues `jobs` in one call; fails unless every one was created.
    pub async fn enqueue(store: &Store, jobs: &[NewJob]) -> anyhow::Result<()> {
        let outcomes = store.enqueue(jobs).await?;
        let created = outcomes.iter().filter(|o| matches!(o, EnqueueOutcome::Created { .. })).count();
        anyhow::ensure!(created == jobs.len(), "{created} of {} jobs created: {outcomes:?}", jobs.len());
        Ok(())
    }

    pub async fn fetch(queue: &Queue, batch: usize) -> anyhow::Result<Vec<Leased>> {
        Ok(queue.fetch(LEASE, batch, PROMOTE_LIMIT).await?.into_iter().map(|(job, _payload)| job).collect())
    }

    /// What a no-op handler's attempt records: success, and a result (bullmq-bench's processor
    /// returns a small object, which BullMQ stores as the job's return value).
    pub fn succeeded(job: Leased, started_at: chrono::DateTime<Utc>, result: &str) -> Finished {
        Finished {
            job,
            outcome: Outcome::Succeeded,
            error: None,
            provider_id: Some(result.to_owned()),
            started_at,
            finished_at: Utc::now(),
        }
    }

    /// Records outcomes as the worker's batcher does, with the worker's default retention.
    pub async fn finish(queue: &Queue, done: &[Finished]) -> anyhow::Result<FinishReport> {
        Ok(queue.finish(done, Utc::now(), &Retention::default()).await?)
    }

    pub fn id(job: &Finished) -> String {
        job.job.id.clone()
    }

    pub async fn succeeded_status(store: &Store, id: &str) -> anyhow::Result<bool> {
        Ok(store.job(id).await?.is_some_and(|info| info.status == JobStatus::Succeeded))
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring: CPU time from /proc, Redis's own counters
// ---------------------------------------------------------------------------------------------

/// Run time of all threads of a process, in µs: `/proc/<pid>/task/*/schedstat` (ns), or where
/// the kernel keeps no schedstat, utime + stime of `/proc/<pid>/stat` (10 ms ticks).
fn cpu_us(pid: u32) -> f64 {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let mut ns = 0_u64;
    let mut read_any = false;
    for thread in threads {
        let Ok(line) = std::fs::read_to_string(thread.path().join("schedstat")) else { continue };
        if let Some(v) = line.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            ns += v;
            read_any = true;
        }
    }
    if read_any {
        return ns as f64 / 1e3;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 * 1e4
}

/// The processes whose CPU time a run reports.
#[derive(Debug, Clone)]
struct Meter {
    pids: Vec<(&'static str, u32)>,
}

#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    cpu: Vec<f64>,
}

impl Meter {
    async fn new(redis: &mut redis::aio::MultiplexedConnection, server: Option<u32>) -> anyhow::Result<Self> {
        let mut pids = vec![("client", std::process::id()), ("redis", redis_pid(redis).await?)];
        pids.extend(server.map(|pid| ("server", pid)));
        Ok(Self { pids })
    }

    fn read(&self) -> Reading {
        Reading { at: Instant::now(), cpu: self.pids.iter().map(|(_, pid)| cpu_us(*pid)).collect() }
    }

    /// jobs/s and CPU µs per job of each process between two readings.
    fn report(&self, from: &Reading, to: &Reading, jobs: usize) -> Value {
        let secs = (to.at - from.at).as_secs_f64();
        let cpu: serde_json::Map<String, Value> = self
            .pids
            .iter()
            .zip(from.cpu.iter().zip(&to.cpu))
            .map(|((name, _), (a, b))| ((*name).to_owned(), json!((b - a) / jobs as f64)))
            .collect();
        json!({"jobs": jobs, "secs": secs, "jobs_per_s": jobs as f64 / secs, "cpu_us_per_job": cpu})
    }
}

async fn info(redis: &mut redis::aio::MultiplexedConnection, section: &str) -> anyhow::Result<String> {
    Ok(redis::cmd("INFO").arg(section).query_async(redis).await?)
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(|v| v.trim().to_owned())
}

async fn redis_pid(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u32> {
    let server = info(redis, "server").await?;
    let pid: u32 = info_field(&server, "process_id").context("no process_id in INFO server")?.parse()?;
    ensure!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "Redis (pid {pid}) is not on this machine");
    Ok(pid)
}

async fn used_memory(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let memory = info(redis, "memory").await?;
    Ok(info_field(&memory, "used_memory").context("no used_memory in INFO memory")?.parse()?)
}

/// Waits until Redis has freed what `UNLINK` handed to its background thread, so
/// `used_memory` measures what is held.
async fn settle(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let memory = info(redis, "memory").await?;
        if info_field(&memory, "lazyfree_pending_objects").is_none_or(|v| v == "0") {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "Redis still freeing memory after 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Server time (µs) and calls of script commands so far (`INFO commandstats`: EVAL, EVALSHA,
/// FCALL and their read-only forms; the commands a script runs are inside its time).
async fn script_usec(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<(u64, u64)> {
    let stats = info(redis, "commandstats").await?;
    let mut total = (0, 0);
    for line in stats.lines() {
        let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        if !matches!(name, "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro") {
            continue;
        }
        let field = |k: &str| rest.split(',').find_map(|kv| kv.strip_prefix(k)?.parse::<u64>().ok()).unwrap_or(0);
        total.0 += field("usec=");
        total.1 += field("calls=");
    }
    Ok(total)
}

async fn delete_namespace(redis: &mut redis::aio::MultiplexedConnection, namespace: &str) -> anyhow::Result<()> {
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        if !keys.is_empty() {
            let () = redis::cmd("UNLINK").arg(&keys).query_async(redis).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A key's name with the namespace left out and each id (a run of 32 or more hex digits and
/// hyphens) written `*`: the keys of every job share one shape.
fn shape(key: &str, namespace: &str) -> String {
    let key = key.strip_prefix(namespace).unwrap_or(key);
    let (mut out, mut run) = (String::new(), String::new());
    for c in key.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_hexdigit() || c == '-' {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 32 { "*" } else { &run });
        run.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// Redis memory held by the namespace's keys (`MEMORY USAGE`), by key shape, per job: where
/// a job's bytes are.
async fn bytes_by_shape(
    redis: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
    jobs: usize,
) -> anyhow::Result<Value> {
    let mut shapes: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = if keys.is_empty() { Vec::new() } else { pipe.query_async(redis).await? };
        for (key, size) in keys.iter().zip(sizes) {
            let entry = shapes.entry(shape(key, namespace)).or_default();
            entry.0 += 1;
            entry.1 += size.unwrap_or(0);
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut rows: Vec<_> = shapes.into_iter().collect();
    rows.sort_by_key(|(_, (_, bytes))| std::cmp::Reverse(*bytes));
    Ok(Value::Array(
        rows.into_iter()
            .take(8)
            .map(|(shape, (keys, bytes))| {
                json!({"key": shape, "keys": keys, "bytes": bytes, "bytes_per_job": bytes as f64 / jobs as f64})
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// bullmq-bench's `generateSampleDataObject(width, depth)`: `width` members named by fresh
/// UUIDs, each an empty object nested `depth - 1` levels deep under more fresh UUIDs.
fn sample_data(width: usize, depth: usize) -> Value {
    let name = || uuid::Uuid::now_v7().to_string();
    let mut data = serde_json::Map::new();
    for _ in 0..width {
        let mut member = json!({});
        for _ in 1..depth {
            member = json!({ name(): member });
        }
        data.insert(name(), member);
    }
    Value::Object(data)
}

/// The job request carrying bullmq-bench's job data: a webhook, its `data` the sample object.
fn webhook_request(data: &Value) -> Value {
    json!({"kind": "webhook", "payload": {"url": "https://example.org/hook", "event": "bench.add", "data": data}})
}

/// A realistic small email, as a client would send it.
fn email_request() -> Value {
    json!({"kind": "email", "payload": {
        "to": "Ada Lovelace <ada@example.org>",
        "subject": "Your receipt for order 10492",
        "text": "Hello Ada,\n\nthank you for your order 10492 of 27 November: 2 items, 48.90 EUR, paid by card \
                 ending 4242. It ships within two working days; we will send the tracking link then.\n\n\
                 The Example Shop team",
    }})
}

// ---------------------------------------------------------------------------------------------
// Adds: queue-add, queue-add-bulk
// ---------------------------------------------------------------------------------------------

/// One way of adding jobs: the library or the HTTP API.
enum Adder {
    Library(jobs::Store),
    Http { client: reqwest::Client, base: String, key: String },
}

impl Adder {
    /// Adds `n` jobs (one add, or one bulk when `n > 1`) of `request`, serialized afresh as
    /// BullMQ's `add` serializes its data on each call.
    async fn add(&self, request: &Value, n: usize) -> anyhow::Result<()> {
        match self {
            Adder::Library(store) => {
                let kind: Kind = request["kind"].as_str().unwrap_or_default().parse()?;
                let jobs: Vec<_> = (0..n).map(|_| seam::new_job(kind, request["payload"].to_string())).collect();
                seam::enqueue(store, &jobs).await
            }
            Adder::Http { client, base, key } => {
                let (path, body) = if n == 1 {
                    ("/v1/jobs", request.clone())
                } else {
                    ("/v1/jobs/batch", json!({"jobs": vec![request; n]}))
                };
                let answer = client.post(format!("{base}{path}")).bearer_auth(key).json(&body).send().await?;
                let status = answer.status();
                ensure!(
                    status.as_u16() == 202,
                    "{path} answered {status}: {}",
                    answer.text().await.unwrap_or_default()
                );
                answer.bytes().await?;
                Ok(())
            }
        }
    }

    /// Adds `total` jobs, `step` a call, each call awaited before the next.
    async fn add_all(&self, request: &Value, total: usize, step: usize) -> anyhow::Result<()> {
        let mut done = 0;
        while done < total {
            self.add(request, step.min(total - done)).await?;
            done += step;
        }
        Ok(())
    }
}

async fn adds(cli: &Cli, scenario: &Scenario, bulk: usize, args: &AddArgs, namespace: &str) -> anyhow::Result<Value> {
    let mut redis = redis::Client::open(cli.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let meter = Meter::new(&mut redis, args.server_pid).await?;
    let adder = match args.via {
        Via::Library => Adder::Library(seam::store(&cli.redis_url, namespace)?),
        Via::Http => Adder::Http {
            client: reqwest::Client::new(),
            base: args.api.clone().context("--via http needs --api URL")?.trim_end_matches('/').to_owned(),
            key: std::env::var("BENCH_API_KEY").context("BENCH_API_KEY: producer-api's key")?,
        },
    };
    // Its normal form, so the library stores what the API would.
    let request = webhook_request(&sample_data(scenario.data.0, scenario.data.1));
    let request =
        json!({"kind": "webhook", "payload": serde_json::from_str::<Value>(&seam::normal_payload(request)?)?});
    let step = bulk.max(1);
    adder.add_all(&request, scenario.warmup, step).await?;
    let from = meter.read();
    adder.add_all(&request, scenario.measured, step).await?;
    let to = meter.read();
    let mut out = meter.report(&from, &to, scenario.measured);
    out["scenario"] = json!(scenario.name);
    out["system"] = json!(match args.via {
        Via::Library => "jobplane-library",
        Via::Http => "jobplane-http",
    });
    out["bulk"] = json!(bulk);
    out["payload_bytes"] = json!(request["payload"].to_string().len());
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The worker's loop: fetch into free slots, run, acknowledge in batches
// ---------------------------------------------------------------------------------------------

/// Most outcomes one `finish` call writes (the worker's `ack::MAX_BATCH`).
const MAX_ACK_BATCH: usize = 256;

type Pending = (jobs::queue::Finished, oneshot::Sender<()>);

/// The acknowledgement batcher: outcomes queue up while a `finish` call runs, and the next call
/// writes all of them; each job waits until its outcome is written.
async fn write_batches(queue: Queue, mut rx: mpsc::Receiver<Pending>) -> anyhow::Result<(u64, u64, Vec<String>)> {
    let (mut recorded, mut stale, mut ids) = (0, 0, Vec::new());
    let mut batch = Vec::with_capacity(MAX_ACK_BATCH);
    while rx.recv_many(&mut batch, MAX_ACK_BATCH).await > 0 {
        let (done, waiters): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let report = seam::finish(&queue, &done).await?;
        recorded += report.recorded;
        stale += report.stale;
        // The first job acknowledged and the last, whose status the run then checks.
        if ids.len() < 2 {
            ids.push(seam::id(&done[0]));
        } else {
            ids[1] = seam::id(&done[done.len() - 1]);
        }
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
    Ok((recorded, stale, ids))
}

/// Counts the handlers started and reads the meter when the count reaches a mark.
struct Marks {
    started: AtomicUsize,
    at: Vec<usize>,
    meter: Option<Meter>,
    readings: Mutex<Vec<Reading>>,
}

impl Marks {
    fn start(&self) {
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(meter) = &self.meter
            && self.at.contains(&n)
        {
            let reading = meter.read();
            self.readings.lock().expect("not poisoned").push(reading);
        }
    }
}

/// Runs `total` queued jobs with a no-op handler, `concurrency` at once; fails unless every
/// outcome was recorded. Returns the ids of the first and the last job acknowledged.
async fn work(
    queue: &Queue,
    total: usize,
    concurrency: usize,
    batch: usize,
    marks: Arc<Marks>,
) -> anyhow::Result<Vec<String>> {
    let (tx, rx) = mpsc::channel::<Pending>(4 * MAX_ACK_BATCH);
    let writer = tokio::spawn(write_batches(queue.clone(), rx));
    let slots = Arc::new(Semaphore::new(concurrency));
    let result = Arc::new(uuid::Uuid::now_v7().to_string());
    let deadline = Instant::now() + Duration::from_mins(5);
    let mut leased = 0;
    while leased < total {
        let mut permits = slots.clone().acquire_owned().await?;
        let more = slots.available_permits().min(batch - 1);
        if more > 0
            && let Ok(extra) = slots.clone().try_acquire_many_owned(u32::try_from(more)?)
        {
            permits.merge(extra);
        }
        let jobs = seam::fetch(queue, permits.num_permits()).await?;
        if jobs.is_empty() {
            ensure!(!writer.is_finished(), "the acknowledgement batcher stopped");
            ensure!(Instant::now() < deadline, "{leased} of {total} jobs leased within 5 minutes");
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        leased += jobs.len();
        for job in jobs {
            let permit = permits.split(1).context("one slot per job leased")?;
            let (tx, marks, result) = (tx.clone(), marks.clone(), result.clone());
            tokio::spawn(async move {
                let started_at = Utc::now();
                marks.start();
                let (done_tx, done_rx) = oneshot::channel();
                if tx.send((seam::succeeded(job, started_at, &result), done_tx)).await.is_ok() {
                    let _ = done_rx.await;
                }
                drop(permit);
            });
        }
    }
    let _all = slots.acquire_many(u32::try_from(concurrency)?).await?;
    drop(tx);
    let (recorded, stale, ids) = writer.await??;
    ensure!(recorded == total as u64 && stale == 0, "{recorded} outcomes recorded, {stale} stale, of {total} jobs");
    Ok(ids)
}

async fn fill(store: &jobs::Store, kind: Kind, payload: &str, total: usize, bulk: usize) -> anyhow::Result<()> {
    let mut written = 0;
    while written < total {
        let jobs: Vec<_> = (0..bulk.min(total - written)).map(|_| seam::new_job(kind, payload.to_owned())).collect();
        seam::enqueue(store, &jobs).await?;
        written += jobs.len();
    }
    Ok(())
}

async fn workers(
    cli: &Cli,
    scenario: &Scenario,
    concurrency: usize,
    args: &WorkArgs,
    namespace: &str,
) -> anyhow::Result<Value> {
    let mut redis = redis::Client::open(cli.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let meter = Meter::new(&mut redis, None).await?;
    let store = seam::store(&cli.redis_url, namespace)?;
    let queue = seam::queue(&cli.redis_url, namespace, Kind::Webhook)?;
    let request = webhook_request(&sample_data(scenario.data.0, scenario.data.1));
    let payload = seam::normal_payload(request)?;
    let total = scenario.warmup + scenario.measured;
    fill(&store, Kind::Webhook, &payload, total, FILL_BULK).await?;
    let marks = Arc::new(Marks {
        started: AtomicUsize::new(0),
        at: vec![scenario.warmup, total],
        meter: Some(meter.clone()),
        readings: Mutex::new(Vec::new()),
    });
    let ids = work(&queue, total, concurrency, args.batch, marks.clone()).await?;
    for id in &ids {
        ensure!(seam::succeeded_status(&store, id).await?, "job {id} is not succeeded");
    }
    let readings = marks.readings.lock().expect("not poisoned").clone();
    let [from, to] = readings.as_slice() else { bail!("{} meter readings, not 2", readings.len()) };
    let mut out = meter.report(from, to, scenario.measured);
    out["scenario"] = json!(scenario.name);
    out["system"] = json!("jobplane-library");
    out["concurrency"] = json!(concurrency);
    out["batch"] = json!(args.batch);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Cost per job
// ---------------------------------------------------------------------------------------------

/// Redis's CPU, script time and memory at one moment.
struct Mark {
    reading: Reading,
    scripts: (u64, u64),
    memory: i64,
}

async fn mark(redis: &mut redis::aio::MultiplexedConnection, meter: &Meter) -> anyhow::Result<Mark> {
    settle(redis).await?;
    let memory = used_memory(redis).await?;
    let scripts = script_usec(redis).await?;
    Ok(Mark { reading: meter.read(), scripts, memory })
}

fn phase(meter: &Meter, from: &Mark, to: &Mark, jobs: usize) -> Value {
    let mut out = meter.report(&from.reading, &to.reading, jobs);
    out["script_us_per_job"] = json!((to.scripts.0 - from.scripts.0) as f64 / jobs as f64);
    out["script_calls"] = json!(to.scripts.1 - from.scripts.1);
    out
}

async fn cost(cli: &Cli, args: &CostArgs, namespace: &str) -> anyhow::Result<Value> {
    let mut redis = redis::Client::open(cli.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let meter = Meter::new(&mut redis, None).await?;
    let store = seam::store(&cli.redis_url, namespace)?;
    let queue = seam::queue(&cli.redis_url, namespace, Kind::Email)?;
    let payload = seam::normal_payload(email_request())?;
    let n = args.jobs;

    // One job a call, many calls in flight: the path of `POST /v1/jobs`.
    let empty = mark(&mut redis, &meter).await?;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|_| {
            let job = seam::new_job(Kind::Email, payload.clone());
            let store = &store;
            async move { seam::enqueue(store, &[job]).await }
        })
        .buffer_unordered(args.in_flight)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    let queued_keys = bytes_by_shape(&mut redis, namespace, n).await?;
    let queued = mark(&mut redis, &meter).await?;
    let marks =
        Arc::new(Marks { started: AtomicUsize::new(0), at: Vec::new(), meter: None, readings: Mutex::new(Vec::new()) });
    let ids = work(&queue, n, args.concurrency, args.batch, marks).await?;
    let finished = mark(&mut redis, &meter).await?;
    let finished_keys = bytes_by_shape(&mut redis, namespace, n).await?;
    for id in &ids {
        ensure!(seam::succeeded_status(&store, id).await?, "job {id} is not succeeded");
    }
    let mut enqueue = phase(&meter, &empty, &queued, n);
    enqueue["in_flight"] = json!(args.in_flight);
    let mut drain = phase(&meter, &queued, &finished, n);
    drain["concurrency"] = json!(args.concurrency);
    drain["batch"] = json!(args.batch);

    // The same jobs enqueued in bulks: the path of `POST /v1/jobs/batch`.
    delete_namespace(&mut redis, namespace).await?;
    let before_bulk = mark(&mut redis, &meter).await?;
    fill(&store, Kind::Email, &payload, n, args.bulk).await?;
    let bulked = mark(&mut redis, &meter).await?;
    let mut bulk = phase(&meter, &before_bulk, &bulked, n);
    bulk["bulk"] = json!(args.bulk);

    let per_job = |v: &Value, key: &str| v[key].as_f64().or_else(|| v["cpu_us_per_job"][key].as_f64()).unwrap_or(0.0);
    Ok(json!({
        "jobs": n, "kind": "email", "payload_bytes": payload.len(),
        "enqueue": enqueue, "drain": drain, "enqueue_bulk": bulk,
        "redis_cpu_us_per_job": per_job(&enqueue, "redis") + per_job(&drain, "redis"),
        "script_us_per_job": per_job(&enqueue, "script_us_per_job") + per_job(&drain, "script_us_per_job"),
        "redis_cpu_us_per_job_bulk": per_job(&bulk, "redis") + per_job(&drain, "redis"),
        "script_us_per_job_bulk": per_job(&bulk, "script_us_per_job") + per_job(&drain, "script_us_per_job"),
        "bytes_per_queued_job": (queued.memory - empty.memory) as f64 / n as f64,
        "bytes_per_finished_job": (finished.memory - empty.memory) as f64 / n as f64,
        "queued_keys": queued_keys, "finished_keys": finished_keys,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let namespace = cli.namespace.clone().unwrap_or_else(|| format!("bench-{}", uuid::Uuid::now_v7().simple()));
    let result = match &cli.command {
        Cmd::QueueAdd(args) => adds(&cli, &QUEUE_ADD, 0, args, &namespace).await,
        Cmd::QueueAddBulk(args) => adds(&cli, &QUEUE_ADD_BULK, ADD_BULK, args, &namespace).await,
        Cmd::WorkerGeneric(args) => workers(&cli, &WORKER_GENERIC, 1, args, &namespace).await,
        Cmd::WorkerConcurrent(args) => workers(&cli, &WORKER_CONCURRENT, 100, args, &namespace).await,
        Cmd::Cost(args) => cost(&cli, args, &namespace).await,
    };
    let mut redis = redis::Client::open(cli.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    delete_namespace(&mut redis, &namespace).await?;
    println!("{}", result?);
    Ok(())
}
