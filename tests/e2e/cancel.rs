//! Cancelling jobs and running them now: `DELETE /v1/jobs/{id}` in every state, its race
//! against workers fetching, the idempotency replay of a cancelled job, a schedule's tick, and
//! the console's cancel, run-now and bulk cancel, with real `worker` processes and a real
//! webhook receiver telling what was delivered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN};
use crate::receiver::{Receiver, Reply};
use crate::support::{BILLING_KEY, SHOP_KEY, TestApp, WorkerProcess};

/// Retries wait ten minutes: a job that failed once stays `retrying` for the test.
const SLOW_RETRIES: [(&str, &str); 3] =
    [("RETRY_JITTER", "none"), ("RETRY_BASE_MS_WEBHOOK", "600000"), ("RETRY_CAP_MS_WEBHOOK", "600000")];

fn webhook(url: &str) -> Value {
    json!({"kind": "webhook", "max_attempts": 3, "payload": {"url": url, "event": "reminder.due", "data": {"user": 7}}})
}

async fn enqueue(app: &TestApp, body: &Value) -> String {
    let response = app.post_job(body, None).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn cancel(app: &TestApp, id: &str, key: &str) -> (u16, Value) {
    let response = app.http.delete(app.url(&format!("/v1/jobs/{id}"))).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The deliveries per job id.
fn delivered(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in receiver.deliveries() {
        *counts.entry(d.webhook_id()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_answers_in_every_state() {
    let app = TestApp::spawn().await;
    // Queued, with no worker: cancelled, the same answer twice, hidden from another producer.
    let receiver =
        Receiver::start(&[Reply::status(500)], Reply { delay: Duration::from_secs(3), ..Reply::status(503) }).await;
    let queued = enqueue(&app, &webhook(&receiver.url())).await;
    assert_eq!(cancel(&app, &queued, BILLING_KEY).await.0, 404, "another producer's job");
    let first = cancel(&app, &queued, SHOP_KEY).await;
    assert_eq!(first, (200, json!({"id": queued, "status": "cancelled"})));
    assert_eq!(cancel(&app, &queued, SHOP_KEY).await, first, "a second DELETE: the same answer");
    let shown: Value = app.get_job(&queued, SHOP_KEY).await.json().await.unwrap();
    assert_eq!(shown["status"], "cancelled");
    assert!(shown["finished_at"].is_string());
    assert_eq!(cancel(&app, &uuid::Uuid::now_v7().to_string(), SHOP_KEY).await.0, 404);

    // Scheduled: taken out of its set.
    let mut later = webhook(&receiver.url());
    later["delay_seconds"] = json!(3600);
    let scheduled = enqueue(&app, &later).await;
    assert_eq!(cancel(&app, &scheduled, SHOP_KEY).await.0, 200);
    assert!(app.scheduled("webhook").await.iter().all(|(id, _)| *id != scheduled));

    // Retrying: the receiver fails the first attempt; the retry waits ten minutes.
    let mut extra = SLOW_RETRIES.to_vec();
    extra.push(("WORKER_CONCURRENCY", "4"));
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &extra);
    let retrying = enqueue(&app, &webhook(&receiver.url())).await;
    assert_eq!(app.wait_status(&retrying, &["retrying"], Duration::from_secs(10)).await["status"], "retrying");
    assert_eq!(cancel(&app, &retrying, SHOP_KEY).await, (200, json!({"id": retrying, "status": "cancelled"})));

    // Running: the receiver holds the delivery 3 s, then answers 503 (a retry): the request
    // turns that retry into `cancelled`.
    let running = enqueue(&app, &webhook(&receiver.url())).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(app.wait_status(&running, &["running"], Duration::from_secs(5)).await["status"], "running");
    assert_eq!(
        cancel(&app, &running, SHOP_KEY).await,
        (202, json!({"id": running, "status": "running", "cancel_requested": true}))
    );
    let ended = app.wait_status(&running, &["cancelled", "retrying"], Duration::from_secs(10)).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["attempts"], 1);
    assert_eq!(cancel(&app, &running, SHOP_KEY).await.0, 200, "cancelled now: the same answer as a cancel");

    // Finished: 409 naming the status.
    let ok = Receiver::start(&[], Reply::OK).await;
    let done = enqueue(&app, &webhook(&ok.url())).await;
    assert_eq!(app.wait_status(&done, &["succeeded"], Duration::from_secs(10)).await["status"], "succeeded");
    let (status, problem) = cancel(&app, &done, SHOP_KEY).await;
    assert_eq!(status, 409);
    assert!(problem["detail"].as_str().unwrap().contains("`succeeded`"), "{problem}");

    // Nothing cancelled was ever delivered; the running one once.
    let counts = delivered(&receiver);
    for id in [&queued, &scheduled] {
        assert_eq!(counts.get(id), None, "{id} ran");
    }
    assert_eq!(counts.get(&retrying), Some(&1));
    assert_eq!(counts.get(&running), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_workers_never_lets_a_cancelled_job_run() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply { delay: Duration::from_millis(20), ..Reply::OK }).await;
    let ids = app.enqueue_webhooks(&receiver.url(), 2000, 1).await;
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|_| {
            WorkerProcess::start(
                &app.redis_url,
                &app.namespace,
                &[("WORKER_CONCURRENCY", "16"), ("WORKER_BATCH", "20")],
            )
        })
        .collect();
    assert!(!receiver.wait_for(1, Duration::from_secs(10)).await.is_empty(), "the workers started");
    // Cancel every job while the workers drain the queue, 32 requests at a time, newest first:
    // the workers take the oldest first, so the two meet half-way, where the race is.
    let answers: Vec<(String, u16, Value)> = futures::stream::iter(ids.iter().rev().cloned())
        .map(|id| {
            let app = &app;
            async move {
                let (status, body) = cancel(app, &id, SHOP_KEY).await;
                (id, status, body)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // Let every job end.
    let deadline = Instant::now() + Duration::from_mins(1);
    while app.depths("webhook").await.2 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(workers);

    let counts = delivered(&receiver);
    let mut by_answer: HashMap<u16, usize> = HashMap::new();
    for (id, status, body) in &answers {
        *by_answer.entry(*status).or_default() += 1;
        let runs = counts.get(id).copied().unwrap_or(0);
        assert!(runs <= 1, "{id} ran {runs} times");
        match status {
            200 => {
                assert_eq!(body["status"], "cancelled");
                assert_eq!(runs, 0, "{id}: answered 200 cancelled, yet delivered");
            }
            202 => assert_eq!(body["cancel_requested"], true),
            409 => assert_eq!(runs, 1, "{id}: finished as {body}"),
            other => panic!("{id}: unexpected {other} {body}"),
        }
    }
    println!("cancel race over 2000 jobs: {by_answer:?}, {} delivered", counts.len());
    assert!(by_answer.get(&200).copied().unwrap_or(0) > 0, "some cancels won: {by_answer:?}");
    assert!(by_answer.get(&409).copied().unwrap_or(0) > 0, "some jobs ran first: {by_answer:?}");
    // The queue's depth is truthful: no cancelled id counts as queued.
    let queues: (usize, usize, usize, usize) = app.depths("webhook").await;
    assert_eq!((queues.1, queues.2), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_cancelled_job() {
    let app = TestApp::spawn().await;
    let mut body = webhook("https://example.com/hook");
    body["delay_seconds"] = json!(86_400);
    let created = app.post_job(&body, Some("remind-user-7")).await;
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(cancel(&app, &id, SHOP_KEY).await.0, 200);

    // A late resend of the original request: the cancelled job, not a new reminder.
    let again = app.post_job(&body, Some("remind-user-7")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let replayed: Value = again.json().await.unwrap();
    assert_eq!((replayed["id"].as_str(), replayed["status"].as_str()), (Some(id.as_str()), Some("cancelled")));
    assert!(app.scheduled("webhook").await.is_empty(), "nothing scheduled anew");
    // Another body under the key: the conflict rule.
    let mut other = body.clone();
    other["payload"]["event"] = json!("reminder.changed");
    assert_eq!(app.post_job(&other, Some("remind-user-7")).await.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_tick_job_does_not_stop_its_schedule() {
    let app = TestApp::spawn().await;
    let schedule = json!({"name": "every-second", "cron": "* * * * * *", "job": webhook("https://example.com/h")});
    let response = app.http.post(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).json(&schedule).send().await.unwrap();
    assert_eq!(response.status(), 201);
    // The ticks' jobs wait in the webhook queue, which this worker does not consume.
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_KINDS", "email")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(id) = app.ready("webhook").await.into_iter().next() {
            break id;
        }
        assert!(Instant::now() < deadline, "no tick fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(cancel(&app, &first, SHOP_KEY).await.0, 200);
    let cancelled_at = Instant::now();
    let mut later = Vec::new();
    while later.len() < 2 && cancelled_at.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        later = Vec::new();
        for id in app.ready("webhook").await {
            if app.record("webhook", &id).await.is_some_and(|r| r.status == jobs::JobStatus::Queued) {
                later.push(id);
            }
        }
    }
    assert!(later.len() >= 2, "the schedule kept firing after its tick was cancelled: {later:?}");
    assert_eq!(app.record("webhook", &first).await.unwrap().status, jobs::JobStatus::Cancelled);
}

/// The console's audit actions, as the audit-log jobs it enqueued name them.
async fn audit_actions(app: &TestApp) -> Vec<String> {
    let mut actions = Vec::new();
    for id in app.ready("audit_log").await {
        let payload: Value = serde_json::from_str(&app.job_fields("audit_log", &id).await["payload"]).unwrap();
        assert_eq!(payload["actor"], "console:admin");
        actions.push(payload["action"].as_str().unwrap().to_owned());
    }
    actions.sort();
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_cancels_runs_now_and_cancels_in_bulk() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let mut later = webhook(&receiver.url());
    later["delay_seconds"] = json!(3600);
    let one = enqueue(&app, &later).await;

    // Read-only operators are refused, and nothing changes.
    for path in [format!("/api/jobs/{one}/cancel"), format!("/api/jobs/{one}/run")] {
        assert_eq!(console.post(&path, VIEWER_TOKEN, &json!({})).await.status(), 403, "{path}");
    }
    let bulk = json!({"filter": {"kind": "webhook", "state": "scheduled"}});
    assert_eq!(console.post("/api/jobs/bulk-cancel", VIEWER_TOKEN, &bulk).await.status(), 403);
    assert_eq!(app.record("webhook", &one).await.unwrap().status, jobs::JobStatus::Scheduled);

    // Run now: a worker starts it at once.
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pressed = Instant::now();
    let response = console.post(&format!("/api/jobs/{one}/run"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(response.status(), 200);
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let waited = got[0].at.duration_since(pressed);
    println!("run now: delivered {} ms after the press", waited.as_millis());
    assert!(waited < Duration::from_secs(1), "run now took {waited:?}");
    assert_eq!(console.post(&format!("/api/jobs/{one}/run"), ADMIN_TOKEN, &json!({})).await.status(), 409);

    // Cancel one: 200, again 200; unknown 404.
    let two = enqueue(&app, &later).await;
    let answer = console.post(&format!("/api/jobs/{two}/cancel"), ADMIN_TOKEN, &json!({})).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap(), json!({"id": two, "status": "cancelled"}));
    assert_eq!(console.post(&format!("/api/jobs/{two}/cancel"), ADMIN_TOKEN, &json!({})).await.status(), 200);
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(console.post(&format!("/api/jobs/{unknown}/cancel"), ADMIN_TOKEN, &json!({})).await.status(), 404);

    // Bulk: the count is frozen, a job enqueued after the count is not part of it.
    let mut targets = Vec::new();
    for _ in 0..5 {
        targets.push(enqueue(&app, &later).await);
    }
    let counted: Value = console.post("/api/jobs/bulk-cancel", ADMIN_TOKEN, &bulk).await.json().await.unwrap();
    assert_eq!(counted["matching"], 5, "{counted}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newer = enqueue(&app, &later).await;
    let confirmed = json!({"filter": counted["filter"], "confirm": 5});
    let done: Value = console.post("/api/jobs/bulk-cancel", ADMIN_TOKEN, &confirmed).await.json().await.unwrap();
    assert_eq!(done, json!({"cancelled": 5, "cancel_requested": 0, "unchanged": 0}));
    for id in &targets {
        assert_eq!(app.record("webhook", id).await.unwrap().status, jobs::JobStatus::Cancelled);
    }
    assert_eq!(app.record("webhook", &newer).await.unwrap().status, jobs::JobStatus::Scheduled);
    // Confirming fewer than match now is refused.
    let short = json!({"filter": {"kind": "webhook", "state": "scheduled", "until": chrono::Utc::now()}, "confirm": 0});
    assert_eq!(console.post("/api/jobs/bulk-cancel", ADMIN_TOKEN, &short).await.status(), 409);

    assert_eq!(audit_actions(&app).await, ["job.bulk_cancel", "job.bulk_cancel.started", "job.cancel", "job.run_now"]);
}

/// Logs in with `token`; the session cookie and its CSRF token (from the overview's forms).
async fn page_session(console: &TestConsole, token: &str) -> (String, String) {
    let r = console.http.post(format!("{}/login", console.base)).form(&[("token", token)]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = console.http.get(format!("{}/", console.base)).header("cookie", &cookie).send().await.unwrap();
    let html = html.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    (cookie, csrf)
}

/// The value of the hidden field `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    html.split(&format!("name=\"{name}\" value=\"")).nth(1).unwrap().split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_pages_cancel_run_now_and_confirm_a_bulk_cancel() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let mut later = webhook("https://example.com/hook");
    later["delay_seconds"] = json!(3600);
    let ids = [enqueue(&app, &later).await, enqueue(&app, &later).await, enqueue(&app, &later).await];
    let post = |path: String, cookie: String, form: Vec<(&'static str, String)>| {
        let request = console.http.post(format!("{}{path}", console.base)).header("cookie", cookie).form(&form);
        async move { request.send().await.unwrap() }
    };

    let (viewer, viewer_csrf) = page_session(&console, VIEWER_TOKEN).await;
    let refused = post(format!("/jobs/{}/cancel", ids[0]), viewer, vec![("csrf", viewer_csrf)]).await;
    assert_eq!(refused.status(), 403);

    let (cookie, csrf) = page_session(&console, ADMIN_TOKEN).await;
    let missing_csrf = post(format!("/jobs/{}/cancel", ids[0]), cookie.clone(), vec![]).await;
    assert_ne!(missing_csrf.status(), 200);
    assert_eq!(app.record("webhook", &ids[0]).await.unwrap().status, jobs::JobStatus::Scheduled);

    let done = post(format!("/jobs/{}/cancel", ids[0]), cookie.clone(), vec![("csrf", csrf.clone())]).await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("id=\"done\""));
    assert_eq!(app.record("webhook", &ids[0]).await.unwrap().status, jobs::JobStatus::Cancelled);

    let run = post(format!("/jobs/{}/run", ids[1]), cookie.clone(), vec![("csrf", csrf.clone())]).await;
    assert_eq!(run.status(), 200);
    assert_eq!(app.record("webhook", &ids[1]).await.unwrap().status, jobs::JobStatus::Queued);

    // Bulk: the first post shows the count and freezes the filter; the confirmation cancels.
    let fields = |extra: Vec<(&'static str, String)>| {
        let mut form = vec![("csrf", csrf.clone()), ("kind", "webhook".to_owned()), ("state", "scheduled".to_owned())];
        form.extend(extra);
        form
    };
    let page = post("/jobs/bulk-cancel".into(), cookie.clone(), fields(vec![])).await.text().await.unwrap();
    assert!(page.contains("id=\"count\">1<"), "{page}");
    let (until, confirm) = (hidden(&page, "until"), hidden(&page, "confirm"));
    assert_eq!(app.record("webhook", &ids[2]).await.unwrap().status, jobs::JobStatus::Scheduled, "nothing yet");
    let done = post("/jobs/bulk-cancel".into(), cookie, fields(vec![("until", until), ("confirm", confirm)])).await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("1 cancelled"));
    assert_eq!(app.record("webhook", &ids[2]).await.unwrap().status, jobs::JobStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_cancels_one_job_and_in_bulk_after_a_count() {
    let app = TestApp::spawn().await;
    let mut later = webhook("https://example.com/hook");
    later["delay_seconds"] = json!(3600);
    let ids = [enqueue(&app, &later).await, enqueue(&app, &later).await, enqueue(&app, &later).await];

    let (code, out, err) = crate::console::cli(&app, &["cancel", &ids[0], "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"id": ids[0], "status": "cancelled"}));

    let bulk = ["cancel", "--kind", "webhook", "--state", "scheduled", "--json"];
    let (code, out, err) = crate::console::cli(&app, &bulk);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"would_cancel": 2}), "only counted");
    assert_eq!(app.record("webhook", &ids[1]).await.unwrap().status, jobs::JobStatus::Scheduled);
    let (code, out, err) = crate::console::cli(&app, &[&bulk[..], &["--yes"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"cancelled": 2, "cancel_requested": 0, "unchanged": 0})
    );
    for id in &ids {
        assert_eq!(app.record("webhook", id).await.unwrap().status, jobs::JobStatus::Cancelled);
    }
    let (code, _, err) = crate::console::cli(&app, &["cancel", "--kind", "webhook", "--state", "running"]);
    assert_ne!(code, 0);
    assert!(err.contains("queued, scheduled or retrying"), "{err}");
}
