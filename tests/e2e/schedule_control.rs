//! Pause, resume and run-now of schedules, end to end: the producer API and the console on
//! the test's namespace, `worker` processes running the scheduler, every-second schedules.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN};
use crate::receiver::{Receiver, Reply};
use crate::support::{BILLING_KEY, SHOP_KEY, TestApp, WorkerProcess};

fn every_second(name: &str, catch_up: &str, url: &str) -> Value {
    json!({"name": name, "cron": "* * * * * *", "catch_up": catch_up,
        "job": {"kind": "webhook", "payload": {"url": url, "event": "tick", "data": {"schedule": name}}}})
}

async fn post(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.http.post(app.url(path)).bearer_auth(key).send().await.unwrap()
}

async fn create(app: &TestApp, body: &Value) {
    let r = app.http.post(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).json(body).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

/// The regular ticks a schedule fired, from the idempotency records of its jobs.
async fn ticks(app: &TestApp, name: &str) -> BTreeSet<DateTime<Utc>> {
    let pattern = app.key(&format!("{{webhook}}:idem:*:schedule:{name}:*"));
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut app.redis().await).await.unwrap();
    keys.iter()
        .filter_map(|k| DateTime::parse_from_rfc3339(k.rsplit_once(&format!(":schedule:{name}:"))?.1).ok())
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

/// The ids, `created_at` (ms) and payloads of every webhook job written so far.
async fn jobs_created(app: &TestApp) -> Vec<(String, i64, String)> {
    let pattern = app.key("{webhook}:job:*");
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut app.redis().await).await.unwrap();
    let mut out = Vec::new();
    for key in keys {
        let id = key.rsplit(':').next().unwrap().to_owned();
        if let Some(record) = app.record("webhook", &id).await {
            out.push((id, record.created_at, record.payload.unwrap_or_default()));
        }
    }
    out
}

