//! Webhook destinations end to end: two worker processes, a slow receiver and a fast one; a
//! failing receiver that cools down, is listed by the console and resumed by an operator.

use std::time::Duration;

use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole, VIEWER_TOKEN};
use crate::receiver::{Receiver, Reply};
use crate::support::{TestApp, WorkerProcess};

const BACKOFF: [(&str, &str); 3] =
    [("RETRY_JITTER", "none"), ("RETRY_BASE_MS_WEBHOOK", "300"), ("RETRY_CAP_MS_WEBHOOK", "60000")];

async fn all_end(app: &TestApp, ids: &[String], status: &str) {
    for id in ids {
        let job = app.wait_status(id, &[status, "dead", "expired"], Duration::from_mins(1)).await;
        assert_eq!(job["status"], status, "{id}: {job}");
    }
}

#[tokio::test]
async fn a_slow_destination_never_has_more_than_n_in_flight_and_waiting_burns_no_attempt() {
    let app = TestApp::spawn().await;
    let slow = Receiver::start(&[], Reply { delay: Duration::from_millis(300), ..Reply::OK }).await;
    let fast = Receiver::start(&[], Reply::OK).await;
    let settings = [("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", "3"), ("WORKER_CONCURRENCY_WEBHOOK", "20")];
    let _workers: Vec<WorkerProcess> =
        (0..2).map(|_| WorkerProcess::start(&app.redis_url, &app.namespace, &settings)).collect();
    let slow_ids = app.enqueue_webhooks(&slow.url(), 24, 3).await;
    let fast_ids = app.enqueue_webhooks(&fast.url(), 24, 3).await;
    all_end(&app, &fast_ids, "succeeded").await;
    all_end(&app, &slow_ids, "succeeded").await;
    assert!((2..=3).contains(&slow.peak_concurrency()), "peak {}", slow.peak_concurrency());
    assert_eq!((slow.deliveries().len(), fast.deliveries().len()), (24, 24));
    for id in slow_ids.iter().chain(&fast_ids) {
        let record = app.record("webhook", id).await.unwrap();
        assert_eq!((record.attempts, record.history.len()), (1, 0), "{id}: waiting burned an attempt");
    }
}

#[tokio::test]
async fn a_failing_destination_cools_down_is_listed_and_an_operator_ends_it() {
    let app = TestApp::spawn().await;
    let failing = Receiver::start(&[Reply::status(503), Reply::status(503)], Reply::OK).await;
    let mut settings = BACKOFF.to_vec();
    settings.extend([("WEBHOOK_COOLDOWN_FAILURES", "2"), ("WEBHOOK_COOLDOWN_MIN_SECONDS", "600")]);
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &settings);
    let console = TestConsole::start(&app, &[]).await;

    let first = app.enqueue_webhooks(&failing.url(), 1, 5).await;
    let destination = format!("http://{}", failing.addr);
    let listed = loop {
        let page: Value = console.get("/api/webhook-destinations", VIEWER_TOKEN).await.json().await.unwrap();
        if page["total"] == 1 {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let item = &listed["items"][0];
    assert_eq!((item["destination"].as_str(), item["failures"].as_u64()), (Some(destination.as_str()), Some(2)));
    // Cooling: new jobs wait, scheduled, and nothing reaches the receiver.
    let later = app.enqueue_webhooks(&failing.url(), 3, 5).await;
    for id in &later {
        app.wait_status(id, &["scheduled"], Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failing.deliveries().len(), 2);

    let (code, out, err) = crate::console::cli(&app, &["destinations", "--json"]);
    assert_eq!(code, 0, "{err}");
    let by_cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (by_cli["total"].as_u64(), by_cli["items"][0]["destination"].as_str()),
        (Some(1), Some(destination.as_str()))
    );
    let id = item["id"].as_str().unwrap();
    // The page lists it; only an admin sees the button that ends it.
    for (token, button) in [(ADMIN_TOKEN, true), (VIEWER_TOKEN, false)] {
        let cookie = crate::schedule_control::login(&console, token).await;
        let page = console.http.get(format!("{}/webhook-destinations", console.base)).header("cookie", cookie);
        let html = page.send().await.unwrap().text().await.unwrap();
        assert!(html.contains(&destination), "{html}");
        assert_eq!(html.contains(&format!("/webhook-destinations/{id}/resume")), button, "{html}");
    }
    let path = format!("/api/webhook-destinations/{id}/resume");
    assert_eq!(console.post(&path, VIEWER_TOKEN, &json!({})).await.status(), 403);
    let resumed = console.post(&path, ADMIN_TOKEN, &json!({})).await;
    assert_eq!(resumed.status(), 200);
    assert_eq!(resumed.json::<Value>().await.unwrap()["resumed"], true);
    assert_eq!(console.post(&path, ADMIN_TOKEN, &json!({})).await.status(), 404);
    let audited = ("console:admin", "webhook_destination.resume", "webhook_destination", id);
    let rows = crate::pause::audit_rows(&app).await;
    let rows: Vec<(&str, &str, &str, &str)> =
        rows.iter().map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str())).collect();
    assert_eq!(rows, [audited], "one record, for the resume that ended a cool-down");
    let bad = console.get("/api/webhook-destinations?limit=0", VIEWER_TOKEN).await;
    assert_eq!(bad.status(), 422);

    all_end(&app, &later, "succeeded").await;
    all_end(&app, &first, "succeeded").await;
    assert_eq!(failing.deliveries().len(), 6);
    assert_eq!(app.record("webhook", &first[0]).await.unwrap().attempts, 3);
    for id in &later {
        assert_eq!(app.record("webhook", id).await.unwrap().attempts, 1, "{id}");
    }
    let page: Value = console.get("/api/webhook-destinations", VIEWER_TOKEN).await.json().await.unwrap();
    assert_eq!(page["total"], 0, "{page}");
}
