//! Every job, every state, in the console: `GET /api/jobs`, `GET /api/jobs/{id}`, the `/jobs`
//! pages and `dlq-console jobs`, against the real `dlq-console` binary, on jobs the producer
//! API accepted and the worker's own scripts leased and finished.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use jobs::queue::{Finished, Outcome, Queue, Retention};
use jobs::{Keys, Kind};
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, VIEWER_TOKEN};
use crate::support::{Running, TestApp, binary, free_port, wait_until_ok};

const CODE: &str = "493817";
/// The numbers are `+1415555012<n>`: five OTPs an hour per number is the default limit.
const PHONE: &str = "+1415555012";

/// The console binary on the app's namespace, and a client that does not follow redirects.
struct Console {
    base: String,
    http: reqwest::Client,
    _process: Running,
}

impl Console {
    async fn start(app: &TestApp) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let operators = format!("viewer:{VIEWER_TOKEN}:readonly");
        let process = Running::start(
            "dlq-console",
            &[
                ("CONSOLE_ADDR", addr.as_str()),
                ("CONSOLE_TOKEN", ADMIN_TOKEN),
                ("CONSOLE_OPERATORS", operators.as_str()),
                ("REDIS_URL", app.redis_url.as_str()),
                ("REDIS_NAMESPACE", app.namespace.as_str()),
            ],
        );
        wait_until_ok(&format!("http://{addr}/healthz")).await;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: format!("http://{addr}"), http, _process: process }
    }

    async fn api(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self, token: &str) -> String {
        let r = self.http.post(format!("{}/login", self.base)).form(&[("token", token)]).send().await.unwrap();
        assert_eq!(r.status(), 303);
        r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    async fn html(&self, path: &str, cookie: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", cookie).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Every id of one list, page by page, asserting each page's shape.
    async fn walk(&self, kind: &str, state: &str, limit: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor.as_deref().map_or_else(String::new, |c| {
                format!("&cursor={}", url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>())
            });
            let path = format!("/api/jobs?kind={kind}&state={state}&limit={limit}{after}");
            let (status, page) = self.api(&path, Some(VIEWER_TOKEN)).await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= limit);
            ids.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return ids,
            }
        }
    }
}