async fn view(app: &TestApp, name: &str) -> Value {
    let list: Value =
        app.http.get(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).send().await.unwrap().json().await.unwrap();
    list["schedules"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone()
}

async fn wait_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Paused, an every-second schedule fires nothing, from the pause's answer on, for seconds, with
/// two workers running; resumed, `catch_up: latest` fires the latest tick missed while paused
/// once and `none` fires none of them; both then fire their regular ticks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_fires_nothing_and_resume_owes_what_catch_up_says() {
    let app = TestApp::spawn().await;
    // The jobs wait in the webhook queue: these workers run the scheduler only.
    let _workers: Vec<WorkerProcess> =
        (0..2).map(|_| WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_KINDS", "email")])).collect();
    for catch_up in ["latest", "none"] {
        create(&app, &every_second(catch_up, catch_up, "https://example.com/h")).await;
    }
    assert!(
        wait_until(Duration::from_secs(10), async || ticks(&app, "latest").await.len() >= 2
            && ticks(&app, "none").await.len() >= 2)
        .await,
        "the schedules fire before the pause"
    );
    let mut answered = std::collections::HashMap::new();
    for name in ["latest", "none"] {
        let r = post(&app, &format!("/v1/schedules/{name}/pause"), SHOP_KEY).await;
        assert_eq!(r.status(), 200);
        answered.insert(name, Utc::now());
        let body: Value = r.json().await.unwrap();
        assert_eq!((body["paused"].as_bool(), body["next_run_at"].is_null()), (Some(true), true), "{body}");
    }
    let paused_at = answered["none"];
    let jobs_at_pause = jobs_created(&app).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let jobs_later = jobs_created(&app).await;
    assert_eq!(jobs_later.len(), jobs_at_pause.len(), "no job while paused");
    for (name, at) in &answered {
        let marker = format!("\"schedule\":\"{name}\"");
        let late: Vec<_> = jobs_later
            .iter()
            .filter(|(_, created, payload)| payload.contains(&marker) && *created > at.timestamp_millis())
            .collect();
        assert!(late.is_empty(), "{name}: jobs made after the pause answered: {late:?}");
    }
    assert_eq!(view(&app, "latest").await["paused"], true);

    let mut resumed = Vec::new();
    for name in ["latest", "none"] {
        let sent = Utc::now();
        let r = post(&app, &format!("/v1/schedules/{name}/resume"), SHOP_KEY).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["paused"], false);
        resumed.push((sent, Utc::now()));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for name in ["latest", "none"] {
        assert_eq!(post(&app, &format!("/v1/schedules/{name}/pause"), SHOP_KEY).await.status(), 200);
    }

    // latest: the latest missed tick (the second of the resume), fired by the resume before
    // it answered; none of the earlier missed ones; then regular ticks.
    let (sent, resume_answered) = resumed[0];
    let latest = ticks(&app, "latest").await;
    let earlier: Vec<_> =
        latest.iter().filter(|t| **t > answered["latest"] && **t < sent - chrono::Duration::seconds(1)).collect();
    assert!(earlier.is_empty(), "only the latest missed tick is owed, not these: {earlier:?}");
    let second = sent.duration_trunc(chrono::Duration::seconds(1)).unwrap();
    assert!(
        latest.iter().any(|t| *t >= second && *t <= resume_answered),
        "the latest missed tick fired by the resume's answer: {latest:?}"
    );
    assert!(latest.iter().any(|t| *t > resume_answered), "regular ticks again");
    // none: nothing between the pause and the resume; regular ticks after.
    let (sent, _) = resumed[1];
    let none = ticks(&app, "none").await;
    let skipped: Vec<_> = none.iter().filter(|t| **t > paused_at && **t <= sent).collect();
    assert!(skipped.is_empty(), "catch_up none fired missed ticks: {skipped:?}");
    assert!(none.iter().any(|t| *t > sent), "regular ticks again");
    // Ticks missed while paused count as done for `none`.
    let shown = view(&app, "none").await;
    let last: DateTime<Utc> = shown["last_run_at"].as_str().unwrap().parse().unwrap();
    assert!(last > paused_at);
}

/// Run now pressed ten times at once: one job (one key `schedule:<name>:manual:<s>`, one
/// delivery), the other nine answers name it; the regular ticks are untouched. Another
/// producer cannot pause, resume or run the schedule: `404`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_ten_times_at_once_makes_one_job_and_other_producers_get_404() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[]);
    let body = json!({"name": "yearly", "cron": "0 3 1 1 *",
        "job": {"kind": "webhook", "payload": {"url": receiver.url(), "event": "report.due"}}});
    create(&app, &body).await;
    let before = view(&app, "yearly").await;
    for action in ["pause", "resume", "run"] {
        let r = post(&app, &format!("/v1/schedules/yearly/{action}"), BILLING_KEY).await;
        assert_eq!(r.status(), 404, "{action} by another producer");
    }
    let long = "x".repeat(10_000);
    assert_eq!(post(&app, &format!("/v1/schedules/{long}/run"), SHOP_KEY).await.status(), 404);
    assert_eq!(app.http.post(app.url("/v1/schedules/yearly/run")).send().await.unwrap().status(), 401);

    // Ten presses within one second (clear of its end).
    while Utc::now().timestamp_subsec_millis() > 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let presses = (0..10).map(|_| post(&app, "/v1/schedules/yearly/run", SHOP_KEY));
    let answers = futures::future::join_all(presses).await;
    let mut bodies = Vec::new();
    for r in answers {
        let status = r.status().as_u16();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        let body: Value = r.json().await.unwrap();
        assert_eq!((status == 200, replayed, body["replayed"].as_bool().unwrap()), (replayed, replayed, replayed));
        bodies.push((status, body));
    }
    let created: Vec<_> = bodies.iter().filter(|(s, _)| *s == 202).collect();
    assert_eq!(created.len(), 1, "{bodies:?}");
    let id = created[0].1["id"].as_str().unwrap().to_owned();
    assert!(bodies.iter().all(|(_, b)| b["id"] == id.as_str()), "every answer names the one job");
    let key = created[0].1["idempotency_key"].as_str().unwrap();
    assert!(key.starts_with("schedule:yearly:manual:"), "{key}");
    let held: String = redis::cmd("GET")
        .arg(app.key(&format!("{{webhook}}:idem:shop:{key}")))
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert!(held.ends_with(&id), "the run's key holds its job, of the schedule's producer: {held}");
    assert_eq!(jobs_created(&app).await.len(), 1, "one job in Redis");
    let delivered = receiver.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered_later = receiver.deliveries();
    assert_eq!((delivered.len(), delivered_later.len()), (1, 1), "one delivery");
    assert_eq!(delivered[0].webhook_id(), id);
    let after = view(&app, "yearly").await;
    assert_eq!((&after["last_run_at"], &after["next_run_at"]), (&before["last_run_at"], &before["next_run_at"]));
    let r: Value = app.get_job(&id, SHOP_KEY).await.json().await.unwrap();
    assert_eq!(r["status"], "succeeded");
}

