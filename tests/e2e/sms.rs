//! OTP SMS end to end: the producer API (templates, the rate limits), the worker with each
//! provider against a local receiver playing Twilio or an SMS gateway, `sms_deliveries` in
//! PostgreSQL, and the code kept out of every log line, status and error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{OwnDatabase, SHOP_KEY, TestApp, WorkerProcess, redis_url, wait_until_ok};

const CODE: &str = "482913";
const NUMBER: &str = "+886912345678";
const MASKED: &str = "+886*******78";
const OTHER_NUMBER: &str = "+14155552671";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token-for-tests";
const FROM: &str = "+15005550006";
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";
const LOGIN: &str = "{code} is your Jobplane login code; it expires in {minutes} min.";
const TWILIO_CREATED: &str =
    r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","price":"-0.00750","price_unit":"USD"}"#;

fn otp(to: &str, template: Option<&str>) -> Value {
    let mut payload = json!({"to": to, "code": CODE, "ttl_seconds": 120});
    if let Some(template) = template {
        payload["template"] = json!(template);
    }
    json!({"kind": "otp_sms", "payload": payload})
}

/// A worker for `otp_sms` only, logging at debug level into a capture, with quick exact retries.
fn sms_worker(app: &TestApp, db: Option<&OwnDatabase>, provider: &[(&str, &str)]) -> WorkerProcess {
    let mut env = vec![
        ("WORKER_KINDS", "otp_sms"),
        ("RUST_LOG", "debug"),
        ("RETRY_JITTER", "none"),
        ("RETRY_BASE_MS_OTP_SMS", "200"),
        ("SMS_TEMPLATE_LOGIN", LOGIN),
    ];
    if let Some(db) = db {
        env.push(("DATABASE_URL", db.url.as_str()));
    }
    env.extend_from_slice(provider);
    WorkerProcess::start_captured(&app.redis_url, &app.namespace, &env)
}

fn twilio_settings(base_url: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("SMS_PROVIDER", "twilio"),
        ("TWILIO_BASE_URL", base_url),
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_FROM", FROM),
    ]
}

