//! Scale-out (issue 8): the platform on a Redis Cluster, through a Sentinel failover, and with
//! workers on hosts of their own (network namespaces) one of which loses its link mid-run.
//!
//! Each test points `REDIS_URL` at a port where nothing listens: a binary that ignored
//! `REDIS_CLUSTER_URLS` or `REDIS_SENTINEL_URLS` would fail, never pass by talking to another
//! Redis; and each test checks on the nodes themselves that the keys landed where they should.
//! Every test prints what it measured (`--success-output final` or `--no-capture` shows it).
//!
//! They start many processes and the last one needs root (`ip netns`): `.config/nextest.toml`
//! runs them one at a time, with no other test beside them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole};
use crate::receiver::{Delivery, Receiver, Reply};
use crate::support::{SHOP_KEY, TestApp, WorkerProcess, free_port};
use crate::topology::{NetLab, OwnCluster, OwnSentinel, SENTINEL_MASTER, node, scan};

/// A Redis URL where nothing listens: the binaries must not need it.
fn nowhere() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

fn webhook(url: &str, event: &str, max_attempts: u32) -> Value {
    json!({"kind": "webhook", "max_attempts": max_attempts, "payload": {"url": url, "event": event, "data": {"n": 1}}})
}

/// The job's status through `GET /v1/jobs/{id}` (`"404"` when the API knows no such job).
async fn status_of(app: &TestApp, id: &str) -> String {
    let response = app.get_job(id, SHOP_KEY).await;
    if response.status() == 404 {
        return "404".into();
    }
    let job: Value = response.json().await.unwrap_or_default();
    job["status"].as_str().unwrap_or("<unreadable>").to_owned()
}