/// Seven OTP SMS queued (the oldest first in the answer), three webhooks scheduled in an hour.
async fn seed(app: &TestApp) -> (Vec<String>, Vec<String>) {
    let mut otps = Vec::new();
    for n in 0..7 {
        let r = app
            .post_job(&json!({"kind": "otp_sms", "payload": {"to": format!("{PHONE}{n}"), "code": CODE}}), None)
            .await;
        assert_eq!(r.status(), 202);
        otps.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let mut hooks = Vec::new();
    for i in 0..3 {
        let body = json!({"kind": "webhook", "delay_seconds": 3600 + i,
            "payload": {"url": "https://hooks.example.org/in?token=s3cr3t-t0ken", "event": "order.created", "data": {}}});
        let r = app.post_job(&body, None).await;
        assert_eq!(r.status(), 202);
        hooks.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    (otps, hooks)
}

fn queue(app: &TestApp, kind: Kind) -> Queue {
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(5)).unwrap();
    Queue::new(conn, &Keys::new(&app.namespace), kind, "e2e-worker-1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_every_state_in_pages_without_a_payload_and_shows_one_job_redacted() {
    let app = TestApp::spawn().await;
    let console = Console::start(&app).await;
    let (otps, hooks) = seed(&app).await;

    assert_eq!(console.walk("otp_sms", "queued", 3).await, otps, "oldest first, each once");
    assert_eq!(console.walk("webhook", "scheduled", 2).await, hooks, "next due first");
    let (_, page) = console.api("/api/jobs?kind=otp_sms&state=queued", Some(ADMIN_TOKEN)).await;
    let item = &page["items"][0];
    let fields: BTreeSet<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "id",
        "kind",
        "status",
        "producer",
        "attempts",
        "max_attempts",
        "created_at",
        "run_at",
        "last_error",
        "worker",
        "started_at",
        "lease_deadline",
        "finished_at",
    ]
    .into();
    assert_eq!(fields, expected);
    assert_eq!((item["status"].as_str(), item["producer"].as_str()), (Some("queued"), Some("shop")));
    let text = page.to_string();
    assert!(!text.contains(CODE) && !text.contains("1415555012") && !text.contains("payload"), "{text}");

    // Two start (the oldest two), one of them succeeds; the other runs under a lease.
    let q = queue(&app, Kind::OtpSms);
    let leased = q.fetch(Duration::from_mins(5), 2, 0).await.unwrap();
    let now = Utc::now();
    let done = Finished {
        job: leased[0].0.clone(),
        outcome: Outcome::Succeeded,
        error: None,
        provider_id: None,
        started_at: now,
        finished_at: now,
    };
    q.finish(&[done], now, &Retention::default()).await.unwrap();
    let mut conn = app.redis().await;
    let stream = Keys::new(&app.namespace).queue(Kind::OtpSms).succeeded();
    let _: String =
        redis::cmd("XADD").arg(&stream).arg("*").arg(&otps[0]).arg("").query_async(&mut conn).await.unwrap();

    assert_eq!(console.walk("otp_sms", "queued", 50).await, otps[2..]);
    let (_, running) = console.api("/api/jobs?kind=otp_sms&state=running", Some(VIEWER_TOKEN)).await;
    assert_eq!(running["items"].as_array().unwrap().len(), 1);
    assert_eq!(running["items"][0]["id"], otps[1].as_str());
    assert_eq!(running["items"][0]["worker"], "e2e-worker-1");
    assert!(running["items"][0]["lease_deadline"].is_string() && running["items"][0]["started_at"].is_string());
    let (_, succeeded) = console.api("/api/jobs?kind=otp_sms&state=succeeded", Some(VIEWER_TOKEN)).await;
    assert_eq!(succeeded["items"][0]["id"], otps[0].as_str());
    assert!(succeeded["items"][0]["finished_at"].is_string());
    let (_, none) = console.api("/api/jobs?kind=email&state=retrying", Some(VIEWER_TOKEN)).await;
    assert_eq!(none, json!({"items": [], "next_cursor": null}));

    let (status, job) = console.api(&format!("/api/jobs/{}", otps[3]), Some(VIEWER_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["payload"]["code"], "[redacted]");
    assert!(!job.to_string().contains(CODE));
    assert_eq!(job["history"], json!([]));
    let (status, hook) = console.api(&format!("/api/jobs/{}", hooks[0]), Some(VIEWER_TOKEN)).await;
    assert_eq!((status, hook["status"].as_str()), (200, Some("scheduled")));
    assert!(!hook.to_string().contains("s3cr3t-t0ken"), "{hook}");
    let (status, _) = console.api("/api/jobs/0190aaaa-no-such-job", Some(VIEWER_TOKEN)).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_query_is_400_naming_the_field_and_a_token_is_required() {
    let app = TestApp::spawn().await;
    let console = Console::start(&app).await;
    for (query, field) in [
        ("kind=otp_sms&state=dead", "state"),
        ("kind=otp_sms", "state"),
        ("state=queued", "kind"),
        ("kind=fax&state=queued", "kind"),
        ("kind=otp_sms&state=queued&limit=0", "limit"),
        ("kind=otp_sms&state=queued&limit=501", "limit"),
        ("kind=otp_sms&state=queued&limit=ten", "limit"),
        ("kind=otp_sms&state=queued&cursor=garbage", "cursor"),
        ("kind=otp_sms&state=scheduled&cursor=12:", "cursor"),
        ("kind=otp_sms&state=succeeded&cursor=1-0:0", "cursor"),
        ("kind=otp_sms&state=queued&state=running", "state"),
    ] {
        let (status, problem) = console.api(&format!("/api/jobs?{query}"), Some(VIEWER_TOKEN)).await;
        assert_eq!(status, 400, "{query}: {problem}");
        let named: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(named, [field], "{query}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{problem}");
    }
    let (status, _) = console.api("/api/jobs?kind=otp_sms&state=queued&limit=500", Some(VIEWER_TOKEN)).await;
    assert_eq!(status, 200);
    for path in ["/api/jobs?kind=otp_sms&state=queued", "/api/jobs/some-id"] {
        assert_eq!(console.api(path, None).await.0, 401, "{path}");
        assert_eq!(console.api(path, Some("not-a-token-0123456789")).await.0, 401, "{path}");
    }
    let r = console.http.get(format!("{}/jobs", console.base)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_tabs_latency_pages_and_actions_to_admins_only() {
    let app = TestApp::spawn().await;
    let console = Console::start(&app).await;
    let (otps, hooks) = seed(&app).await;
    let admin = console.login(ADMIN_TOKEN).await;

    let (status, html) = console.html("/jobs?kind=otp_sms&state=queued&limit=3", &admin).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("href=\"/jobs\""), "the nav links the jobs");
    assert!(html.contains("queued (7)") && html.contains("scheduled (0)"), "{html}");
    assert!(html.contains("Oldest queued job ready for"), "{html}");
    assert!(!html.contains(CODE) && !html.contains("1415555012"));
    for id in &otps[..3] {
        assert!(html.contains(&format!("action=\"/jobs/{id}/cancel\"")), "{id}");
    }
    assert!(!html.contains(&otps[3]), "a page of three");
    assert!(!html.contains("/run\""), "no run-now for queued jobs");
    assert!(html.contains("action=\"/jobs/bulk-cancel\"") && html.contains("name=\"csrf\""));
    assert!(html.contains("name=\"state\" value=\"queued\"") && html.contains("name=\"kind\" value=\"otp_sms\""));
    assert!(!html.contains("+00:00"), "one time format");
    let next = html.split("id=\"next\" href=\"").nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&");
    let (_, second) = console.html(&next, &admin).await;
    assert!(second.contains(&otps[3]) && second.contains(&otps[5]) && !second.contains(&otps[2]), "{next}");

    let (_, scheduled) = console.html("/jobs?kind=webhook&state=scheduled", &admin).await;
    for id in &hooks {
        assert!(scheduled.contains(&format!("action=\"/jobs/{id}/run\"")));
        assert!(scheduled.contains(&format!("action=\"/jobs/{id}/cancel\"")));
    }
    let (status, detail) = console.html(&format!("/jobs/{}", otps[0]), &admin).await;
    assert_eq!(status, 200);
    assert!(detail.contains("[redacted]") && !detail.contains(CODE), "{detail}");
    assert!(detail.contains(&format!("action=\"/jobs/{}/cancel\"", otps[0])));
    let utc = regex_free_utc_time(&detail);
    assert!(utc, "times as 2026-11-27 14:46:46 UTC: {detail}");
    let (status, _) = console.html("/jobs?kind=otp_sms&state=bogus", &admin).await;
    assert_eq!(status, 400);
    // 52 processed in the last complete minute, 7 so far in this one: the column, the API and
    // the chart's rightmost point all say 52.
    if Utc::now().timestamp() % 60 > 50 {
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let minute = Utc::now().timestamp() / 60;
    let q = Keys::new(&app.namespace).queue(Kind::Email);
    let mut conn = app.redis().await;
    let () = redis::cmd("HSET")
        .arg(q.stats(minute - 1))
        .arg("succeeded")
        .arg(50)
        .arg("failed")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("HSET").arg(q.stats(minute)).arg("succeeded").arg(7).query_async(&mut conn).await.unwrap();
    let (_, queues) = console.api("/api/queues", Some(VIEWER_TOKEN)).await;
    let email = queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "email").unwrap();
    assert_eq!((email["processed_last_minute"].as_u64(), email["failed_last_minute"].as_u64()), (Some(52), Some(2)));
    let (_, overview) = console.html("/", &admin).await;
    assert!(overview.contains("the last complete minute"), "{overview}");
    assert!(overview.contains("<td class=\"num\">52</td>"), "{overview}");
    assert!(overview.contains("max 52/min"), "the chart ends at the same minute: {overview}");

    let viewer = console.login(VIEWER_TOKEN).await;
    let (_, html) = console.html("/jobs?kind=webhook&state=scheduled", &viewer).await;
    assert!(
        html.contains(&hooks[0])
            && !html.contains("/cancel\"")
            && !html.contains("/run\"")
            && !html.contains("bulk-cancel")
    );
    let (_, detail) = console.html(&format!("/jobs/{}", hooks[0]), &viewer).await;
    assert!(detail.contains("scheduled") && !detail.contains("/cancel\""));
}

/// Whether the page shows a time as `YYYY-MM-DD HH:MM:SS UTC`.
fn regex_free_utc_time(html: &str) -> bool {
    html.match_indices(" UTC").any(|(at, _)| {
        at >= 19 && {
            let t = &html.as_bytes()[at - 19..at];
            t.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                10 => *b == b' ',
                13 | 16 => *b == b':',
                _ => b.is_ascii_digit(),
            })
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_jobs_and_stats_in_aligned_columns() {
    let app = TestApp::spawn().await;
    let (otps, _) = seed(&app).await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(binary("dlq-console"))
            .env_clear()
            .env("REDIS_URL", &app.redis_url)
            .env("REDIS_NAMESPACE", &app.namespace)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let out = run(&["jobs", "--kind", "otp_sms", "--state", "queued", "--limit", "3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("id ") && lines[1].starts_with(&otps[0]), "{out}");
    let column = |line: &str, what: &str| line.find(what).unwrap();
    assert_eq!(column(lines[0], "status"), column(lines[1], "queued"), "{out}");
    assert_eq!(column(lines[0], "ready since"), lines[3].rfind(" UTC").unwrap() - 19, "{out}");
    let cursor = lines[4].strip_prefix("next page: --cursor ").unwrap();
    let out = run(&["jobs", "--kind", "otp_sms", "--state", "queued", "--limit", "3", "--cursor", cursor]);
    assert!(out.lines().nth(1).unwrap().starts_with(&otps[3]), "{out}");

    let output = std::process::Command::new(binary("dlq-console"))
        .env_clear()
        .env("REDIS_URL", &app.redis_url)
        .env("REDIS_NAMESPACE", &app.namespace)
        .args(["jobs", "--kind", "otp_sms", "--state", "queued", "--cursor", "nope"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cursor"));

    let stats = run(&["stats"]);
    let lines: Vec<&str> = stats.lines().collect();
    let width = lines[0].len();
    assert!(lines.iter().all(|l| l.len() == width), "every line as wide as the header:\n{stats}");
    let otp = lines.iter().find(|l| l.starts_with("otp_sms")).unwrap();
    assert_eq!(column(lines[0], "queued") + "queued".len(), column(otp, "7") + 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_jobs_are_found_by_group_in_the_api_the_page_and_the_cli() {
    let app = TestApp::spawn().await;
    let console = Console::start(&app).await;
    let mut ids = Vec::new();
    for (group, priority) in [("acme", "normal"), ("acme", "high"), ("beta/1", "low")] {
        let body = json!({"kind": "webhook", "delay_seconds": 0, "group": group, "priority": priority,
            "payload": {"url": "https://hooks.example.org/in", "event": "order.created", "data": {}}});
        let r = app.post_job(&body, None).await;
        assert_eq!(r.status(), 202);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }

    let (status, groups) = console.api("/api/queues/webhook/groups", Some(VIEWER_TOKEN)).await;
    assert_eq!(status, 200, "{groups}");
    assert_eq!(
        groups,
        json!({"items": [
            {"group": "acme", "waiting": 2, "high": 1, "normal": 1, "low": 0},
            {"group": "beta/1", "waiting": 1, "high": 0, "normal": 0, "low": 1}],
            "more": false})
    );
    let (_, page) = console.api("/api/jobs?kind=webhook&state=queued&group=acme", Some(VIEWER_TOKEN)).await;
    let listed: Vec<&str> = page["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [ids[1].as_str(), ids[0].as_str()], "high first");
    let (_, page) = console.api("/api/jobs?kind=webhook&state=queued&group=beta%2F1", Some(VIEWER_TOKEN)).await;
    assert_eq!(page["items"][0]["id"], ids[2]);
    let (_, page) = console.api("/api/jobs?kind=webhook&state=queued", Some(VIEWER_TOKEN)).await;
    assert_eq!(page["items"], json!([]), "grouped jobs wait in their groups' lists");
    let (status, bad) = console.api("/api/jobs?kind=webhook&state=running&group=acme", Some(VIEWER_TOKEN)).await;
    assert_eq!((status, bad["errors"][0]["field"].as_str()), (400, Some("group")));
    let (status, _) = console.api("/api/queues/webhook/groups?limit=0", Some(VIEWER_TOKEN)).await;
    assert_eq!(status, 400);
    let (status, _) = console.api("/api/queues/webhook/groups", None).await;
    assert_eq!(status, 401);

    let viewer = console.login(VIEWER_TOKEN).await;
    let (_, html) = console.html("/jobs?kind=webhook&state=queued", &viewer).await;
    assert!(html.contains("href=\"/jobs?kind=webhook&amp;state=queued&amp;group=beta%2F1\""), "{html}");
    let (_, html) = console.html("/jobs?kind=webhook&state=queued&group=acme", &viewer).await;
    assert!(html.contains(&ids[0]) && html.contains(&ids[1]) && !html.contains(&ids[2]), "{html}");

    let output = std::process::Command::new(binary("dlq-console"))
        .env_clear()
        .env("REDIS_URL", &app.redis_url)
        .env("REDIS_NAMESPACE", &app.namespace)
        .args(["groups", "--kind", "webhook"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && out.lines().nth(1).unwrap().starts_with("acme "), "{out}");
    let output = std::process::Command::new(binary("dlq-console"))
        .env_clear()
        .env("REDIS_URL", &app.redis_url)
        .env("REDIS_NAMESPACE", &app.namespace)
        .args(["jobs", "--kind", "webhook", "--state", "queued", "--group", "beta/1"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains(&ids[2]) && !out.contains(&ids[0]), "{out}");
}