async fn enqueue(app: &TestApp, body: &Value, key: Option<&str>) -> String {
    let response = app.post_job(body, key).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// One row of `sms_deliveries`.
type Row = (i32, String, String, Option<String>, String, Option<String>, Option<String>);

/// The job's rows in `sms_deliveries`, once there are `n` (or after 15 s).
async fn rows(db: &OwnDatabase, job_id: &str, n: usize) -> Vec<Row> {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<Row> = sqlx::query_as(
            "SELECT attempt, to_masked, provider, provider_message_id, status, error, cost
             FROM sms_deliveries WHERE job_id = $1::uuid ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        if found.len() >= n || Instant::now() > deadline {
            pool.close().await;
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Neither the code nor the full number anywhere in `text`.
fn assert_clean(text: &str, what: &str) {
    assert!(!text.contains(CODE), "{what} holds the code:\n{text}");
    assert!(!text.contains(&NUMBER[1..]), "{what} holds the full number:\n{text}");
}

/// The status answer, the job record without its payload (the dead-letter record) and the
/// attempt records: none may show the code.
async fn assert_job_clean(app: &TestApp, id: &str) {
    let status = app.get_job(id, SHOP_KEY).await.text().await.unwrap();
    assert_clean(&status, "GET /v1/jobs/{id}");
    let mut hash = app.job_fields("otp_sms", id).await;
    let payload = hash.remove("payload");
    if hash["status"] == "succeeded" {
        assert_eq!(payload, None, "a sent OTP's record drops its payload, code and all");
    } else {
        assert!(payload.is_some_and(|p| p.contains(CODE)), "the payload keeps the code for the worker");
    }
    assert_clean(&format!("{hash:?}"), "the job hash");
    assert_clean(&format!("{:?}", app.attempts("otp_sms", id).await), "the attempt records");
}

#[tokio::test]
async fn twilio_sends_the_rendered_template_and_the_sid_lands_on_the_job() {
    let db = OwnDatabase::create().await;
    let app = TestApp::spawn_with(&redis_url(), &[("SMS_TEMPLATE_LOGIN", LOGIN)]).await;
    let twilio = Receiver::start(&[], Reply::with_body(201, TWILIO_CREATED)).await;
    let base = format!("http://{}", twilio.addr);
    let worker = sms_worker(&app, Some(&db), &twilio_settings(&base));
    let id = enqueue(&app, &otp("+886 912 345 678", Some("login")), None).await;

    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["provider_message_id"], MESSAGE_SID);
    let requests = twilio.deliveries();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{SID}/Messages.json"));
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
    assert_eq!(request.header("authorization"), format!("Basic {credentials}"));
    assert_eq!(request.header("content-type"), "application/x-www-form-urlencoded");
    let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body).into_owned().collect();
    let expected = HashMap::from([
        ("To".to_owned(), NUMBER.to_owned()),
        ("From".to_owned(), FROM.to_owned()),
        ("Body".to_owned(), format!("{CODE} is your Jobplane login code; it expires in 2 min.")),
    ]);
    assert_eq!(form, expected);

    let rows = rows(&db, &id, 1).await;
    assert_eq!(
        rows,
        [(
            1,
            MASKED.to_owned(),
            "twilio".to_owned(),
            Some(MESSAGE_SID.to_owned()),
            "sent".to_owned(),
            None,
            Some("-0.00750 USD".to_owned())
        )]
    );
    assert_job_clean(&app, &id).await;
    assert_clean(&worker.output(), "the worker's log");
    drop(worker);
    db.drop().await;
}

#[tokio::test]
async fn twilio_invalid_number_is_a_permanent_failure() {
    let db = OwnDatabase::create().await;
    let app = TestApp::spawn().await;
    let invalid = r#"{"code": 21211, "message": "The 'To' number +886912345678 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
    let twilio = Receiver::start(&[], Reply::with_body(400, invalid)).await;
    let base = format!("http://{}", twilio.addr);
    let worker = sms_worker(&app, Some(&db), &twilio_settings(&base));
    let id = enqueue(&app, &otp(NUMBER, None), None).await;

    let job = app.wait_status(&id, &["dead", "succeeded"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(job["attempts"], 1);
    let error = "Twilio HTTP 400 error 21211: The 'To' number +886*******78 is not a valid phone number. \
                 (the number cannot receive this SMS)";
    assert_eq!(job["last_error"], error);
    assert_eq!(app.job_fields("otp_sms", &id).await["reason"], "permanent");
    assert_eq!(twilio.deliveries().len(), 1);
    let form: HashMap<String, String> =
        url::form_urlencoded::parse(&twilio.deliveries()[0].body).into_owned().collect();
    assert_eq!(form["Body"], format!("Your verification code is {CODE}. It expires in 2 minutes."));
    let rows = rows(&db, &id, 1).await;
    assert_eq!(
        rows,
        [(1, MASKED.to_owned(), "twilio".to_owned(), None, "failed".to_owned(), Some(error.to_owned()), None)]
    );
    assert_job_clean(&app, &id).await;
    assert_clean(&worker.output(), "the worker's log");
    drop(worker);
    db.drop().await;
}

#[tokio::test]
async fn twilio_throttling_is_retried_after_its_retry_after() {
    let db = OwnDatabase::create().await;
    let app = TestApp::spawn().await;
    let throttled = Reply {
        retry_after: Some(2),
        ..Reply::with_body(429, r#"{"code": 20429, "message": "Too Many Requests", "status": 429}"#)
    };
    let twilio = Receiver::start(&[throttled], Reply::with_body(201, TWILIO_CREATED)).await;
    let base = format!("http://{}", twilio.addr);
    let worker = sms_worker(&app, Some(&db), &twilio_settings(&base));
    let id = enqueue(&app, &otp(NUMBER, None), None).await;

    let retrying = app.wait_status(&id, &["retrying", "succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(retrying["status"], "retrying", "{retrying}");
    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["provider_message_id"], MESSAGE_SID);
    let requests = twilio.deliveries();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_secs(2) && gap < Duration::from_millis(2600), "Retry-After 2 beats 200 ms: {gap:?}");
    let rows = rows(&db, &id, 2).await;
    let statuses: Vec<(i32, &str, Option<&str>)> = rows.iter().map(|r| (r.0, r.4.as_str(), r.5.as_deref())).collect();
    assert_eq!(statuses, [(1, "failed", Some("Twilio HTTP 429 error 20429: Too Many Requests")), (2, "sent", None)]);
    assert_clean(&worker.output(), "the worker's log");
    drop(worker);
    db.drop().await;
}

#[tokio::test]
async fn http_gateway_gets_the_json_shape_and_the_same_idempotency_key_on_a_retry() {
    let db = OwnDatabase::create().await;
    let app = TestApp::spawn().await;
    let accepted = Reply::with_body(200, r#"{"message_id": "gw-7781", "cost": "0.0042"}"#);
    let gateway = Receiver::start(&[Reply::status(503)], accepted).await;
    let url = gateway.url();
    let settings = [("SMS_PROVIDER", "http"), ("SMS_HTTP_URL", url.as_str()), ("SMS_HTTP_TOKEN", "gateway-token")];
    let worker = sms_worker(&app, Some(&db), &settings);
    let id = enqueue(&app, &otp(NUMBER, None), None).await;

    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["provider_message_id"], "gw-7781");
    let requests = gateway.deliveries();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), id);
        assert_eq!(request.header("authorization"), "Bearer gateway-token");
        assert_eq!(request.header("content-type"), "application/json");
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"id": id, "to": NUMBER, "body": format!("Your verification code is {CODE}. It expires in 2 minutes.")})
        );
    }
    let rows = rows(&db, &id, 2).await;
    assert_eq!(
        rows,
        [
            (
                1,
                MASKED.to_owned(),
                "http".to_owned(),
                None,
                "failed".to_owned(),
                Some("SMS gateway HTTP 503: receiver says so".to_owned()),
                None
            ),
            (
                2,
                MASKED.to_owned(),
                "http".to_owned(),
                Some("gw-7781".to_owned()),
                "sent".to_owned(),
                None,
                Some("0.0042".to_owned())
            ),
        ]
    );
    assert_clean(&worker.output(), "the worker's log");
    drop(worker);
    db.drop().await;
}

