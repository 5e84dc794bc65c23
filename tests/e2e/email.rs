//! Email through SES v2: the worker binary against moto's SES emulator (what was sent, an
//! unverified sender), and against the scripted receiver where moto falls short (template
//! content, a 5xx, throttling with a hint, a timeout); settings that stop the worker at start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::emulators::{Moto, REGION, ses_worker_env};
use crate::receiver::{Receiver, Reply};
use crate::support::{TestApp, WorkerProcess, binary, free_port};

fn ses_worker(app: &TestApp, endpoint: &str, extra: &[(&'static str, &str)]) -> WorkerProcess {
    let mut env = ses_worker_env(endpoint);
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WorkerProcess::start(&app.redis_url, &app.namespace, &env)
}

async fn enqueue(app: &TestApp, payload: Value, max_attempts: u32) -> String {
    let response =
        app.post_job(&json!({"kind": "email", "max_attempts": max_attempts, "payload": payload}), None).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn finished(app: &TestApp, id: &str) -> Value {
    app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(30)).await
}

#[tokio::test]
async fn emails_are_sent_through_ses_with_their_recipients_subject_and_body() {
    let moto = Moto::start().await;
    moto.verify_sender("sender@example.org").await;
    moto.verify_sender("billing@example.org").await;
    let app = TestApp::spawn().await;
    let _worker = ses_worker(&app, &moto.url(), &[]);

    let rich = enqueue(
        &app,
        json!({"to": ["ada@example.org", "Grace Hopper <grace@example.org>"], "cc": "cc@example.org",
               "bcc": ["bcc@example.org"], "reply_to": "support@example.org",
               "subject": "Your order 42 ✓", "text": "Plain words", "html": "<p>Rich <b>words</b></p>"}),
        8,
    )
    .await;
    let plain = enqueue(
        &app,
        json!({"to": "alan@example.org", "from": "Billing <billing@example.org>",
               "subject": "Invoice", "text": "Amount due: 0"}),
        8,
    )
    .await;

    let mut by_id = std::collections::HashMap::new();
    for id in [&rich, &plain] {
        let job = finished(&app, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1);
        let message_id = job["provider_message_id"].as_str().expect("the SES message id on the job").to_owned();
        by_id.insert(message_id, id.clone());
    }
    let sent = moto.sent().await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    for message in &sent {
        let job = &by_id[message["id"].as_str().unwrap()];
        if job == &rich {
            assert_eq!(message["source"], "Jobplane Test <sender@example.org>", "EMAIL_FROM is the default sender");
            assert_eq!(message["subject"], "Your order 42 ✓");
            assert_eq!(message["body"], "<p>Rich <b>words</b></p>");
            assert_eq!(
                message["destinations"],
                json!({"ToAddresses": ["ada@example.org", "Grace Hopper <grace@example.org>"],
                       "CcAddresses": ["cc@example.org"], "BccAddresses": ["bcc@example.org"]})
            );
        } else {
            assert_eq!(message["source"], "Billing <billing@example.org>", "the payload's from wins");
            assert_eq!(message["subject"], "Invoice");
            assert_eq!(message["body"], "Amount due: 0");
            assert_eq!(message["destinations"], json!({"ToAddresses": ["alan@example.org"]}));
        }
    }
}

#[tokio::test]
async fn an_unverified_sender_is_a_permanent_failure() {
    let moto = Moto::start().await;
    moto.verify_sender("sender@example.org").await;
    let app = TestApp::spawn().await;
    let _worker = ses_worker(&app, &moto.url(), &[]);
    let id = enqueue(
        &app,
        json!({"to": "ada@example.org", "from": "nobody@unverified.example", "subject": "Hi", "text": "x"}),
        8,
    )
    .await;

    let job = finished(&app, &id).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(job["attempts"], 1, "never retried");
    assert_eq!(
        job["last_error"],
        "SES MessageRejected (HTTP 400): Email address not verified nobody@unverified.example"
    );
    assert_eq!(app.job_fields("email", &id).await["reason"], "permanent");
    assert!(moto.sent().await.is_empty());
}

/// moto 5.2.1 implements neither `CreateEmailTemplate` nor template content in SES v2's
/// `SendEmail` (it answers 500 "Template functionality not ready"), so template content is
/// checked on the wire at the scripted receiver: the request SES would get, signed.
#[tokio::test]
async fn template_content_names_the_ses_template_and_its_data() {
    let receiver = Receiver::start(&[], Reply::with_body(200, r#"{"MessageId":"tmpl-0001"}"#)).await;
    let app = TestApp::spawn().await;
    let _worker = ses_worker(&app, &format!("http://{}", receiver.addr), &[]);
    let id = enqueue(
        &app,
        json!({"to": "ada@example.org", "template": {"name": "welcome", "data": {"name": "Ada", "items": [1, 2]}}}),
        8,
    )
    .await;

    let job = finished(&app, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["provider_message_id"], "tmpl-0001");
    let requests = receiver.deliveries();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v2/email/outbound-emails");
    let authorization = requests[0].headers["authorization"].to_str().unwrap();
    assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDJOBPLANETEST/"), "{authorization}");
    assert!(authorization.contains(&format!("/{REGION}/ses/aws4_request")), "{authorization}");
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(sent["FromEmailAddress"], "Jobplane Test <sender@example.org>");
    assert_eq!(sent["Destination"], json!({"ToAddresses": ["ada@example.org"]}));
    assert_eq!(sent["Content"]["Template"]["TemplateName"], "welcome");
    let data: Value = serde_json::from_str(sent["Content"]["Template"]["TemplateData"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"name": "Ada", "items": [1, 2]}));
    assert!(sent["Content"].get("Simple").is_none());
    assert_eq!(sent["EmailTags"], json!([{"Name": "jobplane_job_id", "Value": id}]));
}

/// A 5xx is retried by our policy alone: one request per attempt (the SDK's retries are off).
#[tokio::test]
async fn a_5xx_from_ses_is_retried_by_the_job_not_the_sdk() {
    let receiver = Receiver::start(
        &[Reply::with_body(500, r#"{"__type":"InternalFailure","message":"try later"}"#)],
        Reply::with_body(200, r#"{"MessageId":"after-500"}"#),
    )
    .await;
    let app = TestApp::spawn().await;
    let _worker = ses_worker(&app, &format!("http://{}", receiver.addr), &[]);
    let id = enqueue(&app, json!({"to": "ada@example.org", "subject": "Hi", "text": "x"}), 5).await;

    let job = finished(&app, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["provider_message_id"], "after-500");
    let requests = receiver.deliveries();
    assert_eq!(requests.len(), 2, "one request per attempt");
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(300), "our backoff, not the SDK's");
    let attempts = app.attempts("email", &id).await;
    assert_eq!(attempts[0]["error"], "SES InternalFailure (HTTP 500): try later");
    assert_eq!(attempts[1]["error"], Value::Null);
}

#[tokio::test]
async fn a_5xx_on_every_attempt_leaves_the_job_retrying_then_dead() {
    let receiver = Receiver::start(&[], Reply::status(503)).await;
    let app = TestApp::spawn().await;
    let _worker = ses_worker(&app, &format!("http://{}", receiver.addr), &[("RETRY_BASE_MS_EMAIL", "1500")]);
    let id = enqueue(&app, json!({"to": "ada@example.org", "subject": "Hi", "text": "x"}), 2).await;

    let job = app.wait_status(&id, &["retrying"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "retrying", "{job}");
    assert_eq!(job["attempts"], 1);
    assert!(job["last_error"].as_str().unwrap().contains("(HTTP 503)"), "{job}");
    let job = finished(&app, &id).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(app.job_fields("email", &id).await["reason"], "exhausted");
    assert_eq!(receiver.deliveries().len(), 2);
}

/// Throttling is retried, and a `Retry-After` from the far side is the earliest next attempt.
#[tokio::test]
async fn throttling_is_retried_no_sooner_than_its_hint() {
    let throttled = Reply {
        retry_after: Some(2),
        ..Reply::with_body(429, r#"{"__type":"TooManyRequestsException","message":"slow down"}"#)
    };
    let receiver = Receiver::start(&[throttled], Reply::with_body(200, r#"{"MessageId":"m-2"}"#)).await;
    let app = TestApp::spawn().await;
    let _worker = ses_worker(&app, &format!("http://{}", receiver.addr), &[]);
    let id = enqueue(&app, json!({"to": "ada@example.org", "subject": "Hi", "text": "x"}), 5).await;

    let job = finished(&app, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["last_error"], "SES TooManyRequestsException (HTTP 429): slow down");
    let requests = receiver.deliveries();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(2), "{:?}", requests[1].at - requests[0].at);
}

#[tokio::test]
async fn an_ses_call_past_email_timeout_ms_is_retried() {
    let slow = Reply { delay: Duration::from_secs(3), ..Reply::with_body(200, r#"{"MessageId":"too-late"}"#) };
    let receiver = Receiver::start(&[slow], Reply::with_body(200, r#"{"MessageId":"in-time"}"#)).await;
    let app = TestApp::spawn().await;
    let _worker = ses_worker(&app, &format!("http://{}", receiver.addr), &[("EMAIL_TIMEOUT_MS", "500")]);
    let id = enqueue(&app, json!({"to": "ada@example.org", "subject": "Hi", "text": "x"}), 5).await;

    let job = finished(&app, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["provider_message_id"], "in-time");
    assert_eq!(app.attempts("email", &id).await[0]["error"], "SES did not answer in time (EMAIL_TIMEOUT_MS)");
}

#[tokio::test]
async fn an_unreachable_ses_is_retried() {
    let app = TestApp::spawn().await;
    let nothing_listens = format!("http://127.0.0.1:{}", free_port());
    let _worker = ses_worker(&app, &nothing_listens, &[]);
    let id = enqueue(&app, json!({"to": "ada@example.org", "subject": "Hi", "text": "x"}), 3).await;

    let job = app.wait_status(&id, &["retrying", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "retrying", "{job}");
    let error = job["last_error"].as_str().unwrap();
    assert!(error.starts_with("SES unreachable: dispatch failure: io error:"), "{error}");
    assert!(!error.contains("ada@example.org"), "{error}");
}

#[test]
fn unusable_ses_settings_stop_the_worker_with_one_line_naming_them() {
    let endpoint = "http://127.0.0.1:9";
    let cases: [(&str, Option<&str>, &str); 5] = [
        ("EMAIL_FROM", None, "worker: EMAIL_FROM: is required"),
        ("EMAIL_FROM", Some("not an address"), "worker: EMAIL_FROM: `not an address` is not an address"),
        ("AWS_REGION", None, "worker: AWS_REGION: is required with EMAIL_PROVIDER=ses"),
        ("AWS_ACCESS_KEY_ID", None, "worker: AWS_ACCESS_KEY_ID: no usable AWS credentials"),
        ("EMAIL_PROVIDER", Some("pigeon"), "worker: EMAIL_PROVIDER: `pigeon` is not ses or log"),
    ];
    for (name, value, expected) in cases {
        let mut env = ses_worker_env(endpoint);
        env.retain(|(k, _)| *k != name && !(name == "AWS_ACCESS_KEY_ID" && *k == "AWS_SECRET_ACCESS_KEY"));
        if let Some(value) = value {
            env.push((name, value.to_owned()));
        }
        let mut worker = Command::new(binary("worker"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("WORKER_METRICS_ADDR", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while worker.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = worker.kill();
                panic!("{name}: the worker started instead of refusing its settings");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = worker.wait_with_output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(expected), "{name}: {stderr}");
    }
}
