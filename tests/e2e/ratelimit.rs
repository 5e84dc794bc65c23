//! Rate limits per kind through the real binaries: the console's `PUT /api/queues/{kind}/rate-limit`
//! (validation, auth, audit, `GET /api/queues`), a bad `RATE_LIMIT_<KIND>` stopping a worker,
//! and two workers sharing one limit while delivering to the test receiver.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN};
use crate::pause::{audit_rows, call, cli, console_binary, metric_line};
use crate::receiver::{Receiver, Reply};
use crate::support::{TestApp, WorkerProcess};

async fn put(base: &str, token: Option<&str>, kind: &str, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().put(format!("{base}/api/queues/{kind}/rate-limit")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn rate_of(base: &str, kind: &str) -> Value {
    let (status, body) = call(reqwest::Method::GET, format!("{base}/api/queues"), VIEWER_TOKEN).await;
    assert_eq!(status, 200);
    body["queues"].as_array().unwrap().iter().find(|q| q["kind"] == kind).unwrap()["rate_limit"].clone()
}

/// The field a `422` names.
fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_sets_and_removes_a_rate_limit_checked_and_audited() {
    let app = TestApp::spawn().await;
    let (base, _console) = console_binary(&app).await;
    assert_eq!(rate_of(&base, "email").await["per_second"], Value::Null);

    let (status, view) = put(&base, Some(ADMIN_TOKEN), "email", &json!({"per_second": 14, "burst": 28})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (&view["kind"], &view["rate_limit"]["per_second"], &view["rate_limit"]["burst"]),
        (&json!("email"), &json!(14), &json!(28))
    );
    let rate = rate_of(&base, "email").await;
    assert_eq!(
        (&rate["source"], &rate["set_by"], &rate["throttled_until"]),
        (&json!("console"), &json!("admin"), &Value::Null)
    );
    // A burst left out is one second's worth.
    let (_, view) = put(&base, Some(ADMIN_TOKEN), "email", &json!({"per_second": 5})).await;
    assert_eq!(view["rate_limit"]["burst"], 5);

    for (body, named) in [
        (json!({"per_second": 0}), "/per_second"),
        (json!({"per_second": 100_001}), "/per_second"),
        (json!({"per_second": "fast"}), "/per_second"),
        (json!({"per_second": 2.5}), "/per_second"),
        (json!({"per_second": 5, "burst": 0}), "/burst"),
        (json!({"per_second": 5, "burst": 1_000_001}), "/burst"),
        (json!({"per_second": null, "burst": 3}), "/burst"),
        (json!({"per_second": 5, "rate": 3}), "/rate"),
    ] {
        let (status, problem) = put(&base, Some(ADMIN_TOKEN), "email", &body).await;
        assert_eq!((status, field(&problem)), (422, named), "{body}: {problem}");
    }
    assert_eq!(put(&base, None, "email", &json!({"per_second": 1})).await.0, 401);
    assert_eq!(put(&base, Some(VIEWER_TOKEN), "email", &json!({"per_second": 1})).await.0, 403);
    assert_eq!(put(&base, Some(ADMIN_TOKEN), "fax", &json!({"per_second": 1})).await.0, 404);
    assert_eq!(rate_of(&base, "email").await["per_second"], 5, "refused changes changed nothing");

    // `null` removes the limit.
    let (status, view) = put(&base, Some(ADMIN_TOKEN), "email", &json!({"per_second": null, "burst": null})).await;
    assert_eq!(
        (status, &view["rate_limit"]["per_second"], &view["rate_limit"]["source"]),
        (200, &Value::Null, &json!("console"))
    );

    let row = ("console:admin".to_owned(), "queue.rate_limit".to_owned(), "queue".to_owned(), "email".to_owned());
    assert_eq!(audit_rows(&app).await, [row.clone(), row.clone(), row]);
}

#[tokio::test]
async fn a_bad_rate_limit_setting_stops_the_worker_with_one_line_naming_it() {
    let app = TestApp::spawn().await;
    for (name, value) in
        [("RATE_LIMIT_WEBHOOK", "fast"), ("RATE_LIMIT_WEBHOOK", "20/s:0"), ("RATE_LIMIT_WEBHOKS", "20/s")]
    {
        let mut worker = WorkerProcess::start_captured(&app.redis_url, &app.namespace, &[(name, value)]);
        assert_eq!(worker.wait(Duration::from_secs(10)), Some(2), "{name}={value}");
        let output = worker.output();
        assert_eq!(output.trim().lines().count(), 1, "{output}");
        assert!(output.starts_with(&format!("worker: {name}: ")), "{output}");
    }
}

/// The most of `times` (ms) within any one second.
fn busiest_second(times: &[i64]) -> usize {
    let mut at = times.to_vec();
    at.sort_unstable();
    (0..at.len()).map(|i| at[i..].iter().take_while(|t| **t - at[i] < 1000).count()).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_limit_of_20_a_second() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let setting = [("RATE_LIMIT_WEBHOOK", "20/s"), ("WORKER_CONCURRENCY_WEBHOOK", "50")];
    let workers: Vec<WorkerProcess> =
        (0..2).map(|_| WorkerProcess::start(&app.redis_url, &app.namespace, &setting)).collect();
    let (base, _console) = console_binary(&app).await;
    // Both workers wrote their setting before any job exists: a full bucket of 20 to start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rate_of(&base, "webhook").await["per_second"] != 20 {
        assert!(Instant::now() < deadline, "the setting never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rate_of(&base, "webhook").await["source"], "setting");

    let ids = app.enqueue_webhooks(&receiver.url(), 60, 1).await;
    assert_eq!(ids.len(), 60);
    let got = receiver.wait_for(60, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 60, "every job delivered");
    // What the bucket governs: when each job was leased (its record's start, Redis's clock).
    // At the receiver, network jitter can bunch a few more into one second: printed, not asserted.
    let mut started = Vec::new();
    for id in &ids {
        started.push(app.record("webhook", id).await.unwrap().started_at.unwrap());
    }
    let first = got.iter().map(|d| d.at).min().unwrap();
    let arrivals: Vec<i64> =
        got.iter().map(|d| i64::try_from(d.at.duration_since(first).as_millis()).unwrap()).collect();
    let (busiest, at_receiver) = (busiest_second(&started), busiest_second(&arrivals));
    let span = started.iter().max().unwrap() - started.iter().min().unwrap();
    eprintln!(
        "60 jobs at 20/s (burst 20) over 2 workers: busiest second {busiest} leased, {at_receiver} at the receiver; first to last lease {span} ms"
    );
    assert!(busiest <= 40, "at most rate + burst leased in any one second: {busiest}");
    assert!(span >= 1000, "the 40 jobs beyond the burst need two seconds of tokens: {span} ms");

    // The gauge of the rate in force, sampled every 5 s.
    let deadline = Instant::now() + Duration::from_secs(7);
    let url = format!("http://{}/metrics", workers[0].metrics_addr);
    loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let line = metric_line(&text, "jobplane_rate_limit_per_second{kind=\"webhook\"}");
        if line == Some("jobplane_rate_limit_per_second{kind=\"webhook\"} 20") {
            break;
        }
        assert!(Instant::now() < deadline, "{line:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An OTP SMS to `to`, queued through the API; its id.
async fn otp(app: &TestApp, to: &str) -> String {
    let body = json!({"kind": "otp_sms", "payload": {"to": to, "code": "482913", "ttl_seconds": 120}});
    let response = app.post_job(&body, None).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_429_holds_the_whole_kind_for_its_retry_after_and_halves_the_rate() {
    let app = TestApp::spawn().await;
    let throttled = Reply { retry_after: Some(2), ..Reply::status(429) };
    let gateway = Receiver::start(&[throttled], Reply::with_body(200, r#"{"message_id": "gw-1"}"#)).await;
    let url = gateway.url();
    let settings = [
        ("WORKER_KINDS", "otp_sms"),
        ("SMS_PROVIDER", "http"),
        ("SMS_HTTP_URL", url.as_str()),
        ("RATE_LIMIT_OTP_SMS", "10/s"),
    ];
    let workers: Vec<WorkerProcess> =
        (0..2).map(|_| WorkerProcess::start(&app.redis_url, &app.namespace, &settings)).collect();
    let bucket = app.key("{otp_sms}:bucket");
    let field = |name: &'static str| {
        let bucket = bucket.clone();
        let app = &app;
        async move {
            let value: Option<i64> =
                redis::cmd("HGET").arg(&bucket).arg(name).query_async(&mut app.redis().await).await.unwrap();
            value
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while field("ps").await != Some(10) {
        assert!(Instant::now() < deadline, "the setting never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The first job meets the 429: the worker that ran it holds the kind until its Retry-After.
    let first = otp(&app, "+886912345601").await;
    let held = loop {
        if let Some(until) = field("un").await {
            break until;
        }
        assert!(Instant::now() < deadline, "no throttle recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(field("e0").await, Some(5), "the rate halved");
    // Jobs queued now, on either worker, start only once the hold is over.
    let mut later = Vec::new();
    for n in 2..=6 {
        later.push(otp(&app, &format!("+8869123456{n:02}")).await);
    }
    for id in later.iter().chain([&first]) {
        let job = app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(20)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    for id in &later {
        let started = app.record("otp_sms", id).await.unwrap().started_at.unwrap();
        assert!(started >= held, "{id} started {} ms before the hold ended", held - started);
    }
    let record = app.record("otp_sms", &first).await.unwrap();
    assert_eq!(record.attempts, 2, "the throttled attempt counts");
    assert!(record.started_at.unwrap() >= held);
    assert_eq!(gateway.deliveries().len(), 7);

    // One throttle event, counted by the worker that met it.
    let mut events = 0.0;
    for worker in &workers {
        let text = reqwest::get(format!("http://{}/metrics", worker.metrics_addr)).await.unwrap().text().await.unwrap();
        if let Some(line) = metric_line(&text, "jobplane_throttle_events_total{kind=\"otp_sms\"}") {
            events += line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        }
    }
    assert!((events - 1.0).abs() < f64::EPSILON, "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_form_and_the_cli_set_the_limit() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    let login = console.http.post(format!("{}/login", console.base)).form(&[("token", ADMIN_TOKEN)]).send().await;
    let cookie = login.unwrap().headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let overview = || async {
        let page = console.http.get(format!("{}/", console.base)).header("cookie", &cookie).send().await.unwrap();
        page.text().await.unwrap()
    };
    let page = overview().await;
    assert!(page.contains("id=\"rate-email\""), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let post = |fields: [(&'static str, String); 3]| {
        let url = format!("{}/queues/email/rate-limit", console.base);
        console.http.post(url).header("cookie", &cookie).form(&fields).send()
    };
    let form =
        |ps: &str, burst: &str| [("csrf", csrf.clone()), ("per_second", ps.to_owned()), ("burst", burst.to_owned())];
    assert_eq!(post(form("7", "")).await.unwrap().status(), 303);
    assert!(overview().await.contains("7/s, burst 7"));
    let refused = post(form("0", "")).await.unwrap();
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().contains("/per_second"));
    assert_eq!(post(form("", "")).await.unwrap().status(), 303);
    let view: Value = console.get("/api/queues", VIEWER_TOKEN).await.json().await.unwrap();
    let email = view["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "email").unwrap();
    assert_eq!((&email["rate_limit"]["per_second"], &email["rate_limit"]["source"]), (&Value::Null, &json!("console")));

    let (code, out, err) = cli(&app, &["rate-limit", "email", "50/s:100"]);
    assert_eq!((code, out.trim()), (0, "email: 50/s, burst 100; set by ops (console)"), "{err}");
    let (code, out, _) = cli(&app, &["rate-limit", "email"]);
    assert_eq!((code, out.trim()), (0, "email: 50/s, burst 100; set by ops (console)"));
    let (code, out, _) = cli(&app, &["rate-limit", "email", "off"]);
    assert_eq!((code, out.trim()), (0, "email: no rate limit; set by ops (console)"));
    let (code, _, err) = cli(&app, &["rate-limit", "email", "5/m"]);
    assert_eq!(code, 2);
    assert!(err.contains("`5/m` is not <n>/s"), "{err}");
}
