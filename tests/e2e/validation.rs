use serde_json::{Value, json};

use crate::enqueue::webhook;
use crate::support::TestApp;

async fn problem(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app.post_job(body, None).await;
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    (status, response.json().await.unwrap())
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn every_rejection_names_the_field_and_the_rule() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"kind": "fax", "payload": {}}), vec!["/kind"]),
        (json!({"payload": {}}), vec!["/kind"]),
        (
            json!({"kind": "otp_sms", "payload": {"to": "0912345678", "code": "12"}}),
            vec!["/payload/to", "/payload/code"],
        ),
        (
            json!({"kind": "otp_sms", "payload": {"to": "+886912345678", "code": "1234", "ttl_seconds": 5}}),
            vec!["/payload/ttl_seconds"],
        ),
        (
            json!({"kind": "email", "payload": {"to": ["a@example.org", "broken"], "subject": "s", "text": "t"}}),
            vec!["/payload/to/1"],
        ),
        (json!({"kind": "email", "payload": {"to": "a@example.org"}}), vec!["/payload/subject", "/payload/text"]),
        (json!({"kind": "webhook", "payload": {"url": "ftp://example.org", "event": "e"}}), vec!["/payload/url"]),
        (json!({"kind": "webhook", "payload": {"url": "https://example.org"}}), vec!["/payload/event"]),
        (
            json!({"kind": "webhook", "payload": {"url": "https://example.org", "event": "e", "extra": 1}}),
            vec!["/payload/extra"],
        ),
        (
            json!({"kind": "audit_log", "payload": {"tenant_id": "t", "actor": "a", "action": "x", "resource_type": "r", "event_id": "nope"}}),
            vec!["/payload/event_id"],
        ),
        (
            json!({"kind": "webhook", "payload": {"url": "https://e.org", "event": "e"}, "max_attempts": 100}),
            vec!["/max_attempts"],
        ),
        (
            json!({"kind": "webhook", "payload": {"url": "https://e.org", "event": "e"}, "delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}),
            vec!["/delay_seconds"],
        ),
        (
            json!({"kind": "webhook", "payload": {"url": "https://e.org", "event": "e"}, "run_at": "tomorrow"}),
            vec!["/run_at"],
        ),
        (json!({"kind": "webhook", "payload": "text"}), vec!["/payload"]),
        (
            json!({"kind": "webhook", "payload": {"url": "https://e.org", "event": "e"}, "priority": 1}),
            vec!["/priority"],
        ),
        (
            json!({"kind": "webhook", "payload": {"url": "https://e.org", "event": "e"}, "idempotency_key": "k"}),
            vec!["/idempotency_key"],
        ),
        (json!([1, 2]), vec![""]),
    ];
    for (body, expected) in cases {
        let (status, problem) = problem(&app, &body).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(problem["status"], 422);
        assert_eq!(problem["type"], "/problems/validation");
        assert_eq!(fields(&problem), expected, "{body}");
        for error in problem["errors"].as_array().unwrap() {
            assert!(!error["message"].as_str().unwrap().is_empty());
        }
    }
    assert!(app.keys().is_empty(), "a rejected job writes nothing");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .bearer_auth(crate::support::SHOP_KEY)
        .header("content-type", "application/json")
        .body(r#"{"kind": "webhook", "payload": "#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/malformed-json");
    assert!(problem["detail"].as_str().unwrap().contains("EOF"), "{problem}");
}

#[tokio::test]
async fn a_body_over_256_kib_is_413() {
    let app = TestApp::spawn().await;
    let mut job = webhook();
    job["payload"]["data"] = json!("x".repeat(256 * 1024));
    let (status, problem) = problem(&app, &job).await;
    assert_eq!(status, 413);
    assert_eq!(problem["type"], "/problems/too-large");
    // Just under the limit is accepted.
    job["payload"]["data"] = json!("x".repeat(250 * 1024));
    assert_eq!(app.post_job(&job, None).await.status(), 202);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let app = TestApp::spawn().await;
    let url = app.url("/v1/jobs");
    let no_header = app.http.post(&url).json(&webhook()).send().await.unwrap();
    let wrong = app.http.post(&url).bearer_auth("shop-secret-0123456780").json(&webhook()).send().await.unwrap();
    let basic = app.http.post(&url).basic_auth("shop", Some("x")).json(&webhook()).send().await.unwrap();
    let status = app.http.get(app.url("/v1/jobs/0190f000-0000-7000-8000-000000000000")).send().await.unwrap();
    for response in [no_header, wrong, basic, status] {
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    assert!(app.keys().is_empty());
    // The scheme name is case-insensitive (RFC 9110).
    let upper = app
        .http
        .post(&url)
        .header("authorization", format!("BEARER {}", crate::support::SHOP_KEY))
        .json(&webhook())
        .send()
        .await
        .unwrap();
    assert_eq!(upper.status(), 202);
}
