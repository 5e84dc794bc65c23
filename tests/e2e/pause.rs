//! Pausing a kind across a fleet of real worker processes, resuming it, the pause surviving
//! restarts of every process, and the fleet registry (a SIGKILLed worker shown gone), through
//! the real `dlq-console` binary: API, pages, metrics and audit records.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN};
use crate::receiver::{Receiver, Reply};
use crate::support::{Running, TestApp, WorkerProcess, free_port, wait_until_ok};

/// The `dlq-console` binary on `app`'s namespace; its base URL.
pub(crate) async fn console_binary(app: &TestApp) -> (String, Running) {
    let addr = format!("127.0.0.1:{}", free_port());
    let operators = format!("viewer:{VIEWER_TOKEN}:readonly");
    let console = Running::start(
        "dlq-console",
        &[
            ("CONSOLE_ADDR", addr.as_str()),
            ("CONSOLE_TOKEN", ADMIN_TOKEN),
            ("CONSOLE_OPERATORS", operators.as_str()),
            ("REDIS_URL", app.redis_url.as_str()),
            ("REDIS_NAMESPACE", app.namespace.as_str()),
        ],
    );
    let base = format!("http://{addr}");
    wait_until_ok(&format!("{base}/healthz")).await;
    (base, console)
}

pub(crate) async fn call(method: reqwest::Method, url: String, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new().request(method, url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn webhook_queue(base: &str) -> Value {
    let (status, body) = call(reqwest::Method::GET, format!("{base}/api/queues"), ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    body["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "webhook").unwrap().clone()
}

/// Three workers busy on the webhook kind (20 jobs each at once). They share one receiver, so
/// they get all its 60 slots: with the default 8, the jobs leased beyond them are deferred to
/// `scheduled`, and the backlog this test watches wait `queued` would be the destination's line.
fn three_workers(app: &TestApp) -> Vec<WorkerProcess> {
    let settings = [
        ("WORKER_CONCURRENCY_WEBHOOK", "20"),
        ("WORKER_LEASE_SECONDS", "3"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "60"),
    ];
    (0..3).map(|_| WorkerProcess::start(&app.redis_url, &app.namespace, &settings)).collect()
}

/// The deliveries' arrival times, the first one after `since`, if any.
fn first_after(receiver: &Receiver, since: Instant) -> Option<Instant> {
    receiver.deliveries().iter().map(|d| d.at).filter(|at| *at > since).min()
}

pub(crate) fn metric_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(name))
}

/// The console's gauges while webhook is paused with three live workers. They are sampled
/// every 5 s: the three new workers' heartbeats are counted by the next round.
async fn metrics_show_the_pause(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(8);
    let text = loop {
        let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        if text.contains("jobplane_workers{kind=\"webhook\"} 3") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        metric_line(&text, "jobplane_queue_paused{kind=\"webhook\"}"),
        Some("jobplane_queue_paused{kind=\"webhook\"} 1")
    );
    assert_eq!(
        metric_line(&text, "jobplane_queue_paused{kind=\"email\"}"),
        Some("jobplane_queue_paused{kind=\"email\"} 0")
    );
    assert_eq!(metric_line(&text, "jobplane_workers{kind=\"webhook\"}"), Some("jobplane_workers{kind=\"webhook\"} 3"));
    let latency = metric_line(&text, "jobplane_queue_latency_seconds{kind=\"webhook\"}").unwrap();
    assert!(latency.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 3.0, "{latency}");
}

/// The operator audit records waiting in the audit queue: (actor, action, resource type, id).
pub(crate) async fn audit_rows(app: &TestApp) -> Vec<(String, String, String, String)> {
    let mut actions = Vec::new();
    for id in app.ready("audit_log").await {
        let payload: Value = serde_json::from_str(&app.job_fields("audit_log", &id).await["payload"]).unwrap();
        actions.push((
            payload["actor"].as_str().unwrap().to_owned(),
            payload["action"].as_str().unwrap().to_owned(),
            payload["resource_type"].as_str().unwrap().to_owned(),
            payload["resource_id"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    actions.sort();
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_three_busy_workers_within_a_second_survives_restarts_and_a_resume_starts_them_again() {
    let app = TestApp::spawn().await;
    // Each delivery takes 50 ms at the receiver, so the three workers stay busy on the backlog.
    let slow = Reply { delay: Duration::from_millis(50), ..Reply::OK };
    let receiver = Receiver::start(&[], slow).await;
    let ids = app.enqueue_webhooks(&receiver.url(), 10_000, 1).await;
    assert_eq!(ids.len(), 10_000);
    let (base, console) = console_binary(&app).await;
    let mut workers = three_workers(&app);
    let busy = receiver.wait_for(300, Duration::from_secs(30)).await;
    assert!(busy.len() >= 300, "the workers are busy: {} deliveries", busy.len());

    // A read-only operator is refused; an admin pauses.
    let (status, _) = call(reqwest::Method::POST, format!("{base}/api/queues/webhook/pause"), VIEWER_TOKEN).await;
    assert_eq!(status, 403);
    let sent = Instant::now();
    let (status, view) = call(reqwest::Method::POST, format!("{base}/api/queues/webhook/pause"), ADMIN_TOKEN).await;
    let answered = Instant::now();
    assert_eq!(
        (status, &view["paused"], &view["kind"], &view["paused_by"]),
        (200, &json!(true), &json!("webhook"), &json!("admin"))
    );
    let (status, _) = call(reqwest::Method::POST, format!("{base}/api/queues/fax/pause"), ADMIN_TOKEN).await;
    assert_eq!(status, 404, "an unknown kind");

    // No job starts more than 1 s after the answer, on any of the three workers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = receiver.deliveries();
    let last = started.iter().map(|d| d.at).max().unwrap();
    let after = last.saturating_duration_since(answered);
    eprintln!(
        "pause: the last job started {} ms after the pause was sent ({} ms before its answer came, which took {} ms); \
         {} started in all, {} of them after the answer",
        last.saturating_duration_since(sent).as_millis(),
        answered.saturating_duration_since(last).as_millis(),
        (answered - sent).as_millis(),
        started.len(),
        started.iter().filter(|d| d.at > answered).count()
    );
    assert!(after <= Duration::from_secs(1), "a job started {after:?} after the pause");
    let queue = webhook_queue(&base).await;
    let queued = queue["queued"].as_u64().unwrap();
    assert!(queued > 1000, "the backlog waits: {queue}");
    assert!(queue["latency_seconds"].as_f64().unwrap() >= 2.0, "the oldest ready job waits: {queue}");

    // A paused kind still accepts jobs.
    let body = json!({"kind": "webhook", "payload": {"url": receiver.url(), "event": "order.created"}});
    assert_eq!(app.post_job(&body, None).await.status(), 202);

    // Every process restarts: the workers gracefully (each leaves the registry), then the console.
    let (status, listed) = call(reqwest::Method::GET, format!("{base}/api/workers"), ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    let old_ids: Vec<String> =
        listed["workers"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(old_ids.len(), 3, "{listed}");
    for worker in &mut workers {
        worker.signal("-TERM");
        assert_eq!(worker.wait(Duration::from_secs(15)), Some(0));
    }
    drop(console);
    let restarted = Instant::now();
    let _workers = three_workers(&app);
    let (base, _console) = console_binary(&app).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(first_after(&receiver, restarted), None, "restarted workers start nothing of a paused kind");
    assert_eq!(webhook_queue(&base).await["paused"], true);
    let (_, listed) = call(reqwest::Method::GET, format!("{base}/api/workers"), VIEWER_TOKEN).await;
    let workers_now = listed["workers"].as_array().unwrap();
    assert_eq!(workers_now.len(), 3, "the stopped workers left the registry: {listed}");
    for w in workers_now {
        assert!(!old_ids.contains(&w["id"].as_str().unwrap().to_owned()));
        assert_eq!(w["alive"], true);
        for field in ["id", "host", "pid", "kinds", "concurrency", "in_flight", "started_at", "last_seen_at", "alive"] {
            assert!(w.get(field).is_some(), "{field} missing: {w}");
        }
        assert_eq!((&w["kinds"], &w["concurrency"]["webhook"]), (&json!(["webhook"]), &json!(20)));
    }

    metrics_show_the_pause(&base).await;

    // Resume: jobs start again within a second (the first may start before the answer comes).
    let before = receiver.deliveries().len();
    assert_eq!(first_after(&receiver, restarted), None, "nothing started while paused");
    let resume_sent = Instant::now();
    let (status, view) = call(reqwest::Method::POST, format!("{base}/api/queues/webhook/resume"), ADMIN_TOKEN).await;
    let answered = Instant::now();
    assert_eq!((status, &view["paused"]), (200, &json!(false)));
    let got = receiver.wait_for(before + 1, Duration::from_secs(5)).await;
    assert!(got.len() > before, "no job within 5 s of the resume");
    let first = first_after(&receiver, resume_sent).expect("a job after the resume");
    eprintln!(
        "resume: the first job started {} ms after the resume was sent (its answer took {} ms)",
        (first - resume_sent).as_millis(),
        (answered - resume_sent).as_millis()
    );
    assert!(first - resume_sent <= Duration::from_secs(1), "{:?}", first - resume_sent);
    let second = receiver.wait_for(before + 200, Duration::from_secs(10)).await;
    assert!(second.len() >= before + 200, "every worker runs again");

    // Every action is in the audit log: one pause, one resume, by the admin; the refused and
    // unknown ones are not.
    let row = |action: &str| ("console:admin".to_owned(), action.to_owned(), "queue".to_owned(), "webhook".to_owned());
    assert_eq!(audit_rows(&app).await, [row("queue.pause"), row("queue.resume")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_shown_gone_after_its_lease_and_the_pages_pause_and_resume() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_LEASE_SECONDS", "3")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let listed: Value = console.get("/api/workers", ADMIN_TOKEN).await.json().await.unwrap();
        if let Some(w) = listed["workers"].as_array().unwrap().first() {
            assert_eq!((&w["alive"], &w["pid"]), (&json!(true), &json!(worker.child.id())));
            break w["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no heartbeat within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    worker.signal("-KILL");
    let killed = Instant::now();
    let gone_at = loop {
        let listed: Value = console.get("/api/workers", ADMIN_TOKEN).await.json().await.unwrap();
        let w = &listed["workers"][0];
        assert_eq!(w["id"], id.as_str(), "a killed worker stays listed, as gone");
        if w["alive"] == false {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "still alive 10 s after SIGKILL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(gone_at >= Duration::from_secs(1) && gone_at <= Duration::from_secs(5), "gone after {gone_at:?}");

    // The pages: the workers page shows it gone; the overview's buttons pause and resume.
    let login = console.http.post(format!("{}/login", console.base)).form(&[("token", ADMIN_TOKEN)]).send().await;
    let cookie = login.unwrap().headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = |path: &str| console.http.get(format!("{}{path}", console.base)).header("cookie", &cookie).send();
    let html = page("/workers").await.unwrap().text().await.unwrap();
    assert!(html.contains(&id) && html.contains("gone") && html.contains("href=\"/workers\""), "{html}");
    let overview = page("/").await.unwrap().text().await.unwrap();
    let csrf = overview.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(overview.contains("id=\"pause-webhook\""));
    let post = |path: &str, csrf: &str| {
        console.http.post(format!("{}{path}", console.base)).header("cookie", &cookie).form(&[("csrf", csrf)]).send()
    };
    assert_eq!(post("/queues/webhook/pause", "forged").await.unwrap().status(), 403, "CSRF check");
    assert_eq!(post("/queues/webhook/pause", &csrf).await.unwrap().status(), 303);
    let overview = page("/").await.unwrap().text().await.unwrap();
    assert!(overview.contains("class=\"badge paused\"") && overview.contains("id=\"resume-webhook\""), "{overview}");
    assert_eq!(post("/queues/webhook/resume", &csrf).await.unwrap().status(), 303);
    assert!(!page("/").await.unwrap().text().await.unwrap().contains("class=\"badge paused\""));

    // A read-only operator sees no button and is refused the form.
    let login = console.http.post(format!("{}/login", console.base)).form(&[("token", VIEWER_TOKEN)]).send().await;
    let viewer = login.unwrap().headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let overview = console.http.get(format!("{}/", console.base)).header("cookie", &viewer).send().await.unwrap();
    let overview = overview.text().await.unwrap();
    assert!(!overview.contains("id=\"pause-webhook\""));
    let viewer_csrf = overview.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let refused = console
        .http
        .post(format!("{}/queues/webhook/pause", console.base))
        .header("cookie", &viewer)
        .form(&[("csrf", viewer_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(app.record("webhook", "x").await.is_none());
    let paused: Option<String> =
        redis::cmd("GET").arg(app.key("{webhook}:paused")).query_async(&mut app.redis().await).await.unwrap();
    assert_eq!(paused, None);
}

/// The Grafana dashboard stays valid JSON and shows the three gauges.
#[test]
fn the_dashboard_shows_pause_latency_and_workers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_owned())
        .collect();
    for metric in ["jobplane_queue_paused", "jobplane_queue_latency_seconds", "jobplane_workers"] {
        assert!(exprs.iter().any(|e| e.contains(metric)), "no panel shows {metric}");
    }
}

pub(crate) fn cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(crate::support::binary("dlq-console"))
        .env_clear()
        .env("REDIS_URL", &app.redis_url)
        .env("REDIS_NAMESPACE", &app.namespace)
        .args(["--operator", "ops"])
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pauses_resumes_and_lists_the_workers() {
    let app = TestApp::spawn().await;
    let (code, out, err) = cli(&app, &["pause", "email"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("email: paused since ") && out.trim_end().ends_with(" by ops"), "{out}");
    let paused: String =
        redis::cmd("GET").arg(app.key("{email}:paused")).query_async(&mut app.redis().await).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&paused).unwrap()["by"], "ops");
    let (code, again, _) = cli(&app, &["pause", "email"]);
    assert_eq!((code, &again), (0, &out), "pausing twice is one pause, recorded once");
    let (code, _, err) = cli(&app, &["pause", "fax"]);
    assert_ne!(code, 0);
    assert!(err.contains("fax"), "{err}");

    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (code, out, err) = cli(&app, &["workers", "--json"]);
        assert_eq!(code, 0, "{err}");
        let listed: Value = serde_json::from_str(&out).unwrap();
        if !listed["workers"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((&listed["workers"][0]["alive"], &listed["workers"][0]["kinds"]), (&json!(true), &json!(["webhook"])));
    let (_, table, _) = cli(&app, &["workers"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.contains(" live ") && l.contains("webhook 0/50")), "{table}");

    let (code, out, _) = cli(&app, &["resume", "email"]);
    assert_eq!((code, out.as_str()), (0, "email: resumed\n"));
    let (_, out, _) = cli(&app, &["resume", "email"]);
    assert_eq!(out, "email: was not paused\n");
    let actions: Vec<String> =
        audit_rows(&app).await.into_iter().map(|(actor, action, ..)| format!("{actor} {action}")).collect();
    assert_eq!(actions, ["console:ops queue.pause", "console:ops queue.resume"]);
}