/// An operator's pause of a `SCHEDULES_FILE` schedule outlives the worker that loaded it: a
/// worker killed and another started with the same file (and one with the schedule edited)
/// fire nothing; producers cannot pause, resume or run a file schedule (`409`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_worker_restarts_and_file_reloads() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let dir = std::env::temp_dir().join(format!("jobplane-sched-ctl-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("schedules.toml");
    let write = |event: &str| {
        std::fs::write(
            &file,
            format!(
                "[[schedule]]\nname = \"file-tick\"\ncron = \"* * * * * *\"\n\n[schedule.job]\nkind = \"webhook\"\npayload = {{ url = \"https://example.com/h\", event = \"{event}\" }}\n"
            ),
        )
        .unwrap();
    };
    write("tick");
    let path = file.to_str().unwrap().to_owned();
    let env = [("WORKER_KINDS", "email"), ("SCHEDULES_FILE", path.as_str())];
    let first = WorkerProcess::start(&app.redis_url, &app.namespace, &env);
    assert!(wait_until(Duration::from_secs(10), async || ticks(&app, "file-tick").await.len() >= 2).await);
    for action in ["pause", "resume", "run"] {
        let r = post(&app, &format!("/v1/schedules/file-tick/{action}"), SHOP_KEY).await;
        assert_eq!(r.status(), 409, "{action} of a file schedule by a producer");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/schedule-from-file");
    }
    let r = console.post("/api/schedules/file-tick/pause", ADMIN_TOKEN, &json!({})).await;
    assert_eq!(r.status(), 200);
    let paused_at = Utc::now();
    let shown: Value = r.json().await.unwrap();
    assert_eq!((shown["paused"].as_bool(), shown["paused_by"].as_str()), (Some(true), Some("console:admin")));
    let count = ticks(&app, "file-tick").await.len();

    first.signal("-KILL");
    drop(first);
    let _second = WorkerProcess::start(&app.redis_url, &app.namespace, &env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    write("tick.edited");
    let _third = WorkerProcess::start(&app.redis_url, &app.namespace, &env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fired = ticks(&app, "file-tick").await;
    assert_eq!(fired.len(), count, "fired while paused, across restarts and a reload");
    assert!(fired.iter().all(|t| *t <= paused_at));
    let listed: Value = console.get("/api/schedules", ADMIN_TOKEN).await.json().await.unwrap();
    let entry = listed["schedules"].as_array().unwrap().iter().find(|s| s["name"] == "file-tick").unwrap().clone();
    assert_eq!(entry["paused"], true, "the edited file's version is still paused: {entry}");

    let r = console.post("/api/schedules/file-tick/resume", ADMIN_TOKEN, &json!({})).await;
    assert_eq!(r.status(), 200);
    assert!(wait_until(Duration::from_secs(5), async || ticks(&app, "file-tick").await.len() > count).await);
    let _ = std::fs::remove_dir_all(&dir);
}

fn cookie_of(response: &reqwest::Response) -> String {
    response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

pub(crate) async fn login(console: &TestConsole, token: &str) -> String {
    let r = console.http.post(format!("{}/login", console.base)).form(&[("token", token)]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    cookie_of(&r)
}

async fn schedules_page(console: &TestConsole, cookie: &str) -> String {
    let r = console.http.get(format!("{}/schedules", console.base)).header("cookie", cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
}

/// Presses a schedule button; a done action redirects (post/redirect/get, so a refresh repeats
/// nothing) and the page it redirects to is what this answers.
async fn press(console: &TestConsole, cookie: &str, csrf: &str, path: &str) -> reqwest::Response {
    let answer = console
        .http
        .post(format!("{}{path}", console.base))
        .header("cookie", cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    if answer.status() != 303 {
        return answer;
    }
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/schedules?done="), "{location}");
    console.http.get(format!("{}{location}", console.base)).header("cookie", cookie).send().await.unwrap()
}

/// The audit records of the console's schedule actions, as (actor, action, schedule).
async fn schedule_audit(app: &TestApp) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for id in app.ready("audit_log").await {
        let payload: Value = serde_json::from_str(&app.job_fields("audit_log", &id).await["payload"]).unwrap();
        if payload["resource_type"] == "schedule" {
            out.push((
                payload["actor"].as_str().unwrap().to_owned(),
                payload["action"].as_str().unwrap().to_owned(),
                payload["resource_id"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out.sort();
    out
}

/// The console's schedule actions, from the JSON API and the page's buttons: each in the
/// audit log, refused to read-only operators and to forms without the session's CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_schedule_actions_are_audited_and_refused_to_read_only_operators() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    create(
        &app,
        &json!({"name": "digest", "cron": "0 9 * * 1-5", "timezone": "Asia/Taipei",
        "job": {"kind": "webhook", "payload": {"url": "https://example.com/h", "event": "digest.due"}}}),
    )
    .await;
    for action in ["pause", "resume", "run"] {
        let path = format!("/api/schedules/digest/{action}");
        assert_eq!(console.post(&path, VIEWER_TOKEN, &json!({})).await.status(), 403, "{action} by a viewer");
        let r = console.http.post(format!("{}{path}", console.base)).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(console.post("/api/schedules/absent/pause", ADMIN_TOKEN, &json!({})).await.status(), 404);
    let r = console.post("/api/schedules/digest/pause", ADMIN_TOKEN, &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["paused"], true);
    let listed: Value = console.get("/api/schedules", VIEWER_TOKEN).await.json().await.unwrap();
    assert_eq!(listed["schedules"][0]["paused"], true);
    let r = console.post("/api/schedules/digest/resume", ADMIN_TOKEN, &json!({})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["paused"], false);
    let r = console.post("/api/schedules/digest/run", ADMIN_TOKEN, &json!({})).await;
    assert!(matches!(r.status().as_u16(), 200 | 202));
    let run: Value = r.json().await.unwrap();
    assert!(run["idempotency_key"].as_str().unwrap().starts_with("schedule:digest:manual:"), "{run}");

    // The page: buttons for admins, none for viewers; a viewer's form is refused.
    let admin = login(&console, ADMIN_TOKEN).await;
    let html = schedules_page(&console, &admin).await;
    assert!(html.contains("action=\"/schedules/digest/pause\"") && html.contains("/schedules/digest/run"), "{html}");
    let csrf = csrf_of(&html);
    assert_eq!(press(&console, &admin, "forged", "/schedules/digest/pause").await.status(), 403);
    let r = press(&console, &admin, &csrf, "/schedules/digest/pause").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("paused") && html.contains("action=\"/schedules/digest/resume\""), "{html}");
    let viewer = login(&console, VIEWER_TOKEN).await;
    let html = schedules_page(&console, &viewer).await;
    assert!(!html.contains("/schedules/digest/resume") && html.contains("paused"), "{html}");
    let r = press(&console, &viewer, &csrf_of(&html), "/schedules/digest/resume").await;
    assert_eq!(r.status(), 403);
    assert_eq!(view(&app, "digest").await["paused"], true, "the viewer's form changed nothing");
    let r = press(&console, &admin, &csrf, "/schedules/digest/resume").await;
    assert_eq!(r.status(), 200);
    let r = press(&console, &admin, &csrf, "/schedules/digest/run").await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Schedule digest ran now: job ") || html.contains("already ran within the last second"),
        "{html}"
    );
    // The notice is the page's own text: a forged query shows none.
    let forged = console
        .http
        .get(format!("{}/schedules?done=ran&name=digest&job=%3Cscript%3E", console.base))
        .header("cookie", &admin)
        .send()
        .await
        .unwrap();
    let html = forged.text().await.unwrap();
    assert!(!html.contains("ran now: job") && !html.contains("<script>"), "{html}");

    let admin_did = |action: &str| ("console:admin".to_owned(), action.to_owned(), "digest".to_owned());
    let mut expected = vec![
        admin_did("schedule.pause"),
        admin_did("schedule.pause"),
        admin_did("schedule.resume"),
        admin_did("schedule.resume"),
        admin_did("schedule.run"),
        admin_did("schedule.run"),
    ];
    expected.sort();
    assert_eq!(schedule_audit(&app).await, expected, "every action, and only the admin's, on record");
}
