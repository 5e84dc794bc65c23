//! Chaos: workers killed or stopped mid-run, Redis killed and restarted, a 100,000-job burst.
//! Each test checks that no job is lost, bounds the repeats at-least-once allows, and prints
//! what it measured (`cargo nextest run -p jobplane-tests chaos --no-capture`).
//!
//! These are heavy: `.config/nextest.toml` runs them one at a time, with no other test beside them.
//! `sigterm_during_a_fetch_strands_no_job` guards a fixed bug: a fetch in flight at SIGTERM was dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;

use crate::receiver::{Delivery, Receiver, Reply};
use crate::support::{OwnRedis, TestApp, WorkerProcess, record_fields, wait_until_ok};

fn slow(delay: Duration) -> Reply {
    Reply { delay, ..Reply::OK }
}

/// `field` (a name of [`record_fields`]) of the record of each job of `ids`, in order; `None`
/// where the job or field is missing.
async fn job_fields(app: &TestApp, ids: &[String], field: &str) -> Vec<Option<String>> {
    let mut conn = app.redis().await;
    let mut values = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("GET").arg(app.key(&format!("{{webhook}}:job:{id}")));
        }
        let got: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await.unwrap();
        values.extend(got.into_iter().map(|raw| {
            raw.and_then(|raw| record_fields(&jobs::record::JobRecord::decode(&raw).unwrap()).remove(field))
        }));
    }
    values
}

/// How many jobs of `ids` have each status.
async fn status_counts(app: &TestApp, ids: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for status in job_fields(app, ids, "status").await {
        *counts.entry(status.unwrap_or_else(|| "<missing>".into())).or_default() += 1;
    }
    counts
}

