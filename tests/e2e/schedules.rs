//! Schedules: the API, exactly one job per tick with three workers, missed ticks after an
//! outage of every worker, the TOML file; and delayed jobs starting on time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{SHOP_KEY, TestApp, WorkerProcess, binary};

fn webhook_job(url: &str) -> Value {
    json!({"kind": "webhook", "payload": {"url": url, "event": "reminder.due", "data": {"user": 7}}})
}

async fn post_schedule(app: &TestApp, body: &Value) -> reqwest::Response {
    app.http.post(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).json(body).send().await.unwrap()
}

async fn list(app: &TestApp) -> Vec<Value> {
    let body: Value =
        app.http.get(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).send().await.unwrap().json().await.unwrap();
    body["schedules"].as_array().unwrap().clone()
}

/// The ticks a schedule fired, read from the idempotency records its jobs left.
async fn fired_ticks(app: &TestApp, kind: &str, name: &str) -> BTreeSet<DateTime<Utc>> {
    let pattern = app.key(&format!("{{{kind}}}:idem:*:schedule:{name}:*"));
    let mut conn = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
    keys.iter()
        .map(|k| {
            let tick = k.rsplit_once(&format!(":schedule:{name}:")).unwrap().1;
            DateTime::parse_from_rfc3339(tick).unwrap().with_timezone(&Utc)
        })
        .collect()
}

