use serde_json::{Value, json};

use crate::enqueue::webhook;
use crate::support::{SHOP_KEY, TestApp};

async fn post_batch(app: &TestApp, body: &Value) -> reqwest::Response {
    app.http.post(app.url("/v1/jobs/batch")).bearer_auth(SHOP_KEY).json(body).send().await.unwrap()
}

fn email() -> Value {
    json!({"kind": "email", "payload": {"to": "ada@example.org", "subject": "Hi", "text": "Hello"}})
}

#[tokio::test]
async fn a_batch_is_enqueued_in_order() {
    let app = TestApp::spawn().await;
    let mut later = webhook();
    later["delay_seconds"] = json!(60);
    let response = post_batch(&app, &json!({"jobs": [webhook(), email(), later, email()]})).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let jobs = body["jobs"].as_array().unwrap();
    let statuses: Vec<_> = jobs.iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "queued", "scheduled", "queued"]);
    let id = |i: usize| jobs[i]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.ready("webhook").await, [id(0)]);
    assert_eq!(app.scheduled("webhook").await[0].0, id(2));
    assert_eq!(app.ready("email").await, [id(3), id(1)]);
}

#[tokio::test]
async fn one_invalid_job_rejects_the_whole_batch() {
    let app = TestApp::spawn().await;
    let mut bad = email();
    bad["payload"]["to"] = json!("nobody");
    let response = post_batch(&app, &json!({"jobs": [webhook(), email(), bad, {"kind": "fax", "payload": {}}]})).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<_> = problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["/jobs/2/payload/to/0", "/jobs/3/kind"]);
    assert!(app.keys().is_empty(), "nothing is written");
}

#[tokio::test]
async fn batch_size_is_bounded() {
    let app = TestApp::spawn().await;
    for jobs in [vec![], vec![webhook(); 1001]] {
        let response = post_batch(&app, &json!({ "jobs": jobs })).await;
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "/jobs");
    }
    let response = post_batch(&app, &json!({"items": []})).await;
    assert_eq!(response.status(), 422);
    let response = post_batch(&app, &json!({ "jobs": vec![webhook(); 1000] })).await;
    assert_eq!(response.status(), 202);
    assert_eq!(app.ready("webhook").await.len(), 1000);
}

#[tokio::test]
async fn batch_items_carry_their_own_idempotency_keys() {
    let app = TestApp::spawn().await;
    let mut a = webhook();
    a["idempotency_key"] = json!("a");
    let mut b = email();
    b["idempotency_key"] = json!("b");
    let first: Value = post_batch(&app, &json!({"jobs": [a.clone(), b.clone()]})).await.json().await.unwrap();
    let again = post_batch(&app, &json!({"jobs": [a.clone(), b.clone(), webhook()]})).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["jobs"][0]["id"], first["jobs"][0]["id"]);
    assert_eq!(again["jobs"][0]["replayed"], true);
    assert_eq!(again["jobs"][1]["id"], first["jobs"][1]["id"]);
    assert!(again["jobs"][2].get("replayed").is_none());
    assert_eq!(app.ready("webhook").await.len(), 2);
    assert_eq!(app.ready("email").await.len(), 1);

    // A single request with the same key and body replays the batch item.
    let single = app.post_job(&webhook(), Some("a")).await;
    assert_eq!(single.status(), 200);
    assert_eq!(single.json::<Value>().await.unwrap()["id"], first["jobs"][0]["id"]);
}

#[tokio::test]
async fn a_conflicting_key_writes_nothing_of_its_kind() {
    let app = TestApp::spawn().await;
    let mut a = webhook();
    a["idempotency_key"] = json!("a");
    post_batch(&app, &json!({"jobs": [a.clone()]})).await;
    let mut changed = a.clone();
    changed["payload"]["event"] = json!("order.cancelled");
    let response = post_batch(&app, &json!({"jobs": [webhook(), changed, email()]})).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    assert_eq!(problem["errors"][0]["field"], "/jobs/1/idempotency_key");
    // Every queue was checked before any was written: nothing of the batch is written.
    assert_eq!(app.ready("webhook").await.len(), 1);
    assert!(app.ready("email").await.is_empty());
    assert!(problem.get("enqueued").is_none());

    let mut twice = email();
    twice["idempotency_key"] = json!("dup");
    let response = post_batch(&app, &json!({"jobs": [twice.clone(), twice]})).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/jobs/1/idempotency_key");
}
