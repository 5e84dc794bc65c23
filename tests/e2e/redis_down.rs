use std::time::{Duration, Instant};

use crate::enqueue::webhook;
use crate::support::{OwnRedis, TestApp};

#[tokio::test]
async fn redis_down_gives_503_fast_and_the_api_recovers_on_its_own() {
    let mut redis = OwnRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    assert_eq!(app.post_job(&webhook(), None).await.status(), 202);

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let response = app.post_job(&webhook(), None).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
    }
    let started = Instant::now();
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.post_job(&webhook(), None).await.status();
        if status == 202 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the API did not recover within 10 s of Redis returning");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    // The job accepted before the outage survived the restart (AOF), and so did the new one.
    assert_eq!(app.ready("webhook").await.len(), 2);
}

#[tokio::test]
async fn a_hung_redis_gives_503_within_2_s_and_the_retry_with_the_key_makes_one_job() {
    let redis = OwnRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    redis.freeze(true);
    let started = Instant::now();
    let response = app.post_job(&webhook(), Some("hung-1")).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("same Idempotency-Key"), "{problem}");
    let started = Instant::now();
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2));

    // The request may or may not have been executed once Redis wakes; retrying with the same
    // key gives exactly one job either way.
    redis.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.post_job(&webhook(), Some("hung-1")).await.status();
        if status.is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.ready("webhook").await.len(), 1);
}