/// As if the schedule had been stored an hour ago and last fired at `at`.
async fn set_last(app: &TestApp, name: &str, at: DateTime<Utc>) {
    let mut conn = app.redis().await;
    let defs = app.key("{schedules}:defs");
    let json: String = redis::cmd("HGET").arg(&defs).arg(name).query_async(&mut conn).await.unwrap();
    let mut def: Value = serde_json::from_str(&json).unwrap();
    def["updated_at"] = json!(Utc::now() - chrono::Duration::hours(1));
    let () = redis::cmd("HSET").arg(&defs).arg(name).arg(def.to_string()).query_async(&mut conn).await.unwrap();
    let () = redis::cmd("HSET")
        .arg(app.key("{schedules}:last"))
        .arg(name)
        .arg(at.timestamp_millis())
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn schedules_are_stored_listed_replaced_and_deleted() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "weekday-digest", "cron": "0 9 * * 1-5", "timezone": "Asia/Taipei",
        "job": webhook_job("https://example.com/hooks")});
    let response = post_schedule(&app, &body).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let next: DateTime<Utc> = created["next_run_at"].as_str().unwrap().parse().unwrap();
    // 09:00 in Taipei is 01:00 UTC, on a weekday.
    assert_eq!(next.format("%H:%M").to_string(), "01:00");
    assert!(next > Utc::now());
    assert_eq!((created["catch_up"].as_str(), created["source"].as_str()), (Some("latest"), Some("api")));

    // The same name again replaces it.
    let replaced = json!({"name": "weekday-digest", "cron": "30 8 * * *", "timezone": "Europe/Paris", "catch_up": "none",
        "job": webhook_job("https://example.com/hooks")});
    assert_eq!(post_schedule(&app, &replaced).await.status(), 201);
    let all = list(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!((all[0]["cron"].as_str(), all[0]["catch_up"].as_str()), (Some("30 8 * * *"), Some("none")));

    // Every broken rule is named.
    let bad = json!({"name": "x", "cron": "0 25 * * *", "timezone": "Asia/Taipeh", "job": webhook_job("ftp://x")});
    let response = post_schedule(&app, &bad).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["/cron", "/timezone", "/job/payload/url"]);
    let otp = json!({"name": "otp", "cron": "* * * * *", "job": {"kind": "otp_sms", "payload": {"to": "+14155550100", "code": "123456"}}});
    let problem: Value = post_schedule(&app, &otp).await.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/job/kind");
    let four = json!({"name": "four", "cron": "* * * *", "job": webhook_job("https://example.com/h")});
    let problem: Value = post_schedule(&app, &four).await.json().await.unwrap();
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("5 fields"), "{problem}");

    let delete = |name: &str| app.http.delete(app.url(&format!("/v1/schedules/{name}"))).bearer_auth(SHOP_KEY).send();
    assert_eq!(delete("weekday-digest").await.unwrap().status(), 204);
    assert_eq!(delete("weekday-digest").await.unwrap().status(), 404);
    assert!(list(&app).await.is_empty());
    let response = app.http.get(app.url("/v1/schedules")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_enqueue_exactly_one_job_per_tick() {
    let app = TestApp::spawn().await;
    // Every second; the jobs wait in the webhook queue, which these workers do not consume.
    let body = json!({"name": "every-second", "cron": "* * * * * *", "job": webhook_job("https://example.com/h")});
    assert_eq!(post_schedule(&app, &body).await.status(), 201);
    let workers: Vec<WorkerProcess> =
        (0..3).map(|_| WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_KINDS", "email")])).collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let response = app.http.delete(app.url("/v1/schedules/every-second")).bearer_auth(SHOP_KEY).send().await.unwrap();
    assert_eq!(response.status(), 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(workers);

    let ticks = fired_ticks(&app, "webhook", "every-second").await;
    let jobs = app.ready("webhook").await;
    assert!(ticks.len() >= 4, "fired {} ticks in 6 s", ticks.len());
    assert_eq!(jobs.len(), ticks.len(), "one job per tick, however many workers computed it");
    let (first, last) = (*ticks.first().unwrap(), *ticks.last().unwrap());
    assert_eq!(i64::try_from(ticks.len()).unwrap(), (last - first).num_seconds() + 1, "no tick skipped: {ticks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_fire_once_with_catch_up_latest_and_never_with_none() {
    use chrono::{DurationRound, Timelike};
    // Stay clear of minute boundaries, so no tick comes due while the test runs and the last
    // tick is well past `catch_up: none`'s 10 s grace.
    while !(15..=54).contains(&Utc::now().second()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let app = TestApp::spawn().await;
    for (name, catch_up) in [("latest", "latest"), ("none", "none")] {
        let body = json!({"name": name, "cron": "* * * * *", "catch_up": catch_up, "job": webhook_job("https://example.com/h")});
        assert_eq!(post_schedule(&app, &body).await.status(), 201);
        // Every worker was down for the last ten minutes: ten ticks missed.
        set_last(&app, name, Utc::now() - chrono::Duration::minutes(10)).await;
    }
    let latest_tick = Utc::now().duration_trunc(chrono::Duration::minutes(1)).unwrap();
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_KINDS", "email")]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(
        fired_ticks(&app, "webhook", "latest").await,
        BTreeSet::from([latest_tick]),
        "the latest missed tick, once, not ten"
    );
    assert_eq!(fired_ticks(&app, "webhook", "none").await, BTreeSet::new(), "missed ticks skipped");
    assert_eq!(app.ready("webhook").await.len(), 1);
    let shown = list(&app).await;
    for schedule in &shown {
        let last: DateTime<Utc> = schedule["last_run_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(last, latest_tick, "{}: the tick counts as done, fired or skipped", schedule["name"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_from_a_toml_file_are_loaded_listed_and_owned_by_the_file() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(format!("jobplane-schedules-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("schedules.toml");
    std::fs::write(
        &file,
        r#"
[[schedule]]
name = "nightly-partitions"
cron = "0 3 * * *"
timezone = "UTC"

[schedule.job]
kind = "audit_log"
payload = { tenant_id = "platform", actor = "scheduler", action = "partitions.checked", resource_type = "database" }
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let _worker =
        WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_KINDS", "email"), ("SCHEDULES_FILE", path)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut shown = list(&app).await;
    while shown.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = list(&app).await;
    }
    assert_eq!(shown.len(), 1);
    assert_eq!((shown[0]["name"].as_str(), shown[0]["source"].as_str()), (Some("nightly-partitions"), Some("file")));
    let next: DateTime<Utc> = shown[0]["next_run_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(next.format("%H:%M:%S").to_string(), "03:00:00");
    let replace =
        json!({"name": "nightly-partitions", "cron": "* * * * *", "job": webhook_job("https://example.com/h")});
    assert_eq!(post_schedule(&app, &replace).await.status(), 409);
    let response =
        app.http.delete(app.url("/v1/schedules/nightly-partitions")).bearer_auth(SHOP_KEY).send().await.unwrap();
    assert_eq!(response.status(), 409);

    // A file that does not read stops the worker at start, naming the variable.
    std::fs::write(
        &file,
        "[[schedule]]\nname = \"broken\"\ncron = \"0 9 * *\"\n[schedule.job]\nkind = \"webhook\"\npayload = {}\n",
    )
    .unwrap();
    let output = std::process::Command::new(binary("worker"))
        .env_clear()
        .env("SCHEDULES_FILE", path)
        .env("WORKER_KINDS", "email")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("worker: SCHEDULES_FILE: "), "{stderr}");
    assert!(stderr.contains("/schedule/0/cron"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// 1,000 jobs due over the next 3 s: each starts (its first attempt's `started_at`) within a
/// second of its `run_at`, on a worker that was idle and then busy. Prints p50 and p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_start_within_a_second_of_their_time() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    let base = Utc::now() + chrono::Duration::seconds(2);
    let due: Vec<DateTime<Utc>> = (0..1000).map(|i| base + chrono::Duration::milliseconds(3 * i)).collect();
    let jobs: Vec<Value> = due
        .iter()
        .map(|at| {
            json!({"kind": "webhook", "run_at": at.to_rfc3339(), "payload": {"url": receiver.url(), "event": "reminder.due"}})
        })
        .collect();
    let response = app
        .http
        .post(app.url("/v1/jobs/batch"))
        .bearer_auth(SHOP_KEY)
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    receiver.wait_for(1000, Duration::from_secs(30)).await;
    let mut delays = Vec::with_capacity(1000);
    for (job, run_at) in accepted["jobs"].as_array().unwrap().iter().zip(&due) {
        let id = job["id"].as_str().unwrap();
        let record = app.record("webhook", id).await.unwrap_or_else(|| panic!("job {id} has no record"));
        let started = record.started_at.unwrap_or_else(|| panic!("job {id} never started"));
        delays.push(started - run_at.timestamp_millis());
    }
    delays.sort_unstable();
    let (p50, p99, max) = (delays[499], delays[989], delays[999]);
    println!("delayed jobs: start − run_at p50 {p50} ms, p99 {p99} ms, max {max} ms (min {} ms)", delays[0]);
    assert!(delays[0] >= 0, "no job starts before its time: {} ms", delays[0]);
    assert!(p99 < 1000, "p99 {p99} ms");
}

/// Delayed jobs live in Redis, not in a worker: with the only worker killed (SIGKILL) before
/// they are due and another started after, every one runs, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_survive_a_worker_restart_before_they_are_due() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let first = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    let due = Utc::now() + chrono::Duration::seconds(2);
    let jobs: Vec<Value> = (0..50)
        .map(|_| json!({"kind": "webhook", "run_at": due.to_rfc3339(), "payload": {"url": receiver.url(), "event": "reminder.due"}}))
        .collect();
    let response = app
        .http
        .post(app.url("/v1/jobs/batch"))
        .bearer_auth(SHOP_KEY)
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.signal("-KILL");
    drop(first);
    // Due while no worker runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.deliveries().is_empty());
    assert_eq!(app.scheduled("webhook").await.len(), 50, "still waiting in Redis");
    let _second = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    let delivered = receiver.wait_for(50, Duration::from_secs(10)).await;
    let unique: BTreeSet<String> = delivered.iter().map(crate::receiver::Delivery::webhook_id).collect();
    assert_eq!((delivered.len(), unique.len()), (50, 50));
}
