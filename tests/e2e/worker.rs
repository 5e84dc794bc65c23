//! The worker runtime against a local webhook receiver: retries governed by our policy,
//! dead letters, permanent failures, `Retry-After`.

use std::time::Duration;

use serde_json::Value;

use crate::receiver::{Receiver, Reply};
use crate::support::{TestApp, WorkerProcess};

/// Exact exponential backoff (no jitter) from a 300 ms base, so gaps can be measured.
const EXACT_BACKOFF: [(&str, &str); 3] =
    [("RETRY_JITTER", "none"), ("RETRY_BASE_MS_WEBHOOK", "300"), ("RETRY_CAP_MS_WEBHOOK", "60000")];

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_three_attempts_with_growing_gaps() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[Reply::status(503), Reply::status(503)], Reply::OK).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &EXACT_BACKOFF);
    let id = app.enqueue_webhooks(&receiver.url(), 1, 5).await.remove(0);

    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["last_error"], "HTTP 503: receiver says so");
    assert!(job["finished_at"].is_string());
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 3);
    // The same webhook-id on every attempt, so receivers can deduplicate.
    assert!(deliveries.iter().all(|d| d.webhook_id() == id));
    // Our policy governs: the waits are 300 ms then 600 ms (plus fetch latency), not a constant.
    let gap1 = deliveries[1].at - deliveries[0].at;
    let gap2 = deliveries[2].at - deliveries[1].at;
    assert!(gap1 >= Duration::from_millis(300) && gap1 < Duration::from_millis(550), "first gap {gap1:?}");
    assert!(gap2 >= Duration::from_millis(600) && gap2 < Duration::from_millis(850), "second gap {gap2:?}");

    let attempts = app.attempts("webhook", &id).await;
    let errors: Vec<&Value> = attempts.iter().map(|a| &a["error"]).collect();
    assert_eq!(
        errors,
        [&Value::from("HTTP 503: receiver says so"), &Value::from("HTTP 503: receiver says so"), &Value::Null]
    );
    assert!(attempts.iter().all(|a| a["worker"].as_str().is_some_and(|w| !w.is_empty())));
    // A finished job expires after the retention window; nothing is left in the queue's sets.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(app.key(&format!("{{webhook}}:job:{id}")))
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert!(ttl > 86_000_000, "ttl {ttl}");
    assert_eq!(app.depths("webhook").await, (0, 0, 0, 0));
}

#[tokio::test]
async fn a_receiver_that_always_fails_makes_a_dead_letter_after_max_attempts() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::status(500)).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &EXACT_BACKOFF);
    let key = "always-fails";
    let body =
        serde_json::json!({"kind": "webhook", "max_attempts": 3, "payload": {"url": receiver.url(), "event": "e"}});
    let id = app.post_job(&body, Some(key)).await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let job = app.wait_status(&id, &["dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(job["attempts"], 3);
    assert_eq!(receiver.deliveries().len(), 3);
    assert_eq!(app.attempts("webhook", &id).await.len(), 3);
    let hash = app.job_fields("webhook", &id).await;
    assert_eq!(hash["reason"], "exhausted");
    assert!(hash.contains_key("dead_at"));
    assert_eq!(app.depths("webhook").await, (0, 0, 0, 1));
    // The dead job's idempotency key no longer blocks: the same request makes a new job.
    let again = app.post_job(&body, Some(key)).await;
    assert_eq!(again.status(), 202);
}

#[tokio::test]
async fn a_400_is_permanent_after_one_attempt() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::status(400)).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &EXACT_BACKOFF);
    let id = app.enqueue_webhooks(&receiver.url(), 1, 10).await.remove(0);
    let job = app.wait_status(&id, &["dead"], Duration::from_secs(20)).await;
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["last_error"], "HTTP 400: receiver says so");
    assert_eq!(app.job_fields("webhook", &id).await["reason"], "permanent");
    assert_eq!(receiver.deliveries().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[Reply { retry_after: Some(3), ..Reply::status(429) }], Reply::OK).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &EXACT_BACKOFF);
    let id = app.enqueue_webhooks(&receiver.url(), 1, 5).await.remove(0);
    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 2);
    let gap = deliveries[1].at - deliveries[0].at;
    assert!(
        gap >= Duration::from_secs(3) && gap < Duration::from_millis(3500),
        "gap {gap:?}: Retry-After 3 beats a 300 ms backoff"
    );
}

