//! Review of the edge hardening (issue 13 items 1, 13, 14): what was still answered outside
//! `application/problem+json`, and the full-Redis refusals still answered as a bug (`500`).

use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, TestConsole};
use crate::edge_hardening::{SmallRedis, assert_full_answer};
use crate::enqueue::webhook;
use crate::support::{SHOP_KEY, TestApp, problem_fields};

/// `response` is a problem document of `status`; returns it.
async fn problem(response: reqwest::Response, status: u16, what: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{what}");
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    assert_eq!(body["status"], status, "{what}: {body}");
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(), "{what}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_of_the_producer_api_is_a_problem_document() {
    let app = TestApp::spawn().await;
    let http = &app.http;
    // A method the route does not take: axum's bare 405, with its Allow header kept.
    let response = http.put(app.url("/v1/jobs")).bearer_auth(SHOP_KEY).send().await.unwrap();
    assert!(response.headers().get("allow").is_some(), "405 lost its Allow header");
    problem(response, 405, "PUT /v1/jobs").await;
    let response =
        http.request(reqwest::Method::from_bytes(b"BREW").unwrap(), app.url("/v1/jobs")).send().await.unwrap();
    problem(response, 405, "BREW /v1/jobs").await;
    // Path segments that are not UTF-8 name nothing: 404, not axum's plain-text 400.
    let response = http.get(app.url("/v1/jobs/%FF%FE")).bearer_auth(SHOP_KEY).send().await.unwrap();
    problem(response, 404, "GET /v1/jobs/%FF%FE").await;
    let response = http.delete(app.url("/v1/schedules/%C3%28")).bearer_auth(SHOP_KEY).send().await.unwrap();
    problem(response, 404, "DELETE /v1/schedules/%C3%28").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_of_the_console_api_is_a_problem_document() {
    let app = TestApp::spawn().await;
    let console = TestConsole::start(&app, &[]).await;
    // A repeated query parameter: 422 naming it, not the Query extractor's plain-text 400.
    for (query, field) in
        [("limit=1&limit=2", "limit"), ("kind=email&q=a&kind=sms", "kind"), ("cursor=a&cursor=b", "cursor")]
    {
        let body = problem(console.get(&format!("/api/dead?{query}"), ADMIN_TOKEN).await, 422, query).await;
        assert_eq!(problem_fields(&body), [field], "{query}: {body}");
    }
    // Bytes that are not UTF-8, in the query (no letter matches) and in the path (no such letter).
    let response = console.get("/api/dead?q=%FF%C3%28", ADMIN_TOKEN).await;
    assert_eq!(response.status(), 200);
    problem(console.get("/api/dead/%FF%FE", ADMIN_TOKEN).await, 404, "GET /api/dead/%FF%FE").await;
    let response = console.http.delete(format!("{}/api/dead/%FF", console.base)).bearer_auth(ADMIN_TOKEN).send().await;
    problem(response.unwrap(), 404, "DELETE /api/dead/%FF").await;
    problem(console.post("/api/dead/%FF/replay", ADMIN_TOKEN, &json!({})).await, 404, "replay /api/dead/%FF").await;
    // No route, a method the route does not take.
    problem(console.get("/api/no/such/route", ADMIN_TOKEN).await, 404, "GET /api/no/such/route").await;
    problem(console.get("/no/such/page", ADMIN_TOKEN).await, 404, "GET /no/such/page").await;
    let response = console.http.put(format!("{}/api/dead", console.base)).bearer_auth(ADMIN_TOKEN).send().await;
    problem(response.unwrap(), 405, "PUT /api/dead").await;
    // Bodies the Json extractor refuses: not JSON, wrong content type, wrong shape.
    let post = |path: &str, content_type: &str, body: &str| {
        console
            .http
            .post(format!("{}{path}", console.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
    };
    problem(post("/api/dead/purge", "application/json", "{bad").await.unwrap(), 400, "purge, bad JSON").await;
    problem(post("/api/dead/purge", "text/plain", "x").await.unwrap(), 415, "purge, text").await;
    problem(post("/api/dead/replay", "application/json", r#"{"ids": 7}"#).await.unwrap(), 422, "replay, shape").await;
    problem(post("/api/dead/x/replay", "application/json", "{bad").await.unwrap(), 400, "replay one, bad JSON").await;
}

/// `POST /v1/schedules` writes in a `MULTI`: Redis refuses the queued `HSET` with `OOM` and
/// `EXEC` answers `EXECABORT`, which was not recognised as a full Redis and came back `500`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_a_schedule_as_an_outage_not_a_bug() {
    let redis = SmallRedis::start();
    let app = TestApp::spawn_on(&redis.url()).await;
    let console = TestConsole::start(&app, &[]).await;
    assert!(redis.fill() > 0);
    let schedule = json!({"name": "full-hourly", "cron": "0 * * * *", "job": webhook()});
    let response = app.http.post(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).json(&schedule).send().await.unwrap();
    assert_full_answer(response, "POST /v1/schedules").await;
    // Reads and deletes still work while full.
    let response = app.http.get(app.url("/v1/schedules")).bearer_auth(SHOP_KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The console's login opens a session in Redis: a full Redis says so, with Retry-After.
    let response =
        console.http.post(format!("{}/login", console.base)).form(&[("token", ADMIN_TOKEN)]).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert!(response.text().await.unwrap().contains("Redis is full"));
}
