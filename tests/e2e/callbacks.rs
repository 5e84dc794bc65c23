//! Providers' callbacks (`/v1/callbacks/*`) against the producer API in-process and a real
//! Redis: a Twilio status callback signed as Twilio documents it (the signature computed here,
//! independently of the API's code) puts `delivery` on the job, idempotently; forged, oversized
//! and flooding callbacks are refused without revealing whether a job exists.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::console::{TestConsole, VIEWER_TOKEN};
use crate::support::{SHOP_KEY, TestApp, redis_url};

const TOKEN: &str = "twilio-auth-token-for-tests";
/// What Twilio was told to call: a public root with a path prefix, behind a proxy.
const BASE: &str = "https://api.example.test/jobplane";
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";

async fn app(extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![("CALLBACK_BASE_URL", BASE), ("TWILIO_AUTH_TOKEN", TOKEN)];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&redis_url(), &settings).await
}

async fn otp_job(app: &TestApp) -> String {
    let body = json!({"kind": "otp_sms", "payload": {"to": "+886912345678", "code": "482913"}});
    let answer: Value = app.post_job(&body, None).await.json().await.unwrap();
    answer["id"].as_str().unwrap().to_owned()
}

/// Twilio's algorithm, as its docs state it: base64(HMAC-SHA1(auth token, the full URL, then
/// each POST parameter sorted by name, the name immediately followed by its value)).
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn status_params<'a>(status: &'a str, error_code: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15005550006"),
        ("MessageSid", MESSAGE_SID),
        ("MessageStatus", status),
        ("SmsSid", MESSAGE_SID),
        ("SmsStatus", status),
        ("To", "+886912345678"),
    ];
    if let Some(code) = error_code {
        params.push(("ErrorCode", code));
    }
    params
}

/// POSTs Twilio's callback for `job` with `params`, signed with `token` over the public URL.
async fn twilio_callback(app: &TestApp, job: &str, params: &[(&str, &str)], token: &str) -> reqwest::Response {
    let query = format!("job={job}");
    let signature = twilio_signature(token, &format!("{BASE}/v1/callbacks/twilio?{query}"), params);
    app.http
        .post(app.url(&format!("/v1/callbacks/twilio?{query}")))
        .header("X-Twilio-Signature", signature)
        .form(params)
        .send()
        .await
        .unwrap()
}

async fn delivery(app: &TestApp, id: &str) -> Value {
    let job: Value = app.get_job(id, SHOP_KEY).await.json().await.unwrap();
    job["delivery"].clone()
}

#[tokio::test]
async fn a_signed_twilio_report_shows_on_the_job_once_and_by_precedence() {
    // The binaries install the metrics recorder at start; in this process, the first caller does.
    service::metrics_handle();
    let app = app(&[]).await;
    let id = otp_job(&app).await;
    assert_eq!(delivery(&app, &id).await, Value::Null, "no report yet: no delivery field");

    // Intermediate statuses are taken and change nothing.
    assert_eq!(twilio_callback(&app, &id, &status_params("sent", None), TOKEN).await.status(), 204);
    assert_eq!(delivery(&app, &id).await, Value::Null);

    let answer = twilio_callback(&app, &id, &status_params("delivered", None), TOKEN).await;
    assert_eq!(answer.status(), 204);
    let first = delivery(&app, &id).await;
    assert_eq!(first["status"], "delivered");
    assert_eq!(first["detail"], Value::Null);
    assert!(first["at"].as_str().is_some_and(|at| at.parse::<chrono::DateTime<chrono::Utc>>().is_ok()), "{first}");

    // Twilio resends: the same report again changes nothing (not even its time).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(twilio_callback(&app, &id, &status_params("delivered", None), TOKEN).await.status(), 204);
    assert_eq!(delivery(&app, &id).await, first);

    // A stronger report wins, with Twilio's error code as its detail.
    let answer = twilio_callback(&app, &id, &status_params("undelivered", Some("30003")), TOKEN).await;
    assert_eq!(answer.status(), 204);
    let now = delivery(&app, &id).await;
    assert_eq!((now["status"].as_str(), now["detail"].as_str()), (Some("undelivered"), Some("30003")));
    // ... and a weaker one after it does not.
    assert_eq!(twilio_callback(&app, &id, &status_params("delivered", None), TOKEN).await.status(), 204);
    assert_eq!(delivery(&app, &id).await, now);

    // The record holds it under its short key, and nothing else of the record moved.
    let record = app.record("otp_sms", &id).await.unwrap();
    assert_eq!(record.delivery.as_ref().map(|d| d.status.as_str()), Some("undelivered"));
    assert_eq!(record.status, jobs::JobStatus::Queued);

    // The console's job view shows it.
    let console = TestConsole::start(&app, &[]).await;
    let shown: Value = console.get(&format!("/api/jobs/{id}"), VIEWER_TOKEN).await.json().await.unwrap();
    assert_eq!(shown["delivery"], now);
    let login =
        console.http.post(format!("{}/login", console.base)).form(&[("token", VIEWER_TOKEN)]).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = console.http.get(format!("{}/jobs/{id}", console.base)).header("cookie", cookie).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("undelivered") && page.contains("30003"), "{page}");

    // Counted per provider and status.
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("jobplane_delivery_reports_total{")
                && l.contains(r#"provider="twilio""#)
                && l.contains(r#"status="undelivered""#)
        })
        .unwrap_or_else(|| panic!("no delivery report counted:\n{metrics}"));
    assert!(line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 1.0, "{line}");
}