#[tokio::test]
async fn dead_letters_beyond_the_cap_are_evicted_and_counted() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::status(400)).await;
    let worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[("DEAD_LETTER_CAP", "2")]);
    let ids = app.enqueue_webhooks(&receiver.url(), 5, 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while receiver.deliveries().len() < 5 || app.depths("webhook").await.2 > 0 {
        assert!(std::time::Instant::now() < deadline, "the jobs did not all die");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The two newest letters stay; the three oldest were evicted: their hashes are gone too.
    assert_eq!(app.depths("webhook").await, (0, 0, 0, 2));
    let kept: Vec<bool> = futures::future::join_all(ids.iter().map(|id| app.job_fields("webhook", id)))
        .await
        .iter()
        .map(|h| !h.is_empty())
        .collect();
    assert_eq!(kept.iter().filter(|k| **k).count(), 2, "{kept:?}");
    let metrics = reqwest::get(format!("http://{}/metrics", worker.metrics_addr)).await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|l| l.starts_with("jobplane_dead_letters_evicted_total{")).expect(&metrics);
    assert!(line.contains("kind=\"webhook\"") && line.ends_with(" 3"), "{line}");
}

#[tokio::test]
async fn an_otp_past_its_ttl_is_never_sent_and_ends_expired() {
    let app = TestApp::spawn().await;
    let store = jobs::Store::new(
        jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(2)).unwrap(),
        jobs::Keys::new(&app.namespace),
        Duration::from_hours(24),
        Duration::from_secs(2),
    );
    // Enqueued a minute ago with a 30 s TTL: too late by the time any worker sees it.
    let job = jobs::NewJob {
        id: uuid::Uuid::now_v7(),
        kind: jobs::Kind::OtpSms,
        payload: r#"{"to":"+886912345678","code":"482913","ttl_seconds":30}"#.into(),
        created_at: chrono::Utc::now() - chrono::Duration::seconds(60),
        run_at: None,
        max_attempts: 5,
        producer: "shop".into(),
        idempotency: None,
        traceparent: None,
        priority: jobs::Priority::Normal,
        group: None,
    };
    store.enqueue(std::slice::from_ref(&job)).await.unwrap();
    let _worker =
        WorkerProcess::start(&app.redis_url, &app.namespace, &[("WORKER_KINDS", "otp_sms"), ("SMS_PROVIDER", "log")]);
    let id = job.id.to_string();
    let status = app.wait_status(&id, &["expired", "succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(status["status"], "expired", "{status}");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["last_error"], "not delivered within its ttl of 30 s");
    assert_eq!(app.job_fields("otp_sms", &id).await["reason"], "expired");
    assert_eq!(app.depths("otp_sms").await, (0, 0, 0, 1));
}

#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_permanently() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[], Reply::OK).await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false")]);
    let port = receiver.addr.port();
    // An IP literal, and a name that resolves to loopback (checked after resolution).
    for url in [format!("http://127.0.0.1:{port}/hook"), format!("http://localhost:{port}/hook")] {
        let id = app.enqueue_webhooks(&url, 1, 5).await.remove(0);
        let job = app.wait_status(&id, &["dead", "succeeded"], Duration::from_secs(20)).await;
        assert_eq!(job["status"], "dead", "{url}: {job}");
        assert_eq!(job["attempts"], 1);
        let error = job["last_error"].as_str().unwrap();
        assert!(error.contains("is not a public address"), "{error}");
        assert_eq!(app.job_fields("webhook", &id).await["reason"], "permanent");
    }
    assert!(receiver.deliveries().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn an_attempt_past_the_job_timeout_fails_and_is_retried() {
    let app = TestApp::spawn().await;
    let slow = Reply { delay: Duration::from_secs(3), ..Reply::OK };
    let receiver = Receiver::start(&[slow], Reply::OK).await;
    let mut settings = EXACT_BACKOFF.to_vec();
    settings.push(("WORKER_JOB_TIMEOUT_SECONDS", "1"));
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &settings);
    let id = app.enqueue_webhooks(&receiver.url(), 1, 5).await.remove(0);
    let job = app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["last_error"], "timed out after 1 s");
}