/// Polls until the webhook queue has nothing ready, scheduled or running, for at most `limit`;
/// returns the depths (ready, scheduled, active, dead) last seen.
async fn wait_drained(app: &TestApp, limit: Duration) -> (usize, usize, usize, usize) {
    let deadline = Instant::now() + limit;
    loop {
        let depths = app.depths("webhook").await;
        if (depths.0, depths.1, depths.2) == (0, 0, 0) || Instant::now() > deadline {
            return depths;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The latest `finished_at` (ms since the epoch) of `ids`.
async fn last_finished_ms(app: &TestApp, ids: &[String]) -> i64 {
    job_fields(app, ids, "finished_at").await.into_iter().map(|f| f.unwrap().parse::<i64>().unwrap()).max().unwrap()
}

/// Deliveries, distinct webhook-ids among them, and whether those are exactly `ids`.
fn tally(deliveries: &[Delivery], ids: &[String]) -> (usize, usize, bool) {
    let seen: BTreeSet<String> = deliveries.iter().map(Delivery::webhook_id).collect();
    let expected: BTreeSet<String> = ids.iter().cloned().collect();
    (deliveries.len(), seen.len(), seen == expected)
}

/// The exit code of `worker` within `limit` (`-1`: killed by a signal), and how long it took.
/// Blocks this runtime thread only: the tests run on a multi-thread runtime, so the receiver
/// keeps answering meanwhile.
fn exit_of(worker: &mut WorkerProcess, limit: Duration) -> (Option<i32>, Duration) {
    let started = Instant::now();
    let code = tokio::task::block_in_place(|| worker.wait(limit));
    (code, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_two_workers_loses_no_job() {
    const JOBS: usize = 1000;
    const CONCURRENCY: usize = 20;
    let app = TestApp::spawn().await;
    // 50 ms a delivery: 40 at once make ~800 a second, so the kill lands mid-run.
    let receiver = Receiver::start(&[], slow(Duration::from_millis(50))).await;
    let concurrency = CONCURRENCY.to_string();
    // Every slot of the one receiver available to both workers: this test is about the leases
    // the killed worker held (with 8 slots shared, it may hold none at the kill). A worker killed
    // while holding a destination's slots: `jobs/tests/destinations.rs`.
    let settings = [
        ("WORKER_LEASE_SECONDS", "3"),
        ("WORKER_CONCURRENCY_WEBHOOK", concurrency.as_str()),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "40"),
    ];
    let mut victim = WorkerProcess::start(&app.redis_url, &app.namespace, &settings);
    let _survivor = WorkerProcess::start(&app.redis_url, &app.namespace, &settings);
    let ids = app.enqueue_webhooks(&receiver.url(), JOBS, 5).await;
    let run_started = Instant::now();

    let before_kill = receiver.wait_for(JOBS * 3 / 10, Duration::from_secs(30)).await.len();
    assert!(before_kill >= JOBS * 3 / 10, "only {before_kill} deliveries within 30 s");
    victim.signal("-KILL");
    let killed_at = Utc::now().timestamp_millis();
    let killed_after = run_started.elapsed();
    assert_eq!(exit_of(&mut victim, Duration::from_secs(5)).0, Some(-1), "SIGKILL ends the process at once");

    let depths = wait_drained(&app, Duration::from_secs(30)).await;
    let run_took = run_started.elapsed();
    assert_eq!(depths, (0, 0, 0, 0), "queue not drained within 30 s of the kill, or jobs dead");
    assert_eq!(status_counts(&app, &ids).await, HashMap::from([("succeeded".to_owned(), JOBS)]));
    let (delivered, unique, exact) = tally(&receiver.deliveries(), &ids);
    assert!(exact, "the webhook-ids delivered are not exactly the job ids");
    let duplicates = delivered - unique;
    let attempts = job_fields(&app, &ids, "attempts").await;
    let recovered: Vec<&String> =
        ids.iter().zip(&attempts).filter(|(_, a)| a.as_deref() != Some("1")).map(|(id, _)| id).collect();
    let recovery = Duration::from_millis(u64::try_from(last_finished_ms(&app, &ids).await - killed_at).unwrap());
    eprintln!(
        "sigkill: jobs {JOBS}, killed after {before_kill} deliveries ({killed_after:?}), delivered {delivered}, \
         unique {unique}, duplicates {duplicates}, recovered leases {}, recovery (kill -> last job finished) \
         {recovery:?}, whole run {run_took:?}",
        recovered.len()
    );
    // At least once, and the repeats are bounded by what the killed worker could hold at once.
    assert!(duplicates <= CONCURRENCY, "{duplicates} duplicates; the killed worker ran at most {CONCURRENCY}");
    // The killed worker held leases; each came back through expiry, counted as an attempt.
    assert!(
        !recovered.is_empty() && recovered.len() <= CONCURRENCY,
        "{} jobs needed more than one attempt",
        recovered.len()
    );
    for id in recovered {
        let records = app.attempts("webhook", id).await;
        assert_eq!(records.len(), 2, "{id}: {records:?}");
        assert_eq!(records[0]["error"], "lease expired: the worker stopped answering");
        assert!(records[1]["error"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_jobs_finish_and_puts_back_the_rest() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], slow(Duration::from_millis(1500))).await;
    let ids = app.enqueue_webhooks(&receiver.url(), 6, 5).await;
    let mut worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_CONCURRENCY_WEBHOOK", "2")]);

    let started = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(started.len(), 2, "two deliveries did not start within 15 s");
    worker.signal("-TERM");
    let (code, took) = exit_of(&mut worker, Duration::from_secs(35));
    eprintln!("sigterm: exited with {code:?} {took:?} after SIGTERM, with 2 deliveries of 1.5 s running");
    assert_eq!(code, Some(0), "a SIGTERM stop exits 0 within the grace period");
    assert!(took < Duration::from_secs(5), "took {took:?}: it should wait for the running jobs alone");

    // The two running jobs (the oldest two: FIFO) finished and were recorded before the exit.
    let running: BTreeSet<String> = started.iter().map(Delivery::webhook_id).collect();
    assert_eq!(running, ids[..2].iter().cloned().collect());
    for delivery in &started {
        let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(body["type"], "test.ping", "{body}");
    }
    assert_eq!(receiver.deliveries().len(), 2, "no delivery starts once SIGTERM arrived");
    for id in &ids[..2] {
        let hash = app.job_fields("webhook", id).await;
        assert_eq!((hash["status"].as_str(), hash["attempts"].as_str()), ("succeeded", "1"), "{id}");
    }
    // The other four were never started: queued again, in the ready list, no attempt counted.
    for id in &ids[2..] {
        let hash = app.job_fields("webhook", id).await;
        assert_eq!((hash["status"].as_str(), hash["attempts"].as_str()), ("queued", "0"), "{id}");
    }
    let ready: BTreeSet<String> = app.ready("webhook").await.into_iter().collect();
    assert_eq!(ready, ids[2..].iter().cloned().collect());
    assert_eq!(app.depths("webhook").await, (4, 0, 0, 0));

    // The next worker runs them, once each.
    let _next = WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_CONCURRENCY_WEBHOOK", "4")]);
    for id in &ids[2..] {
        let job = app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(20)).await;
        assert_eq!((&job["status"], &job["attempts"]), (&"succeeded".into(), &1.into()), "{job}");
    }
    let (delivered, unique, exact) = tally(&receiver.deliveries(), &ids);
    assert!(exact && delivered == 6 && unique == 6, "{delivered} deliveries of {unique} jobs");
    assert_eq!(app.depths("webhook").await, (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_over_puts_running_jobs_back() {
    let app = TestApp::spawn().await;
    let five_seconds = slow(Duration::from_secs(5));
    let receiver = Receiver::start(&[five_seconds, five_seconds], Reply::OK).await;
    let ids = app.enqueue_webhooks(&receiver.url(), 2, 5).await;
    let settings = [("WORKER_CONCURRENCY_WEBHOOK", "2"), ("WORKER_SHUTDOWN_GRACE_SECONDS", "1")];
    let mut worker = WorkerProcess::start(&app.redis_url, &app.namespace, &settings);

    assert_eq!(receiver.wait_for(2, Duration::from_secs(15)).await.len(), 2, "two deliveries did not start");
    worker.signal("-TERM");
    let (code, took) = exit_of(&mut worker, Duration::from_secs(10));
    eprintln!("grace over: exited with {code:?} {took:?} after SIGTERM (grace 1 s, deliveries of 5 s running)");
    assert_eq!(code, Some(0));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "exited {took:?} after SIGTERM");

    // Both are back at the head of the ready list, queued, the cut-short attempt not counted.
    for id in &ids {
        let hash = app.job_fields("webhook", id).await;
        assert_eq!((hash["status"].as_str(), hash["attempts"].as_str()), ("queued", "0"), "{id}");
    }
    let ready: BTreeSet<String> = app.ready("webhook").await.into_iter().collect();
    assert_eq!(ready, ids.iter().cloned().collect());
    assert_eq!(app.depths("webhook").await, (2, 0, 0, 0));

    // Not lost: the next worker delivers both (the receiver answers at once now).
    let _next = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    for id in &ids {
        let job = app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(20)).await;
        assert_eq!((&job["status"], &job["attempts"]), (&"succeeded".into(), &1.into()), "{job}");
    }
    let (delivered, unique, exact) = tally(&receiver.deliveries(), &ids);
    assert!(exact && delivered == 4 && unique == 2, "{delivered} deliveries of {unique} jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_aof_loses_nothing() {
    const JOBS: usize = 300;
    const CONCURRENCY: usize = 4;
    let mut redis = OwnRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    let receiver = Receiver::start(&[], slow(Duration::from_millis(10))).await;
    let ids = app.enqueue_webhooks(&receiver.url(), JOBS, 5).await;
    // A short lease bounds the wait for a job whose lease reply was lost in the crash.
    let concurrency = CONCURRENCY.to_string();
    let settings = [("WORKER_CONCURRENCY_WEBHOOK", concurrency.as_str()), ("WORKER_LEASE_SECONDS", "5")];
    let mut worker = WorkerProcess::start(&redis.url(), &app.namespace, &settings);

    let before_stop = receiver.wait_for(100, Duration::from_secs(30)).await.len();
    assert!(before_stop >= 100, "only {before_stop} deliveries within 30 s");
    // SIGKILL: with `appendfsync everysec` an OS crash could lose the last second, a killed
    // process does not (its writes are in the page cache), so nothing may be missing.
    redis.stop();
    let at_stop = receiver.deliveries().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during_outage = receiver.deliveries().len() - at_stop;
    tokio::task::block_in_place(|| redis.restart());
    let restarted = Instant::now();
    let restarted_at = Utc::now().timestamp_millis();
    assert_eq!(worker.child.try_wait().unwrap(), None, "the worker exited while Redis was down");

    let depths = wait_drained(&app, Duration::from_secs(40)).await;
    assert_eq!(depths, (0, 0, 0, 0), "not drained within 40 s of the restart");
    assert_eq!(worker.child.try_wait().unwrap(), None, "the worker exited after Redis returned");
    assert_eq!(status_counts(&app, &ids).await, HashMap::from([("succeeded".to_owned(), JOBS)]));
    let deliveries = receiver.deliveries();
    let (delivered, unique, exact) = tally(&deliveries, &ids);
    assert!(exact, "the webhook-ids delivered are not exactly the job ids");
    let resumed = deliveries.iter().filter(|d| d.at >= restarted).map(|d| d.at - restarted).min().unwrap();
    let finished = Duration::from_millis(u64::try_from(last_finished_ms(&app, &ids).await - restarted_at).unwrap());
    // The worker saw the outage (failed fetches, retried with backoff) and rode it out.
    let metrics = reqwest::get(format!("http://{}/metrics", worker.metrics_addr)).await.unwrap().text().await.unwrap();
    let fetch_errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jobplane_fetch_errors_total{kind=\"webhook\"} "))
        .map_or(0, |v| v.trim().parse().unwrap());
    eprintln!(
        "redis restart: jobs {JOBS}, stopped after {at_stop} deliveries, {during_outage} during the 2 s outage, \
         {fetch_errors} failed fetches, first delivery {resumed:?} after the restart, last job finished \
         {finished:?} after it; delivered {delivered}, unique {unique}, duplicates {}",
        delivered - unique
    );
    assert!(fetch_errors >= 1, "no failed fetch counted while Redis was down:\n{metrics}");
    assert!(delivered - unique <= CONCURRENCY, "{} duplicates", delivered - unique);
}

/// Redis busy for 2 s, then makes `ARGV`'s scheduled jobs ready: a fetch sent meanwhile waits.
const BUSY_THEN_READY: &str = r"
local t0 = redis.call('TIME')
local start = t0[1] * 1000000 + t0[2]
while true do
  local t = redis.call('TIME')
  if t[1] * 1000000 + t[2] - start > 2000000 then break end
end
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('RPUSH', KEYS[3], id)
end
return #ARGV";

/// A fetch Redis has run when SIGTERM arrives: its jobs are put back, not stranded until their lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_fetch_strands_no_job() {
    let redis = OwnRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    // Three jobs parked an hour ahead, so the idle worker keeps polling an empty ready list.
    let body =
        serde_json::json!({"kind": "webhook", "delay_seconds": 3600, "payload": {"url": receiver.url(), "event": "e"}});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let created: serde_json::Value = app.post_job(&body, None).await.json().await.unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut worker = WorkerProcess::start(&redis.url(), &app.namespace, &[("WORKER_CONCURRENCY_WEBHOOK", "4")]);
    wait_until_ok(&format!("http://{}/healthz", worker.metrics_addr)).await;

    // Redis is busy for 2 s, then the jobs become ready; the worker's next fetch (it polls at
    // least every 100 ms) waits behind the script, and runs after it: it will lease them.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn =
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection_with_config(&config).await.unwrap();
    let mut call = redis::cmd("EVAL");
    call.arg(BUSY_THEN_READY)
        .arg(3)
        .arg(app.key("{webhook}:scheduled"))
        .arg(app.key("{webhook}:job"))
        .arg(app.key("{webhook}:ready"))
        .arg(&ids);
    let busy = tokio::spawn(async move { call.query_async::<usize>(&mut conn).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.signal("-TERM");
    let (code, took) = exit_of(&mut worker, Duration::from_secs(10));
    let exited_while_busy = !busy.is_finished();
    assert_eq!(busy.await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let statuses = job_fields(&app, &ids, "status").await;
    eprintln!(
        "sigterm during a fetch: exited with {code:?} {took:?} after SIGTERM (Redis still busy: {exited_while_busy}); \
         job statuses {statuses:?}, depths {:?}",
        app.depths("webhook").await
    );
    assert_eq!(code, Some(0));
    // A stopped worker holds nothing: the three jobs are ready for the next worker, no attempt counted.
    for id in &ids {
        let hash = app.job_fields("webhook", id).await;
        assert_eq!(
            (hash["status"].as_str(), hash["attempts"].as_str()),
            ("queued", "0"),
            "{id} is leased to a worker that exited: {hash:?}"
        );
    }
    assert_eq!(app.depths("webhook").await, (3, 0, 0, 0));
}

/// A bare HTTP/1.1 webhook receiver for the 100,000-job burst: answers 200 at once and keeps
/// only the webhook-ids, so the test process leaves the CPU to the worker under test.
struct CountingReceiver {
    addr: std::net::SocketAddr,
    ids: Arc<Mutex<Vec<String>>>,
}

impl CountingReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ids = Arc::new(Mutex::new(Vec::new()));
        let shared = ids.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Self::serve(stream, shared.clone()));
            }
        });
        Self { addr, ids }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Reads requests off one keep-alive connection and answers each with an empty 200.
    async fn serve(mut stream: tokio::net::TcpStream, ids: Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = Vec::with_capacity(4096);
        let mut chunk = [0_u8; 4096];
        loop {
            while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                let header = |name: &str| {
                    head.lines().find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
                    })
                };
                let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
                if buffer.len() < end + 4 + length {
                    break;
                }
                buffer.drain(..end + 4 + length);
                ids.lock().unwrap().push(header("webhook-id").unwrap_or_default());
                if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// `INFO memory`'s `used_memory`, in bytes.
async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

/// Keys in Redis besides the per-minute outcome counts (one small hash per queue and minute,
/// kept two hours for the console's chart): what the jobs leave behind.
async fn dbsize(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let all: u64 = redis::cmd("DBSIZE").query_async(conn).await.unwrap();
    let stats: Vec<String> = redis::cmd("KEYS").arg("*:stats:*").query_async(conn).await.unwrap();
    all - stats.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_and_redis_memory_returns_near_its_baseline() {
    const JOBS: usize = 100_000;
    const SLACK: u64 = 2 * 1024 * 1024;
    let redis = OwnRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    let receiver = CountingReceiver::start().await;
    let mut conn = app.redis().await;
    let baseline_memory = used_memory(&mut conn).await;
    let baseline_keys = dbsize(&mut conn).await;

    // Straight through the enqueue client, 1000 jobs a call: the API's validation is not under test.
    let store = jobs::Store::new(
        jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(5)).unwrap(),
        jobs::Keys::new(&app.namespace),
        Duration::from_hours(1),
        Duration::from_secs(10),
    );
    let payload = serde_json::json!({"url": receiver.url(), "event": "test.burst", "data": {}}).to_string();
    let enqueue_started = Instant::now();
    let now = Utc::now();
    let all: Vec<jobs::NewJob> = (0..JOBS)
        .map(|_| jobs::NewJob {
            id: uuid::Uuid::now_v7(),
            kind: jobs::Kind::Webhook,
            payload: payload.clone(),
            created_at: now,
            run_at: None,
            max_attempts: 5,
            producer: "shop".into(),
            idempotency: None,
            traceparent: None,
            priority: jobs::Priority::Normal,
            group: None,
        })
        .collect();
    let ids: Vec<String> = all.iter().map(|j| j.id.to_string()).collect();
    let created: usize = futures::stream::iter(all.chunks(1000))
        .map(|batch| store.enqueue(batch))
        .buffer_unordered(4)
        .map(|outcomes| outcomes.unwrap().iter().filter(|o| matches!(o, jobs::EnqueueOutcome::Created { .. })).count())
        .fold(0, |sum, n| async move { sum + n })
        .await;
    assert_eq!(created, JOBS);
    let enqueue_took = enqueue_started.elapsed();
    assert_eq!(app.depths("webhook").await, (JOBS, 0, 0, 0));
    let peak_memory = used_memory(&mut conn).await;

    // Flow control off (WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION=0): this test is about memory and
    // drains 100,000 jobs to one receiver within a minute.
    let settings = [
        ("JOB_RETENTION_SECONDS", "2"),
        ("WORKER_CONCURRENCY_WEBHOOK", "200"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "0"),
        ("WORKER_BATCH", "100"),
    ];
    let _worker = WorkerProcess::start(&redis.url(), &app.namespace, &settings);
    let run_started = Instant::now();
    let depths = wait_drained(&app, Duration::from_mins(1)).await;
    let run_took = run_started.elapsed();
    assert_eq!(depths, (0, 0, 0, 0), "not done within 60 s");
    let delivered_ids = receiver.ids();
    let delivered = delivered_ids.len();
    let unique_ids: BTreeSet<&String> = delivered_ids.iter().collect();
    let unique = unique_ids.len();
    let exact = unique_ids == ids.iter().collect();
    #[expect(clippy::cast_precision_loss, reason = "a rate to print")]
    let rate = JOBS as f64 / run_took.as_secs_f64();

    // Every finished job expires after the 2 s retention, and so does the succeeded index: the
    // key count returns to where it was, but for the running worker's heartbeat.
    let heartbeat = format!("{}:workers", app.namespace);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut keys = dbsize(&mut conn).await;
    while keys > baseline_keys + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        keys = dbsize(&mut conn).await;
    }
    let beating: u64 = redis::cmd("EXISTS").arg(&heartbeat).query_async(&mut conn).await.unwrap();
    assert_eq!(beating, 1, "the worker's heartbeat is the one key left");
    let keys = keys - beating;
    let expired_after = run_started.elapsed().saturating_sub(run_took);
    // Redis shrinks its emptied tables in its cron: give it a moment to settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after_memory = used_memory(&mut conn).await;
    while after_memory > baseline_memory + SLACK && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after_memory = used_memory(&mut conn).await;
    }
    eprintln!(
        "100k: enqueued {JOBS} in {enqueue_took:?}; worked off in {run_took:?} = {rate:.0} jobs/s; delivered \
         {delivered}, unique {unique}; keys back to {keys} (baseline {baseline_keys}) {expired_after:?} after; \
         used_memory baseline {baseline_memory} B, with the backlog {peak_memory} B, after {after_memory} B \
         ({:+} B)",
        i128::from(after_memory) - i128::from(baseline_memory)
    );
    assert!(exact, "the webhook-ids delivered are not exactly the job ids");
    // Nothing failed and no lease lapsed (30 s, renewed every 10 s): each job was delivered once.
    assert_eq!(delivered, JOBS, "{} deliveries repeated", delivered - unique);
    if keys != baseline_keys {
        let left: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
        panic!("finished jobs did not expire within 15 s: {keys} keys, baseline {baseline_keys}: {left:?}");
    }
    assert!(after_memory <= baseline_memory + SLACK, "used_memory {after_memory} B vs baseline {baseline_memory} B");
}

/// PostgreSQL stops for 30 s while audit events keep arriving: every accepted event is written
/// once PostgreSQL is back, none is dead, and the outage costs no job an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_survive_a_30_s_postgresql_outage() {
    use crate::audit::{drained, enqueue_all, event, rows};
    use crate::support::OwnPostgres;

    let pg = OwnPostgres::start();
    let url = pg.url("postgres");
    let app = TestApp::spawn().await;
    let worker = WorkerProcess::start(
        &app.redis_url,
        &app.namespace,
        &[("WORKER_KINDS", "audit_log"), ("DATABASE_URL", &url), ("AUDIT_FLUSH_MS", "100")],
    );
    let batch = |n: usize| -> Vec<serde_json::Value> {
        (0..n).map(|_| event("acme", uuid::Uuid::now_v7(), "invoice.paid", Utc::now())).collect()
    };
    let pool = db::pool(&url, 2).unwrap();
    enqueue_all(&app, &batch(500)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&pool).await < 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows(&pool).await, 500, "written before the outage");
    pool.close().await;

    pg.stop();
    let outage = Instant::now();
    // Events keep arriving all through the outage.
    for _ in 0..6 {
        enqueue_all(&app, &batch(250)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    let depths = app.depths("audit_log").await;
    assert_eq!(depths.3, 0, "nothing died during the outage");
    pg.start_again();
    let back = Instant::now();
    enqueue_all(&app, &batch(500)).await;

    let depths = drained(&app, Duration::from_secs(90)).await;
    let pool = db::pool(&url, 2).unwrap();
    let written = rows(&pool).await;
    println!(
        "postgresql outage {:.1} s: {written} of 2500 events written, {:.1} s after it came back; depths {depths:?}",
        (back - outage).as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    assert_eq!(depths, (0, 0, 0, 0), "every job succeeded (ready, scheduled, active, dead)");
    assert_eq!(written, 2500, "every accepted event is in PostgreSQL once");
    // The outage was shorter than AUDIT_OUTAGE_RETRY_SECONDS: the batches waited, no attempt failed.
    let text = reqwest::get(format!("http://{}/metrics", worker.metrics_addr)).await.unwrap().text().await.unwrap();
    let completed: Vec<&str> = text.lines().filter(|l| l.starts_with("jobplane_jobs_completed_total{")).collect();
    assert_eq!(completed, [r#"jobplane_jobs_completed_total{kind="audit_log",outcome="succeeded"} 2500"#]);
    pool.close().await;
}

/// Audit events while the audit writer is SIGKILLed every 3 s (and started again at once) and its
/// PostgreSQL is restarted once: every event is stored exactly once, none is dead.
/// `AUDIT_CHAOS_EVENTS` events (default 200,000: 88 s with debug binaries on this 2-core machine
/// at load average 6). Fewer events are allowed only while the chaos still hits writes in flight:
/// the test fails if fewer than two kills, or the restart, found events not yet written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_writer_killed_every_3_s_and_a_postgresql_restart_store_each_event_once() {
    use crate::audit::{drained, event, rows};
    use crate::support::{OwnPostgres, SHOP_KEY};
    let events_wanted: usize = std::env::var("AUDIT_CHAOS_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);

    let pg = OwnPostgres::start();
    let url = pg.url("postgres");
    db::migrate_url(&url).await.unwrap();
    // A Redis of its own: 200,000 jobs are no load to share.
    let redis = OwnRedis::start();
    let app = Arc::new(TestApp::spawn_on(&redis.url()).await);
    // A producer posts each batch until it is accepted: a 503 (the store slow to answer) leaves
    // it unknown whether the batch was written, and the repeat is safe because each event
    // carries its event_id.
    let post = |app: Arc<TestApp>, share: Vec<serde_json::Value>| async move {
        for chunk in share.chunks(1000) {
            let body = serde_json::json!({ "jobs": chunk });
            loop {
                let response = app.http.post(app.url("/v1/jobs/batch")).bearer_auth(SHOP_KEY).json(&body).send().await;
                match response.map(|r| r.status().as_u16()) {
                    Ok(202) => break,
                    Ok(503) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Ok(other) => panic!("batch refused: {other}"),
                }
            }
        }
    };
    let start_worker = || {
        WorkerProcess::start(
            &app.redis_url,
            &app.namespace,
            &[
                ("WORKER_KINDS", "audit_log"),
                ("DATABASE_URL", &url),
                ("AUDIT_FLUSH_MS", "100"),
                ("WORKER_LEASE_SECONDS", "3"),
            ],
        )
    };
    let ids: Vec<uuid::Uuid> = (0..events_wanted).map(|_| uuid::Uuid::now_v7()).collect();
    let events: Vec<serde_json::Value> = ids.iter().map(|id| event("acme", *id, "invoice.paid", Utc::now())).collect();
    let started = Instant::now();
    // Four producers posting batches of 1000 at once, as busy producers would.
    let producers: Vec<_> = events
        .chunks(events_wanted.div_ceil(4))
        .map(|share| tokio::spawn(post(Arc::clone(&app), share.to_vec())))
        .collect();
    let producer = tokio::spawn(async move {
        for p in producers {
            p.await.unwrap();
        }
    });
    let pool = db::pool(&url, 1).unwrap();
    let mut worker = start_worker();
    let (mut kills, mut restarted) = (0, false);
    let target = i64::try_from(events_wanted).unwrap();
    // Kills (and the restart) that found events not yet written: the test proves nothing if the
    // writer had finished before them, so it counts them and requires some.
    let (mut kills_in_flight, mut restart_in_flight) = (0, false);
    // Kill every 3 s until every event is enqueued and at least ten kills are done; restart
    // PostgreSQL once, at the third kill or as soon as a third of the events are written,
    // whichever comes first, while events are still being written.
    while !producer.is_finished() || kills < 10 {
        assert!(started.elapsed() < Duration::from_mins(10), "chaos phase not over within 10 min");
        tokio::time::sleep(Duration::from_secs(3)).await;
        worker.signal("-KILL");
        assert_eq!(worker.wait(Duration::from_secs(5)), Some(-1), "SIGKILL ends the worker at once");
        kills += 1;
        let written = rows(&pool).await;
        kills_in_flight += usize::from(written < target);
        eprintln!("audit chaos: kill {kills} at {:?}: {written} rows", started.elapsed());
        if !restarted && (kills == 3 || written >= target / 3) {
            restart_in_flight = written < target;
            pg.stop();
            worker = start_worker(); // the writer waits out the outage
            tokio::time::sleep(Duration::from_secs(2)).await;
            pg.start_again();
            restarted = true;
        } else {
            worker = start_worker();
        }
    }
    assert!(
        restart_in_flight && kills_in_flight >= 2,
        "the chaos must hit events in flight: {kills_in_flight} kills and the restart ({restart_in_flight}) did; \
         raise AUDIT_CHAOS_EVENTS"
    );
    let chaos_took = started.elapsed();
    // Every event written (the last worker left running), then the queue empty.
    let deadline = Instant::now() + Duration::from_secs(90);
    while rows(&pool).await < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let depths = drained(&app, Duration::from_secs(30)).await;
    let written = rows(&pool).await;
    let (distinct, ours): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT event_id), count(*) FILTER (WHERE event_id = ANY($1)) FROM audit_logs")
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .unwrap();
    println!(
        "audit chaos: {events_wanted} events, {kills} SIGKILLs every 3 s, one PostgreSQL restart: chaos phase {chaos_took:?}, \
         all written {:?} after the start; {written} rows, {distinct} distinct; depths {depths:?}",
        started.elapsed()
    );
    assert_eq!(depths, (0, 0, 0, 0), "every job succeeded (ready, scheduled, active, dead)");
    assert_eq!((written, distinct, ours), (target, target, target), "each event stored exactly once");
    drop(worker);
    pool.close().await;
    drop(redis);
}