/// Polls until every job of `ids` is `succeeded` (or `limit` passes); returns how many ended in each status.
async fn wait_all_succeeded(app: &TestApp, ids: &[String], limit: Duration) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<String> = ids.to_vec();
    let mut counts = BTreeMap::new();
    loop {
        let mut still = Vec::new();
        for id in &pending {
            let status = status_of(app, id).await;
            if status != "succeeded" {
                still.push((id.clone(), status));
            }
        }
        if still.is_empty() || Instant::now() > deadline {
            counts.insert("succeeded".to_owned(), ids.len() - still.len());
            for (_, status) in &still {
                *counts.entry(status.clone()).or_default() += 1;
            }
            return counts;
        }
        pending = still.into_iter().map(|(id, _)| id).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn succeeded(n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([("succeeded".to_owned(), n)])
}

/// How many deliveries each job id (webhook-id) got.
fn per_id(deliveries: &[Delivery]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in deliveries {
        *counts.entry(d.webhook_id()).or_default() += 1;
    }
    counts
}

async fn post_json(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.http.post(app.url(path)).bearer_auth(SHOP_KEY).json(body).send().await.unwrap()
}

/// The attempt records of a webhook job, read on the cluster node serving the webhook queue.
fn attempt_records(cluster: &OwnCluster, namespace: &str, id: &str) -> Vec<Value> {
    let key = format!("{namespace}:{{webhook}}:job:{id}");
    let mut conn = node(cluster.node_of(&key)).unwrap();
    let raw: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    raw.map(|raw| crate::support::record_attempts(&jobs::record::JobRecord::decode(&raw).unwrap())).unwrap_or_default()
}

/// Enqueues `body` (with `key`), expecting `202`; returns the job id.
async fn enqueue(app: &TestApp, body: &Value, key: Option<&str>) -> String {
    let response = app.post_job(body, key).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "enqueue: {body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The same key and body twice: the same job, the second answer a replay.
async fn idempotent_enqueue(app: &TestApp, url: &str) -> String {
    let id = enqueue(app, &webhook(url, "order.created", 5), Some("order-17")).await;
    let again = app.post_job(&webhook(url, "order.created", 5), Some("order-17")).await;
    assert_eq!((again.status().as_u16(), again.headers()["idempotent-replayed"].to_str().unwrap()), (200, "true"));
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str(), "a replayed key gives the same job");
    id
}

/// One batch of 10 emails and 60 webhooks, whose queues hash to different masters; their ids.
async fn batch_of_two_kinds(app: &TestApp, url: &str) -> (Vec<String>, Vec<String>) {
    let emails = (0..10).map(|i| {
        json!({"kind": "email", "payload": {"to": [format!("user{i}@example.org")], "from": "shop@example.org",
            "subject": "hi", "text": "hello"}})
    });
    let jobs: Vec<Value> = emails.chain((0..60).map(|_| webhook(url, "order.paid", 5))).collect();
    let response = post_json(app, "/v1/jobs/batch", &json!({ "jobs": jobs })).await;
    assert_eq!(response.status(), 202);
    let batch: Value = response.json().await.unwrap();
    let mut ids: Vec<String> =
        batch["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect();
    let hooks = ids.split_off(10);
    (ids, hooks)
}

/// Waits until the console lists exactly `dead_ids` as dead webhooks, replays them all, and
/// waits until they succeed.
async fn replay_dead_letters(app: &TestApp, console: &TestConsole, dead_ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let page: Value = console.get("/api/dead?kind=webhook", ADMIN_TOKEN).await.json().await.unwrap();
        let listed: BTreeSet<String> =
            page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
        if listed.len() >= dead_ids.len() || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed, dead_ids.iter().cloned().collect(), "the console lists the three dead letters");
    for id in dead_ids {
        assert_eq!(status_of(app, id).await, "dead");
    }
    let replayed = console.post("/api/dead/replay", ADMIN_TOKEN, &json!({"ids": dead_ids})).await;
    assert_eq!(replayed.json::<Value>().await.unwrap()["replayed"], 3);
    assert_eq!(wait_all_succeeded(app, dead_ids, Duration::from_secs(30)).await, succeeded(3));
}

/// The console's view of the webhook queue. The schedule's tick jobs keep arriving and one may
/// be running at any moment: reads until none is (for at most 5 s).
async fn webhook_queue_when_idle(console: &TestConsole) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let queues: Value = console.get("/api/queues", ADMIN_TOKEN).await.json().await.unwrap();
        let hooks = queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "webhook").unwrap().clone();
        if hooks["running"] == json!(0) || Instant::now() > deadline {
            return hooks;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each worker's own count of the webhook jobs it completed, from its metrics (a job that
/// succeeded at its first attempt keeps no attempt history naming its worker).
async fn completed_webhooks(app: &TestApp, workers: &[WorkerProcess]) -> Vec<f64> {
    let mut completed_by = Vec::new();
    for worker in workers {
        let metrics = app.http.get(format!("http://{}/metrics", worker.metrics_addr)).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        let done: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("jobplane_jobs_completed_total{")
                    && l.contains(r#"kind="webhook""#)
                    && l.contains(r#"outcome="succeeded""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        completed_by.push(done);
    }
    completed_by
}

/// A high job and two groups' jobs: their lanes and rotations live in the queue's slot.
async fn enqueue_in_lanes(app: &TestApp, url: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for (priority, group) in [("high", None), ("normal", Some("tenant-a")), ("low", Some("tenant-b"))] {
        let mut job = webhook(url, "order.created", 5);
        job["priority"] = json!(priority);
        if let Some(group) = group {
            job["group"] = json!(group);
        }
        ids.push(enqueue(app, &job, None).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_end_to_end() {
    let cluster = OwnCluster::start(3);
    let urls = cluster.urls();
    let topology = [("REDIS_CLUSTER_URLS", urls.as_str())];
    let app = TestApp::spawn_with(&nowhere(), &topology).await;
    let console = TestConsole::start(&app, &topology).await;
    let settings = [
        ("REDIS_CLUSTER_URLS", urls.as_str()),
        ("WORKER_KINDS", "webhook,email"),
        ("EMAIL_PROVIDER", "log"),
        // A rate limit: its bucket lives in the email queue's slot, taken by every fetch there.
        ("RATE_LIMIT_EMAIL", "20/s:5"),
        ("WORKER_CONCURRENCY_WEBHOOK", "5"),
        ("WORKER_BATCH", "5"),
        ("WORKER_LEASE_SECONDS", "3"),
        ("RETRY_JITTER", "none"),
        ("RETRY_BASE_MS_WEBHOOK", "200"),
        ("RETRY_CAP_MS_WEBHOOK", "1000"),
    ];
    let workers: Vec<WorkerProcess> =
        (0..3).map(|_| WorkerProcess::start_captured(&app.redis_url, &app.namespace, &settings)).collect();
    // Each delivery takes 20 ms, so the three workers share the work.
    let ok = Receiver::start(&[], Reply { delay: Duration::from_millis(20), ..Reply::OK }).await;
    let flaky = Receiver::start(&[Reply::status(503); 5], Reply::OK).await;
    // Two attempts each for three jobs, all refused: three dead letters; then 200s for the replays.
    let refusing = Receiver::start(&[Reply::status(503); 6], Reply::OK).await;

    let mut ok_ids = vec![idempotent_enqueue(&app, &ok.url()).await];
    let (email_ids, hook_ids) = batch_of_two_kinds(&app, &ok.url()).await;
    ok_ids.extend(hook_ids);
    ok_ids.extend(enqueue_in_lanes(&app, &ok.url()).await);
    let mut flaky_ids = Vec::new();
    for i in 0..5 {
        flaky_ids.push(enqueue(&app, &webhook(&flaky.url(), "order.shipped", 5), Some(&format!("ship-{i}"))).await);
    }
    let mut dead_ids = Vec::new();
    for _ in 0..3 {
        dead_ids.push(enqueue(&app, &webhook(&refusing.url(), "order.refunded", 2), None).await);
    }
    // A schedule firing every second, into the webhook queue.
    let schedule = json!({"name": "tick", "cron": "* * * * * *", "job": webhook(&ok.url(), "reminder.due", 5)});
    assert_eq!(post_json(&app, "/v1/schedules", &schedule).await.status(), 201);

    // Processing: every job once at the receiver, by several workers.
    assert_eq!(wait_all_succeeded(&app, &ok_ids, Duration::from_secs(30)).await, succeeded(ok_ids.len()));
    assert_eq!(wait_all_succeeded(&app, &email_ids, Duration::from_secs(30)).await, succeeded(email_ids.len()));
    let bucket = format!("{}:{{email}}:bucket", app.namespace);
    let limit: Option<String> =
        redis::cmd("HGET").arg(&bucket).arg("ps").query(&mut node(cluster.node_of(&bucket)).unwrap()).unwrap();
    assert_eq!(limit.as_deref(), Some("20"), "the email kind's bucket on its master");
    let delivered = per_id(&ok.deliveries());
    for id in &ok_ids {
        assert_eq!(delivered.get(id), Some(&1), "{id} delivered once");
    }
    let completed_by = completed_webhooks(&app, &workers).await;
    assert!(
        completed_by.iter().filter(|&&n| n > 0.0).count() >= 2,
        "the jobs were run by several workers: {completed_by:?}"
    );

    // Retries: five refusals spread over the five jobs, then success.
    assert_eq!(wait_all_succeeded(&app, &flaky_ids, Duration::from_secs(30)).await, succeeded(5));
    let attempts: usize = flaky_ids.iter().map(|id| attempt_records(&cluster, &app.namespace, id).len()).sum();
    assert_eq!((flaky.deliveries().len(), attempts), (10, 10), "5 refused + 5 accepted attempts");

    replay_dead_letters(&app, &console, &dead_ids).await;
    assert_eq!(refusing.deliveries().len(), 9, "2 refused attempts each, then the replay");
    let hooks_queue = webhook_queue_when_idle(&console).await;
    assert_eq!(
        (&hooks_queue["running"], &hooks_queue["dead"], &hooks_queue["retrying"]),
        (&json!(0), &json!(0), &json!(0)),
        "the console reads the webhook queue on its master: {hooks_queue}"
    );

    // The schedule fired once a tick: its jobs reached the receiver, each once.
    let firings = |deliveries: &[Delivery]| -> Vec<String> {
        deliveries
            .iter()
            .filter(|d| String::from_utf8_lossy(&d.body).contains("reminder.due"))
            .map(Delivery::webhook_id)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while firings(&ok.deliveries()).len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ticks = firings(&ok.deliveries());
    let unique_ticks: BTreeSet<&String> = ticks.iter().collect();
    assert!(unique_ticks.len() >= 3, "the schedule fired {} times", unique_ticks.len());
    assert_eq!(ticks.len(), unique_ticks.len(), "each firing delivered once, with three workers firing");

    // The keys really are in the cluster, spread over its masters: each queue on the master of its slot.
    let per_node = cluster.keys_per_node(&app.namespace);
    let deleted = app.http.delete(app.url("/v1/schedules/tick")).bearer_auth(SHOP_KEY).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let counts: Vec<usize> = per_node.iter().map(Vec::len).collect();
    eprintln!(
        "cluster: {} webhooks + {} emails + 5 retried + 3 dead and replayed + {} schedule firings; \
         webhooks completed per worker {completed_by:?}; keys per master {counts:?}",
        ok_ids.len(),
        email_ids.len(),
        unique_ticks.len(),
    );
    for (tag, sample) in [("webhook", "job"), ("email", "job"), ("schedules", "defs")] {
        let port = cluster.node_of(&format!("{{{tag}}}"));
        let i = cluster.ports.iter().position(|p| *p == port).unwrap();
        assert!(
            per_node[i].iter().any(|k| k.contains(&format!("{{{tag}}}:{sample}"))),
            "no {{{tag}}} key on its master {port}: {:?}",
            per_node[i]
        );
    }
    assert!(counts.iter().all(|n| *n > 0), "keys on some masters only: {counts:?}");
    drop(workers);
}

/// One enqueue as a client sees it: when its acknowledged try was sent and answered, the id, the tries.
#[derive(Debug, Clone)]
struct Enqueue {
    /// When the try that was acknowledged was sent.
    tried_at: Instant,
    acked_at: Instant,
    id: String,
    tries: u32,
}

/// Enqueues webhooks one after another, every `gap`, until `stop` is set, each retried with its
/// idempotency key on a failure (503 while Redis fails over) like a real client.
async fn steady_stream(app: Arc<TestApp>, url: String, gap: Duration, stop: Arc<Mutex<bool>>) -> Vec<Enqueue> {
    let mut sent = Vec::new();
    for i in 0.. {
        if *stop.lock().unwrap() {
            break;
        }
        let first_sent = Instant::now();
        let key = format!("stream-{i}");
        let body = webhook(&url, "order.streamed", 5);
        let mut tries = 0;
        let mut last_sent;
        let id = loop {
            tries += 1;
            last_sent = Instant::now();
            let response = app.post_job(&body, Some(&key)).await;
            if matches!(response.status().as_u16(), 200 | 202) {
                break response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            }
            assert!(first_sent.elapsed() < Duration::from_mins(1), "enqueue {key} failed for 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        sent.push(Enqueue { tried_at: last_sent, acked_at: Instant::now(), id, tries });
        tokio::time::sleep(gap.saturating_sub(first_sent.elapsed())).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover() {
    let mut sentinel = OwnSentinel::start();
    let urls = sentinel.urls();
    let topology = [("REDIS_SENTINEL_URLS", urls.as_str()), ("REDIS_SENTINEL_MASTER", SENTINEL_MASTER)];
    let app = Arc::new(TestApp::spawn_with(&nowhere(), &topology).await);
    let settings = [topology[0], topology[1], ("WORKER_LEASE_SECONDS", "3"), ("WORKER_CONCURRENCY_WEBHOOK", "10")];
    let workers: Vec<WorkerProcess> =
        (0..2).map(|_| WorkerProcess::start_captured(&app.redis_url, &app.namespace, &settings)).collect();
    let receiver = Receiver::start(&[], Reply::OK).await;

    // About 50 enqueues a second, for 4 s before the kill and 6 s after the promotion.
    let stop = Arc::new(Mutex::new(false));
    let stream = tokio::spawn(steady_stream(app.clone(), receiver.url(), Duration::from_millis(20), stop.clone()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let old_master = sentinel.first_master;
    let before_kill = scan(old_master, &format!("{}:*", app.namespace)).len();
    let killed_at = Instant::now();
    let promotion = tokio::task::block_in_place(|| sentinel.kill_master());
    tokio::time::sleep(Duration::from_secs(6)).await;
    *stop.lock().unwrap() = true;
    let sent = stream.await.unwrap();
    // Acknowledged by the new master: sent after the old one died.
    let enqueued_after: Vec<&Enqueue> = sent.iter().filter(|s| s.tried_at > killed_at).collect();
    assert!(before_kill > 0, "the jobs before the kill are not on the master {old_master}");
    assert!(!enqueued_after.is_empty(), "no enqueue succeeded within 6 s of the promotion");

    // The jobs acknowledged after the kill are on the promoted replica.
    let mut conn = node(sentinel.replica).unwrap();
    for s in &enqueued_after {
        let key = format!("{}:{{webhook}}:job:{}", app.namespace, s.id);
        let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
        assert!(exists, "{key} is not on the new master {}", sentinel.replica);
    }

    // Every acknowledged job ends succeeded, save those the old master took to its grave.
    let ids: Vec<String> = sent.iter().map(|s| s.id.clone()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "two idempotency keys gave the same job");
    let counts = wait_all_succeeded(&app, &ids, Duration::from_secs(30)).await;
    let lost: Vec<&Enqueue> = {
        let mut lost = Vec::new();
        for s in &sent {
            if status_of(&app, &s.id).await == "404" {
                lost.push(s);
            }
        }
        lost
    };
    let deliveries = receiver.deliveries();
    let delivered = per_id(&deliveries);
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    let first_enqueue = enqueued_after.iter().map(|s| s.acked_at).min().unwrap();
    let first_processed = deliveries
        .iter()
        .filter(|d| enqueued_after.iter().any(|s| s.id == d.webhook_id()))
        .map(|d| d.at)
        .min()
        .expect("no job enqueued after the kill was delivered");
    let retried = sent.iter().filter(|s| s.tries > 1).count();
    let lost_ms: Vec<String> = lost
        .iter()
        .map(|s| format!("acked {} ms before the kill", killed_at.saturating_duration_since(s.acked_at).as_millis()))
        .collect();
    eprintln!(
        "sentinel failover: {} jobs acknowledged ({} after the kill, {retried} needed retries); statuses {counts:?}; \
         lost {} {lost_ms:?}; duplicate deliveries {duplicates}; kill -> promotion {promotion:?}; \
         kill -> first enqueue acknowledged {:?}; kill -> first job enqueued after it delivered {:?}",
        sent.len(),
        enqueued_after.len(),
        lost.len(),
        first_enqueue - killed_at,
        first_processed - killed_at,
    );
    // Replication is asynchronous: what the old master acknowledged in its last moments may never
    // have reached the replica. On loopback that window is a few ms, a job or two at this rate.
    assert!(lost.len() <= 3, "{} acknowledged jobs lost; replication lag does not explain that many", lost.len());
    assert_eq!(counts.get("succeeded").copied().unwrap_or(0) + lost.len(), ids.len(), "statuses {counts:?}");
    for s in &sent {
        assert!(lost.iter().any(|l| l.id == s.id) || delivered.contains_key(&s.id), "{} never delivered", s.id);
    }
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_host_cut_off() {
    const JOBS: usize = 200;
    const CONCURRENCY: usize = 10;
    let lab = NetLab::start(2);
    let app = TestApp::spawn_on(&lab.local_redis_url()).await;
    let receiver =
        Receiver::start_on(&lab.gateway(), &[], Reply { delay: Duration::from_millis(200), ..Reply::OK }).await;
    let concurrency = CONCURRENCY.to_string();
    let settings = [
        ("WORKER_LEASE_SECONDS", "3"),
        ("WORKER_CONCURRENCY_WEBHOOK", concurrency.as_str()),
        ("WORKER_BATCH", "5"),
        ("WEBHOOK_TIMEOUT_MS", "5000"),
        // Every slot of the one receiver for both hosts: the test is about a host cut off, and
        // with 8 slots shared, host B alone may keep them all once host A is back.
        ("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "20"),
        // The acker says at info level when it ignored outcomes of leases lost meanwhile.
        ("RUST_LOG", "warn,workers::ack=info"),
    ];
    let redis_url = lab.redis_url();
    let host_a = WorkerProcess::start_in_netns(lab.host(0), &redis_url, &app.namespace, &settings);
    let _host_b = WorkerProcess::start_in_netns(lab.host(1), &redis_url, &app.namespace, &settings);
    let (addr_a, addr_b) = (lab.host_addr(0), lab.host_addr(1));
    let by =
        |deliveries: &[Delivery], addr: &str| deliveries.iter().filter(|d| d.from.ip().to_string() == addr).count();

    let ids = app.enqueue_webhooks(&receiver.url(), JOBS, 5).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while by(&receiver.deliveries(), &addr_a) < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_cut = receiver.deliveries();
    assert!(by(&before_cut, &addr_a) >= 20 && by(&before_cut, &addr_b) > 0, "both hosts work before the cut");
    lab.set_link(0, false);
    let cut_at = Instant::now();
    assert!(!lab.reaches_redis(0), "host A still reaches Redis with its link down");

    let counts = wait_all_succeeded(&app, &ids, Duration::from_mins(1)).await;
    let recovered_in = cut_at.elapsed();
    assert_eq!(counts, succeeded(JOBS), "every job ends succeeded without host A");
    let at_recovery = receiver.deliveries();
    let a_after_cut = at_recovery.iter().filter(|d| d.at > cut_at && d.from.ip().to_string() == addr_a).count();
    let mut attempts = Vec::new();
    for id in &ids {
        attempts.push(app.attempts("webhook", id).await);
    }
    let recovered: Vec<&String> = ids.iter().zip(&attempts).filter(|(_, a)| a.len() > 1).map(|(id, _)| id).collect();

    // The cable back in: host A's late answers and acks must change nothing.
    lab.set_link(0, true);
    let relinked = Instant::now();
    let deadline = relinked + Duration::from_secs(20);
    while !lab.reaches_redis(0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than the webhook timeout: whatever host A still had in flight has been settled.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut attempts_later = Vec::new();
    for id in &ids {
        attempts_later.push(app.attempts("webhook", id).await);
    }
    let counts_later = wait_all_succeeded(&app, &ids, Duration::ZERO).await;
    let settled = receiver.deliveries();
    let late = settled.len() - at_recovery.len();
    let (ready, scheduled, active, dead) = app.depths("webhook").await;

    // Host A works again: new jobs are shared by both hosts.
    let more = app.enqueue_webhooks(&receiver.url(), 60, 5).await;
    let more_counts = wait_all_succeeded(&app, &more, Duration::from_secs(30)).await;
    let all = receiver.deliveries();
    let more_set: BTreeSet<&String> = more.iter().collect();
    let more_by_a =
        all.iter().filter(|d| more_set.contains(&d.webhook_id()) && d.from.ip().to_string() == addr_a).count();

    let stale = stale_outcomes(&host_a.output());
    let delivered = per_id(&settled);
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!(
        "netns: {JOBS} jobs; before the cut host A delivered {}, host B {}; after the cut host A {a_after_cut}; \
         all succeeded {recovered_in:?} after the cut; leases recovered {}; duplicate deliveries {duplicates}; \
         after relinking: {late} late deliveries, {stale} stale outcomes of host A ignored, statuses {counts_later:?}, depths {:?}; \
         of 60 new jobs host A delivered {more_by_a}",
        by(&before_cut, &addr_a),
        by(&before_cut, &addr_b),
        recovered.len(),
        (ready, scheduled, active, dead),
    );
    let expected: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(delivered.keys().collect::<BTreeSet<_>>(), expected, "every job reached the receiver");
    // At least once: a request host A sent before the cut may have reached the receiver though the
    // answer never came back (or reach it late, once the link is back), and host B then ran the
    // job again. Host A ran at most CONCURRENCY at once.
    assert!(duplicates <= CONCURRENCY, "{duplicates} duplicates; host A ran at most {CONCURRENCY} at once");
    assert!(!recovered.is_empty(), "host A held no lease at the cut; the test proved nothing");
    assert_eq!(counts_later, succeeded(JOBS), "host A's late acks changed a finished job");
    // One stale outcome at most for each job host A held at the cut: a lease recovered by host B,
    // or a job whose deferral for its destination (no free slot: the attempt given back, so no
    // second attempt shows) Redis made while the answer to host A was lost.
    assert!(
        stale <= CONCURRENCY as u64,
        "{stale} stale outcomes of host A, which held at most {CONCURRENCY} jobs ({} taken from it)",
        recovered.len()
    );
    assert_eq!(attempts_later, attempts, "host A's late acks added attempts");
    assert_eq!((ready, scheduled, active, dead), (0, 0, 0, 0));
    assert_eq!(more_counts, succeeded(60));
    assert!(more_by_a > 0, "host A did not resume work after its link came back");
}

/// The fixtures alone, with no Jobplane process: the cluster covers every slot on three masters,
/// the Sentinels promote the replica, a host loses Redis with its link and finds it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topologies_form_fail_over_and_cut() {
    let cluster = OwnCluster::start(3);
    let masters: BTreeSet<u16> = ["{webhook}", "{email}", "{schedules}"].iter().map(|k| cluster.node_of(k)).collect();
    assert_eq!(masters.len(), 3, "the webhook, email and schedules queues hash to three different masters");

    let mut sentinel = OwnSentinel::start();
    assert_eq!(sentinel.master_port(), Some(sentinel.first_master));
    let took = tokio::task::block_in_place(|| sentinel.kill_master());
    assert_eq!(sentinel.master_port(), Some(sentinel.replica));

    let lab = NetLab::start(2);
    assert!(lab.reaches_redis(0) && lab.reaches_redis(1));
    lab.set_link(0, false);
    assert!(!lab.reaches_redis(0) && lab.reaches_redis(1), "host A cut off, host B not");
    lab.set_link(0, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.reaches_redis(0) {
        assert!(Instant::now() < deadline, "host A does not reach Redis again after relinking");
    }
    eprintln!("fixtures: cluster masters {:?}, sentinel promotion {took:?}, LAN {}.0/24", cluster.ports, lab.subnet);
}

/// The outcomes a worker's acker ignored as stale (their lease lost and taken by another), from its log.
fn stale_outcomes(log: &str) -> u64 {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains("whose lease was lost"))
        .filter_map(|line| {
            line.split("stale=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum()
}

/// `line` without its terminal colour codes (`ESC [ ... m`), which the log's fields carry.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
