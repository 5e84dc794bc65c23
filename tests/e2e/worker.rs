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
    let hash = app.job_hash("webhook", &id).await;
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
    assert_eq!(app.job_hash("webhook", &id).await["reason"], "permanent");
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
