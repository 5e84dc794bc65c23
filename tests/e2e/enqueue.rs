use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::{BILLING_KEY, SHOP_KEY, TestApp};

pub fn webhook() -> Value {
    json!({"kind": "webhook", "payload": {"url": "https://example.org/hook", "event": "order.created", "data": {"order": 42}}})
}

#[tokio::test]
async fn an_immediate_job_goes_straight_to_its_ready_list() {
    let app = TestApp::spawn().await;
    let response = app.post_job(&webhook(), None).await;
    assert_eq!(response.status(), 202);
    let id = response.headers()["location"].to_str().unwrap().trim_start_matches("/v1/jobs/").to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["kind"], "webhook");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["links"]["self"], format!("/v1/jobs/{id}"));
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    assert_eq!(app.ready("webhook").await, [id.as_str()]);
    assert!(app.scheduled("webhook").await.is_empty());
    let hash = app.job_fields("webhook", &id).await;
    assert_eq!(hash["status"], "queued");
    assert_eq!(hash["attempts"], "0");
    assert_eq!(hash["max_attempts"], "10");
    assert_eq!(hash["producer"], "shop");
    let payload: Value = serde_json::from_str(&hash["payload"]).unwrap();
    assert_eq!(payload, webhook()["payload"]);
    // Exactly the job record, the ready list and one wake-up marker for idle workers: nothing
    // else is written for an immediate job.
    let mut keys = app.keys();
    keys.sort();
    assert_eq!(
        keys,
        [app.key(&format!("{{webhook}}:job:{id}")), app.key("{webhook}:ready"), app.key("{webhook}:wake")]
    );
}

#[tokio::test]
async fn the_status_endpoint_reports_a_queued_job() {
    let app = TestApp::spawn().await;
    let body: Value = app.post_job(&webhook(), None).await.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let response = app.get_job(id, SHOP_KEY).await;
    assert_eq!(response.status(), 200);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["id"], id);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["max_attempts"], 10);
    assert_eq!(job["last_error"], Value::Null);
    assert_eq!(job["finished_at"], Value::Null);
    assert!(job.get("payload").is_none(), "the status never shows the payload");
    // Another producer's key does not see it; unknown and malformed ids are 404 too.
    assert_eq!(app.get_job(id, BILLING_KEY).await.status(), 404);
    assert_eq!(app.get_job(&uuid::Uuid::now_v7().to_string(), SHOP_KEY).await.status(), 404);
    assert_eq!(app.get_job("not-an-id", SHOP_KEY).await.status(), 404);
}

#[tokio::test]
async fn a_delayed_job_waits_in_the_scheduled_set() {
    let app = TestApp::spawn().await;
    let mut job = webhook();
    job["delay_seconds"] = json!(3600);
    let before = Utc::now();
    let body: Value = app.post_job(&job, None).await.json().await.unwrap();
    assert_eq!(body["status"], "scheduled");
    let id = body["id"].as_str().unwrap();
    let run_at: DateTime<Utc> = body["run_at"].as_str().unwrap().parse().unwrap();
    let offset = (run_at - before).num_seconds();
    assert!((3599..=3601).contains(&offset), "run_at is {offset} s ahead");
    assert_eq!(app.scheduled("webhook").await, [(id.to_owned(), run_at.timestamp_millis())]);
    assert!(app.ready("webhook").await.is_empty());
    let job: Value = app.get_job(id, SHOP_KEY).await.json().await.unwrap();
    assert_eq!(job["status"], "scheduled");
    assert_eq!(job["run_at"], body["run_at"]);
}

#[tokio::test]
async fn run_at_schedules_and_a_past_run_at_runs_now() {
    let app = TestApp::spawn().await;
    let mut job = webhook();
    let at = (Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%dT09:00:00Z").to_string();
    job["run_at"] = json!(at);
    let body: Value = app.post_job(&job, None).await.json().await.unwrap();
    assert_eq!(body["status"], "scheduled");
    assert_eq!(body["run_at"], at.as_str());
    job["run_at"] = json!("2020-01-01T09:00:00Z");
    let body: Value = app.post_job(&job, None).await.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(app.ready("webhook").await.len(), 1);
    assert_eq!(app.scheduled("webhook").await.len(), 1);
}

#[tokio::test]
async fn every_kind_is_accepted_in_its_normal_form() {
    let app = TestApp::spawn().await;
    let jobs = [
        json!({"kind": "otp_sms", "payload": {"to": "+886 912 345 678", "code": "482913"}}),
        json!({"kind": "email", "payload": {"to": "ada@example.org", "subject": "Hi", "text": "Hello", "html": "<p>Hello</p>"}}),
        json!({"kind": "audit_log", "payload": {"tenant_id": "t1", "actor": "user:7", "action": "invoice.paid", "resource_type": "invoice"}}),
    ];
    for job in &jobs {
        let response = app.post_job(job, None).await;
        assert_eq!(response.status(), 202, "{job}");
        let body: Value = response.json().await.unwrap();
        let kind = job["kind"].as_str().unwrap();
        let hash = app.job_fields(kind, body["id"].as_str().unwrap()).await;
        let payload: Value = serde_json::from_str(&hash["payload"]).unwrap();
        match kind {
            "otp_sms" => {
                assert_eq!(payload["to"], "+886912345678");
                assert_eq!(payload["ttl_seconds"], 300);
                assert_eq!(hash["max_attempts"], "5");
            }
            "audit_log" => {
                assert!(uuid::Uuid::parse_str(payload["event_id"].as_str().unwrap()).is_ok());
                assert!(payload["occurred_at"].as_str().unwrap().parse::<DateTime<Utc>>().is_ok());
            }
            "email" => {
                // One address or many: the normal form is always a list.
                assert_eq!(payload["to"], json!(["ada@example.org"]));
                assert_eq!(payload["html"], "<p>Hello</p>");
            }
            _ => unreachable!(),
        }
        assert_eq!(app.ready(kind).await.len(), 1);
    }
}

#[tokio::test]
async fn ids_sort_by_creation() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let body: Value = app.post_job(&webhook(), None).await.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    // LPUSH + pop from the right: the list's right end is the oldest job.
    let mut ready = app.ready("webhook").await;
    ready.reverse();
    assert_eq!(ready, ids);
}