#[tokio::test]
async fn a_gateway_that_echoes_the_request_cannot_leak_the_code() {
    let app = TestApp::spawn().await;
    let gateway = Receiver::start(&[], Reply { echo: true, ..Reply::status(422) }).await;
    let url = gateway.url();
    let worker = sms_worker(&app, None, &[("SMS_PROVIDER", "http"), ("SMS_HTTP_URL", url.as_str())]);
    let id = enqueue(&app, &otp(NUMBER, None), None).await;

    let job = app.wait_status(&id, &["dead", "succeeded"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(app.job_fields("otp_sms", &id).await["reason"], "permanent");
    let echoed = gateway.deliveries()[0].clone();
    assert!(String::from_utf8_lossy(&echoed.body).contains(CODE), "the gateway did get the code");
    let expected = format!(
        r#"SMS gateway HTTP 422: {{"body":"Your verification code is [code]. It expires in 2 minutes.","id":"{id}","to":"{MASKED}"}}"#
    );
    assert_eq!(job["last_error"], expected);
    assert_job_clean(&app, &id).await;
    // The worker logged at debug level, retried the write of its record to an unreachable
    // PostgreSQL, and still wrote neither the code nor the number.
    let output = worker.output();
    assert!(output.contains(&id), "the capture holds the worker's log lines:\n{output}");
    assert_clean(&output, "the worker's log");
}

#[tokio::test]
async fn the_log_provider_writes_the_text_with_code_and_number_masked() {
    let app = TestApp::spawn_with(&redis_url(), &[("SMS_TEMPLATE_LOGIN", LOGIN)]).await;
    let worker = sms_worker(&app, None, &[("SMS_PROVIDER", "log"), ("RUST_LOG", "info")]);
    let id = enqueue(&app, &otp(NUMBER, Some("login")), None).await;
    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let output = worker.output();
    let line = output.lines().find(|l| l.contains("sms (log provider)")).unwrap_or_else(|| panic!("{output}"));
    assert!(
        line.contains("[code] is your Jobplane login code; it expires in 2 min.") && line.contains(MASKED),
        "{line}"
    );
    assert_clean(&output, "the worker's log");
}

#[tokio::test]
async fn an_unreachable_database_neither_fails_nor_repeats_an_sms() {
    let app = TestApp::spawn().await;
    let gateway = Receiver::start(&[], Reply::OK).await;
    let url = gateway.url();
    // No database given: the worker's DATABASE_URL points at a closed port.
    let worker = sms_worker(&app, None, &[("SMS_PROVIDER", "http"), ("SMS_HTTP_URL", url.as_str())]);
    let id = enqueue(&app, &otp(NUMBER, None), None).await;
    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !worker.output().contains("sms_deliveries: write failed; retrying") {
        assert!(Instant::now() < deadline, "the record was never tried:\n{}", worker.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gateway.deliveries().len(), 1, "sent once, whatever became of its record");
}

#[tokio::test]
async fn a_retried_otp_whose_ttl_passes_between_attempts_expires_unsent() {
    let app = TestApp::spawn().await;
    let gateway = Receiver::start(&[], Reply { retry_after: Some(6), ..Reply::status(503) }).await;
    let url = gateway.url();
    let worker = sms_worker(&app, None, &[("SMS_PROVIDER", "http"), ("SMS_HTTP_URL", url.as_str())]);
    wait_until_ok(&format!("http://{}/healthz", worker.metrics_addr)).await;
    let store = jobs::Store::new(
        jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(2)).unwrap(),
        jobs::Keys::new(&app.namespace),
        Duration::from_hours(24),
        Duration::from_secs(2),
    );
    // 5 s of its 30 s TTL left: the first attempt goes out, the retry 6 s later is too late.
    let job = jobs::NewJob {
        id: uuid::Uuid::now_v7(),
        kind: jobs::Kind::OtpSms,
        payload: format!(r#"{{"to":"{NUMBER}","code":"{CODE}","ttl_seconds":30}}"#),
        created_at: chrono::Utc::now() - chrono::Duration::seconds(25),
        run_at: None,
        max_attempts: 5,
        producer: "shop".into(),
        idempotency: None,
        traceparent: None,
        priority: jobs::Priority::Normal,
        group: None,
    };
    store.enqueue(std::slice::from_ref(&job)).await.unwrap();
    let id = job.id.to_string();

    let status = app.wait_status(&id, &["expired", "succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(status["status"], "expired", "{status}");
    assert_eq!(status["attempts"], 2);
    assert_eq!(status["last_error"], "not delivered within its ttl of 30 s");
    assert_eq!(app.job_fields("otp_sms", &id).await["reason"], "expired");
    let errors: Vec<Value> = app.attempts("otp_sms", &id).await.into_iter().map(|a| a["error"].clone()).collect();
    assert_eq!(
        errors,
        [json!("SMS gateway HTTP 503: receiver says so"), json!("not delivered within its ttl of 30 s")]
    );
    assert_eq!(gateway.deliveries().len(), 1, "the retry past the TTL was never sent");
}

#[tokio::test]
async fn an_unknown_template_is_refused_at_enqueue() {
    let app = TestApp::spawn_with(&redis_url(), &[("SMS_TEMPLATE_LOGIN", LOGIN)]).await;
    let response = app.post_job(&otp(NUMBER, Some("signup")), None).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/payload/template", "{problem}");
    assert_eq!(problem["errors"][0]["message"], "unknown template `signup`; this deployment has: default, login");
    assert_eq!(app.post_job(&otp(NUMBER, Some("login")), None).await.status(), 202);
    assert_eq!(app.post_job(&otp(NUMBER, Some("default")), None).await.status(), 202);

    let batch = json!({"jobs": [otp(OTHER_NUMBER, Some("login")), otp(OTHER_NUMBER, Some("signup"))]});
    let response = app.http.post(app.url("/v1/jobs/batch")).bearer_auth(SHOP_KEY).json(&batch).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&Value> = problem["errors"].as_array().unwrap().iter().map(|e| &e["field"]).collect();
    assert_eq!(fields, ["/jobs/1/payload/template"]);
    assert_eq!(app.ready("otp_sms").await.len(), 2, "the batch wrote nothing");
}

/// The number of OTP SMS counted against `number` in the current window.
async fn counted(app: &TestApp, number: &str) -> usize {
    let key = jobs::Keys::new(&app.namespace).queue(jobs::Kind::OtpSms).rate_per_number(number);
    redis::cmd("ZCARD").arg(key).query_async(&mut app.redis().await).await.unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_sixth_otp_to_one_number_within_the_hour_is_429_and_replays_do_not_count() {
    let app = TestApp::spawn().await;
    let first = app.post_job(&otp(NUMBER, None), Some("otp-first")).await;
    assert_eq!(first.status(), 202);
    let first_id = first.json::<Value>().await.unwrap()["id"].clone();
    // A replay is the same job: it neither counts nor is refused.
    let replay = app.post_job(&otp(NUMBER, None), Some("otp-first")).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(counted(&app, NUMBER).await, 1);
    for _ in 0..4 {
        assert_eq!(app.post_job(&otp(NUMBER, None), None).await.status(), 202);
    }
    assert_eq!(counted(&app, NUMBER).await, 5);

    let sixth = app.post_job(&otp(NUMBER, None), None).await;
    assert_eq!(sixth.status(), 429);
    assert_eq!(sixth.headers()["content-type"], "application/problem+json");
    let wait = retry_after(&sixth);
    assert!(
        (3590..=3600).contains(&wait),
        "Retry-After {wait}: the first of the five leaves the window in about an hour"
    );
    let problem: Value = sixth.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["type"], "/problems/rate-limited");
    assert_eq!(problem["limit"], "otp_per_number");
    assert_eq!(problem["errors"][0]["field"], "/payload/to");
    assert_eq!(problem["errors"][0]["message"], "this number was sent 5 OTP SMS within 3600 s, the most allowed");
    assert_clean(&problem.to_string(), "the 429");

    assert_eq!(app.post_job(&otp(OTHER_NUMBER, None), None).await.status(), 202, "another number still passes");
    let replay = app.post_job(&otp(NUMBER, None), Some("otp-first")).await;
    assert_eq!(replay.status(), 200, "a replay of an accepted OTP is still answered");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], first_id);
    assert_eq!(counted(&app, NUMBER).await, 5);
    assert_eq!(app.ready("otp_sms").await.len(), 6, "the refused one was not written");
}

#[tokio::test]
async fn the_per_key_limit_refuses_a_whole_batch_and_frees_a_slot_after_retry_after() {
    let limits = [("OTP_RATE_LIMIT_PER_KEY", "3"), ("OTP_RATE_WINDOW_SECONDS", "3")];
    let app = TestApp::spawn_with(&redis_url(), &limits).await;
    let post_batch = |jobs: Vec<Value>| {
        app.http.post(app.url("/v1/jobs/batch")).bearer_auth(SHOP_KEY).json(&json!({ "jobs": jobs })).send()
    };
    let numbers = ["+886912345671", "+886912345672", "+886912345673", "+886912345674"];
    assert_eq!(post_batch(vec![otp(numbers[0], None), otp(numbers[1], None)]).await.unwrap().status(), 202);

    // Two more would make four: refused whole, the webhook of another kind included.
    let webhook = json!({"kind": "webhook", "payload": {"url": "https://example.org/h", "event": "a.b"}});
    let response = post_batch(vec![otp(numbers[2], None), webhook, otp(numbers[3], None)]).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!((1..=3).contains(&retry_after(&response)));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["limit"], "otp_per_key");
    let fields: Vec<&Value> = problem["errors"].as_array().unwrap().iter().map(|e| &e["field"]).collect();
    assert_eq!(fields, ["/jobs/2"], "{problem}");
    assert_eq!(app.ready("otp_sms").await.len(), 2);
    assert!(app.ready("webhook").await.is_empty(), "nothing of the batch was written");

    assert_eq!(app.post_job(&otp(numbers[2], None), None).await.status(), 202);
    let refused = app.post_job(&otp(numbers[3], None), None).await;
    assert_eq!(refused.status(), 429);
    let wait = retry_after(&refused);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Authorization", "{problem}");
    // Retry-After is honest: once it has passed, the window has slid and the job goes through.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(app.post_job(&otp(numbers[3], None), None).await.status(), 202);
}

#[test]
fn missing_or_bad_sms_settings_stop_the_processes_with_one_line_naming_the_variable() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        ("worker", &[("SMS_PROVIDER", "twilio")], "worker: TWILIO_ACCOUNT_SID: is required"),
        (
            "worker",
            &[("SMS_PROVIDER", "twilio"), ("TWILIO_ACCOUNT_SID", SID), ("TWILIO_AUTH_TOKEN", TOKEN)],
            "worker: TWILIO_FROM: is required",
        ),
        (
            "worker",
            &[("SMS_PROVIDER", "twilio"), ("TWILIO_ACCOUNT_SID", "AC1"), ("TWILIO_AUTH_TOKEN", TOKEN)],
            "worker: TWILIO_ACCOUNT_SID: must be AC followed by 32 hex digits",
        ),
        ("worker", &[("SMS_PROVIDER", "http")], "worker: SMS_HTTP_URL: is required"),
        ("worker", &[("SMS_PROVIDER", "http"), ("SMS_HTTP_URL", "sms.example.org")], "worker: SMS_HTTP_URL: "),
        ("worker", &[("SMS_TEMPLATE_LOGIN", "Welcome!")], "worker: SMS_TEMPLATE_LOGIN: must contain {code}"),
        (
            "producer-api",
            &[("PRODUCER_API_KEYS", "a:0123456789abcdef"), ("SMS_TEMPLATE_LOGIN", "{cod}")],
            "producer-api: SMS_TEMPLATE_LOGIN: unknown placeholder {cod}",
        ),
    ];
    for (name, env, expected) in cases {
        crate::support::stops_at_start(
            name,
            &[("WORKER_KINDS", "otp_sms"), ("WORKER_METRICS_ADDR", "0")],
            env,
            expected,
        );
    }
}
