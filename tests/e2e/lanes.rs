//! Priorities and groups through the producer API: accepted, kept on the job, shown by
//! `GET /v1/jobs/{id}`, served from their lane; bad values are 422 naming the field.

use serde_json::{Value, json};

use crate::enqueue::webhook;
use crate::support::{SHOP_KEY, TestApp};

fn with(priority: Option<&str>, group: Option<&str>) -> Value {
    let mut job = webhook();
    if let Some(p) = priority {
        job["priority"] = json!(p);
    }
    if let Some(g) = group {
        job["group"] = json!(g);
    }
    job
}

async fn shown(app: &TestApp, id: &str) -> Value {
    let response = app.get_job(id, SHOP_KEY).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn priority_and_group_are_accepted_and_shown() {
    let app = TestApp::spawn().await;
    let response = app.post_job(&with(Some("high"), Some("tenant-7")), None).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let job = shown(&app, &id).await;
    assert_eq!((job["priority"].as_str(), job["group"].as_str()), (Some("high"), Some("tenant-7")));
    // It waits in the high lane, in its group's list.
    let waiting: Vec<String> = redis::cmd("LRANGE")
        .arg(app.key("{webhook}:ready:high:g:tenant-7"))
        .arg(0)
        .arg(-1)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert_eq!(waiting, [id]);

    // The defaults are not shown, and the job waits where jobs always did.
    let response = app.post_job(&with(Some("normal"), None), None).await;
    let plain = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let job = shown(&app, &plain).await;
    assert!(job.get("priority").is_none() && job.get("group").is_none(), "{job}");
    assert_eq!(app.ready("webhook").await, [plain]);

    // A batch item carries them too.
    let response = app
        .http
        .post(app.url("/v1/jobs/batch"))
        .bearer_auth(SHOP_KEY)
        .json(&json!({"jobs": [with(Some("low"), Some("b")), with(None, None)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let low = body["jobs"][0]["id"].as_str().unwrap().to_owned();
    let job = shown(&app, &low).await;
    assert_eq!((job["priority"].as_str(), job["group"].as_str()), (Some("low"), Some("b")));
}

#[tokio::test]
async fn a_bad_priority_or_group_is_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let long = "g".repeat(129);
    let cases = [
        (with(Some("urgent"), None), "/priority"),
        (with(Some("HIGH"), None), "/priority"),
        (with(None, Some(&long)), "/group"),
        (with(None, Some("tenant 7")), "/group"),
        (with(None, Some("")), "/group"),
        (with(None, Some("t\u{e9}")), "/group"),
    ];
    for (body, field) in cases {
        let response = app.post_job(&body, None).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, [field], "{body}");
    }
    let response = app.post_job(&with(None, Some(&"g".repeat(128))), None).await;
    assert_eq!(response.status(), 202, "128 characters are fine");
}
