//! A handler that panics, in an apalis worker built like the `worker` binary's (`workers::start`)
//! over the real Redis backend: the panic is one failed attempt, retried by our policy or
//! buried as `panicked` on the last attempt, and the worker keeps running.

use std::time::Duration;

use apalis::prelude::*;
use apalis_core::error::BoxDynError;
use apalis_core::worker::context::WorkerContext;
use futures::StreamExt;
use jobs::queue::{Queue, Retention};
use jobs::retry::Backoff;
use jobs::{Keys, Kind};
use serde_json::Value;
use workers::ack::Acker;
use workers::backend::{FetchSettings, Job, RedisBackend};
use workers::leases::Inflight;

use crate::support::TestApp;

/// Panics as the job's `event` says: `panic.first` on attempt 1 only, `panic.always` every time.
async fn moody(job: Job) -> Result<workers::outcome::Delivered, BoxDynError> {
    let payload: Value = serde_json::from_str(&job.payload)?;
    let job = job.lease;
    match payload["event"].as_str() {
        Some("panic.first") if job.attempt == 1 => panic!("first attempt of {} refuses", job.id),
        Some("panic.always") => panic!("attempt {} of {} refuses", job.attempt, job.id),
        _ => Ok(workers::outcome::Delivered::done()),
    }
}

async fn enqueue(app: &TestApp, event: &str, max_attempts: u32) -> String {
    let body = serde_json::json!({"kind": "webhook", "max_attempts": max_attempts,
        "payload": {"url": "http://127.0.0.1:9/never-called", "event": event}});
    let response = app.post_job(&body, None).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn finished(app: &TestApp, id: &str) -> Value {
    app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(15)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_attempt_and_the_worker_keeps_running() {
    let app = TestApp::spawn().await;
    let conn = jobs::redis_conn::connect_url(&app.redis_url, Duration::from_secs(5)).unwrap();
    let queue = Queue::new(conn, &Keys::new(&app.namespace), Kind::Webhook, "panics-test");
    let inflight = Inflight::default();
    // 100 ms between attempts, exactly.
    let backoff = Backoff { base: Duration::from_millis(100), cap: Duration::from_millis(100), jitter: false };
    let acker = Acker::spawn(queue.clone(), backoff, Retention::default(), inflight.clone());
    let settings = FetchSettings {
        batch: 10,
        concurrency: 2,
        lease: Duration::from_secs(30),
        promote_limit: 100,
        idle_min: Duration::from_millis(5),
        idle_max: Duration::from_millis(50),
        paused_recheck: Duration::from_millis(250),
    };
    let backend = RedisBackend::new(queue, settings, inflight.clone(), acker, None);
    let context = WorkerContext::new("panics-test:webhook");
    let worker = WorkerBuilder::new(&context).backend(backend).concurrency(2).catch_panic().build(moody);

    // apalis's worker future is not `Send`: drive it in this task, next to the test's steps.
    let run = async {
        let mut stream = std::pin::pin!(worker.stream());
        let mut errors = Vec::new();
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                errors.push(e.to_string());
            }
        }
        errors
    };
    let steps = async {
        // (a) A panic on attempt 1, then success on attempt 2.
        let once = enqueue(&app, "panic.first", 3).await;
        // (b) Panics every time: dead after its 2 attempts, with the reason `panicked`.
        let always = enqueue(&app, "panic.always", 2).await;

        let job = finished(&app, &once).await;
        assert_eq!((&job["status"], &job["attempts"]), (&"succeeded".into(), &2.into()), "{job}");
        let records = app.attempts("webhook", &once).await;
        assert_eq!(records.len(), 2, "{records:?}");
        let first_error = records[0]["error"].as_str().unwrap_or_default();
        assert!(first_error.starts_with("panicked"), "first attempt's error: {first_error:?}");
        assert!(first_error.contains("refuses"), "the panic's message is kept: {first_error:?}");
        assert!(records[1]["error"].is_null(), "{records:?}");

        let job = finished(&app, &always).await;
        assert_eq!((&job["status"], &job["attempts"]), (&"dead".into(), &2.into()), "{job}");
        let hash = app.job_fields("webhook", &always).await;
        assert_eq!(hash["reason"], "panicked");
        assert!(hash["last_error"].starts_with("panicked"), "{}", hash["last_error"]);
        let records = app.attempts("webhook", &always).await;
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r["error"].as_str().is_some_and(|e| e.starts_with("panicked"))), "{records:?}");

        eprintln!(
            "panics (3 expected above): {once} attempt 1 recorded {first_error:?}; {always} dead, reason {}, \
             last_error {:?}",
            hash["reason"], hash["last_error"]
        );

        // (c) The worker survived both panics: a normal job enqueued now runs, once.
        let normal = enqueue(&app, "plain", 3).await;
        let job = finished(&app, &normal).await;
        assert_eq!((&job["status"], &job["attempts"]), (&"succeeded".into(), &1.into()), "{job}");
        assert_eq!(app.depths("webhook").await, (0, 0, 0, 1));
        assert!(inflight.is_empty(), "no job is left held: {:?}", inflight.snapshot());
        assert!(context.is_running());
        context.stop().unwrap();
    };
    let (errors, ()) = tokio::time::timeout(Duration::from_secs(30), futures::future::join(run, steps))
        .await
        .expect("the steps, then the worker's stop, took over 30 s");
    assert!(errors.is_empty(), "the worker reported errors: {errors:?}");
}
