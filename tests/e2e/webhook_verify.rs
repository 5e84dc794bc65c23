//! Webhooks as an independent implementation sees them: the worker's real deliveries, captured
//! byte for byte, verified by the `standardwebhooks` package (the reference verifier, Python).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::emulators::require_python_module;
use crate::receiver::{Delivery, Receiver, Reply};
use crate::support::{TestApp, WEBHOOK_SECRET, WorkerProcess};

/// Reads `{"secret", "requests": [{"label", "headers", "body" (base64)}]}` and prints one JSON
/// line per request: `{"label", "id"?, "payload"?, "error"?}`.
const VERIFY: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
job = json.load(sys.stdin)
hook = Webhook(job["secret"])
for request in job["requests"]:
    result = {"label": request["label"]}
    try:
        result["payload"] = hook.verify(base64.b64decode(request["body"]), request["headers"])
        result["id"] = request["headers"]["webhook-id"]
    except WebhookVerificationError as e:
        result["error"] = str(e)
    print(json.dumps(result))
"#;

fn request(label: &str, delivery: &Delivery) -> Value {
    let headers: HashMap<&str, &str> =
        delivery.headers.iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap())).collect();
    json!({"label": label, "headers": headers, "body": STANDARD.encode(&delivery.body)})
}

/// Runs the reference verifier over `requests`; its verdicts by label.
fn verify(requests: &[Value]) -> HashMap<String, Value> {
    let python = require_python_module("standardwebhooks");
    let mut child = Command::new(python)
        .args(["-c", VERIFY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({"secret": WEBHOOK_SECRET, "requests": requests}).to_string();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the verifier failed: {}", String::from_utf8_lossy(&output.stderr));
    let verdicts: HashMap<String, Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let verdict: Value = serde_json::from_str(line).unwrap();
            (verdict["label"].as_str().unwrap().to_owned(), verdict)
        })
        .collect();
    assert_eq!(verdicts.len(), requests.len(), "one verdict per request");
    verdicts
}

#[tokio::test]
async fn real_deliveries_verify_with_the_standardwebhooks_package_and_tampering_does_not() {
    // Fail fast on a missing verifier, before any work.
    require_python_module("standardwebhooks");
    let receiver = Receiver::start(&[Reply::status(503)], Reply::OK).await;
    let app = TestApp::spawn().await;
    let _worker = WorkerProcess::start(
        &app.redis_url,
        &app.namespace,
        &[("RETRY_JITTER", "none"), ("RETRY_BASE_MS_WEBHOOK", "300"), ("RETRY_CAP_MS_WEBHOOK", "60000")],
    );
    let data = [
        json!({"order": 1, "total": "12.50"}),
        json!({"name": "Zoë «Ada» 李", "note": "line\nbreak \"quoted\" \\ slash", "emoji": "🚀"}),
        json!({"nested": {"list": [1, 2.5, null, true], "empty": {}}, "big": 9_007_199_254_740_993_u64}),
    ];
    let mut ids = Vec::new();
    for (n, data) in data.iter().enumerate() {
        let job =
            json!({"kind": "webhook", "payload": {"url": receiver.url(), "event": format!("test.v{n}"), "data": data}});
        let response = app.post_job(&job, None).await;
        assert_eq!(response.status(), 202);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let job = app.wait_status(id, &["succeeded", "dead"], Duration::from_secs(20)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 4, "three webhooks, one of them twice (503 first)");

    let mut requests: Vec<Value> =
        deliveries.iter().enumerate().map(|(i, d)| request(&format!("delivery-{i}"), d)).collect();
    // Tampered copies of the first delivery: one byte of the body, and the id.
    let mut body = deliveries[0].body.to_vec();
    let last = body.len() - 2;
    body[last] ^= 0x01;
    let tampered_body = Delivery { body: body.into(), ..deliveries[0].clone() };
    requests.push(request("tampered-body", &tampered_body));
    let mut other_id = deliveries[0].clone();
    other_id.headers.insert("webhook-id", "someone-else".parse().unwrap());
    requests.push(request("tampered-id", &other_id));

    let verdicts = verify(&requests);
    let mut verified: HashMap<String, usize> = HashMap::new();
    for (i, delivery) in deliveries.iter().enumerate() {
        let verdict = &verdicts[&format!("delivery-{i}")];
        assert!(verdict.get("error").is_none(), "delivery {i} does not verify: {verdict}");
        assert_eq!(verdict["id"], delivery.webhook_id());
        // What the verifier parsed is what was enqueued.
        let n = ids.iter().position(|id| *id == delivery.webhook_id()).expect("a delivery of one of our jobs");
        assert_eq!(verdict["payload"]["data"], data[n]);
        assert_eq!(verdict["payload"]["type"], format!("test.v{n}"));
        *verified.entry(delivery.webhook_id()).or_default() += 1;
    }
    let mut counts: Vec<usize> = ids.iter().map(|id| verified.get(id).copied().unwrap_or(0)).collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2], "the retried webhook verifies on both attempts, under one webhook-id");
    assert_eq!(verdicts["tampered-body"]["error"], "No matching signature found");
    assert_eq!(verdicts["tampered-id"]["error"], "No matching signature found");
}
