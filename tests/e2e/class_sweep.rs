//! Issue 13's class sweep: the same classes of defect as its items, found elsewhere. Here, a
//! value from a request that one route bounded and another did not.

use serde_json::{Value, json};

use crate::enqueue::webhook;
use crate::support::{SHOP_KEY, TestApp};

async fn post_batch(app: &TestApp, body: &Value) -> reqwest::Response {
    app.http.post(app.url("/v1/jobs/batch")).bearer_auth(SHOP_KEY).json(body).send().await.unwrap()
}

/// A single job's body is capped at 256 KiB; a batch (8 MiB) let one job of the batch carry a
/// payload of several MiB into Redis (and the dead letters). One cap, on every route.
#[tokio::test]
async fn a_payload_over_256_kib_is_refused_in_a_batch_too() {
    let app = TestApp::spawn().await;
    let mut big = webhook();
    big["payload"]["data"] = json!("x".repeat(300 * 1024));
    let response = post_batch(&app, &json!({"jobs": [webhook(), big]})).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/jobs/1/payload", "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("256 KiB"), "{problem}");
    assert!(app.ready("webhook").await.is_empty());

    let mut email = json!({"kind": "email", "payload": {"to": "ada@example.org", "subject": "Hi"}});
    email["payload"]["html"] = json!("<p>".repeat(100 * 1024));
    let response = post_batch(&app, &json!({"jobs": [email]})).await;
    assert_eq!(response.status(), 422);

    // Just under the cap is taken, as for a single job.
    let mut fits = webhook();
    fits["payload"]["data"] = json!("x".repeat(250 * 1024));
    assert_eq!(post_batch(&app, &json!({"jobs": [fits]})).await.status(), 202);
}
