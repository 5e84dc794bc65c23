use serde_json::Value;

use crate::enqueue::webhook;
use crate::support::{METRICS_KEY, TestApp};

#[tokio::test]
async fn health_readiness_and_docs_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
    let unknown = app.http.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let app = TestApp::spawn().await;
    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/v1/jobs", "/v1/jobs/batch", "/v1/jobs/{id}", "/v1/audit-logs"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let create = &doc["paths"]["/v1/jobs"]["post"];
    for status in ["200", "202", "400", "401", "413", "422", "503"] {
        assert!(create["responses"].get(status).is_some(), "POST /v1/jobs lacks {status}");
    }
    let schemas = &doc["components"]["schemas"];
    let params: Vec<&str> = doc["paths"]["/v1/audit-logs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["tenant_id", "action", "actor", "from", "to", "limit", "cursor"]);
    for schema in [
        "OtpSmsPayload",
        "EmailPayload",
        "WebhookPayload",
        "AuditLogPayload",
        "JobRequest",
        "Problem",
        "JobInfo",
        "FieldError",
        "AuditPage",
    ] {
        assert!(schemas.get(schema).is_some(), "schema {schema} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn metrics_count_enqueues_and_requests() {
    service::metrics_handle();
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        let response =
            app.http.post(app.url("/v1/jobs")).bearer_auth(METRICS_KEY).json(&webhook()).send().await.unwrap();
        assert_eq!(response.status(), 202);
    }
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = |prefix: &str, labels: &[&str]| {
        text.lines().find(|l| l.starts_with(prefix) && labels.iter().all(|lab| l.contains(lab))).map(str::to_owned)
    };
    let enqueued = line("jobplane_jobs_enqueued_total{", &["kind=\"webhook\"", "producer=\"metrics\""]).expect(&text);
    assert!(enqueued.ends_with(" 3"), "{enqueued}");
    // Other tests of this process may count requests too: at least ours are there.
    let requests = line("jobplane_http_requests_total{", &["route=\"/v1/jobs\"", "status=\"202\""]).expect(&text);
    let count: u64 = requests.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3, "{requests}");
    assert!(text.contains("jobplane_http_request_duration_seconds_bucket{"));
}