#[tokio::test]
async fn forged_callbacks_are_refused_alike_and_an_unknown_job_is_answered_as_a_known_one() {
    let app = app(&[]).await;
    let id = otp_job(&app).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let params = status_params("delivered", None);

    // A wrong token, a signature over another job's URL, no signature: 403, the same document
    // whether the job exists or not.
    let mut bodies = Vec::new();
    for job in [&id, &unknown] {
        let answer = twilio_callback(&app, job, &params, "not-the-token").await;
        assert_eq!(answer.status(), 403);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        bodies.push(answer.text().await.unwrap());
    }
    let moved = twilio_signature(TOKEN, &format!("{BASE}/v1/callbacks/twilio?job={unknown}"), &params);
    let answer = app
        .http
        .post(app.url(&format!("/v1/callbacks/twilio?job={id}")))
        .header("X-Twilio-Signature", moved)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403, "the signature covers the job in the URL");
    bodies.push(answer.text().await.unwrap());
    let unsigned =
        app.http.post(app.url(&format!("/v1/callbacks/twilio?job={id}"))).form(&params).send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    bodies.push(unsigned.text().await.unwrap());
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(delivery(&app, &id).await, Value::Null, "nothing forged was recorded");

    // Authentic, for a job that does not exist (or expired): answered as for one that does.
    let known = twilio_callback(&app, &id, &params, TOKEN).await;
    let missing = twilio_callback(&app, &unknown, &params, TOKEN).await;
    assert_eq!((known.status(), missing.status()), (reqwest::StatusCode::NO_CONTENT, reqwest::StatusCode::NO_CONTENT));
    assert_eq!(known.text().await.unwrap(), missing.text().await.unwrap());
    assert_eq!(app.record("otp_sms", &unknown).await, None, "no record is made for an unknown job");
    let not_a_uuid = twilio_callback(&app, "..%2F..%2Fx", &params, TOKEN).await;
    assert_eq!(not_a_uuid.status(), 204);

    // Over 64 KiB: 413 before any signature is checked.
    let big = "x".repeat(70 * 1024);
    let mut oversized = params.clone();
    oversized.push(("Padding", &big));
    let answer = twilio_callback(&app, &id, &oversized, TOKEN).await;
    assert_eq!(answer.status(), 413);

    // The producer routes still want their key.
    let answer = app.http.get(app.url(&format!("/v1/jobs/{id}"))).send().await.unwrap();
    assert_eq!(answer.status(), 401);
}

#[tokio::test]
async fn without_the_token_or_the_base_url_every_twilio_callback_is_refused() {
    for settings in [vec![("CALLBACK_BASE_URL", BASE)], vec![("TWILIO_AUTH_TOKEN", TOKEN)]] {
        let app = TestApp::spawn_with(&redis_url(), &settings).await;
        let id = otp_job(&app).await;
        let answer = twilio_callback(&app, &id, &status_params("delivered", None), TOKEN).await;
        assert_eq!(answer.status(), 403, "{settings:?}");
        assert_eq!(delivery(&app, &id).await, Value::Null);
    }
}

#[tokio::test]
async fn a_flood_of_forged_callbacks_does_not_crowd_out_the_real_ones() {
    let app = app(&[("CALLBACK_RATE_LIMIT_PER_SECOND", "1")]).await;
    let id = otp_job(&app).await;
    let params = status_params("delivered", None);
    // Forged: refused, every one, without using up the providers' share.
    let answers = futures::future::join_all((0..8).map(|_| twilio_callback(&app, "x", &params, "forged"))).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    // The provider's real report still gets through.
    assert_eq!(twilio_callback(&app, &id, &params, TOKEN).await.status(), 204);
    assert_eq!(delivery(&app, &id).await["status"], "delivered");
    // Authentic reports beyond the limit are cut.
    let answers = futures::future::join_all((0..4).map(|_| twilio_callback(&app, &id, &params, TOKEN))).await;
    let mut limited = 0;
    for answer in answers {
        // 503, not 429: SNS never retries a 4xx.
        if answer.status() == 503 {
            assert_eq!(answer.headers()["retry-after"], "1");
            limited += 1;
        }
    }
    assert!(limited >= 3, "{limited} of 4 cut");
    // The producer API itself is not limited by it.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_openapi_document_describes_the_callbacks_and_the_delivery() {
    let app = TestApp::spawn().await;
    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let twilio = &doc["paths"]["/v1/callbacks/twilio"]["post"];
    for status in ["204", "403", "413", "503"] {
        assert!(twilio["responses"].get(status).is_some(), "POST /v1/callbacks/twilio lacks {status}");
    }
    assert!(twilio.get("security").is_none(), "no bearer key on a callback");
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["JobInfo"]["properties"].get("delivery").is_some(), "{}", schemas["JobInfo"]);
    assert_eq!(schemas["DeliveryStatus"]["enum"], json!(["delivered", "undelivered", "bounced", "complained"]));
}
